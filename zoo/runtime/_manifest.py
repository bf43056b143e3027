"""Reading a bundle: `manifest.json` and the model file beside it (docs/formats.md), nothing else.

Export seals the manifest into the model file (ONNX metadata, a TorchScript / torch.export extra file):
everything but the figures measured on the finished file (`UNSEALED`). `load` checks the model file's
sha256 against the manifest and the manifest against that sealed copy, so an edited manifest (renamed
labels, another mean) or a swapped model file is refused rather than served."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from zoo.contract import InvalidField, Preprocess, TensorSpec, preprocessing_from_dict
from zoo.errors import ZooError
from zoo.runtime._raw import KEY as RAW_KEY, RawInputs

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 3
# 1: written before the preprocessing gained categories, ranges and min-max; 2: before `external_data` was sealed
READABLE_VERSIONS = (1, 2, 3)
MAX_MANIFEST_BYTES = 4 * 2**20   # the largest zoo writes are about 40 KB (964 labels); read no more than this
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
TASKS = ("binary", "multiclass", "regression", "multi-output")
OUTPUT_KINDS = ("logits", "logit", "probability", "value")
REQUIRED = ("format_version", "model", "task", "output_kind", "format", "file", "inputs", "outputs")
UNSEALED = ("file_sha256", "parity", "accuracy", "test_data")   # measured on the finished model file, not sealed
SEAL_KEY = "zoo.manifest"                          # the sealed copy's name inside the model file


class BundleError(ZooError):
    """A bundle folder that is missing, incomplete or inconsistent. Exit code 2 when the folder is not
    a bundle at all, 1 when a bundle is corrupted or tampered with (bad manifest, changed model file)."""


class UnsealedBundle(BundleError):
    """The model file carries no sealed manifest (a bundle exported before zoo sealed them)."""


def sealed(manifest: dict) -> dict:
    """The part of a manifest that is sealed into the model file."""
    return {k: v for k, v in manifest.items() if k not in UNSEALED}


def seal_text(manifest: dict) -> str:
    return json.dumps(sealed(manifest), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Manifest:
    bundle: Path                       # the bundle folder
    model: str
    task: str                          # binary | multiclass | regression | multi-output
    output_kind: str                   # logits | logit | probability | value
    format: str                        # onnx | torchscript | pt2
    file: Path                         # the model file, inside `bundle`
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: dict[str, Preprocess]  # input name -> preprocessing, fitted
    labels: dict[str, list[str]]       # output name -> class names
    data: dict                         # the whole manifest, as read
    raw: RawInputs | None = None       # raw-input bundles: the preprocessing is in the graph

    @property
    def network_inputs(self) -> tuple[TensorSpec, ...]:
        """The tensors the network takes: `inputs` itself, except in a raw-input bundle."""
        return self.inputs if self.raw is None else self.raw.network_inputs

    @property
    def random_weights(self) -> bool:
        return bool((self.data.get("weights") or {}).get("random", False))

    @property
    def precision(self) -> str:
        """fp32, or the reduced precision the bundle was written in (fp16, int8-dynamic, int8-static)."""
        return (self.data.get("precision") or {}).get("name", "fp32")

    @property
    def caveat(self) -> str | None:
        """What the weights' card says the model cannot be trusted for (e.g. a forecaster no better than
        persistence on a new year), or None."""
        return (self.data.get("weights") or {}).get("caveat")

    @property
    def is_classifier(self) -> bool:
        return self.task in ("binary", "multiclass", "multi-output") and bool(self.labels)


def _labels(data, outputs: tuple[TensorSpec, ...]) -> dict:
    labels = data.get("labels") or {}
    if not isinstance(labels, dict):
        raise InvalidField("labels", "an object {output name: [class names]}", labels)
    widths = {t.name: t.shape[-1] for t in outputs}
    for name, values in labels.items():
        if name not in widths:
            raise InvalidField(f"labels.{name}", f"labels for an output ({', '.join(widths)})", name)
        width = widths[name]
        if not isinstance(width, int):
            raise InvalidField(f"outputs.{name}.shape", "a fixed last dimension for a labelled output", width)
        want = 2 if width == 1 else width   # one binary column: [negative, positive]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidField(f"labels.{name}", f"a list of {want} class names", values)
        if len(values) != want:
            what = " (a binary output of width 1 has [negative, positive])" if width == 1 else ""
            raise InvalidField(f"labels.{name}", f"{want} class names, one per column of the output{what}",
                               f"{len(values)} names")
    return {k: list(v) for k, v in labels.items()}


def _object(data: dict, key: str, expected: str) -> dict:
    """An optional object field: {} when absent or null, else it must be an object."""
    value = data.get(key)
    if value is not None and not isinstance(value, dict):
        raise InvalidField(key, f"an object {expected} or null", value)
    return value or {}


def _check_records(data: dict) -> None:
    """The bookkeeping records that the commands read (weights, precision, parity, accuracy, checksums)."""
    weights = _object(data, "weights", "{sha256, random, seed, source, metrics, caveat}")
    for key in ("caveat", "sha256", "source"):
        if not isinstance(weights.get(key), (str, type(None))):
            raise InvalidField(f"weights.{key}", "a string or null", weights[key])
    if not isinstance(weights.get("random", False), bool):
        raise InvalidField("weights.random", "true or false", weights["random"])
    precision = _object(data, "precision", "{name, method, settings, ...}")
    if "name" in precision and not (isinstance(precision["name"], str) and precision["name"]):
        raise InvalidField("precision.name", 'a precision name such as "fp32"', precision["name"])
    for key in ("parity", "accuracy", "exporter", "versions"):
        _object(data, key, "")
    if not isinstance(data.get("file_sha256", ""), (str, type(None))):
        raise InvalidField("file_sha256", "the model file's sha256 as 64 hex digits", data["file_sha256"])
    files = data.get("external_data", {})
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise InvalidField("external_data", "an object {file name: sha256}", files)


def _check_top(data: dict) -> None:
    if not isinstance(data["model"], str) or not data["model"]:
        raise InvalidField("model", "a model name", data["model"])
    if data["task"] not in TASKS:
        raise InvalidField("task", " | ".join(TASKS), data["task"])
    if data["output_kind"] not in OUTPUT_KINDS:
        raise InvalidField("output_kind", " | ".join(OUTPUT_KINDS), data["output_kind"])
    if data["format"] not in MODEL_FILES:
        raise InvalidField("format", " | ".join(MODEL_FILES), data["format"])
    if data["file"] != MODEL_FILES[data["format"]]:
        raise InvalidField("file", f"{MODEL_FILES[data['format']]!r} for format {data['format']}", data["file"])
    _check_records(data)


def read_manifest(bundle: str | Path, require: tuple[str, ...] = ()) -> Manifest:
    """Read and check `<bundle>/manifest.json`: every field the runtime relies on (format, tensors and
    dtypes, labels against output widths, preprocessing per input). `require` names further keys that
    must be present. Problems are one-line BundleErrors naming the field. The model file's checksum and
    the seal are checked by `load`."""
    bundle = Path(bundle)
    path = bundle / MANIFEST_NAME
    if not bundle.is_dir():
        raise BundleError(f"no bundle folder at {bundle} (expected a folder written by `zoo export`)")
    if not path.is_file():
        raise BundleError(f"{bundle} is not a bundle: it has no {MANIFEST_NAME}")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object, got {type(data).__name__} (the bundle is corrupted)",
                          exit_code=1)
    missing = [k for k in (*REQUIRED, *require) if k not in data]
    if missing:
        raise BundleError(f"{path} lacks {', '.join(missing)}: the bundle is corrupted", exit_code=1)
    if data["format_version"] not in READABLE_VERSIONS:
        raise BundleError(f"{path}: format_version {data['format_version']!r} is not supported "
                          f"(this zoo reads versions {', '.join(map(str, READABLE_VERSIONS))})", exit_code=1)
    try:
        _check_top(data)
        inputs = TensorSpec.list_from_dicts(data["inputs"], "inputs")
        outputs = TensorSpec.list_from_dicts(data["outputs"], "outputs")
        raw = RawInputs.from_dict(data[RAW_KEY], inputs, outputs) if RAW_KEY in data else None
        if raw is not None and data["format"] != "onnx":
            raise InvalidField(RAW_KEY, "raw inputs only in an onnx bundle", data["format"])
        preprocess = preprocessing_from_dict(data.get("preprocess"), inputs if raw is None else raw.network_inputs)
        labels = _labels(data, outputs)
    except InvalidField as e:
        raise BundleError(f"{path}: {e}", exit_code=1) from None
    file = bundle / data["file"]
    if not file.is_file():
        raise BundleError(f"{bundle}: the model file {data['file']} named by {MANIFEST_NAME} is missing", exit_code=1)
    return Manifest(bundle=bundle, model=data["model"], task=data["task"], output_kind=data["output_kind"],
                    format=data["format"], file=file, inputs=inputs, outputs=outputs, preprocess=preprocess,
                    labels=labels, data=data, raw=raw)


def _read_json(path: Path):
    """The manifest's JSON, refused by its size before it is read whole, and by its nesting while parsed."""
    try:
        with path.open("rb") as f:
            text = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise BundleError(f"cannot read {path}: {e} (the bundle is corrupted)", exit_code=1) from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB, far more than any manifest zoo "
                          "writes (about 40 KB at most): refused unread (the bundle is corrupted)", exit_code=1)
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"cannot read {path}: {e} (the bundle is corrupted)", exit_code=1) from None
    except RecursionError:
        raise BundleError(f"cannot read {path}: its JSON is nested too deeply for a manifest (the bundle is "
                          "corrupted)", exit_code=1) from None


