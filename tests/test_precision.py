"""Reduced-precision ONNX bundles: fp16, int8-dynamic, int8-static, judged by accuracy on held-out data."""

import logging

import onnx
import pytest

from zoo.export import export


def test_exported_onnx_carries_no_stale_value_info_for_weights(tmp_path):
    """The dynamo exporter described every weight in value_info; ONNX Runtime's quantiser rewrites
    Gemm weights (transposed for MatMul) and then stopped on the stale copy (issue 15, cifar2-fc)."""
    from onnxruntime.quantization import quantize_dynamic

    (bundle,) = export("cifar2-fc", "onnx", out=tmp_path, random_weights=True)
    model = onnx.load(str(bundle / "model.onnx"))
    weights = {t.name for t in model.graph.initializer}
    assert not weights & {v.name for v in model.graph.value_info}
    logging.disable(logging.WARNING)   # the quantiser's advice to pre-process
    try:
        quantize_dynamic(str(bundle / "model.onnx"), str(tmp_path / "q.onnx"))   # raised InferenceError before
    finally:
        logging.disable(logging.NOTSET)
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node}
