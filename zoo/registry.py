"""The models and datasets by name: the built-in catalog (zoo/catalog.py), always loaded, and whatever a user
registers. The spec records themselves are zoo/specs.py's (re-exported here); `build()` imports a model's
builder, and torch, only when it is called."""

from __future__ import annotations

import difflib
import importlib

from zoo import catalog
from zoo.contract import (ImagePreprocess, InvalidField, OneHotPreprocess, SeriesPreprocess, Signature,
                          TabularPreprocess, TensorSpec)
from zoo.errors import ZooError
from zoo.specs import SCHEDULES, DatasetSpec, ModelSpec, Pretrained, Recipe

__all__ = [
    "TensorSpec", "ImagePreprocess", "TabularPreprocess", "SeriesPreprocess", "OneHotPreprocess",
    "Recipe", "SCHEDULES", "Pretrained", "ModelSpec", "DatasetSpec", "register", "register_dataset", "names", "get",
    "build", "specs", "dataset", "datasets",
]

_MODELS: dict[str, ModelSpec] = {}
_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _DATASETS:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _DATASETS[spec.name] = spec
    return spec


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model. Its dataset must be registered first; its preprocessing must fit its inputs."""
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    if spec.dataset not in _DATASETS:
        raise ValueError(f"model {spec.name!r}: unknown dataset {spec.dataset!r}; register it with register_dataset")
    try:   # read back as a manifest would be: tensors, labels against the outputs, preprocessing against the inputs
        Signature.from_dict(spec.signature.to_dict(), where=spec.name)
    except InvalidField as e:
        raise ValueError(f"model {spec.name!r}: {e}") from None
    _MODELS[spec.name] = spec
    return spec


for _dataset in catalog.DATASETS:
    register_dataset(_dataset)
for _model in catalog.MODELS:
    register(_model)


def names() -> list[str]:
    return sorted(_MODELS)


def specs() -> list[ModelSpec]:
    return [_MODELS[n] for n in names()]


def get(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else "run `zoo list` to see them all"
        raise ZooError(f"unknown model {name!r}: {hint}") from None


def dataset(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ZooError(f"unknown dataset {name!r}; expected one of {', '.join(sorted(_DATASETS))}") from None


def datasets() -> list[DatasetSpec]:
    return [_DATASETS[n] for n in sorted(_DATASETS)]


def load_function(path: str):
    """The object a "module:attr" string names."""
    module_name, attr = path.split(":")
    return getattr(importlib.import_module(module_name), attr)


def build(name: str | ModelSpec, seed: int | None = None):
    """Instantiate the model's nn.Module (in train mode, as a fresh nn.Module is)."""
    spec = name if isinstance(name, ModelSpec) else get(name)
    import torch

    factory = load_function(spec.build)
    if seed is not None:
        torch.manual_seed(seed)
    return factory()