def check_seal(manifest: Manifest, seal: str | None) -> None:
    """The manifest against the copy sealed into its model file; BundleError naming the first difference."""
    where = f"{manifest.bundle / MANIFEST_NAME}"
    if seal is None:
        raise UnsealedBundle(f"{manifest.file} carries no sealed copy of its manifest (exported by an older zoo or "
                          "not by zoo export), so an edited manifest could not be told apart: re-export the bundle, "
                          "or load it with verify=False (zoo predict --no-verify) if you trust it", exit_code=1)
    try:
        copy = json.loads(seal)
    except (json.JSONDecodeError, RecursionError):
        raise BundleError(f"{manifest.file}: its sealed manifest is not valid JSON (the file is corrupted)",
                          exit_code=1) from None
    given, expected = sealed(manifest.data), sealed(copy) if isinstance(copy, dict) else {}
    if given == expected:
        return
    key, mine, theirs = first_difference(given, expected)
    raise BundleError(f"{where} was edited after export: {key} is {_short(mine)}, but the copy sealed in "
                      f"{manifest.file.name} says {_short(theirs)}; re-export the bundle instead of editing it",
                      exit_code=1)


# the order differences are reported in: what changes answers first, bookkeeping last
_ORDER = ("model", "task", "output_kind", "format", "file", "inputs", "outputs", "preprocess", "labels", "weights")


def first_difference(a, b, path: str = "") -> tuple[str, object, object]:
    """(dotted key, value in a, value in b) of the first place where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        rank = {key: i for i, key in enumerate(_ORDER)} if not path else {}
        for key in sorted(set(a) | set(b), key=lambda k: (rank.get(k, len(rank)), str(k))):
            if a.get(key) != b.get(key) or (key in a) != (key in b):
                return first_difference(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, f"{path}[{i}]")
    return path or "(the whole manifest)", a, b


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
