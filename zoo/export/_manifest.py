"""manifest.json: building and writing the bundle's metadata. Reading it is zoo.runtime.read_manifest's job."""

from __future__ import annotations

import datetime
import json
from importlib import metadata
from pathlib import Path

from zoo.contract import preprocessing_to_dict
from zoo.runtime import FORMAT_VERSION, MANIFEST_NAME

# keys export and verify rely on, on top of what running a bundle needs
REQUIRED = ("file_sha256", "weights")


def versions() -> dict:
    out = {}
    for package in ("torch", "onnx", "onnxruntime-gpu", "onnxscript", "zoo"):
        try:
            out[package.removesuffix("-gpu")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package.removesuffix("-gpu")] = None
    return out


FP32 = {"name": "fp32"}


def build(spec, fmt: str, file: str, preprocessing: dict, weights: dict, exporter: dict,
          precision: dict | None = None) -> dict:
    """Everything but what is measured on the finished model file (its sha256, the parity and accuracy
    reports). `precision`: the reduced precision's record (name, method, settings, calibration, budget);
    fp32 by default."""
    return {
        "format_version": FORMAT_VERSION,
        "model": spec.name, "task": spec.task, "output_kind": spec.output_kind,
        "format": fmt, "file": file,
        "external_data": {},   # zoo writes the weights into the model file; sealed, so none can be added later
        "inputs": [t.to_dict() for t in spec.inputs],
        "outputs": [t.to_dict() for t in spec.outputs],
        "preprocess": preprocessing_to_dict(preprocessing),
        "labels": {k: list(v) for k, v in spec.labels.items()},
        "weights": weights,
        "exporter": exporter,
        "precision": precision or dict(FP32),
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
