"""The epoch loop of a run: its phases (transfer learning trains the head, then fine-tunes), and per epoch the
steps (in mixed precision with --amp), the evaluation, the divergence check, early stopping, best-epoch weights,
the plateau schedule, the progress bar, the run's log and the checkpoint. What a run has done so far is a RunState,
which the checkpoint carries."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from zoo import data as zdata
from zoo.errors import ZooError
from zoo.outputs import WriteFailed
from zoo.registry import ModelSpec, Recipe
from zoo.training import _checkpoint as ckpt
from zoo.training._distributed import Ranks, sum_across, wrap
from zoo.training._metrics import lower_is_better, scalars
from zoo.training._runlog import RunLog
from zoo.training._trainer import (Diverged, MixedPrecision, Phase, epoch_batches, keep_batchnorm_statistics,
                                   make_optimizer, make_scheduler, per_step, run_eval, set_trainable, train_epoch,
                                   training_phases)

FAR_WORSE = 100   # a regressor whose MAE is this many times its baseline's (a constant!) has diverged


def checkpoint_interval() -> float:
    return float(os.environ.get("ZOO_CHECKPOINT_SECONDS", "2"))


@dataclasses.dataclass
class RunState:
    """A run so far. All but `best_weights` is the JSON a checkpoint keeps (with the run's identity)."""
    best_value: float
    history: list = dataclasses.field(default_factory=list)
    best_loss: float = math.inf
    best_epoch: int = 0
    epoch: int = 0
    seconds: float = 0.0    # training time before this process (a resumed run counts its earlier part)
    log: str = ""           # the run's log folder, under the logs folder
    best_weights: dict = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def fresh(cls, monitor: str, model) -> "RunState":
        return cls(best_value=math.inf if lower_is_better(monitor) else -math.inf,
                   best_weights=copy.deepcopy(model.state_dict()))

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "best_weights"}

    def restore(self, saved: dict, best_weights: dict) -> None:
        for f in dataclasses.fields(self):
            if f.name in saved:
                setattr(self, f.name, saved[f.name])
        self.best_weights = best_weights

    def add(self, record: dict, value: float, loss: float, minimize: bool, model) -> bool:
        """The epoch's record, whose monitored `value` and `loss` decide whether it is the best so far (then its
        weights are kept). Returns whether it is."""
        self.history.append(record)
        self.epoch = record["epoch"]
        # ties on the monitored metric (accuracy saturates on easy data) go to the lower loss
        better = value < self.best_value if minimize else value > self.best_value
        if not (better or (value == self.best_value and loss < self.best_loss)):
            return False
        self.best_value, self.best_loss, self.best_epoch = value, loss, record["epoch"]
        self.best_weights = copy.deepcopy(model.state_dict())
        return True


def divergence(record: dict, split: str, monitor: str) -> str | None:
    """Why an epoch's figures say that training diverged, or None: the losses or the monitored metric are not
    finite, or a regressor's MAE is more than FAR_WORSE times its baseline's (the training median's, a constant
    prediction; or the persistence forecast's)."""
    for key in ("train_loss", f"{split}_loss", f"{split}_{monitor}"):
        value = record.get(key)
        if value is not None and not math.isfinite(value):
            return f"the {key.replace('_', ' ')} is {value}"
    for key, value in record.items():
        if not key.startswith(f"{split}_") or not key.endswith("mae") or key.endswith(("median_mae", "persistence_mae")):
            continue
        for baseline_key, what in (("median_mae", "the training median's"), ("persistence_mae", "persistence's")):
            baseline = record.get(key[:-3] + baseline_key)
            if baseline and value > FAR_WORSE * baseline:
                return (f"the {key.replace('_', ' ')} {value:.4g} is more than {FAR_WORSE} times {what} "
                        f"({baseline:.4g}), a constant prediction")
    return None


class RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} samples/s" if task.speed else "", style="progress.data.speed")


