"""ONNX: convert with the exporter chosen per model, seal the manifest into the file's metadata, check it."""

from __future__ import annotations

import io
from pathlib import Path

from zoo.export._common import example_inputs, quiet, torch_dims
from zoo.runtime import MODEL_FILES, SEAL_KEY

FILE = MODEL_FILES["onnx"]
OPSET = 20

# Measured on this stack (torch 2.14.1, onnxscript 0.7.2, see docs/formats.md): the dynamo exporter
# unrolls nn.RNN with the sequence fixed at the example length and takes 5-17 s for GRU/LSTM, while
# the legacy exporter writes the native ONNX RNN/GRU/LSTM ops with a symbolic sequence in < 0.2 s.
# Everything else goes through dynamo, the supported path (1-5 s a model, same parity).
DYNAMO, LEGACY = "torch.onnx (dynamo)", "torch.onnx (legacy)"


def choose_exporter(model) -> tuple[str, str]:
    from torch import nn

    if any(isinstance(m, nn.RNNBase) for m in model.modules()):
        return LEGACY, ("recurrent layers: the dynamo exporter fixes nn.RNN's sequence length; the legacy "
                        "exporter writes native RNN/GRU/LSTM ops with a symbolic sequence")
    return DYNAMO, "feed-forward model: dynamo exporter (torch.export based)"


def convert(model, spec):
    """`model` (in eval mode) -> (ONNX ModelProto, the manifest's `exporter` record)."""
    import onnx
    import torch

    name, why = choose_exporter(model)
    args = example_inputs(spec)
    input_names = [t.name for t in spec.inputs]
    output_names = [t.name for t in spec.outputs]
    with quiet(), torch.no_grad():
        if name == DYNAMO:
            program = torch.onnx.export(model, args, None, dynamo=True, dynamic_shapes=torch_dims(spec),
                                        input_names=input_names, output_names=output_names,
                                        opset_version=OPSET, optimize=True, verbose=False)
            proto = program.model_proto
        else:
            buffer = io.BytesIO()
            torch.onnx.export(model, args, buffer, dynamo=False, input_names=input_names,
                              output_names=output_names, opset_version=OPSET, do_constant_folding=True,
                              dynamic_axes={t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs)})
            proto = onnx.load_from_string(buffer.getvalue())
    proto.doc_string = spec.description
    tidy(proto)
    return proto, {"name": name, "opset": OPSET, "notes": why}


def tidy(proto) -> None:
    """Remove what the exporter leaves in the graph that describes the export rather than the model.

    - `value_info` entries for initializers and graph inputs/outputs. The dynamo exporter records a type
      and shape for every weight besides the weight itself; the copy goes stale as soon as a tool rewrites
      a weight: ONNX Runtime's dynamic quantiser turns `Gemm(transB=1)` into `MatMul` with the weight
      transposed, and shape inference then stopped on the old entry ("Inferred shape and existing shape
      differ in dimension 0: (3072) vs (512)"). Weights and graph inputs/outputs describe themselves;
      entries for intermediate values stay.
    - each node's `metadata_props` and `doc_string`: the exporter's debugging record (Python stack traces
      with the exporting machine's file paths, FX node text, rewrite-rule names), 34 KB of cifar2-netresdeep's
      691 KB. A bundle should not depend on, or reveal, where it was exported."""
    graph = proto.graph
    described = {t.name for t in graph.initializer} | {v.name for v in (*graph.input, *graph.output)}
    kept = [v for v in graph.value_info if v.name not in described]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""


def write(proto, path: Path, seal: str) -> None:
    """Seal the manifest into metadata_props, run the full checker (strict shape inference), save."""
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {SEAL_KEY: seal})
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
