"""Dataset adapters: the on-disk formats users have (`--data DIR`) and a built-in default for each.

Every adapter returns a `Dataset` of in-memory tensors keyed by the spec's input and output names.
Images are decoded once with `zoo.preprocess.decode_image` (the runtime's own function) and kept
as uint8 (N, C, H, W); `to_model_input` turns a batch into the float tensor the model sees.
Without `--data`, the adapter reads a small sample that `zoo.data.builtin` writes in the very same
format, so the built-in default exercises the real reading path.
"""

from __future__ import annotations

from pathlib import Path

from zoo.data._core import Dataset, DataError, to_model_input
from zoo.registry import ModelSpec

__all__ = ["Dataset", "DataError", "load", "to_model_input", "real_samples", "ADAPTERS"]

# dataset name -> "module:function"; each function is (spec, path, split) -> Dataset
ADAPTERS = {
    "clouds": "zoo.data.clouds:load",
    "water_potability": "zoo.data.tabular:load_water",
    "circles": "zoo.data.tabular:load_circles",
    "thermometer": "zoo.data.tabular:load_thermometer",
    "electricity": "zoo.data.series:load_electricity",
    "omniglot": "zoo.data.omniglot:load",
    "mnist": "zoo.data.digits:load_mnist",
    "mnist_sample": "zoo.data.digits:load_mnist_sample",
    "fashion_mnist": "zoo.data.digits:load_fashion_mnist",
    "cifar10": "zoo.data.cifar:load_cifar10",
    "cifar2": "zoo.data.cifar:load_cifar2",
}


def load(spec: ModelSpec, data: str | Path | None = None, split: str = "train") -> Dataset:
    """Load `spec.dataset` from `data` (a folder or file in the dataset's real format), or the
    built-in sample when `data` is None. `split` ("train" or "test") picks the split when `data`
    holds both (e.g. a folder with `clouds_train/` and `clouds_test/`)."""
    import importlib

    from zoo.data import builtin

    module, func = ADAPTERS[spec.dataset].split(":")
    adapter = getattr(importlib.import_module(module), func)
    if data is None:
        path = builtin.materialize(spec.dataset, split)
        dataset = adapter(spec, path, split)
        dataset.source = "built-in"
        return dataset
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    return adapter(spec, path, split)


def real_samples(spec: ModelSpec, data: str | Path | None, preprocess: dict, n: int = 32,
                 split: str = "train") -> dict | None:
    """Up to `n` real inputs as float32 numpy arrays keyed by input name, preprocessed with
    `preprocess` (the weights' own: spec plus fitted statistics), for parity checks."""
    if data is None:
        return None
    dataset = load(spec, data, split)
    import torch

    idx = torch.linspace(0, len(dataset) - 1, min(n, len(dataset))).long()
    batch = dataset.subset(idx)
    return {k: v.numpy() for k, v in to_model_input(spec, batch.inputs, preprocess).items()}
