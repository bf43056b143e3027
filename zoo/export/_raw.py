"""Raw-input ONNX models: each input's preprocessing (`zoo.contract`) in ONNX operators, composed in front of
the fp32 network, and class probabilities behind it, so that any ONNX Runtime binding runs the model on what
an application has (docs/formats.md, "Raw-input bundles").

The graph repeats the runtime's arithmetic operation for operation, so that only the resize can differ:

- images: uint8 (batch, height, width, channels) at any size -> `Resize` (linear, antialias, exclude_outside,
  half_pixel: ONNX Runtime's port of Pillow's resampling, measured closest to Pillow's BILINEAR; see RESIZE)
  to `size`, or for `crop` to the size Pillow's shorter-side scaling gives (computed in float64 and rounded
  half to even, as Python's `round`), then a centre crop; /255, NCHW, zero padding, (x - mean) / std, flatten;
- tables: one input per CSV column, float64 numbers (the runtime parses and scales in float64) and category
  names as strings, matched exactly (`Equal` on strings, opset 19+); an unknown name makes the run fail (a
  `Gather` out of range) instead of answering for a category the model never saw; then scale, standardise or
  min-max scale in float64 and cast to float32;
- series: float32 (batch, sequence >= window) -> the last `window` readings (a shorter series fails the run,
  in a `Gather` out of range as for unknown names);
- category inputs (onehot): a string per row -> one-hot, unknown names fail the run as for tables.

Opset 20 throughout (the exporter's), ai.onnx operators only: onnxruntime and onnxruntime-web (wasm) run it.
"""

from __future__ import annotations

import numpy as np

from zoo.contract import TensorSpec
from zoo.errors import ZooError

OPSET = 20
PREFIX = "network/"   # the fp32 network's values, renamed so that its input names are free for the raw inputs
# Measured against Pillow's BILINEAR on photos of 13x29 to 640x480 px resized to 28-224 px
# (benchmarks/resize_modes.py): these settings give uint8 results equal to Pillow's for 99.1 % of the values,
# never more than 2 levels apart; exclude_outside=0 leaves the image border up to 22 levels off, computing in
# float32 (no uint8 rounding between the two passes, as Pillow does) 83.9 % equal, and without antialias (a
# fixed 2x2 support, where Pillow's widens when it shrinks an image) 39.0 % equal, up to 184 levels off.
RESIZE = {"mode": "linear", "antialias": 1, "exclude_outside": 1, "coordinate_transformation_mode": "half_pixel"}


class _Graph:
    """Nodes and constants of the preprocessing and probability subgraphs, with names of their own."""

    def __init__(self):
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"raw/{hint}_{self.count}"

    def const(self, value, hint: str = "const") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, out: str | None = None, **attrs) -> str:
        from onnx import helper

        out = out or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _image(g: _Graph, source: str, pre, out: str) -> None:
    from onnx import TensorProto

    height, width = pre.size
    if pre.resize == "crop":   # Pillow's: scale the shorter side, round half to even, then crop the centre
        shape = g.op("Shape", [source], start=1, end=3)
        size = g.op("Cast", [shape], to=TensorProto.DOUBLE)
        target = g.const(np.array([height, width], np.float64), "size")
        scale = g.op("ReduceMax", [g.op("Div", [target, size])], keepdims=1)
        scaled = g.op("Max", [g.op("Round", [g.op("Mul", [size, scale])]), target])
        sizes = g.op("Cast", [scaled], to=TensorProto.INT64)
        resized = g.op("Resize", [source, "", "", sizes], axes=[1, 2], **RESIZE)
        wanted = g.const(np.array([height, width], np.int64), "size")
        start = g.op("Div", [g.op("Sub", [sizes, wanted]), g.const(np.array([2, 2], np.int64))])
        pixels = g.op("Slice", [resized, start, g.op("Add", [start, wanted]), g.const(np.array([1, 2], np.int64))])
    else:
        pixels = g.op("Resize", [source, "", "", g.const(np.array([height, width], np.int64), "size")], axes=[1, 2],
                      **RESIZE)
    x = g.op("Div", [g.op("Cast", [pixels], to=TensorProto.FLOAT), g.const(np.float32(255))])
    x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    if pre.pad:
        p = pre.pad
        x = g.op("Pad", [x, g.const(np.array([0, 0, p, p, 0, 0, p, p], np.int64), "pads")], mode="constant")
    if pre.mean is not None:
        stat = (1, pre.channels, 1, 1)
        x = g.op("Sub", [x, g.const(np.asarray(pre.mean, np.float32).reshape(stat), "mean")])
        x = g.op("Div", [x, g.const(np.asarray(pre.std, np.float32).reshape(stat), "std")])
    if pre.flatten:
        x = g.op("Reshape", [x, g.const(np.array([0, -1], np.int64))])
    g.op("Identity", [x], out=out)


