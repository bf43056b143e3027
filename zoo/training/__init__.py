"""Training and evaluation: `zoo.train(...)`, `zoo.evaluate(...)`; `launch(...)` runs `zoo train` data-parallel
with torchrun."""

from zoo.training._evaluate import evaluate
from zoo.training._launch import launch
from zoo.training._trainer import train

__all__ = ["train", "evaluate", "launch"]
