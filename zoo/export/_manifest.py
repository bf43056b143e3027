"""manifest.json: the bundle's metadata, the only thing the runtime reads besides the model file."""

from __future__ import annotations

import datetime
import json
from importlib import metadata
from pathlib import Path

from zoo.errors import ZooError

NAME = "manifest.json"
FORMAT_VERSION = 1
REQUIRED = ("format_version", "model", "format", "file", "file_sha256", "inputs", "outputs", "weights")


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


def read(bundle: str | Path) -> dict:
    """The manifest of a bundle folder, checked for the keys every stage relies on."""
    bundle = Path(bundle)
    path = bundle / NAME
    if not bundle.is_dir():
        raise ZooError(f"{bundle} is not a bundle folder")
    if not path.is_file():
        raise ZooError(f"{bundle} has no {NAME}: not a zoo bundle, or an unfinished one")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ZooError(f"{path} is not valid JSON ({e}): the bundle is corrupted", exit_code=1) from None
    if not isinstance(manifest, dict) or (missing := [k for k in REQUIRED if k not in manifest]):
        raise ZooError(f"{path} lacks {missing if isinstance(manifest, dict) else 'everything'}: "
                       "the bundle is corrupted", exit_code=1)
    if manifest["format_version"] != FORMAT_VERSION:
        raise ZooError(f"{path} has format_version {manifest['format_version']}; this zoo reads {FORMAT_VERSION}")
    return manifest
