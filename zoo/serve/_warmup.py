"""The check a model passes before it takes traffic: inputs run through the serving path (the batcher: the
same validation, queue and backend call as a request), outputs compared with what the bundle expects.

The inputs are the bundle's ONNX test vectors when its manifest lists them (`test_data`: files
`test_data_set_<k>/input_<i>.pb` and `output_<j>.pb`, serialized TensorProtos named after the graph's inputs
and outputs, as the ONNX Model Zoo lays them out, each with its sha256, and the tolerance to check them
with; docs/formats.md, "Test vectors"): the outputs must then match them. Without them, deterministic random
inputs of the declared shapes, whose outputs must have the declared shapes and be finite. The files are
read here without the onnx package (the server does not need it)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np

MAX_VECTOR_BYTES = 64 * 2**20       # a test vector file larger than this is refused unread
WARM_ROWS = 2
# TensorProto.DataType -> numpy
ONNX_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
              10: np.float16, 11: np.float64}


class CheckFailed(ValueError):
    """The model failed its check: the message says which input or output and how."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise CheckFailed("a test vector is not a valid TensorProto (truncated varint)")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def read_tensor(path: Path) -> tuple[str, np.ndarray]:
    """(name, array) of a serialized onnx.TensorProto: dims, data_type, name and raw_data or float_data /
    int64_data / double_data (the fields test vectors use), without the onnx package."""
    size = path.stat().st_size
    if size > MAX_VECTOR_BYTES:
        raise CheckFailed(f"{path}: {size} bytes, more than a test vector may have ({MAX_VECTOR_BYTES})")
    data, i = path.read_bytes(), 0
    dims, dtype, name, raw, packed = [], None, "", None, {}
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
            if number == 1:
                dims.append(value)
            elif number == 2:
                dtype = value
        elif wire == 2:
            length, i = _varint(data, i)
            chunk, i = data[i:i + length], i + length
            if number == 1:   # packed dims
                j = 0
                while j < len(chunk):
                    value, j = _varint(chunk, j)
                    dims.append(value)
            elif number == 8:
                name = chunk.decode("utf-8", "replace")
            elif number == 9:
                raw = chunk
            else:
                packed[number] = chunk
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise CheckFailed(f"{path}: not a valid TensorProto (wire type {wire})")
    if dtype not in ONNX_TYPES:
        raise CheckFailed(f"{path}: tensor data type {dtype} is not one zoo checks")
    np_type = np.dtype(ONNX_TYPES[dtype])
    if raw is None:   # typed fields: float_data (4), int64_data (7), double_data (10), packed
        field, fmt = {1: (4, "<f"), 7: (7, None), 11: (10, "<d")}.get(dtype, (None, None))
        if field not in packed:
            raise CheckFailed(f"{path}: tensor {name!r} has no raw_data (the only layout zoo reads for "
                              f"data type {dtype})")
        if fmt is None:
            values, j, chunk = [], 0, packed[field]
            while j < len(chunk):
                value, j = _varint(chunk, j)
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
            array = np.array(values, np.int64)
        else:
            array = np.array(struct.unpack(f"<{len(packed[field]) // struct.calcsize(fmt)}{fmt[1]}", packed[field]),
                             np_type)
    else:
        if len(raw) != int(np.prod(dims, dtype=np.int64)) * np_type.itemsize:
            raise CheckFailed(f"{path}: tensor {name!r} of shape {dims} has {len(raw)} bytes of data")
        array = np.frombuffer(raw, np_type)
    return name, array.reshape(dims)


