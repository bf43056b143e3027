"""Reduced-precision ONNX models made from the fp32 export, and ONNX Runtime's offline graph optimisation.

Each function takes an onnx ModelProto, leaves it unchanged, and returns a new one with a record of what
was done (the manifest's `precision` and `exporter.optimized` keys):

- fp16: onnxconverter-common's float16 conversion. Weights and activations are float16; the graph's
  inputs and outputs stay float32 (`keep_io_types`), so the bundle's contract and the runtime's input
  checks do not change. Ops on the converter's block list (those without float16 kernels) stay float32;
  on CPU, ONNX Runtime itself runs in float32 (with casts) the ops it has no float16 kernel for.
- int8-dynamic: `onnxruntime.quantization.quantize_dynamic` on MatMul (Linear layers: the quantiser turns
  Gemm into MatMul) and LSTM: int8 weights per output channel, activations quantised to uint8 per batch
  at run time. Conv is left in float: ONNX Runtime's ConvInteger has no fast CPU kernel (5-14x slower
  than float Conv, measured on the conv models at batch 64); int8-static is the precision for conv models.
- int8-static: `quantize_static` in QDQ format, weights int8 per output channel, activations uint8 with
  ranges calibrated on training samples (MinMax). ONNX Runtime fuses each DequantizeLinear -> op ->
  QuantizeLinear group into an integer kernel when the graph loads.

A model whose weights would stay mostly float in an int8 precision (ONNX Runtime has no integer RNN or
GRU kernel) is refused rather than written as an "int8" bundle that is not one.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from zoo.errors import PrecisionRefused
from zoo.runtime import package_version

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
REDUCED = PRECISIONS[1:]
DYNAMIC_OPS = ("MatMul", "LSTM")
CALIBRATION_SAMPLES = 256     # training samples whose activation ranges calibrate int8-static
CALIBRATION_BATCH = 32
MIN_INT8_SHARE = 0.5          # an int8 bundle must hold at least this share of the weights in int8


def _copy(proto):
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.metadata_props[:]   # the seal is written last, by the exporter
    return out


@contextlib.contextmanager
def _quiet():
    """The quantiser logs advice on the root logger and prints calibration progress."""
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _numel(tensor) -> int:
    return int(np.prod(tensor.dims)) if len(tensor.dims) else 1


def _floats(proto) -> dict[str, int]:
    """Float32 initializers (name -> elements): the weights a reduced precision may shrink."""
    from onnx import TensorProto

    return {t.name: _numel(t) for t in proto.graph.initializer if t.data_type == TensorProto.FLOAT}


def reduced_share(before, after) -> float:
    """The share of the fp32 model's float weights (by elements) that the reduced model no longer holds
    as float32: converted to float16, or quantised (int8 weights; int8-static also stores biases as int32)."""
    floats, left = _floats(before), _floats(after)
    total = sum(floats.values())
    return sum(n for name, n in floats.items() if name not in left) / total if total else 0.0


def summary(proto) -> dict:
    """Initializer elements per data type and nodes per op type: what a reduced graph is made of."""
    from onnx import TensorProto

    dtypes = Counter()
    for t in proto.graph.initializer:
        dtypes[TensorProto.DataType.Name(t.data_type).lower()] += _numel(t)
    return {"initializers": dict(sorted(dtypes.items())),
            "ops": dict(sorted(Counter(n.op_type for n in proto.graph.node).items()))}


# why an op's weights stay float in each int8 precision (ONNX Runtime 1.31's quantiser and CPU kernels)
_STAYS_FLOAT = {
    "int8-dynamic": {"Conv": "Conv stays float in int8-dynamic (ConvInteger is 5-14x slower than float Conv "
                             "on CPU): use int8-static",
                     "GRU": "ONNX Runtime has no integer GRU kernel", "RNN": "ONNX Runtime has no integer RNN kernel"},
    "int8-static": {op: f"ONNX Runtime's QDQ quantiser does not quantise {op}" for op in ("RNN", "GRU", "LSTM")},
}


def _check_int8_share(before, after, precision: str, spec_name: str) -> float:
    share = reduced_share(before, after)
    if share < MIN_INT8_SHARE:
        left = _floats(after)
        held = Counter()
        for node in after.graph.node:
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):   # their float inputs are scales
                held[node.op_type] += sum(left.get(name, 0) for name in node.input)
        total = sum(_floats(before).values())
        top = [op for op, n in held.most_common(3) if n >= 0.05 * total]   # the layers that matter
        why = _STAYS_FLOAT[precision].get(top[0], f"{top[0]} is not quantised")
        raise PrecisionRefused(f"{spec_name} {precision}: only {share:.1%} of the {total:,} weights would be int8, "
                               f"the rest stays float in {', '.join(f'{op} ({held[op]:,})' for op in top)}: {why}; "
                               "no bundle written")
    return share


def fp16(proto) -> tuple[object, dict]:
    from onnxconverter_common import float16

    with _quiet():
        out = float16.convert_float_to_float16(_copy(proto), keep_io_types=True)
    record = {"name": "fp16",
              "method": f"onnxconverter-common {package_version('onnxconverter-common')} convert_float_to_float16: "
                        "weights and activations float16, inputs and outputs float32 (keep_io_types); ops on "
                        "its default block list stay float32",
              "settings": {"keep_io_types": True, "op_block_list": "default"},
              "calibration": None,
              "reduced_share": round(reduced_share(proto, out), 4),
              "graph": summary(out)}
    return out, record


def int8_dynamic(proto, spec_name: str = "", per_channel: bool = True) -> tuple[object, dict]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    settings = {"op_types": list(DYNAMIC_OPS), "weight_type": "int8", "activations": "uint8, per batch at run time",
                "per_channel": per_channel, "reduce_range": False}
    with tempfile.TemporaryDirectory(prefix="zoo-quantize-") as tmp, _quiet():
        target = Path(tmp) / "model.onnx"
        quantize_dynamic(_copy(proto), target, op_types_to_quantize=list(DYNAMIC_OPS), per_channel=per_channel,
                         reduce_range=False, weight_type=QuantType.QInt8)
        out = _load(target)
    share = _check_int8_share(proto, out, "int8-dynamic", spec_name)
    record = {"name": "int8-dynamic",
              "method": f"onnxruntime {package_version('onnxruntime-gpu') or package_version('onnxruntime')} "
                        "quantization.quantize_dynamic: int8 weights per output channel for MatMul/Gemm and LSTM, "
                        "activations quantised to uint8 per batch at run time",
              "settings": settings, "calibration": None, "reduced_share": round(share, 4), "graph": summary(out)}
    return out, record


def _reader(inputs: dict[str, np.ndarray], batch: int):
    """onnxruntime.quantization's CalibrationDataReader over model inputs already in memory."""
    from onnxruntime.quantization import CalibrationDataReader

    n = len(next(iter(inputs.values())))
    batches = [{k: np.ascontiguousarray(v[i:i + batch], dtype=np.float32) for k, v in inputs.items()}
               for i in range(0, n, batch)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next(self.batches, None)

    return Reader()


def int8_static(proto, calibration: dict[str, np.ndarray], about: dict, spec_name: str = "",
                per_channel: bool = True) -> tuple[object, dict]:
    """`calibration`: model inputs by name (a few hundred training samples) whose activation ranges set
    the int8 scales; `about`: where they come from, for the record."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = {"format": "QDQ", "weight_type": "int8", "activation_type": "uint8", "per_channel": per_channel,
                "reduce_range": False}
    with tempfile.TemporaryDirectory(prefix="zoo-quantize-") as tmp, _quiet():
        target = Path(tmp) / "model.onnx"
        quantize_static(_copy(proto), target, _reader(calibration, CALIBRATION_BATCH), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, reduce_range=False, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        out = _load(target)
    share = _check_int8_share(proto, out, "int8-static", spec_name)
    samples = len(next(iter(calibration.values())))
    record = {"name": "int8-static",
              "method": f"onnxruntime {package_version('onnxruntime-gpu') or package_version('onnxruntime')} "
                        "quantization.quantize_static, QDQ: int8 weights per output channel, uint8 activations "
                        "with ranges calibrated (MinMax) on training samples",
              "settings": settings, "calibration": {"method": "MinMax", "samples": samples, **about},
              "reduced_share": round(share, 4), "graph": summary(out)}
    return out, record


def _load(path: Path):
    import onnx

    return onnx.load(str(path))


def reduce(proto, precision: str, calibration: dict[str, np.ndarray] | None = None, about: dict | None = None,
           spec_name: str = "") -> tuple[object, dict]:
    """The fp32 model `proto` in `precision` (one of REDUCED), and its record. int8-static needs
    `calibration` (model inputs by name) and `about` (where they come from). Raises PrecisionRefused."""
    if precision == "fp16":
        return fp16(proto)
    if precision == "int8-dynamic":
        return int8_dynamic(proto, spec_name)
    if precision == "int8-static":
        if calibration is None:
            raise AssertionError("int8-static needs calibration samples")
        return int8_static(proto, calibration, about or {}, spec_name)
    raise AssertionError(f"not a reduced precision: {precision!r}")


def optimize(proto) -> tuple[object, dict]:
    """ONNX Runtime's graph optimisations (constant folding, node fusions, the fused integer kernels of a
    QDQ graph) applied once and saved, so that creating a session does not redo them. The extended level,
    not `all`: `all` adds layout transforms tied to this CPU's vector width. The result holds ONNX Runtime
    contrib ops for its CPU provider: it is a bundle for onnxruntime on CPU."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="zoo-optimize-") as tmp:
        source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        source.write_bytes(_copy(proto).SerializeToString())
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        options.log_severity_level = 3
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        out = _load(target)
    out.doc_string = proto.doc_string
    return out, {"level": "extended", "provider": "CPUExecutionProvider", "onnxruntime": ort.__version__}
