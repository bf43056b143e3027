"""Triton model repositories made from ONNX bundles (docs/formats.md, "Triton model repositories").

`model_config` derives a model's configuration from its manifest as a dict in the field names of Triton's
`ModelConfig` protobuf (what Triton answers at /v2/models/{name}/config); `config_text` writes it as
config.pbtxt. Variants of each model:

- `onnxruntime`: platform onnxruntime_onnx, `1/model.onnx`: for the NGC Triton container on a GPU cluster;
- `python`: Triton's Python backend running the bundle (`1/manifest.json` + `1/model.onnx`) through
  zoo.runtime (`1/model.py`, from triton_model.py). It needs zoo installed in the Python environment of
  Triton's Python-backend stub. With `raw=True` it is the model `<name>-raw`, whose inputs are the raw
  forms `<input>_raw` (BYTES, one element per row: an image file, a JSON record, a JSON series, a category
  name) taken through the manifest's preprocessing. Raw inputs are a model of their own, not optional
  inputs beside the tensors: standard Triton tools (perf_analyzer, shared memory) fill every input a model
  declares, and Triton has no way to say "these inputs or those".

Labelled outputs whose width is their number of labels get a label file (`<output>.labels.txt`), so
Triton's classification extension answers with labels."""

from __future__ import annotations

import shutil
from pathlib import Path

from zoo.errors import ZooError
from zoo.outputs import atomic_write, clean_stale_staging, staging_folder, swap_into_place, writable_folder
from zoo.serve._protocol import RAW_MODEL_SUFFIX, RAW_SUFFIX, datatype, dims, label_file_labels, takes_raw

PYTHON_MODEL = Path(__file__).with_name("triton_model.py")
BACKENDS = ("onnxruntime", "python")
KINDS = ("KIND_CPU", "KIND_GPU", "KIND_AUTO")


class Enum(str):
    """A protobuf enum value: written unquoted in config.pbtxt."""


def label_file(output: str) -> str:
    return f"{output}.labels.txt"


def raw_model_name(name: str) -> str:
    """The model taking `name`'s inputs raw, through its preprocessing (on either engine)."""
    return f"{name}{RAW_MODEL_SUFFIX}"


