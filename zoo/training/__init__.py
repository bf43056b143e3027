"""Training and evaluation: `zoo.train(...)`, `zoo.evaluate(...)`."""

from zoo.training._evaluate import evaluate
from zoo.training._trainer import train

__all__ = ["train", "evaluate"]