def test_vectors(bundle: Path, manifest) -> list[tuple[dict, dict]]:
    """The bundle's test vectors, per set ({input: array}, {output: array}), each file checked against the
    sha256 the manifest lists for it first; [] when the manifest lists none."""
    files = ((manifest.data.get("test_data") or {}).get("files")) or {}
    if not isinstance(files, dict):
        raise CheckFailed("the manifest's test_data.files is not a table of file names and sha256s")
    sets: dict[str, dict] = {}
    for name, digest in sorted(files.items()):
        folder, _, leaf = str(name).partition("/")
        kind = leaf.split("_")[0]
        if not folder.startswith("test_data_set_") or kind not in ("input", "output") or "/" in leaf or ".." in name:
            continue   # golden cases of raw-input bundles, which zoo serve does not serve
        path = Path(bundle) / name
        if not path.is_file() or path.stat().st_size > MAX_VECTOR_BYTES:
            raise CheckFailed(f"test vector {name} is missing or over {MAX_VECTOR_BYTES} bytes")
        with open(path, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != digest:
                raise CheckFailed(f"test vector {name} was changed after export (its sha256 is not the manifest's)")
        tensor, array = read_tensor(path)
        sets.setdefault(folder, {"input": {}, "output": {}})[kind][tensor] = array
    out = []
    for folder, arrays in sorted(sets.items()):
        for kind, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
            if sorted(arrays[kind]) != sorted(t.name for t in specs):
                raise CheckFailed(f"{folder}: its {kind}s are {sorted(arrays[kind])}, the model's "
                                  f"{[t.name for t in specs]}")
        out.append((arrays["input"], arrays["output"]))
    return out


def random_inputs(manifest, rows: int = WARM_ROWS, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs of the declared shapes (dynamic axes: the exporter's example sizes, `batch` = rows)."""
    examples = (manifest.data.get("exporter") or {}).get("example_sizes") or {}
    rng = np.random.default_rng(seed)
    out = {}
    for t in manifest.inputs:
        shape = [rows if d == "batch" else int(examples.get(d, 4)) if isinstance(d, str) else int(d) for d in t.shape]
        out[t.name] = rng.standard_normal(shape).astype(t.dtype)
    return out


def check_outputs(manifest, inputs: dict, outputs: dict, expected: dict | None) -> None:
    """Every declared output, of the declared shape, finite; equal to `expected` within the tolerance of the
    manifest's test_data when given (|got - expected| <= atol + rtol * |expected|). CheckFailed says what
    differs."""
    rows = len(next(iter(inputs.values())))
    tolerance = ((manifest.data.get("test_data") or {}).get("tolerance") or {})
    rtol, atol = float(tolerance.get("rtol", 1e-3)), float(tolerance.get("atol", 1e-4))
    for t in manifest.outputs:
        if t.name not in outputs:
            raise CheckFailed(f"output {t.name!r} is missing")
        got = np.asarray(outputs[t.name])
        fixed = [rows if d == "batch" else d for d in t.shape]
        if got.ndim != len(fixed) or any(isinstance(d, int) and d != n for d, n in zip(fixed, got.shape)):
            raise CheckFailed(f"output {t.name!r} has shape {list(got.shape)}, expected {fixed}")
        if not np.all(np.isfinite(got)):
            raise CheckFailed(f"output {t.name!r} has values that are not finite")
        if expected is not None:
            want = expected[t.name]
            if got.shape != want.shape or not np.all(np.abs(got - want) <= atol + rtol * np.abs(want)):
                worst = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("nan")
                raise CheckFailed(f"output {t.name!r} differs from the bundle's test vector (largest difference "
                                  f"{worst:.3g}, tolerance atol {atol:g} + rtol {rtol:g})")


async def check_model(batcher, manifest, bundle: Path) -> str:
    """Run the check through `batcher` (started); returns what was checked, or raises CheckFailed."""
    vectors = test_vectors(bundle, manifest)
    cases = vectors or [(random_inputs(manifest, seed=s), None) for s in range(2)]
    for inputs, expected in cases:
        try:
            outputs = await batcher.predict(inputs)
        except ValueError as e:
            raise CheckFailed(f"the model refused its check inputs: {e}") from None
        check_outputs(manifest, inputs, outputs, expected)
    return (f"matches its {len(vectors)} test vector set(s)" if vectors else
            "gave finite outputs of the declared shapes on random inputs (the bundle has no test vectors)")
