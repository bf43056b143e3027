"""manifest.json: building and writing the bundle's metadata. Reading it is zoo.runtime.read_manifest's job."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from zoo.contract import Signature
from zoo.runtime import FORMAT_VERSION, MANIFEST_NAME, WeightsRecord, package_version

# keys export and verify rely on, on top of what running a bundle needs
REQUIRED = ("file_sha256", "weights")


def versions() -> dict:
    return {package.removesuffix("-gpu"): package_version(package)
            for package in ("torch", "onnx", "onnxruntime-gpu", "onnxscript", "zoo")}


FP32 = {"name": "fp32"}


def build(model: str, signature: Signature, fmt: str, file: str, weights: WeightsRecord, exporter: dict,
          precision: dict | None = None) -> dict:
    """Everything but what is measured on the finished model file (its sha256, the parity and accuracy
    reports). `signature`: the model's, with the weights' fitted preprocessing. `precision`: the reduced
    precision's record (name, method, settings, calibration, budget); fp32 by default."""
    fields = signature.to_dict()
    return {
        "format_version": FORMAT_VERSION,
        "model": model, "task": fields.pop("task"), "output_kind": fields.pop("output_kind"),
        "format": fmt, "file": file,
        "external_data": {},   # zoo writes the weights into the model file; sealed, so none can be added later
        **fields,              # inputs, outputs, preprocess, labels
        "weights": weights.to_dict(),
        "exporter": exporter,
        "precision": precision or dict(FP32),
        "versions": versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
