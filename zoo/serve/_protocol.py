"""The Open Inference Protocol (KServe v2) on the wire: model metadata, and infer requests and responses as
JSON tensors or with Triton's binary-tensor extension (a JSON header of `Inference-Header-Content-Length`
bytes, then each binary tensor's bytes in order) and its classification extension.

Everything a client can get wrong is a `RequestError` carrying the HTTP status and one line naming what was
wrong and what was expected. Nothing here knows about HTTP frameworks or the batching."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

# OIP datatypes <-> numpy
DATATYPES = {"BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
             "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
             "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
             "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64)}
NUMPY_TO_DATATYPE = {v: k for k, v in DATATYPES.items()}
RAW_SUFFIX = "_raw"       # `image_raw`: the raw form of input `image` (BYTES), through the manifest's preprocessing
RAW_MODEL_SUFFIX = "-raw"  # `clouds-cnn-raw`: the model taking clouds-cnn's inputs raw
PLATFORMS = {"onnx": "onnxruntime_onnx", "torchscript": "pytorch_libtorch", "pt2": "torch_export"}
VERSION = "1"             # a bundle is one model version


class RequestError(Exception):
    """A request the client can fix: HTTP status and one line saying what was wrong and what was expected."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def datatype(dtype) -> str:
    return NUMPY_TO_DATATYPE[np.dtype(dtype)]


def dims(shape) -> list[int]:
    """A manifest shape -> protocol dims: -1 for every dynamic (named) axis."""
    return [-1 if isinstance(d, str) else int(d) for d in shape]


def label_file_labels(manifest, output: str) -> list[str] | None:
    """The labels of an output as one per column (what Triton's label file and classification extension
    use), or None: a binary output of width 1 has two labels for one column and gets no label file."""
    labels = manifest.labels.get(output)
    spec = next(t for t in manifest.outputs if t.name == output)
    return labels if labels and len(labels) == spec.shape[-1] else None


def takes_raw(manifest) -> bool:
    """Whether every input has preprocessing, so that the model has a raw-input variant `<name>-raw`."""
    return all(t.name in manifest.preprocess for t in manifest.inputs)


def model_metadata(manifest, name: str, raw: bool = False) -> dict:
    """GET /v2/models/{name}: names, datatypes and shapes (-1 for dynamic axes) from the manifest; the labels
    of each labelled output as its `labels` parameter (a JSON list, since parameter values are scalars).
    With `raw`, the metadata of the raw-input model: `<input>_raw`, BYTES, shape [-1, 1]; without, the name
    of that model (when there is one) as parameter `raw_model`."""
    def tensor(t, labels=None):
        entry = {"name": t.name, "datatype": datatype(t.dtype), "shape": dims(t.shape)}
        if labels:
            entry["parameters"] = {"labels": json.dumps(labels)}
        return entry

    inputs = ([{"name": f"{t.name}{RAW_SUFFIX}", "datatype": "BYTES", "shape": [-1, 1]} for t in manifest.inputs]
              if raw else [tensor(t) for t in manifest.inputs])
    parameters = {"task": manifest.task, "output_kind": manifest.output_kind}
    if not raw and takes_raw(manifest):
        parameters["raw_model"] = name + RAW_MODEL_SUFFIX
    return {"name": name, "versions": [VERSION], "platform": "python" if raw else PLATFORMS[manifest.format],
            "inputs": inputs, "outputs": [tensor(t, manifest.labels.get(t.name)) for t in manifest.outputs],
            "parameters": parameters}


# --- requests ---------------------------------------------------------------------------------------

@dataclass
class InferRequest:
    id: str | None
    tensors: dict[str, np.ndarray]           # model inputs given as tensors
    raw: dict[str, list[bytes]]              # model input name -> one encoded raw value per row (`<input>_raw`)
    outputs: list[dict] | None               # the requested outputs, or None for all
    binary_output: bool                      # request parameter binary_data_output
    strict: bool = False                     # request parameter strict: refuse raw inputs unlike the training data
    parameters: dict = field(default_factory=dict)


def parse_json(text: bytes | str, what: str):
    """A client's JSON; whatever cannot be read (not JSON, not UTF-8, nested too deeply for the parser, an
    integer of more digits than Python converts) is a RequestError naming `what`."""
    try:
        return json.loads(text)
    except RecursionError:
        raise RequestError(f"{what} nests JSON arrays or objects too deeply to be read (expected tensors nested "
                           "no deeper than their shape)") from None
    except ValueError as e:   # JSONDecodeError, UnicodeDecodeError, an integer over Python's 4300 digits
        raise RequestError(f"{what} is not valid JSON: {e}") from None