def _category(g: _Graph, source: str, names) -> str:
    """Strings (batch,) -> int64 indices into `names`; an unknown name gives len(names), which the Gather
    that follows refuses (out of range), so the run fails rather than answer for it."""
    from onnx import TensorProto

    column = g.op("Unsqueeze", [source, g.const(np.array([1], np.int64))])
    hits = g.op("Cast", [g.op("Equal", [column, g.const(np.asarray(names, dtype=object), "names")])],
                to=TensorProto.INT64)
    index = g.op("ArgMax", [hits], axis=1, keepdims=0)
    missing = g.op("Sub", [g.const(np.int64(1)), g.op("ReduceSum", [hits, g.const(np.array([1], np.int64))],
                                                          keepdims=0)])
    return g.op("Add", [index, g.op("Mul", [missing, g.const(np.int64(len(names)))])], "category")


def _table(g: _Graph, pre, out: str) -> None:
    """One graph input per column -> float32 (batch, features), as TabularPreprocess.encode + apply in float64."""
    from onnx import TensorProto

    parts = []
    for column in pre.columns:
        names = pre.categories.get(column)
        if names is None:
            parts.append(g.op("Unsqueeze", [column, g.const(np.array([1], np.int64))]))
            continue
        index = _category(g, column, names)
        table = np.array([0.0, 1.0]) if len(names) == 2 else np.eye(len(names))
        values = g.op("Gather", [g.const(table, "encoding"), index], axis=0)
        parts.append(g.op("Unsqueeze", [values, g.const(np.array([1], np.int64))]) if len(names) == 2 else values)
    x = g.op("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    if pre.scale != 1.0:
        x = g.op("Mul", [x, g.const(np.float64(pre.scale), "scale")])
    if pre.standardize:
        x = g.op("Div", [g.op("Sub", [x, g.const(np.asarray(pre.mean), "mean")]), g.const(np.asarray(pre.std), "std")])
    if pre.minmax:
        low, high = np.asarray(pre.low), np.asarray(pre.high)
        spread = g.const(np.where(high > low, high - low, 1.0), "spread")
        x = g.op("Div", [g.op("Sub", [x, g.const(low, "low")]), spread])
    g.op("Cast", [x], out=out, to=TensorProto.FLOAT)


def _series(g: _Graph, source: str, pre, out: str) -> None:
    """The last `window` readings as (batch, window, 1). A shorter series fails the run in a Gather out of range
    (index 1 of a one-element table): a Reshape would not do, ONNX Runtime's optimiser rewrites its shape."""
    from onnx import TensorProto

    window = pre.window
    length = g.op("Shape", [source], start=1, end=2)
    short = g.op("Cast", [g.op("Less", [length, g.const(np.array([window], np.int64))])], to=TensorProto.INT64)
    zero = g.op("Gather", [g.const(np.zeros(1, np.float32), "guard"), short], axis=0)
    last = g.op("Slice", [source, g.const(np.array([-window], np.int64)), g.const(np.array([np.iinfo(np.int64).max])),
                          g.const(np.array([1], np.int64))])
    g.op("Unsqueeze", [g.op("Add", [last, zero]), g.const(np.array([2], np.int64))], out=out)


def _onehot(g: _Graph, source: str, pre, out: str) -> None:
    index = _category(g, source, pre.vocabulary)
    g.op("Gather", [g.const(np.eye(len(pre.vocabulary), dtype=np.float32), "onehot"), index], out=out, axis=0)


def raw_inputs(spec, preprocess: dict) -> dict[str, list[tuple[str, str, tuple]]]:
    """Per network input, the graph inputs that make it: [(name, dtype, shape)]."""
    out = {}
    for t in spec.inputs:
        pre = preprocess[t.name]
        if pre.kind == "image":
            out[t.name] = [(t.name, "uint8", ("batch", "height", "width", pre.channels))]
        elif pre.kind == "tabular":
            out[t.name] = [(c, "string" if c in pre.categories else "float64", ("batch",)) for c in pre.columns]
        elif pre.kind == "series":
            out[t.name] = [(t.name, "float32", ("batch", "sequence"))]
        else:
            out[t.name] = [(t.name, "string", ("batch",))]
    return out


def probability_outputs(spec) -> dict[str, str]:
    """Labelled output -> the name of the graph output with its class probabilities."""
    labelled = [t.name for t in spec.outputs if t.name in spec.labels]
    return {n: "probabilities" if len(labelled) == 1 else f"{n}_probabilities" for n in labelled}


def refusal(spec, preprocess: dict) -> str | None:
    """Why `spec` cannot have a raw-input model (one line), or None."""
    missing = [t.name for t in spec.inputs if t.name not in preprocess]
    if missing:
        return f"{spec.name}: input {missing[0]} has no preprocessing to put in the graph"
    names = [n for feeds in raw_inputs(spec, preprocess).values() for n, _, _ in feeds]
    names += [t.name for t in spec.outputs] + list(probability_outputs(spec).values())
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        return (f"{spec.name}: the raw-input model would have two inputs or outputs named {clash[0]!r} (a CSV column "
                "named like an output); rename the column")
    return None


def _probabilities(g: _Graph, spec) -> None:
    """The class probabilities of each labelled output, as Session.probabilities computes them."""
    for name, target in probability_outputs(spec).items():
        width = next(t.shape[-1] for t in spec.outputs if t.name == name)
        source = PREFIX + name
        if width > 1:
            g.op("Softmax" if spec.output_kind == "logits" else "Identity", [source], out=target,
                 **({"axis": -1} if spec.output_kind == "logits" else {}))
        else:
            positive = g.op("Sigmoid", [source]) if spec.output_kind in ("logit", "logits") else source
            g.op("Concat", [g.op("Sub", [g.const(np.float32(1)), positive]), positive], out=target, axis=1)


def compose(spec, network, preprocess: dict):
    """The fp32 `network` (onnx ModelProto, inputs and outputs as `spec`) with its preprocessing in front and
    class probabilities behind -> (ModelProto, the manifest's `inputs` and `outputs`, its `raw_inputs`).
    Raises ZooError with `refusal`'s line when the model cannot have one."""
    import onnx
    from onnx import compose as onnx_compose, helper

    reason = refusal(spec, preprocess)
    if reason:
        raise ZooError(reason)
    if {o.domain or "ai.onnx": o.version for o in network.opset_import}.get("ai.onnx") != OPSET:
        raise AssertionError(f"the network is not at opset {OPSET}: {network.opset_import}")
    net = onnx_compose.add_prefix(network, PREFIX)
    g = _Graph()
    for t in spec.inputs:
        pre, target = preprocess[t.name], PREFIX + t.name
        if pre.kind == "image":
            _image(g, t.name, pre, target)
        elif pre.kind == "tabular":
            _table(g, pre, target)
        elif pre.kind == "series":
            _series(g, t.name, pre, target)
        else:
            _onehot(g, t.name, pre, target)
    before = len(g.nodes)   # the preprocessing; what follows runs after the network
    for t in spec.outputs:
        g.op("Identity", [PREFIX + t.name], out=t.name)
    _probabilities(g, spec)
    inputs, outputs, raw = tensors(spec, preprocess)
    dtypes = {"uint8": onnx.TensorProto.UINT8, "float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE,
              "string": onnx.TensorProto.STRING}

    def info(t):
        return helper.make_tensor_value_info(t.name, dtypes[t.dtype], list(t.shape))
    graph = helper.make_graph(g.nodes[:before] + list(net.graph.node) + g.nodes[before:], spec.name,
                              [info(t) for t in inputs], [info(t) for t in outputs],
                              g.initializers + list(net.graph.initializer), value_info=list(net.graph.value_info))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=network.ir_version,
                              producer_name="zoo export --raw-inputs", doc_string=network.doc_string)
    manifest = {"inputs": [t.to_dict() for t in inputs], "outputs": [t.to_dict() for t in outputs]}
    return model, manifest, dict(raw, resize=dict(RESIZE), opset=OPSET)


def tensors(spec, preprocess: dict) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict]:
    """The raw-input model's graph inputs and outputs, and the manifest's `raw_inputs` (RawInputs' fields)."""
    feeds = raw_inputs(spec, preprocess)
    probabilities = probability_outputs(spec)
    widths = {t.name: t.shape[-1] for t in spec.outputs}
    inputs = tuple(TensorSpec(n, s, d) for t in spec.inputs for n, d, s in feeds[t.name])
    outputs = (*spec.outputs, *(TensorSpec(target, ("batch", 2 if widths[name] == 1 else widths[name]))
                                for name, target in probabilities.items()))
    raw = {"network_inputs": [t.to_dict() for t in spec.inputs],
           "sources": {k: [n for n, _, _ in v] for k, v in feeds.items()}, "probabilities": probabilities}
    return inputs, outputs, raw
