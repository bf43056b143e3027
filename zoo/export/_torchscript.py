"""TorchScript: script where possible, trace (checked on other shapes) where scripting fails, freeze."""

from __future__ import annotations

from pathlib import Path

from zoo.export._common import example_inputs, first_line, quiet
from zoo.runtime import MODEL_FILES

FILE = MODEL_FILES["torchscript"]
SEAL_KEY = "zoo.manifest"


def _check_inputs(spec) -> list[tuple]:
    # Tracing records one path through the code at one shape: check it at others (the parity
    # matrix then runs every promised shape through the traced module too).
    import torch

    sizes = [(1, 1), (2, 96)] if spec.is_sequence else [(1, 1), (7, 1)]
    return [tuple(torch.rand(t.example_shape(batch=b, sequence=s)) for t in spec.inputs) for b, s in sizes]


def convert(model, spec):
    """`model` (in eval mode) -> (a frozen ScriptModule, the manifest's `exporter` record)."""
    import torch
    from torch import nn

    with quiet(), torch.no_grad():
        if any(isinstance(m, nn.RNNBase) for m in model.modules()):
            # Scripting ElectricityRNN (its forward names nn.LSTM) succeeds or fails depending on
            # what TorchScript compiled earlier in the process, so recurrent models are always traced.
            module, error = None, "recurrent model: scripting depends on TorchScript's process-wide cache"
        else:
            try:
                module, error = torch.jit.script(model), None
            except Exception as e:  # noqa: BLE001 - any scripting failure means: trace instead
                module, error = None, f"scripting failed ({first_line(e)[:160]})"
        if module is None:
            module = torch.jit.trace(model, example_inputs(spec), check_inputs=_check_inputs(spec))
            name, notes = "torch.jit.trace", f"{error}; traced, checked at other shapes"
        else:
            name, notes = "torch.jit.script", "scripted"
        module = torch.jit.freeze(module.eval())
    return module, {"name": name, "opset": None, "notes": notes}


def write(module, path: Path, seal: str) -> None:
    """Serialised in memory, then written by Python: torch's file writer aborts the whole process when a
    write fails (a full disk), where Python raises an OSError the caller reports."""
    import io

    import torch

    buffer = io.BytesIO()
    with quiet():
        torch.jit.save(module, buffer, _extra_files={SEAL_KEY: seal})
    path.write_bytes(buffer.getbuffer())