def split_body(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    """The JSON header and the binary tail of an infer request (binary-tensor extension when
    `Inference-Header-Content-Length` is given)."""
    if header_length is None:
        header, tail = parse_json(body, "the request body"), b""
    else:
        try:
            n = int(header_length)
        except ValueError:
            n = -1
        if not 0 <= n <= len(body):
            raise RequestError(f"Inference-Header-Content-Length must be a byte count within the body's "
                               f"{len(body)} bytes, got {header_length!r}")
        header, tail = parse_json(body[:n], "the request's JSON header"), body[n:]
    if not isinstance(header, dict):
        raise RequestError(f"expected a JSON object with an `inputs` list, got {type(header).__name__}")
    return header, tail


def _bytes_elements(blob: bytes, name: str) -> list[bytes]:
    """Triton's BYTES serialisation: each element a 4-byte little-endian length, then its bytes."""
    out, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            raise RequestError(f"input {name!r}: truncated BYTES data (a 4-byte length prefix is cut short)")
        (n,) = struct.unpack_from("<I", blob, i)
        if i + 4 + n > len(blob):
            raise RequestError(f"input {name!r}: an element says {n} bytes but only {len(blob) - i - 4} remain")
        out.append(blob[i + 4:i + 4 + n])
        i += 4 + n
    return out


def _numbers(data, name: str, dtype: np.dtype) -> np.ndarray:
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise RequestError(f"input {name!r}: `data` must be a flat or nested list of numbers of one shape") from None
    if array.dtype.kind not in "iuf" and not (array.dtype.kind == "b" and dtype.kind == "b") and array.size:
        raise RequestError(f"input {name!r}: `data` must hold numbers for datatype {datatype(dtype)}, "
                           f"got {'strings' if array.dtype.kind in 'USO' else array.dtype}")
    return array


def _unknown(name: str, specs: dict, raw_names: dict, model: str) -> RequestError:
    takes = ", ".join(raw_names or specs)
    if raw_names and name in specs:
        return RequestError(f"unknown input {name!r}: model {model!r} takes the raw inputs {takes}; send tensors to "
                            f"model {model.removesuffix(RAW_MODEL_SUFFIX)!r}")
    if not raw_names and name.endswith(RAW_SUFFIX) and name.removesuffix(RAW_SUFFIX) in specs:
        return RequestError(f"unknown input {name!r}: model {model!r} takes tensors ({takes}); send raw inputs to "
                            f"model {model + RAW_MODEL_SUFFIX!r}")
    return RequestError(f"unknown input {name!r}: model {model!r} takes {takes}")


def _tensor(entry: dict, index: int, tail: bytes, offset: int, specs: dict, raw_names: dict, model: str):
    """(input name, array or list of raw elements, is_raw, bytes of the binary tail used). `raw_names`
    (`<input>_raw` -> input) is empty for a model taking tensors; a raw-input model takes only those."""
    if not isinstance(entry, dict):
        raise RequestError(f"inputs[{index}] must be an object {{name, shape, datatype, data}}")
    name, shape, dt = entry.get("name"), entry.get("shape"), entry.get("datatype")
    if not isinstance(name, str):
        raise RequestError(f"inputs[{index}].name must be a string, got {name!r}")
    if name not in (raw_names or specs):
        raise _unknown(name, specs, raw_names, model)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise RequestError(f"input {name!r}: shape must be a list of non-negative integers, got {shape!r}")
    is_raw = name in raw_names
    want = "BYTES" if is_raw else datatype(specs[name].dtype)
    if dt != want:
        raise RequestError(f"input {name!r}: expected datatype {want}, got {dt!r}")
    count = math.prod(shape)
    params = entry.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(f"input {name!r}: parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(tail):
            raise RequestError(f"input {name!r}: binary_data_size {size!r} runs past the {len(tail) - offset} "
                               "binary bytes left in the body")
        blob = tail[offset:offset + size]
        if is_raw:
            values = _bytes_elements(blob, name)
        else:
            itemsize = DATATYPES[dt].itemsize
            if size != count * itemsize:
                raise RequestError(f"input {name!r}: shape {shape} of {dt} needs {count * itemsize} bytes, "
                                   f"got binary_data_size {size}")
            values = np.frombuffer(blob, DATATYPES[dt]).reshape(shape)
    else:
        size = 0
        if "data" not in entry:
            raise RequestError(f"input {name!r} has neither `data` nor a binary_data_size parameter")
        if is_raw:
            data = entry["data"]
            flat = data if isinstance(data, list) else [data]
            while flat and all(isinstance(x, list) for x in flat):
                flat = [y for x in flat for y in x]
            if not all(isinstance(x, str) for x in flat):
                raise RequestError(f"input {name!r}: BYTES `data` in JSON must be strings (send images as binary "
                                   "data: the binary-tensor extension)")
            values = [x.encode() for x in flat]
        else:
            values = _numbers(entry["data"], name, DATATYPES[dt])
            if values.size != count:
                raise RequestError(f"input {name!r}: shape {shape} has {count} elements but `data` has {values.size}")
            values = values.reshape(shape)
    if is_raw:
        if len(values) != count:
            raise RequestError(f"input {name!r}: shape {shape} has {count} elements but the data has {len(values)}")
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise RequestError(f"input {name!r}: expected shape [N] or [N, 1] (one raw value per row), got {shape}")
        return raw_names[name], values, True, size
    return name, values, False, size


def parse_infer(header: dict, tail: bytes, manifest, model: str, raw: bool = False) -> InferRequest:
    """An infer request's JSON header and binary tail -> the inputs as arrays (or, with `raw`, raw elements
    of `<input>_raw`), checked against the model's inputs: known names, each input given once, datatypes,
    and data that fills the declared shape. Values and model shapes are checked by the runtime."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("expected `inputs`: a non-empty list of {name, shape, datatype, data}")
    specs = {t.name: t for t in manifest.inputs}
    raw_names = {f"{n}{RAW_SUFFIX}": n for n in specs} if raw else {}
    tensors, raws, offset = {}, {}, 0
    for i, entry in enumerate(inputs):
        name, values, is_raw, used = _tensor(entry, i, tail, offset, specs, raw_names, model)
        offset += used
        if name in tensors or name in raws:
            raise RequestError(f"input {entry['name']!r} is given more than once")
        (raws if is_raw else tensors)[name] = values
    if offset != len(tail):
        raise RequestError(f"the body has {len(tail) - offset} binary bytes that no input's binary_data_size accounts for")
    missing = [n for n in specs if n not in tensors and n not in raws]
    if missing:
        takes = (", ".join(f"{n} (BYTES [-1, 1])" for n in raw_names) if raw else
                 ", ".join(f"{n} ({datatype(specs[n].dtype)} {dims(specs[n].shape)})" for n in specs))
        raise RequestError(f"missing input(s) {[n + RAW_SUFFIX if raw else n for n in missing]}: model {model!r} "
                           f"takes {takes}")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("request parameters must be an object")
    outputs = header.get("outputs")
    if outputs is not None:
        known = [t.name for t in manifest.outputs]
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise RequestError("`outputs` must be a list of {name, parameters}")
        for o in outputs:
            if o.get("name") not in known:
                raise RequestError(f"unknown output {o.get('name')!r}: model {model!r} gives {', '.join(known)}")
            if not isinstance(o.get("parameters") or {}, dict):
                raise RequestError(f"output {o['name']!r}: parameters must be an object")
    request_id = header.get("id")
    return InferRequest(id=request_id if isinstance(request_id, str) else None, tensors=tensors, raw=raws,
                        outputs=outputs, binary_output=parameters.get("binary_data_output") is True,
                        strict=parameters.get("strict") is True, parameters=parameters)


# --- responses --------------------------------------------------------------------------------------

def _serialize_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def classification(values: np.ndarray, k: int, labels: list[str] | None) -> np.ndarray:
    """Triton's classification extension: per row the k largest values as "value:index[:label]", largest first."""
    values = values.reshape(len(values), -1)
    k = min(k, values.shape[1])
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.array([[f"{row[j]:f}:{j}" + (f":{labels[j]}" if labels else "") for j in idx]
                     for row, idx in zip(values, order)], dtype=object)


def response_tensors(request: InferRequest, outputs: dict[str, np.ndarray], manifest) -> list[tuple[dict, bytes | None]]:
    """The outputs a request asked for (all by default), each as ({name, datatype, shape}, its bytes in the
    binary-tensor layout, or None where the output goes as JSON, its values then under "data"), after the
    classification extension where asked."""
    wanted = request.outputs if request.outputs is not None else [{"name": n} for n in outputs]
    tensors = []
    for o in wanted:
        name, params = o["name"], o.get("parameters") or {}
        array = outputs[name]
        k = params.get("classification")
        if k is not None:
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise RequestError(f"output {name!r}: classification must be a positive integer, got {k!r}")
            array = classification(array, k, label_file_labels(manifest, name))
        entry = {"name": name, "datatype": "BYTES" if array.dtype == object else datatype(array.dtype),
                 "shape": list(array.shape)}
        if params.get("binary_data", request.binary_output) is True:
            blob = (_serialize_bytes([s.encode() for s in array.ravel()]) if array.dtype == object
                    else np.ascontiguousarray(array).tobytes())
            tensors.append((entry, blob))
        else:
            entry["data"] = array.ravel().tolist()
            tensors.append((entry, None))
    return tensors


def encode_infer(request: InferRequest, outputs: dict[str, np.ndarray], manifest, model: str) -> tuple[bytes, dict]:
    """The response body and headers: JSON tensors, or binary tensors (with their JSON header) for outputs
    asked for with binary_data (or all of them with binary_data_output)."""
    entries, blobs = [], []
    for entry, blob in response_tensors(request, outputs, manifest):
        if blob is not None:
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        entries.append(entry)
    body = {"model_name": model, "model_version": VERSION, "outputs": entries}
    if request.id is not None:
        body["id"] = request.id
    text = json.dumps(body, separators=(",", ":")).encode()
    if not blobs:
        return text, {"content-type": "application/json"}
    return b"".join([text, *blobs]), {"content-type": "application/octet-stream",
                                      "inference-header-content-length": str(len(text))}
