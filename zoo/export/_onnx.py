"""ONNX: export with the exporter chosen per model, label and check the file, run it with onnxruntime."""

from __future__ import annotations

import io
import json
from pathlib import Path

from zoo.export._common import example_inputs, quiet, torch_dims
from zoo.runtime._bundle import MODEL_FILES

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


def save(model, spec, path: Path) -> dict:
    """Export `model` (in eval mode) to `path`; returns the manifest's `exporter` record."""
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
    onnx.save(proto, str(path))
    return {"name": name, "opset": OPSET, "notes": why}


def finish(path: Path, manifest: dict) -> None:
    """Put the labels and the manifest (all but the file's own sha256) in metadata_props, then run
    the full checker (with strict shape inference) on the file as it will ship."""
    import onnx

    proto = onnx.load(str(path))
    props = {"zoo.manifest": json.dumps({k: v for k, v in manifest.items() if k != "file_sha256"}),
             "zoo.labels": json.dumps(manifest["labels"]), "zoo.model": manifest["model"]}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def metadata(path: Path) -> dict:
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


class Artefact:
    backend = "onnxruntime CPUExecutionProvider"

    def __init__(self, path: Path):
        import onnxruntime as ort
        import torch

        options = ort.SessionOptions()
        # ORT's default pool ignores container CPU limits: use the same budget as torch.
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.backend = f"{self.backend} ({options.intra_op_num_threads} threads)"

    def run(self, arrays: list) -> list:
        names = [i.name for i in self.session.get_inputs()]
        return self.session.run(None, dict(zip(names, arrays)))

    def describe(self) -> dict:
        def io(values):
            return [{"name": v.name, "shape": [d if isinstance(d, int) else str(d or "?") for d in v.shape]}
                    for v in values]
        return {"inputs": io(self.session.get_inputs()), "outputs": io(self.session.get_outputs())}
