"""Deep-learning fundamentals notes: Keras models rebuilt in PyTorch."""

from torch import nn


def circles_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1), nn.Sigmoid())


def fashion_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.SELU(), nn.Linear(64, 32), nn.SELU(), nn.Linear(32, 10))
