"""Reading a bundle: `manifest.json` and the model file beside it (docs/formats.md), nothing else."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from numbers import Real
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

NAME = "manifest.json"
FORMAT_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
TASKS = ("binary", "multiclass", "regression", "multi-output")
OUTPUT_KINDS = ("logits", "logit", "probability", "value")
PREPROCESS_KINDS = ("image", "tabular", "series", "onehot")
_REQUIRED = ("format_version", "model", "task", "output_kind", "format", "file", "inputs", "outputs")


class BundleError(ZooError):
    """A bundle folder that is missing, incomplete or inconsistent. Exit code 2 when the folder is not
    a bundle at all, 1 when a bundle is corrupted or tampered with (bad manifest, changed model file)."""


class _Bad(Exception):
    """One invalid manifest field: `field` (dotted path), what was expected, what was given."""

    def __init__(self, field: str, expected: str, given):
        super().__init__(field)
        self.field, self.expected, self.given = field, expected, given


def _given(value) -> str:
    text = json.dumps(value) if not isinstance(value, (set, bytes)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v)


def _tensors(items, key: str) -> tuple[TensorInfo, ...]:
    if not isinstance(items, list) or not items:
        raise _Bad(key, "a non-empty list of {name, shape, dtype}", items)
    out = []
    for i, t in enumerate(items):
        where = f"{key}[{i}]"
        if not isinstance(t, dict):
            raise _Bad(where, "an object {name, shape, dtype}", t)
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise _Bad(f"{where}.name", "a non-empty string", t.get("name"))
        shape = t.get("shape")
        if not isinstance(shape, list) or not shape or not all(
                (isinstance(d, str) and d) or (_is_int(d) and d > 0) for d in shape):
            raise _Bad(f"{where}.shape", "a non-empty list of positive integers and axis names", shape)
        dtype = t.get("dtype", "float32")
        try:
            if not isinstance(dtype, str) or np.dtype(dtype).kind not in "iuf":
                raise TypeError
        except TypeError:
            raise _Bad(f"{where}.dtype", "a numeric numpy dtype name such as \"float32\"", dtype) from None
        out.append(TensorInfo(t["name"], tuple(shape), dtype))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise _Bad(f"{key}[*].name", "distinct names", names)
    return tuple(out)


def _labels(data, outputs: tuple[TensorInfo, ...]) -> dict:
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise _Bad("labels", "an object {output name: [class names]}", labels)
    widths = {t.name: t.shape[-1] for t in outputs}
    for name, values in labels.items():
        if name not in widths:
            raise _Bad(f"labels.{name}", f"labels for an output ({', '.join(widths)})", name)
        width = widths[name]
        if not _is_int(width):
            raise _Bad(f"outputs.{name}.shape", "a fixed last dimension for a labelled output", width)
        want = 2 if width == 1 else width   # one binary column: [negative, positive]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise _Bad(f"labels.{name}", f"a list of {want} class names", values)
        if len(values) != want:
            what = " (a binary output of width 1 has [negative, positive])" if width == 1 else ""
            raise _Bad(f"labels.{name}", f"{want} class names, one per column of the output{what}",
                       f"{len(values)} names")
    return {k: list(v) for k, v in labels.items()}


def _check_image(pre: dict, key: str) -> None:
    size = pre.get("size")
    if not isinstance(size, list) or len(size) != 2 or not all(_is_int(d) and d > 0 for d in size):
        raise _Bad(f"{key}.size", "[height, width], two positive integers", size)
    if pre.get("mode", "RGB") not in ("RGB", "L"):
        raise _Bad(f"{key}.mode", '"RGB" or "L"', pre.get("mode"))
    if not _is_int(pre.get("pad", 0)) or pre.get("pad", 0) < 0:
        raise _Bad(f"{key}.pad", "a non-negative integer", pre.get("pad"))
    channels = 1 if pre.get("mode", "RGB") == "L" else 3
    if (pre.get("mean") is None) != (pre.get("std") is None):
        raise _Bad(f"{key}.mean/std", "both given or both null", [pre.get("mean"), pre.get("std")])
    for field in ("mean", "std"):
        v = pre.get(field)
        if v is not None and (not isinstance(v, list) or len(v) not in (1, channels)
                              or not all(_is_number(x) for x in v) or (field == "std" and min(v) <= 0)):
            raise _Bad(f"{key}.{field}", f"null or a list of {channels} finite numbers"
                       + (" > 0" if field == "std" else ""), v)
    if not isinstance(pre.get("flatten", False), bool):
        raise _Bad(f"{key}.flatten", "true or false", pre.get("flatten"))


def _check_tabular(pre: dict, key: str) -> None:
    columns = pre.get("columns")
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) and c for c in columns):
        raise _Bad(f"{key}.columns", "a non-empty list of column names", columns)
    if not _is_number(pre.get("scale", 1.0)):
        raise _Bad(f"{key}.scale", "a finite number", pre.get("scale"))
    if not isinstance(pre.get("standardize", False), bool):
        raise _Bad(f"{key}.standardize", "true or false", pre.get("standardize"))
    for field in ("mean", "std"):
        v = pre.get(field)
        if v is not None and (not isinstance(v, list) or len(v) != len(columns)
                              or not all(_is_number(x) for x in v) or (field == "std" and min(v) <= 0)):
            raise _Bad(f"{key}.{field}", f"null or a list of {len(columns)} finite numbers (one per column)", v)


def _check_series(pre: dict, key: str) -> None:
    if not isinstance(pre.get("column"), str) or not pre["column"]:
        raise _Bad(f"{key}.column", "a column name", pre.get("column"))
    if not _is_int(pre.get("window")) or pre["window"] < 1:
        raise _Bad(f"{key}.window", "a positive integer", pre.get("window"))


def _check_onehot(pre: dict, key: str) -> None:
    v = pre.get("vocabulary")
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise _Bad(f"{key}.vocabulary", "a non-empty list of category names", v)


_PREPROCESS_CHECKS = {"image": _check_image, "tabular": _check_tabular, "series": _check_series,
                      "onehot": _check_onehot}


def _preprocess(data, inputs: tuple[TensorInfo, ...]) -> dict:
    preprocess = data.get("preprocess") or {}
    if not isinstance(preprocess, dict):
        raise _Bad("preprocess", "an object {input name: preprocessing}", preprocess)
    names = [t.name for t in inputs]
    for name, pre in preprocess.items():
        key = f"preprocess.{name}"
        if name not in names:
            raise _Bad(key, f"preprocessing for an input ({', '.join(names)})", name)
        if not isinstance(pre, dict):
            raise _Bad(key, "an object with a `kind`", pre)
        if pre.get("kind") not in PREPROCESS_KINDS:
            raise _Bad(f"{key}.kind", " | ".join(PREPROCESS_KINDS), pre.get("kind"))
        _PREPROCESS_CHECKS[pre["kind"]](pre, key)
    return dict(preprocess)


def _validate(data: dict) -> tuple:
    """(inputs, outputs, preprocess, labels), or _Bad for the first field the runtime cannot rely on."""
    if not isinstance(data["model"], str) or not data["model"]:
        raise _Bad("model", "a model name", data["model"])
    if data["task"] not in TASKS:
        raise _Bad("task", " | ".join(TASKS), data["task"])
    if data["output_kind"] not in OUTPUT_KINDS:
        raise _Bad("output_kind", " | ".join(OUTPUT_KINDS), data["output_kind"])
    if data["format"] not in MODEL_FILES:
        raise _Bad("format", " | ".join(MODEL_FILES), data["format"])
    if data["file"] != MODEL_FILES[data["format"]]:
        raise _Bad("file", f"{MODEL_FILES[data['format']]!r} for format {data['format']}", data["file"])
    if not isinstance(data.get("weights", {}), (dict, type(None))):
        raise _Bad("weights", "an object {sha256, random, seed, source, metrics}", data["weights"])
    inputs, outputs = _tensors(data["inputs"], "inputs"), _tensors(data["outputs"], "outputs")
    return inputs, outputs, _preprocess(data, inputs), _labels(data, outputs)


def read_manifest(bundle: str | Path, verify: bool = True, require: tuple[str, ...] = ()) -> Manifest:
    """Read and check `<bundle>/manifest.json` (every field the runtime relies on: format, tensors and
    dtypes, labels against output widths, preprocessing per input); with `verify`, also the model file's
    sha256. `require` names further keys that must be present. Problems are one-line BundleErrors."""
    bundle = Path(bundle)
    path = bundle / NAME
    if not bundle.is_dir():
        raise BundleError(f"no bundle folder at {bundle} (expected a folder written by `zoo export`)")
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle: it has no manifest.json")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"cannot read {path}: {e} (the bundle is corrupted)", exit_code=1) from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__} (the bundle is corrupted)",
                          exit_code=1)
    missing = [k for k in (*_REQUIRED, *require) if k not in data]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}: the bundle is corrupted", exit_code=1)
    if data["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{path}: format_version {data['format_version']!r} is not supported "
                          f"(this zoo reads version {FORMAT_VERSION})", exit_code=1)
    try:
        inputs, outputs, preprocess, labels = _validate(data)
    except _Bad as e:
        raise BundleError(f"{path}: invalid `{e.field}`: expected {e.expected}, got {_given(e.given)}",
                          exit_code=1) from None
    file = bundle / data["file"]
    if not file.is_file():
        raise BundleError(f"{bundle}: the model file {data['file']} named by manifest.json is missing", exit_code=1)
    if verify and data.get("file_sha256"):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest != data["file_sha256"]:
            raise BundleError(f"{file}: sha256 {digest[:12]}… does not match the manifest's "
                              f"{str(data['file_sha256'])[:12]}…; the bundle was modified or is incomplete",
                              exit_code=1)
    return Manifest(bundle=bundle, model=data["model"], task=data["task"], output_kind=data["output_kind"],
                    format=data["format"], file=file, inputs=inputs, outputs=outputs, preprocess=preprocess,
                    labels=labels, data=data)
