"""Training and evaluation: `zoo.train(...)`, `zoo.evaluate(...)`; `train_all(...)` trains every model; `find_lr(...)`
runs the learning-rate range test; `launch(...)` runs `zoo train` data-parallel with torchrun. The split and the
metrics are zoo.data's (`split_indices`, `card_split`) and zoo.metrics', which export uses too."""

from zoo.training._evaluate import evaluate
from zoo.training._launch import launch
from zoo.training._lrfind import find_lr
from zoo.training._run import train, train_all

__all__ = ["train", "train_all", "find_lr", "evaluate", "launch"]