def model_config(manifest, name: str, backend: str = "onnxruntime", max_batch_size: int = 64,
                 max_queue_delay_us: int = 0, instances: int = 1, kind: str = "KIND_CPU",
                 threads: int | None = None, raw: bool = False) -> dict:
    """The model's Triton configuration. Inputs and outputs: the manifest's names, TYPE_FP32, dims without
    the batch axis and -1 for the other dynamic axes; dynamic batching; `instances` instances of `kind`.
    With `raw` (Python backend only), the inputs are `<input>_raw` instead, TYPE_STRING with dims [1]."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if raw and (backend != "python" or not takes_raw(manifest)):
        raise ValueError("a raw-input model runs on the Python backend, for a bundle whose every input has "
                         "preprocessing")
    tensors = (*manifest.inputs, *manifest.outputs)
    batched = all(t.shape[0] == "batch" for t in tensors)
    python = backend == "python"

    def tensor(t, **extra) -> dict:
        shape = t.shape[1:] if batched else t.shape
        return {"name": t.name, "data_type": Enum(f"TYPE_{datatype(t.dtype)}"),
                "dims": dims(shape), **extra}

    config: dict = {"name": name}
    if python:
        config["backend"] = "python"
    else:
        config["platform"] = "onnxruntime_onnx"
    config["max_batch_size"] = max_batch_size if batched else 0
    if raw:   # one encoded value per row: shape [batch, 1]
        config["input"] = [{"name": f"{t.name}{RAW_SUFFIX}", "data_type": Enum("TYPE_STRING"),
                            "dims": [1] if batched else [-1, 1]} for t in manifest.inputs]
    else:
        config["input"] = [tensor(t) for t in manifest.inputs]
    config["output"] = [tensor(t, label_filename=label_file(t.name)) if label_file_labels(manifest, t.name)
                        else tensor(t) for t in manifest.outputs]
    if batched:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": int(max_queue_delay_us)}
    config["instance_group"] = [{"count": int(instances), "kind": Enum(kind)}]
    parameters = {}
    if python:
        parameters["threads"] = str(threads or 0)   # 0: the runtime's default, the cores the stub may use
        parameters["inputs"] = "raw" if raw else "tensors"
    elif threads:
        parameters["intra_op_thread_count"] = str(threads)
    if parameters:
        config["parameters"] = {k: {"string_value": v} for k, v in parameters.items()}
    return config


def _quote(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return _quote(str(value))


def _lines(message: dict, depth: int):
    pad = "  " * depth
    for key, value in message.items():
        if key == "parameters":   # map<string, ModelParameter>: one entry per key
            for k, v in value.items():
                yield f"{pad}parameters {{ key: {_quote(k)} value {{ string_value: {_quote(v['string_value'])} }} }}"
        elif isinstance(value, dict):
            yield f"{pad}{key} {{"
            yield from _lines(value, depth + 1)
            yield f"{pad}}}"
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                yield f"{pad}{key} {{"
                yield from _lines(item, depth + 1)
                yield f"{pad}}}"
        elif isinstance(value, list):
            yield f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]"
        else:
            yield f"{pad}{key}: {_scalar(value)}"


def config_text(config: dict) -> str:
    """config.pbtxt: the configuration in protobuf text format."""
    return "\n".join(_lines(config, 0)) + "\n"


def write_model(repository: Path, manifest, name: str, backend: str, **options) -> Path:
    """Write (or replace, atomically) one model folder `<repository>/<name>/` from an ONNX bundle
    (`options`: those of model_config)."""
    if manifest.format != "onnx":
        raise ZooError(f"{manifest.bundle} is a {manifest.format} bundle; Triton repositories are made from ONNX "
                       f"bundles (zoo export {manifest.model} --format onnx)")
    repository = writable_folder(repository, "Triton model repository")
    clean_stale_staging(repository, name)
    stage = staging_folder(repository, name)
    try:
        config = model_config(manifest, name, backend, **options)
        atomic_write(stage / "config.pbtxt", lambda tmp: tmp.write_text(config_text(config)))
        for output in manifest.outputs:
            labels = label_file_labels(manifest, output.name)
            if labels:
                (stage / label_file(output.name)).write_text("".join(f"{label}\n" for label in labels))
        version = stage / "1"
        version.mkdir()
        shutil.copyfile(manifest.file, version / "model.onnx")
        if backend == "python":
            shutil.copyfile(manifest.bundle / "manifest.json", version / "manifest.json")
            shutil.copyfile(PYTHON_MODEL, version / "model.py")
        swap_into_place(stage, repository / name, lambda folder: (folder / "config.pbtxt").is_file(),
                        zoo_writes=lambda entry: entry in ("config.pbtxt", "1") or entry.endswith(".labels.txt"))
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return repository / name


def export_repository(manifests, repository: Path, **options) -> list[Path]:
    """What `zoo export --format triton` writes for each bundle: `<model>` (onnxruntime_onnx, instances of
    KIND_AUTO: on the GPU when the server has one), `<model>-python` (the Python-backend variant) and
    `<model>-raw` (raw inputs, Python backend); a reduced-precision bundle as `<model>-<precision>` beside
    the fp32 one."""
    folders = []
    for manifest in manifests:
        name = manifest.model if manifest.precision == "fp32" else f"{manifest.model}-{manifest.precision}"
        folders.append(write_model(repository, manifest, name, "onnxruntime", kind="KIND_AUTO", **options))
        folders.append(write_model(repository, manifest, f"{name}-python", "python", kind="KIND_AUTO", **options))
        if takes_raw(manifest):
            folders.append(write_model(repository, manifest, raw_model_name(name), "python", kind="KIND_AUTO",
                                       raw=True, **options))
    return folders


def serving_repository(manifests, repository: Path, **options) -> list[Path]:
    """What `zoo serve --engine triton` runs: each bundle as a Python-backend model under the model's own
    name (the Triton in the nvidia-pytriton wheel has no ONNX Runtime backend), and `<model>-raw` beside
    it, so clients use the same model names with either engine."""
    folders = []
    for m in manifests:
        folders.append(write_model(repository, m, m.model, "python", **options))
        if takes_raw(m):
            folders.append(write_model(repository, m, raw_model_name(m.model), "python", raw=True, **options))
    return folders
