"""Pretrained models in one line of Python, the way timm users write it:

    import zoo
    zoo.list_models("cifar2-*", pretrained=True)               # names with shipped weights
    model = zoo.create_model("clouds-cnn", pretrained=True)   # nn.Module in eval mode, shipped weights
    x = model.info.transform("examples/images/sky.jpg")       # the weights' own preprocessing -> tensor
    model.info.labels["logits"][model(x).argmax()]            # 'clear sky'
    zoo.create_model("clouds-cnn", pretrained=True, num_classes=3)   # the pretrained body, a new head

`create_model` / `list_models` are timm's names and arguments (`pretrained`, `num_classes`), so code written
for timm reads the same here; `hubconf.py` at the repository root offers every model to `torch.hub.load`.
Importing this module imports no torch; creating a model does."""

from __future__ import annotations

import fnmatch
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

from zoo import registry
from zoo.contract import Preprocess
from zoo.errors import ZooError
from zoo.weights import load_model, preprocessing, read_card, resolve, weights_dir

__all__ = ["create_model", "list_models", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What `create_model` attaches to a model as `model.info`: where its weights came from and what they need."""
    name: str
    task: str                                   # binary | multiclass | regression | multi-output
    output_kind: str                            # logits | logit | probability | value
    labels: dict[str, tuple[str, ...]]          # output name -> class names, in output order
    preprocess: dict[str, Preprocess]           # input name -> zoo.contract preprocessing, fitted with the weights
    weights: Path | None = None                 # the safetensors file loaded; None: random weights
    metrics: dict = field(default_factory=dict)  # the weights card's metrics, per split ("train", "val")
    caveat: str | None = None                   # what the card says the weights cannot be trusted for
    card: dict | None = None                    # the whole weights card

    def transform(self, raw):
        """Raw inputs -> the model's input tensor(s), through the weights' own preprocessing (zoo.contract):
        an image (path, bytes, PIL image, uint8 array) or a list of them; a row {column: value} or a list of
        rows; a series of numbers; a category name. A model with several inputs takes {input name: raw value}
        and gets a tuple in its inputs' order (`model(*x)`). What looks unlike the training data (a value
        outside the training range, a 16-bit image) is a warning (UserWarning)."""
        import torch

        names = list(self.preprocess)
        if len(names) > 1 and not (isinstance(raw, dict) and set(raw) == set(names)):
            raise ValueError(f"{self.name} has inputs {names}: pass {{input name: raw value}} for each of them")
        given = raw if len(names) > 1 else {names[0]: raw}
        tensors = []
        for name in names:
            pre = self.preprocess[name]

            def warn(index: int, message: str, name=name) -> None:
                warnings.warn(f"{self.name}, input {name!r}, sample {index + 1}: {message}", stacklevel=4)
            tensors.append(torch.from_numpy(pre.apply(pre.encode(given[name], warn))))
        return tensors[0] if len(tensors) == 1 else tuple(tensors)


def list_models(filter: str = "*", pretrained: bool = False) -> list[str]:   # noqa: A002 - timm's name
    """Model names matching the shell-style pattern `filter` (e.g. "cifar2-*"), sorted; with `pretrained`,
    only those with shipped weights."""
    names = fnmatch.filter(registry.names(), filter)
    return [n for n in names if not pretrained or resolve(registry.get(n), None) is not None]


def create_model(name: str, pretrained: bool = False, num_classes: int | None = None,
                 weights: str | Path | None = None):
    """The model `name` as an nn.Module in eval mode, with `model.info` (a ModelInfo: labels, preprocessing,
    the card's metrics and caveat).

    pretrained: load the shipped weights (checked against their card's sha256; safetensors, never pickle).
    weights: load this safetensors file instead (e.g. runs/clouds-cnn.safetensors, with its card beside it).
    num_classes: keep the body and give the model a new, untrained classifier head of this many classes, for
        fine-tuning on your own classes (classifiers with one output of raw scores only).
    Without `pretrained` or `weights`, the weights are random. Errors are ZooError, one line."""
    spec = registry.get(name)
    path = Path(weights) if weights is not None else resolve(spec, None) if pretrained else None
    if pretrained and weights is None and path is None:
        raise ZooError(f"{spec.name} has no shipped weights (none in {weights_dir()}): train some with "
                       f"`zoo train {spec.name}` and pass weights=PATH, or use pretrained=False for random weights")
    if path is None:
        model = registry.build(spec)
        info = ModelInfo(spec.name, spec.task, spec.output_kind, dict(spec.labels),
                         preprocessing(spec, None, random_weights=True))
    else:
        model = load_model(spec, path)
        card = read_card(path.stem, path.parent)
        info = ModelInfo(spec.name, spec.task, spec.output_kind, dict(spec.labels), preprocessing(spec, card),
                         path, (card or {}).get("metrics") or {}, (card or {}).get("caveat"), card)
    model.eval()
    if num_classes is not None:
        output = _replace_head(model, spec, num_classes)
        # the card's labels and metrics belong to the old head
        info = replace(info, labels={k: v for k, v in info.labels.items() if k != output}, metrics={}, caveat=None)
    model.info = info
    return model


def _example_inputs(spec: registry.ModelSpec) -> list:
    import torch

    return [torch.zeros(t.example_shape(batch=2, sequence=8)) for t in spec.inputs]


def _replace_head(model, spec: registry.ModelSpec, num_classes: int) -> str:
    """Swap the Linear layer that produces the model's one classifier output for a new one of `num_classes`
    outputs; ZooError where that layer is not unambiguous. Returns the output's name."""
    import torch
    from torch import nn

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ZooError(f"num_classes must be an integer of at least 2, got {num_classes!r}")
    if spec.task not in ("binary", "multiclass") or len(spec.outputs) != 1:
        raise ZooError(f"{spec.name} is a {spec.task} model with outputs {[t.name for t in spec.outputs]}: a new "
                       "head (num_classes) needs a classifier with one output")
    if spec.output_kind not in ("logits", "logit"):
        raise ZooError(f"{spec.name} ends in a sigmoid (its output is a {spec.output_kind}): a new head of "
                       f"{num_classes} classes needs a model whose output is raw scores (logits)")
    called = []
    hooks = [m.register_forward_hook(lambda module, args, out: called.append(module))
             for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            before = model(*_example_inputs(spec))
    finally:
        for hook in hooks:
            hook.remove()
    head = called[-1] if called else None
    if head is model:
        raise ZooError(f"{spec.name} is a single Linear layer: it has no body to keep under a new head")
    if head is None or head.out_features != before.shape[-1]:
        raise ZooError(f"{spec.name}: cannot tell which layer is its classifier head (its output does not come "
                       "from a Linear layer of that width), so num_classes cannot replace it")
    parent_name, _, attr = next(n for n, m in model.named_modules() if m is head).rpartition(".")
    new_head = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    setattr(model.get_submodule(parent_name), attr, new_head)
    with torch.no_grad():
        after = model(*_example_inputs(spec))
    if tuple(after.shape) != (before.shape[0], num_classes):
        raise ZooError(f"{spec.name}: its output does not come from its last Linear layer alone (replacing it gave "
                       f"shape {tuple(after.shape)}), so num_classes cannot give it a new head")
    return spec.outputs[0].name
