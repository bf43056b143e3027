"""Plumbing shared by the three formats: example sizes, dynamic dims, quieting torch's export noise."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings

# Example sizes used while exporting. Size-0/1 dims get specialised, and a size equal to a constant
# in the model (hidden size 32, window 96, 30 alphabets, ...) could be unified with it, so pick
# values that occur nowhere else.
EXAMPLE_SIZES = {"batch": 5, "sequence": 37}
MAX_SIZES = {"batch": 1 << 16, "sequence": 1 << 20}

# The artefact's description of one input or output: name (None where the format keeps no names)
# and shape (None where unknown; ints for static dims, a string for a symbolic one).


def example_inputs(spec):
    import torch

    generator = torch.Generator().manual_seed(0)
    return tuple(torch.rand(t.example_shape(**EXAMPLE_SIZES), generator=generator) for t in spec.inputs)


def torch_dims(spec) -> tuple[dict, ...]:
    """`dynamic_shapes` for torch.export: one explicit Dim per axis name, shared between inputs."""
    from torch.export import Dim

    dims = {}
    for t in spec.inputs:
        for axis in t.dynamic_axes.values():
            dims.setdefault(axis, Dim(axis, min=1, max=MAX_SIZES.get(axis, 1 << 20)))
    return tuple({i: dims[a] for i, a in t.dynamic_axes.items()} for t in spec.inputs)


@contextlib.contextmanager
def quiet():
    """Silence the deprecation/future warnings, log lines and prints that torch's exporters and
    TorchScript emit: a user exporting a model should see the parity table, not torch internals."""
    loggers = [logging.getLogger(n) for n in ("torch", "torch.onnx", "torch.export", "torch._export",
                                              "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")   # terminal colour codes some torch errors carry


def first_line(error: BaseException) -> str:
    text = ANSI.sub("", str(error)).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"
