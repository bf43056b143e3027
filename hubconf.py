"""torch.hub entry points, one per zoo model (its name with "_" for "-"):

    torch.hub.load("<this repository's folder>", "clouds_cnn", pretrained=True, source="local")

Each takes the arguments of `zoo.create_model` (pretrained, num_classes, weights) and returns the same
nn.Module in eval mode, with `model.info` (labels, preprocessing, the weights card's metrics)."""

import zoo.hub as _hub
from zoo import registry as _registry

dependencies = ["torch", "torchvision", "numpy", "PIL", "safetensors"]


def _entry_point(name: str):
    def entry(pretrained: bool = False, **kwargs):
        return _hub.create_model(name, pretrained=pretrained, **kwargs)

    spec = _registry.get(name)
    entry.__name__ = entry.__qualname__ = name.replace("-", "_")
    entry.__doc__ = (f"{name} ({spec.course}): {spec.description} pretrained=True loads the shipped weights; "
                     "see zoo.create_model for num_classes and weights.")
    return entry


globals().update({name.replace("-", "_"): _entry_point(name) for name in _registry.names()})
