"""Training and evaluation: `zoo.train(...)`, `zoo.evaluate(...)`; `train_all(...)` trains every model; `find_lr(...)`
runs the learning-rate range test; `launch(...)` runs `zoo train` data-parallel with torchrun; the trainer's split and
metrics for other stages (export measures reduced precisions on the validation split the weights were chosen on)."""

from zoo.training._evaluate import evaluate
from zoo.training._launch import launch
from zoo.training._lrfind import find_lr
from zoo.training._metrics import Metrics, scalars
from zoo.training._run import train, train_all
from zoo.training._trainer import card_split

__all__ = ["train", "train_all", "find_lr", "evaluate", "launch", "card_split", "Metrics", "scalars"]
