"""Reading a bundle: `manifest.json` and the model file beside it (docs/formats.md), nothing else.

Export seals the manifest into the model file (ONNX metadata, a TorchScript / torch.export extra file):
everything but the figures measured on the finished file (`UNSEALED`). `load` checks the model file's
sha256 against the manifest and the manifest against that sealed copy, so an edited manifest (renamed
labels, another mean) or a swapped model file is refused rather than served."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from zoo.contract import InvalidField, Preprocess, Signature, TensorSpec, first_difference
from zoo.errors import ZooError
from zoo.runtime._raw import KEY as RAW_KEY, RawInputs

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 3
# 1: written before the preprocessing gained categories, ranges and min-max; 2: before `external_data` was sealed
READABLE_VERSIONS = (1, 2, 3)
MAX_MANIFEST_BYTES = 4 * 2**20   # the largest zoo writes are about 40 KB (964 labels); read no more than this
MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt2": "model.pt2"}
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
class WeightsRecord:
    """A manifest's `weights`: the weights a bundle was exported from."""
    sha256: str | None = None       # the weights file's
    random: bool = False            # untrained weights (`--random-weights`), built with `seed`
    seed: int | None = None
    source: str | None = None       # the weights file's name
    metrics: dict | None = None     # the weights card's metrics, per split
    caveat: str | None = None       # what the card says the weights cannot be trusted for

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "WeightsRecord":
        """The record as `read_manifest` checked it (a field of the wrong type is refused there)."""
        data = data or {}
        return cls(data.get("sha256"), bool(data.get("random", False)), data.get("seed"), data.get("source"),
                   data.get("metrics"), data.get("caveat"))

    def same_as(self, other: "WeightsRecord") -> bool:
        """The same weights: the same file (sha256), or the same seed of random weights."""
        if self.random or other.random:
            return self.random and other.random and self.seed == other.seed
        return self.sha256 is not None and self.sha256 == other.sha256

    def describe(self, path: Path | None = None) -> str:
        """In words: random weights, or the file (`path`, else its name) and the start of its sha256."""
        if self.random:
            return f"random weights (seed {self.seed})"
        return f"{path or self.source or 'a weights file'} (sha256 {str(self.sha256)[:12]}…)"


@dataclass(frozen=True)
class Manifest:
    """A bundle's manifest as read and checked. `signature` is the model's contract: for a raw-input bundle,
    the network's inside the graph, while `inputs` and `outputs` are always the model file's own tensors."""
    bundle: Path                       # the bundle folder
    model: str
    format: str                        # onnx | torchscript | pt2
    file: Path                         # the model file, inside `bundle`
    signature: Signature               # task, output kind, tensors, labels and fitted preprocessing
    data: dict                         # the whole manifest, as read
    raw: RawInputs | None = None       # raw-input bundles: the preprocessing is in the graph

    @property
    def task(self) -> str:
        return self.signature.task

    @property
    def output_kind(self) -> str:
        return self.signature.output_kind

    @property
    def preprocess(self) -> dict[str, Preprocess]:
        return dict(self.signature.preprocess)

    @functools.cached_property
    def labels(self) -> dict[str, list[str]]:
        """Output name -> class names, as the manifest lists them."""
        return {name: list(values) for name, values in self.signature.labels.items()}

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The tensors the model file takes (a raw-input bundle's: pixels, columns, names)."""
        return self.signature.inputs if self.raw is None else self.raw.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.signature.outputs if self.raw is None else self.raw.outputs

    @property
    def network_inputs(self) -> tuple[TensorSpec, ...]:
        """The tensors the network takes: `inputs` itself, except in a raw-input bundle."""
        return self.signature.inputs

    @property
    def is_classifier(self) -> bool:
        return self.signature.is_classifier

    @functools.cached_property
    def weights(self) -> WeightsRecord:
        return WeightsRecord.from_dict(self.data.get("weights"))

    @property
    def random_weights(self) -> bool:
        return self.weights.random

    @property
    def caveat(self) -> str | None:
        """What the weights' card says the model cannot be trusted for (e.g. a forecaster no better than
        persistence on a new year), or None."""
        return self.weights.caveat

    @property
    def precision(self) -> str:
        """fp32, or the reduced precision the bundle was written in (fp16, int8-dynamic, int8-static)."""
        return (self.data.get("precision") or {}).get("name", "fp32")


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
        signature, raw = _signature(data)
    except InvalidField as e:
        raise BundleError(f"{path}: {e}", exit_code=1) from None
    file = bundle / data["file"]
    if not file.is_file():
        raise BundleError(f"{bundle}: the model file {data['file']} named by {MANIFEST_NAME} is missing", exit_code=1)
    return Manifest(bundle=bundle, model=data["model"], format=data["format"], file=file, signature=signature,
                    data=data, raw=raw)


def _signature(data: dict) -> tuple[Signature, RawInputs | None]:
    """The model's signature, and for a raw-input bundle the graph around its network."""
    if RAW_KEY not in data:
        return Signature.from_dict(data), None
    if data["format"] != "onnx":
        raise InvalidField(RAW_KEY, "raw inputs only in an onnx bundle", data["format"])
    inputs = TensorSpec.list_from_dicts(data["inputs"], "inputs")
    outputs = TensorSpec.list_from_dicts(data["outputs"], "outputs")
    raw = RawInputs.from_dict(data[RAW_KEY], inputs, outputs)
    return Signature.from_dict(data, raw.network_inputs, raw.network_outputs), raw


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


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
