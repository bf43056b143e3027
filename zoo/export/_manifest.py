"""manifest.json: building and writing the bundle's metadata. Reading it is zoo.runtime.read_manifest's job."""

from __future__ import annotations

import datetime
import json
from importlib import metadata
from pathlib import Path

from zoo.runtime._bundle import FORMAT_VERSION, NAME

# the runtime's torch-free reader (zoo.runtime.read_manifest) is the one reader; export and verify use it
# with these keys required on top of what running a bundle needs
REQUIRED = ("file_sha256", "weights")


def versions() -> dict:
    out = {}
    for package in ("torch", "onnx", "onnxruntime-gpu", "onnxscript", "zoo"):
        try:
            out[package.removesuffix("-gpu")] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package.removesuffix("-gpu")] = None
    return out


def build(spec, fmt: str, file: str, preprocess: dict, weights: dict, exporter: dict, parity: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "model": spec.name, "task": spec.task, "output_kind": spec.output_kind,
        "format": fmt, "file": file, "file_sha256": None,
        "inputs": [t.to_dict() for t in spec.inputs],
        "outputs": [t.to_dict() for t in spec.outputs],
        "preprocess": preprocess,
        "labels": {k: list(v) for k, v in spec.labels.items()},
        "weights": weights,
        "exporter": exporter,
        "versions": versions(),
        "parity": parity,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def write(directory: Path, manifest: dict) -> None:
    (directory / NAME).write_text(json.dumps(manifest, indent=2) + "\n")
