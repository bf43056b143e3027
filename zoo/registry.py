"""Model specs: one declarative record per course model, read by every stage.

This module is torch-free: a spec names its builder as "module:attr" and only
`build()` imports it, so `zoo list` / `zoo info` and the runtime stay light.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

from zoo.errors import ZooError

__all__ = [
    "TensorSpec", "ImagePreprocess", "TabularPreprocess", "SeriesPreprocess", "OneHotPreprocess",
    "Recipe", "ModelSpec", "register", "names", "get", "build", "specs",
]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str, ...]  # with batch; a string names a dynamic axis ("batch", "sequence")
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def example_shape(self, **sizes: int) -> tuple[int, ...]:
        """Concrete shape, taking each dynamic axis from `sizes` (e.g. batch=3, sequence=96)."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "dynamic_axes": {str(i): d for i, d in self.dynamic_axes.items()}}


@dataclass(frozen=True)
class ImagePreprocess:
    """Raw image -> float32 tensor: convert to `mode`, resize to `size`, /255, pad, normalise, flatten."""
    size: tuple[int, int]                      # (height, width) after resizing
    mode: str = "RGB"                          # PIL mode: "RGB" or "L"
    pad: int = 0                               # zero padding on every side after resizing
    mean: tuple[float, ...] | None = None      # per-channel, applied after /255
    std: tuple[float, ...] | None = None
    standardize: bool = False                  # fit mean/std per channel on the training split
    flatten: bool = False                      # (C,H,W) -> (C*H*W,) for MLPs on pixels
    kind: str = "image"


@dataclass(frozen=True)
class TabularPreprocess:
    """CSV row -> float32 vector: pick `columns` by name, multiply by `scale`, standardise with the
    mean/std fitted on the training split (stored in the weights card, copied into the manifest)."""
    columns: tuple[str, ...]
    scale: float = 1.0
    standardize: bool = False
    kind: str = "tabular"


@dataclass(frozen=True)
class SeriesPreprocess:
    """1-D series -> (T, 1) float32 window; the model predicts the value after the window."""
    column: str
    window: int
    kind: str = "series"


@dataclass(frozen=True)
class OneHotPreprocess:
    """Category name -> one-hot vector over `vocabulary`."""
    vocabulary: tuple[str, ...]
    kind: str = "onehot"


Preprocess = ImagePreprocess | TabularPreprocess | SeriesPreprocess | OneHotPreprocess


@dataclass(frozen=True)
class Recipe:
    """Training defaults; every field can be overridden on the command line or in `zoo.train()`."""
    optimizer: str = "adam"          # adam | adamw | sgd
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 20
    loss: str = "cross_entropy"      # cross_entropy | bce | bce_with_logits | mse | mnist_loss
    loss_weights: dict[str, float] = field(default_factory=dict)  # per output name; 1.0 if absent
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "none"          # none | cosine | onecycle
    augment: str = "none"            # a named augmentation from zoo.data.augment
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    patience: int = 10               # early stopping: epochs without improvement of the monitored metric
    val_fraction: float = 0.2
    samples_per_epoch: int | None = None  # draw this many training samples per epoch (large, redundant datasets)
    seed: int = 0


@dataclass(frozen=True)
class ModelSpec:
    # identity
    name: str
    course: str
    task: str                                  # binary | multiclass | regression | multi-output
    # builder
    build: str                                 # "module:attr" of an nn.Module class or factory
    build_kwargs: dict[str, Any] = field(default_factory=dict)
    params: int = 0                            # parameter count as documented (a test recomputes it)
    # data contract
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    preprocess: dict[str, Preprocess] = field(default_factory=dict)   # input name -> preprocessing
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)  # output name -> class names
    output_kind: str = "logits"                # logits | logit | probability | value
    # training
    dataset: str = ""
    recipe: Recipe = Recipe()
    monitor: str = "accuracy"                  # validation metric for early stopping and the headline
    # export
    atol: float = 1e-5
    rtol: float = 1e-5
    # prose
    description: str = ""
    course_result: str = ""                    # the course's own figure, for comparison
    recipe_notes: str = ""                     # what the zoo's recipe changes from the course's, and why

    @property
    def is_sequence(self) -> bool:
        return any("sequence" in t.shape for t in self.inputs)

    @property
    def is_classifier(self) -> bool:
        return self.task in ("binary", "multiclass", "multi-output")

    def summary_io(self) -> str:
        def fmt(ts):
            return ", ".join("(" + ", ".join(str(d) if not isinstance(d, str) else d[0].upper()
                                             for d in t.shape) + ")" for t in ts)
        return f"{fmt(self.inputs)} -> {fmt(self.outputs)}"

    def to_dict(self) -> dict:
        return {
            "name": self.name, "course": self.course, "task": self.task, "build": self.build,
            "build_kwargs": dict(self.build_kwargs), "params": self.params,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "preprocess": {k: dataclasses.asdict(p) for k, p in self.preprocess.items()},
            "labels": {k: list(v) for k, v in self.labels.items()},
            "output_kind": self.output_kind, "dataset": self.dataset,
            "recipe": dataclasses.asdict(self.recipe), "monitor": self.monitor,
            "tolerance": {"atol": self.atol, "rtol": self.rtol},
            "description": self.description, "course_result": self.course_result,
            "recipe_notes": self.recipe_notes,
        }


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_catalog() -> None:
    if not _REGISTRY:
        importlib.import_module("zoo.catalog")


def names() -> list[str]:
    _load_catalog()
    return sorted(_REGISTRY)


def specs() -> list[ModelSpec]:
    return [_REGISTRY[n] for n in names()]


def get(name: str) -> ModelSpec:
    _load_catalog()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else "run `zoo list` to see them all"
        raise ZooError(f"unknown model {name!r}: {hint}") from None


def build(name: str | ModelSpec, seed: int | None = None):
    """Instantiate the model's nn.Module (in train mode, as a fresh nn.Module is)."""
    spec = name if isinstance(name, ModelSpec) else get(name)
    import torch

    module_name, attr = spec.build.split(":")
    factory = getattr(importlib.import_module(module_name), attr)
    if seed is not None:
        torch.manual_seed(seed)
    return factory(**spec.build_kwargs)
