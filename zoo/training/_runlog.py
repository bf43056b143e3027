"""A run's log folder, <out>/logs/<model>/<started>/ (runs/logs/... for runs into the shipped weights folder, which
holds only weights and cards), written by rank 0 alone: TensorBoard event files, so that `tensorboard --logdir runs`
shows every run side by side (per epoch: each split's loss and metrics, the learning rate and the seconds of the
epoch's training steps; at the end: the hyper-parameters with the final metrics, and the confusion matrix as an
image), and run.json, which `zoo runs` lists (zoo/runs.py). A resumed run goes on in the same folder."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from zoo.outputs import RUNS, write_json
from zoo.registry import ModelSpec, Recipe
from zoo.runs import KIND, RUN_FILE
from zoo.training._metrics import lower_is_better
from zoo.training._plots import confusion_figure
from zoo.weights import weights_dir


def logs_root(out: Path) -> Path:
    return (RUNS if out.resolve() == weights_dir().resolve() else out) / "logs"


def new_log_name(out: Path, model: str) -> str:
    """<model>/<UTC start time>, unique in the logs folder."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name, n = f"{model}/{stamp}", 1
    while (logs_root(out) / name).exists():
        n += 1
        name = f"{model}/{stamp}-{n}"
    return name


def hyperparameters(spec: ModelSpec, recipe: Recipe, fingerprint: str) -> dict:
    """The recipe's numbers, strings and booleans (what TensorBoard's hparams take), with the model and the data."""
    values = {"model": spec.name, "data": fingerprint[:12]}
    values.update({key: value for key, value in dataclasses.asdict(recipe).items()
                   if isinstance(value, (bool, int, float, str))})
    return values


class RunLog:
    """The log of one run: `epoch()` after each epoch, then `finish()` or `diverged()`; `close()` in any case.
    Without a folder (ranks other than 0) or without tensorboard installed, only what can be written is. The log is
    secondary: a write that fails (a full disk) is a warning and the end of the log, never of the run."""

    def __init__(self, spec: ModelSpec, recipe: Recipe, data: dict, out: Path, name: str | None, resumed_at: int,
                 console: Console):
        """`data`: name, source and fingerprint; `name`: the folder under the logs folder (None: no log);
        `resumed_at`: the epoch of the checkpoint resumed (0: a new run)."""
        self.spec, self.recipe, self.data, self.console, self.writer = spec, recipe, data, console, None
        self.folder = logs_root(out) / name if name else None
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self.folder is None:
            return
        self._write(lambda: self._open(resumed_at))
        if self.folder is not None:
            console.print(f"logging to {self.folder}/ (tensorboard --logdir {self.folder.parent.parent}; zoo runs "
                          f"{self.folder.parent.parent.parent})", highlight=False)

    def _open(self, resumed_at: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ModuleNotFoundError:
            self.console.print("note: tensorboard is not installed, so this run writes no TensorBoard events "
                               "(pip install -e '.[train]')")
            return
        # a resumed run hides what the interrupted one logged after its checkpoint (TensorBoard's purge_step)
        self.writer = SummaryWriter(str(self.folder), purge_step=resumed_at + 1 if resumed_at else None)

    def _write(self, action) -> None:
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            action()
        except OSError as e:
            self.console.print(f"[yellow]warning:[/] cannot write the run's log to {self.folder}/ "
                               f"({e.strerror or e}): the log stops here, the training goes on", highlight=False)
            self.folder = self.writer = None

    def epoch(self, record: dict) -> None:
        if self.writer is not None:
            self._write(lambda: self._scalars(record))

    def _scalars(self, record: dict) -> None:
        for key, value in record.items():
            if key not in ("epoch", "steps"):
                tag = {"lr": "lr", "seconds": "time/training_seconds"}.get(key) or key.replace("_", "/", 1)
                self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()

    def finish(self, card: dict, final: dict, history: list) -> None:
        """The final metrics beside the hyper-parameters, the confusion matrix, and run.json."""
        if self.writer is not None:
            self._write(lambda: self._summary(card, final))
        self.record("finished", history, card=card)

    def _summary(self, card: dict, final: dict) -> None:
        metrics = {f"final/{split}_{k}": v for split, values in card["metrics"].items()
                   for k, v in values.items() if isinstance(v, float)}
        hparams = hyperparameters(self.spec, self.recipe, self.data["fingerprint"])
        self.writer.add_hparams(hparams, metrics, run_name=".")   # "." : in this run's folder
        split = "val" if "val" in final else "train"
        for head in self.spec.outputs:
            key = "confusion_matrix" if len(self.spec.outputs) == 1 else f"{head.name}_confusion_matrix"
            if key in final[split]:
                figure = confusion_figure(final[split][key], list(self.spec.labels[head.name]),
                                          f"{self.spec.name} ({split})")
                self.writer.add_figure(f"{split}/{key}", figure, card["epochs_run"], close=True)
        self.writer.flush()

    def diverged(self, message: str, history: list) -> None:
        self.record("diverged", history, message=message)

    def record(self, status: str, history: list, card: dict | None = None, message: str | None = None) -> None:
        """run.json, what `zoo runs` lists."""
        card = card or {}
        self._write(lambda: write_json(self.folder / RUN_FILE, {
            "kind": KIND, "model": self.spec.name, "status": status, "started": self.started,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": self.data, "recipe": json.loads(json.dumps(dataclasses.asdict(self.recipe), default=str)),
            "monitor": self.spec.monitor, "lower_is_better": lower_is_better(self.spec.monitor),
            "best_epoch": card.get("best_epoch"), "epochs_run": card.get("epochs_run", len(history)),
            "metrics": card.get("metrics"), "train_seconds": card.get("train_seconds"),
            "weights": card.get("weights_file"), "message": message, "history": history}))

    def close(self) -> None:
        if self.writer is not None:
            self._write(self.writer.close)