def progress_bar(console: Console) -> Progress:
    """Per epoch: samples done, the rate, the time left and the running loss; nothing without a terminal."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeRemainingColumn(), TextColumn("loss {task.fields[loss]:.4f}"), console=console,
                    transient=True, disable=not console.is_terminal)


@dataclasses.dataclass
class EpochLoop:
    """Everything the epochs of one run share. `run()` trains from `state` to the end (or an early stop)."""
    spec: ModelSpec
    recipe: Recipe
    model: object
    loss_fn: object
    train_set: zdata.Dataset
    val_set: zdata.Dataset
    baselines: dict
    device: object
    ranks: Ranks
    console: Console
    out: Path
    run_id: dict
    precision: MixedPrecision
    log: RunLog

    def __post_init__(self):
        self.minimize = lower_is_better(self.spec.monitor)
        self.split = "val" if len(self.val_set) else "train"
        self.batches = list(epoch_batches(len(self.train_set), self.recipe, 1, self.ranks))
        self.total_epochs = training_phases(self.recipe)[-1].last_epoch
        self.started = self.last_save = time.monotonic()

    def run(self, state: RunState, restored: tuple[dict, dict] | None) -> float:
        """Train; returns this process's training seconds. `restored`: the checkpoint resumed, if any."""
        self.started = self.last_save = time.monotonic()
        progress = progress_bar(self.console)
        try:
            with progress:
                for phase in training_phases(self.recipe):
                    if state.epoch >= phase.last_epoch:
                        continue
                    inside = restored is not None and state.epoch >= phase.first_epoch  # the checkpoint's phase
                    self.run_phase(phase, state, restored if inside else None, progress)
                    restored = None
        except KeyboardInterrupt:
            try:
                saved = ckpt.read_checkpoint_state(self.out, self.spec.name)
            except ZooError:
                saved = None
            where = f"its checkpoint after epoch {saved['epoch']} is" if saved else "no checkpoint was"
            self.console.print(f"interrupted: {where} written to {self.out}/; the same command with --resume "
                               "continues from there")
            raise
        return time.monotonic() - self.started

    def run_phase(self, phase: Phase, state: RunState, restored, progress: Progress) -> None:
        set_trainable(self.model, phase)
        trained = wrap(self.model, self.ranks, self.device)   # DDP registers the parameters that train in this phase
        optimizer = make_optimizer(self.model, self.recipe, phase.lr)
        scheduler = make_scheduler(optimizer, self.recipe,
                                   (phase.last_epoch - phase.first_epoch + 1) * len(self.batches), self.minimize)
        if restored is not None:
            ckpt.restore_optimizer(optimizer, scheduler, *restored)
            self.precision.scaler.load_state_dict(restored[0].get("scaler") or {})
        if phase.label:
            self.console.print(f"{phase.label}: epochs {phase.first_epoch}-{phase.last_epoch} at lr {phase.lr:g}")
        stale = state.epoch - max(state.best_epoch, phase.first_epoch - 1)
        for epoch in range(max(phase.first_epoch, state.epoch + 1), phase.last_epoch + 1):
            if stale >= self.recipe.patience:
                self.console.print(f"early stop: no {self.spec.monitor} improvement for {self.recipe.patience} epochs")
                break
            record = self.run_epoch(epoch, trained, optimizer, scheduler, progress)
            self.log.epoch(record)
            why = divergence(record, self.split, self.spec.monitor)
            if why:
                message = (f"training diverged at epoch {epoch}: {why}; lower --lr (this run's is {phase.lr:g}) or "
                           f"check the data{self.leftover()}")
                self.log.diverged(message, [*state.history, record])
                raise Diverged(message)
            value = record[f"{self.split}_{self.spec.monitor}"]
            improved = state.add(record, value, record[f"{self.split}_loss"], self.minimize, self.model)
            stale = 0 if improved else stale + 1
            if scheduler is not None and per_step(scheduler) is None:
                scheduler.step(value)   # plateau: the learning rate falls when the monitored metric stalls
            self.report(record, improved)
            self.save(state, optimizer, scheduler, final=epoch == phase.last_epoch)

    def run_epoch(self, epoch: int, trained, optimizer, scheduler, progress: Progress) -> dict:
        """Train one epoch and score it: the history record."""
        trained.train()
        keep_batchnorm_statistics(self.model, self.recipe.bn_eval)
        task = progress.add_task(f"epoch {epoch}/{self.total_epochs}", total=sum(len(b) for b in self.batches),
                                 loss=0.0)
        started = time.monotonic()
        running, seen, steps = train_epoch(self.spec, trained, optimizer, scheduler, self.loss_fn, self.train_set,
                                           self.recipe, epoch, self.ranks, self.device,
                                           lambda loss, n: progress.update(task, advance=n, loss=loss), self.precision)
        progress.remove_task(task)
        running, seen = sum_across([running, seen], self.ranks)
        record = {"epoch": epoch, "train_loss": running / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
                  "steps": steps, "seconds": round(time.monotonic() - started, 3)}   # the training steps' time
        scored = self.val_set if self.split == "val" else self.train_set
        values = run_eval(self.model, self.spec, scored, self.loss_fn, self.device, self.baselines, self.ranks)
        record.update({f"{self.split}_{k}": v for k, v in scalars(values).items()})
        return record

    def report(self, record: dict, improved: bool) -> None:
        epoch, total = record["epoch"], self.total_epochs
        if total <= 100 or epoch % (total // 50) == 0 or epoch == total:
            shown = {k: v for k, v in record.items()
                     if k in ("train_loss", "val_loss") or k.endswith(self.spec.monitor)}
            self.console.print(f"epoch {epoch:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                               + ("  *" if improved else ""), highlight=False)

    def save(self, state: RunState, optimizer, scheduler, final: bool) -> None:
        """The checkpoint, every few seconds and at the end of each phase (rank 0 only)."""
        now = time.monotonic()
        if not self.ranks.main or (now - self.last_save < checkpoint_interval() and not final):
            return
        saved = {**state.to_json(), "seconds": state.seconds + now - self.started, "run": self.run_id,
                 "scaler": self.precision.scaler.state_dict()}
        try:
            ckpt.save_checkpoint(self.out, self.spec.name, self.model, state.best_weights, optimizer, scheduler, saved)
        except (OSError, WriteFailed) as e:
            before = ckpt.read_checkpoint_state(self.out, self.spec.name)
            kept = f"the checkpoint after epoch {before['epoch']} is intact" if before else "no checkpoint was kept"
            reason = e.reason if isinstance(e, WriteFailed) else e.strerror or e
            raise ZooError(f"cannot write the checkpoint {ckpt.checkpoint_path(self.out, self.spec.name)}: "
                           f"{reason}; {kept}: free some space and run the same command with "
                           "--resume") from None
        self.last_save = now

    def leftover(self) -> str:
        """For the divergence message: the checkpoint this run leaves behind, if any."""
        if not ckpt.checkpoint_path(self.out, self.spec.name).is_file():
            return ""
        return f" (its checkpoint in {self.out}/ diverges the same way: start over with --restart)"
