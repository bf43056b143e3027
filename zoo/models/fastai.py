"""fast.ai, lesson 4: MNIST 3 vs 7 from scratch. The output is a logit for "3"."""

from torch import nn


def mnist_linear() -> nn.Module:
    return nn.Linear(28 * 28, 1)


def simple_net() -> nn.Module:
    return nn.Sequential(nn.Linear(28 * 28, 30), nn.ReLU(), nn.Linear(30, 1))
