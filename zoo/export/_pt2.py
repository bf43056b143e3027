"""pt2: torch.export with explicit Dims, saved with torch.export.save, run through ExportedProgram.module()."""

from __future__ import annotations

import contextlib
from pathlib import Path

from zoo.export._common import example_inputs, quiet, torch_dims
from zoo.runtime import MODEL_FILES

FILE = MODEL_FILES["pt2"]
SEAL_KEY = "zoo.manifest"


def _rnn_tanh_layer(inp, hidden, params, has_biases, reverse=False):
    """One tanh-RNN layer as a while_loop, so the sequence length stays symbolic (torch's own
    decomposition is a Python loop over the steps, which fixes the length at the example's)."""
    import torch
    from torch._higher_order_ops.while_loop import while_loop

    ih_weight, hh_weight = params[0], params[1]
    ih_bias, hh_bias = (params[2], params[3]) if has_biases else (None, None)
    steps = torch.nn.functional.linear(inp, ih_weight, ih_bias)
    steps = steps.flip(0) if reverse else steps
    # while_loop rejects closure tensors that alias each other (the flat RNN weights can)
    hh_weight = hh_weight.clone()
    hh_bias = hh_bias.clone() if hh_bias is not None else None
    state = hidden.unsqueeze(0)
    outputs = torch.empty(steps.size(0), *state.shape[1:], dtype=state.dtype, device=state.device)

    def cond(i, outputs, state):
        return i < steps.size(0)

    def body(i, outputs, state):
        t = i.item()
        torch._check(t >= 0)
        torch._check(t < steps.size(0))
        state = torch.tanh(torch.nn.functional.linear(state, hh_weight, hh_bias) + steps[t])
        outputs = outputs.clone()
        outputs[t] = state.squeeze(0)
        return i + 1, outputs, state

    _, outputs, state = while_loop(cond, body, [torch.tensor(0, dtype=torch.int64), outputs, state])
    return (outputs.flip(0) if reverse else outputs), state.squeeze(0)


def _rnn_tanh(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    import torch
    from torch._decomp.decompositions import _rnn_helper, gather_params

    params = gather_params(params, has_biases, False)
    out, final = _rnn_helper(input, list(hx.unbind(0)), params, has_biases, num_layers, dropout, train,
                             bidirectional, batch_first, _rnn_tanh_layer)
    return out, torch.stack(final, 0)


@contextlib.contextmanager
def _recurrent_as_while_loops():
    """torch ships while_loop decompositions for GRU and LSTM (the ONNX exporter uses them); add
    the same for the tanh RNN. All three are restored on exit."""
    import torch
    from torch.export import _patches

    with (_patches.register_gru_while_loop_decomposition(), _patches.register_lstm_while_loop_decomposition(),
          _patches._register_rnn_while_loop_decomposition(torch.ops.aten.rnn_tanh.input, _rnn_tanh)):
        yield


def convert(model, spec):
    """`model` (in eval mode) -> (an ExportedProgram, the manifest's `exporter` record)."""
    import torch
    from torch import nn

    recurrent = any(isinstance(m, nn.RNNBase) for m in model.modules())
    with quiet(), torch.no_grad(), (_recurrent_as_while_loops() if recurrent else contextlib.nullcontext()):
        program = torch.export.export(model, example_inputs(spec), dynamic_shapes=torch_dims(spec), strict=False)
    notes = "explicit torch.export.Dim per dynamic axis, strict=False"
    if recurrent:
        notes += "; recurrent layers as while_loop so the sequence stays symbolic"
    return program, {"name": "torch.export", "opset": None, "notes": notes}


def write(program, path: Path, seal: str) -> None:
    """Serialised in memory, then written by Python (see _torchscript.write: torch's writer aborts on a
    full disk)."""
    import io

    import torch

    buffer = io.BytesIO()
    with quiet():
        torch.export.save(program, buffer, extra_files={SEAL_KEY: seal})
    path.write_bytes(buffer.getbuffer())
