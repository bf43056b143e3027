"""Reading a bundle: `manifest.json` and the model file beside it (docs/formats.md), nothing else."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError

FORMAT_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
_REQUIRED = ("format_version", "model", "task", "output_kind", "format", "file", "inputs", "outputs")


class BundleError(ZooError):
    """A bundle folder that is missing, incomplete or inconsistent."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str, ...]  # with batch; strings name dynamic axes
    dtype: str

    def describe(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"


@dataclass(frozen=True)
class Manifest:
    bundle: Path                       # the bundle folder
    model: str
    task: str                          # binary | multiclass | regression | multi-output
    output_kind: str                   # logits | logit | probability | value
    format: str                        # onnx | torchscript | pt2
    file: Path                         # the model file, inside `bundle`
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    preprocess: dict                   # input name -> preprocessing dict
    labels: dict                       # output name -> class names
    data: dict                         # the whole manifest, as read

    @property
    def random_weights(self) -> bool:
        return bool((self.data.get("weights") or {}).get("random", False))

    @property
    def is_classifier(self) -> bool:
        return self.task in ("binary", "multiclass", "multi-output") and bool(self.labels)


def _tensors(items, where: Path, key: str) -> tuple[TensorInfo, ...]:
    try:
        return tuple(TensorInfo(str(t["name"]), tuple(d if isinstance(d, str) else int(d) for d in t["shape"]),
                                str(t.get("dtype", "float32"))) for t in items)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{where}: `{key}` must be a list of {{name, shape, dtype}} ({e!r})") from None


def read_manifest(bundle: str | Path, verify: bool = True) -> Manifest:
    """Read and check `<bundle>/manifest.json`; with `verify`, also the model file's sha256."""
    bundle = Path(bundle)
    path = bundle / "manifest.json"
    if not bundle.is_dir():
        raise BundleError(f"no bundle folder at {bundle} (expected a folder written by `zoo export`)")
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle: it has no manifest.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}")
    if data["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {data['format_version']!r} is not supported "
                          f"(this runtime reads version {FORMAT_VERSION})")
    if data["format"] not in MODEL_FILES:
        raise BundleError(f"{path}: unknown format {data['format']!r}; expected one of {', '.join(MODEL_FILES)}")
    file = bundle / str(data["file"])
    if file.parent.resolve() != bundle.resolve():
        raise BundleError(f"{path}: `file` must name a file inside the bundle, got {data['file']!r}")
    if not file.is_file():
        raise BundleError(f"{bundle}: the model file {data['file']} named by manifest.json is missing")
    if verify and data.get("file_sha256"):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != data["file_sha256"]:
            raise BundleError(f"{file}: sha256 {digest[:12]}… does not match the manifest's "
                              f"{str(data['file_sha256'])[:12]}…; the bundle was modified or is incomplete")
    inputs, outputs = _tensors(data["inputs"], path, "inputs"), _tensors(data["outputs"], path, "outputs")
    if not inputs or not outputs:
        raise BundleError(f"{path}: a bundle needs at least one input and one output")
    return Manifest(bundle=bundle, model=str(data["model"]), task=str(data["task"]),
                    output_kind=str(data["output_kind"]), format=data["format"], file=file, inputs=inputs,
                    outputs=outputs, preprocess=dict(data.get("preprocess") or {}),
                    labels={k: list(v) for k, v in (data.get("labels") or {}).items()}, data=data)
