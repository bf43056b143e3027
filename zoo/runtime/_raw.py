"""Raw-input bundles: the preprocessing is inside the ONNX graph (docs/formats.md, "Raw-input bundles").

Such a model takes what an application has: decoded pixels (uint8, any size), the columns of a CSV row
(numbers and category names), a series of readings, a category name. The manifest's `raw_inputs` names
the network's own inputs (what the in-graph preprocessing makes), which graph inputs make each of them
and which graph output holds each labelled output's class probabilities. The runtime checks raw values
with the same `zoo.contract` objects as for any bundle (unknown categories, non-finite numbers, too short
a series: refused; values outside the training range: a warning) and feeds them as the graph takes them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from zoo.contract import MAX_IMAGE_PIXELS, InvalidField, Preprocess, TensorSpec

KEY = "raw_inputs"   # the manifest field; a bundle without it takes the network's own tensors


@dataclass(frozen=True)
class RawInputs:
    network_inputs: tuple[TensorSpec, ...]   # the tensors the in-graph preprocessing makes
    sources: dict[str, tuple[str, ...]]      # network input -> the graph inputs it is made from
    probabilities: dict[str, str]            # labelled output -> the graph output with its class probabilities

    def to_dict(self) -> dict:
        return {"network_inputs": [t.to_dict() for t in self.network_inputs],
                "sources": {k: list(v) for k, v in self.sources.items()}, "probabilities": dict(self.probabilities)}

    @classmethod
    def from_dict(cls, d, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> "RawInputs":
        """Checked against the graph's inputs and outputs: every graph input feeds exactly one network input."""
        if not isinstance(d, Mapping):
            raise InvalidField(KEY, "an object {network_inputs, sources, probabilities}", d)
        network = TensorSpec.list_from_dicts(d.get("network_inputs"), f"{KEY}.network_inputs")
        sources, graph = d.get("sources"), [t.name for t in inputs]
        if (not isinstance(sources, Mapping) or set(sources) != {t.name for t in network}
                or not all(isinstance(v, list) and v and all(isinstance(n, str) for n in v) for v in sources.values())
                or sorted(n for v in sources.values() for n in v) != sorted(graph)):
            raise InvalidField(f"{KEY}.sources", f"an object {{network input: [graph inputs]}} that uses each of "
                               f"{graph} once", sources)
        probabilities, names = d.get("probabilities") or {}, {t.name for t in outputs}
        if not isinstance(probabilities, Mapping) or not all(
                k in names and isinstance(v, str) and v in names for k, v in probabilities.items()):
            raise InvalidField(f"{KEY}.probabilities", "an object {labelled output: output with its probabilities}",
                               probabilities)
        return cls(network, {k: tuple(v) for k, v in sources.items()}, dict(probabilities))


def graph_values(name: str, pre: Preprocess, raw, warn: Callable | None,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> dict[str, list | np.ndarray]:
    """One network input's raw value(s) -> the graph inputs that make it, with the batch axis first:
    images as a list of uint8 (H, W, C) arrays (stacked per size by `batches`), the rest as arrays."""
    if pre.kind == "image":
        many = isinstance(raw, (list, tuple)) or (isinstance(raw, np.ndarray) and raw.ndim == 4)
        items = list(raw) if many else [raw]
        if not items:
            raise ValueError("expected at least one image, got none")
        return {name: [pre.pixels(item, warn, i, max_pixels) for i, item in enumerate(items)]}
    if pre.kind == "tabular":
        columns = pre.values(raw, warn)
        return {c: (np.asarray(pre.categories[c], dtype=object)[v] if c in pre.categories else v)
                for c, v in columns.items()}
    if pre.kind == "series":
        return {name: pre.encode(raw, warn).reshape(1, -1)}   # the checked window; the graph takes any length >= it
    if pre.kind == "onehot":
        return {name: np.asarray(pre.vocabulary, dtype=object)[pre.encode(raw, warn)]}
    raise ValueError(f"input {name!r}: no raw form for preprocessing of kind {pre.kind!r}")


def batches(values: dict[str, list | np.ndarray]) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Graph inputs for a batch -> [(sample indices, feeds)]: one run per image size (a tensor holds images
    of one size), in the order the sizes first occur."""
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1:
        raise ValueError(f"raw inputs: every input needs one value per sample, got {sorted(lengths)} values")
    (count,) = lengths
    images = [k for k, v in values.items() if isinstance(v, list)]
    keys = [tuple(values[k][i].shape for k in images) for i in range(count)]
    groups: dict[tuple, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    out = []
    for index in groups.values():
        feeds = {k: (np.stack([v[i] for i in index]) if isinstance(v, list) else v[index]) for k, v in values.items()}
        out.append((np.asarray(index), feeds))
    return out


def scatter(count: int, runs: list[tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Outputs of the runs of `batches` -> one output per name, samples back in their order."""
    if len(runs) == 1:
        return runs[0][1]
    out = {}
    for name in runs[0][1]:
        first = runs[0][1][name]
        merged = np.empty((count, *first.shape[1:]), first.dtype)
        for index, outputs in runs:
            merged[index] = outputs[name]
        out[name] = merged
    return out
