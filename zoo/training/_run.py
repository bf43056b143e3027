"""One training run, from the caller's choices to the saved weights: the recipe and its overrides, the output
folder (locked against a second run, and a checkpoint there resumed or discarded only when asked), the data and the
model, the epoch loop (zoo/training/_loop.py) and the outputs. `train_all` runs every model and sums them up."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from zoo import data as zdata, registry
from zoo.errors import ZooError
from zoo.outputs import RUNS, WriteFailed, locked
from zoo.registry import SCHEDULES, ModelSpec, Recipe
from zoo.training import _checkpoint as ckpt
from zoo.training._distributed import Ranks, local_batch_size, start as start_ranks, stop as stop_ranks
from zoo.training._loop import EpochLoop, RunState
from zoo.training._outoftime import headline as oot_headline, year_folds
from zoo.training._runlog import RunLog, new_log_name
from zoo.training._trainer import (Diverged, MixedPrecision, find_pretrained, fit_preprocessing,
                                   make_loss, median_baselines, output_folder, resolve_device, rolling_origin,
                                   run_eval, split_indices, write_outputs)
from zoo.weights import read_card, weights_dir

BUILTIN_EPOCHS = 15  # epochs on the built-in sample unless --epochs says otherwise
MAX_SEED = 2**32 - 1
# recipe fields a caller may override (the CLI's flags of the same names; scheduler is --schedule), with what
# each must be
OVERRIDES = {"epochs": "a positive integer", "batch_size": "a positive integer", "lr": "a positive finite number",
             "seed": f"an integer from 0 to {MAX_SEED}", "finetune_epochs": "a positive integer",
             "scheduler": f"one of {', '.join(SCHEDULES)}", "plateau_patience": "an integer from 0",
             "plateau_factor": "a number between 0 and 1 (exclusive)", "amp": "true or false"}


@dataclasses.dataclass(frozen=True)
class Outcome:
    card: dict
    status: str   # trained | resumed | already trained


def _valid(key: str, value) -> bool:
    if key == "scheduler":
        return value in SCHEDULES
    if key == "amp":
        return isinstance(value, bool)
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if key in ("lr", "plateau_factor"):
        return number and value > 0 and (key == "lr" or value < 1)
    if not number or not isinstance(value, int):
        return False
    return 0 <= value <= MAX_SEED if key == "seed" else value >= 0 if key == "plateau_patience" else value > 0


def recipe_for(spec: ModelSpec, data, overrides: dict) -> Recipe:
    """The spec's recipe with the caller's overrides (each checked: one line naming a bad one); on the built-in
    sample, without --epochs, a short run."""
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise ZooError(f"unknown recipe setting(s) {unknown}; expected {', '.join(OVERRIDES)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for key, value in overrides.items():
        if not _valid(key, value):
            raise ZooError(f"--{key.replace('_', '-')} must be {OVERRIDES[key]}, got {value}")
    recipe = dataclasses.replace(spec.recipe, **overrides)
    if data is None and not registry.dataset(spec.dataset).course_data:
        # the built-in sample is a quick, learnable smoke run, not the real thing
        if "epochs" not in overrides:
            recipe = dataclasses.replace(recipe, epochs=min(recipe.epochs, BUILTIN_EPOCHS))
        if "finetune_epochs" not in overrides:
            recipe = dataclasses.replace(recipe, finetune_epochs=min(recipe.finetune_epochs, BUILTIN_EPOCHS // 3))
    return recipe


def _one_of(resume: bool, restart: bool) -> None:
    if resume and restart:
        raise ZooError("--resume continues a checkpoint and --restart discards it: pass one of them")


def refuse_unasked_checkpoints(out: Path, names: list[str], resume: bool, restart: bool) -> None:
    """A checkpoint in `out` is an interrupted run's work: it is continued (--resume) or discarded (--restart)
    only when the caller says which."""
    if resume or restart:
        return
    found = []
    for name in names:
        if ckpt.checkpoint_path(out, name).is_file():
            try:
                found.append(f"{name} (after epoch {ckpt.read_checkpoint_state(out, name)['epoch']})")
            except ZooError:
                found.append(f"{name} (unreadable)")
    if found:
        raise ZooError(f"{out}/ holds the checkpoint of an interrupted run of {', '.join(found)}: pass --resume to "
                       "continue it, or --restart to discard it and train from the start")


def train(name: str, data: str | Path | None = None, *, out: str | Path | None = None, device: str = "auto",
          resume: bool = False, restart: bool = False, force: bool = False, replace_shipped: bool = False,
          strict: bool = False, pretrained: str | Path | None = None, console: Console | None = None,
          **overrides) -> dict:
    """Train `name` on `data` (or the built-in sample) and write `<out>/<name>.safetensors` plus its
    card, history and plots; `out` defaults to runs/, and the shipped weights folder is written only with
    `replace_shipped`. A checkpoint already in `out` is continued with `resume` (a run that finished with the same
    recipe and data is not repeated) or discarded with `restart`, else refused. `strict` stops at the first
    unreadable sample instead of skipping it. `pretrained`: the file (or folder) of the weights a transfer-learning
    recipe starts from, if not in the usual places. `overrides`: recipe fields (epochs, batch_size, lr, seed,
    finetune_epochs, scheduler, plateau_patience, plateau_factor, amp). Every run also writes TensorBoard events
    and run.json to <out>/logs/<name>/<started>/ (zoo/training/_runlog.py). Returns the card."""
    return run_training(name, data, out=out, device=device, resume=resume, restart=restart, force=force,
                        replace_shipped=replace_shipped, strict=strict, pretrained=pretrained, console=console,
                        **overrides).card


def run_training(name: str, data: str | Path | None = None, *, out: str | Path | None = None, device: str = "auto",
                 resume: bool = False, restart: bool = False, force: bool = False, replace_shipped: bool = False,
                 strict: bool = False, pretrained: str | Path | None = None, console: Console | None = None,
                 **overrides) -> Outcome:
    """`train`, saying also whether the run was trained, resumed, or found already trained."""
    spec = registry.get(name)
    console = console or Console(stderr=True)
    recipe = recipe_for(spec, data, overrides)
    _one_of(resume, restart)
    builtin_data = data is None and not registry.dataset(spec.dataset).course_data
    out = output_folder(name, out, builtin_data=builtin_data, replace_shipped=replace_shipped, force=force)
    dev = resolve_device(device)
    ranks = start_ranks(dev.type)
    busy = f"another `zoo train` is writing to {out}/ now: wait for it to finish, or pass another --out"
    try:
        with locked(out, busy) if ranks.main else contextlib.nullcontext():
            refuse_unasked_checkpoints(out, [name], resume, restart)
            if restart and ranks.main:
                ckpt.remove_checkpoint(out, name)
            return _train(spec, recipe, data, out, dev, ranks, resume, strict, pretrained,
                          console if ranks.main else Console(stderr=True, quiet=True))
    finally:
        stop_ranks(ranks)


@dataclasses.dataclass
class Setup:
    """The data, split and preprocessed, and the model, ready to train."""
    dataset: zdata.Dataset
    train_set: zdata.Dataset
    val_set: zdata.Dataset
    folds: list
    baselines: dict
    model: torch.nn.Module
    loss_fn: object


def prepare(spec: ModelSpec, recipe: Recipe, data, strict: bool, pretrained, dev, console: Console) -> Setup:
    """Load the data, split it (out-of-time folds for forecasters with two years), fit the preprocessing on the
    training split, and build the model (from its pretrained weights for transfer learning)."""
    dataset = zdata.load(spec, data, strict=strict)
    folds = year_folds(dataset.times) if recipe.validation == "rolling-years" and dataset.ordered else []
    if folds:   # out of time on the folds, then the model itself is refitted on every year
        train_idx, val_idx = torch.arange(len(dataset)), torch.arange(0)
    else:
        if recipe.validation == "rolling-years":
            dataset.notes.append("out-of-time validation needs two calendar years of data and this data has one: the "
                                 f"latest {recipe.val_fraction:.0%} of the windows were held out instead")
        train_idx, val_idx = split_indices(dataset, spec, recipe.val_fraction, recipe.seed)
    if len(train_idx) < 2 or len(val_idx) == 1:
        raise ZooError(f"{spec.dataset}: too few samples ({len(dataset)}) to train on: the split leaves "
                       f"{len(train_idx)} for training and {len(val_idx)} for validation, and each needs at least 2")
    dataset.preprocess = fit_preprocessing(dataset, train_idx)
    train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    console.print(f"{spec.name}: {len(train_set)} training and {len(val_set)} validation samples "
                  f"({dataset.source}); device {dev}")
    model = registry.build(spec, seed=recipe.seed)
    if recipe.pretrained is not None:
        path = find_pretrained(recipe.pretrained, data, pretrained)
        registry.load_function(recipe.pretrained.load)(model, path)
        console.print(f"{spec.name} starts from {path.name} (sha256 {recipe.pretrained.sha256[:12]}…)", highlight=False)
    return Setup(dataset, train_set, val_set, folds, median_baselines(spec, train_set), model.to(dev),
                 make_loss(spec, recipe))


def _announce(spec: ModelSpec, recipe: Recipe, data, console: Console) -> None:
    if data is None and registry.dataset(spec.dataset).course_data:
        console.print(f"training {spec.name} on the course's own data ({spec.dataset}, built in)")
    elif data is None:
        console.print(f"[yellow]no --data given: training {spec.name} on the built-in sample of "
                      f"{spec.dataset} ({recipe.epochs} epochs); pass --data DIR for the real dataset[/]")


def _finished(out: Path, spec: ModelSpec, run_id: dict) -> dict | None:
    """The card of a run in `out` that finished with this recipe on this data, if there is one."""
    try:
        card = read_card(spec.name, out)
    except ZooError:
        return None
    if not card or not (out / f"{spec.name}.safetensors").is_file():
        return None
    same_data = (card.get("dataset") or {}).get("fingerprint") == run_id["fingerprint"]
    return card if same_data and card.get("recipe") == run_id["recipe"] else None


def _train(spec: ModelSpec, recipe: Recipe, data, out: Path, dev, ranks: Ranks, resume: bool, strict: bool,
           pretrained, console: Console) -> Outcome:
    torch.manual_seed(recipe.seed)
    _announce(spec, recipe, data, console)
    setup = prepare(spec, recipe, data, strict, pretrained, dev, console)
    # as the checkpoint stores it (JSON: tuples become lists), so that a resumed run compares equal
    run_id = json.loads(json.dumps({"recipe": dataclasses.asdict(recipe), "fingerprint": setup.dataset.fingerprint},
                                   default=str))
    restored = ckpt.load_checkpoint(out, spec.name) if resume else None
    if resume and restored is None:
        card = _finished(out, spec, run_id)
        if card is not None:
            console.print(f"{spec.name} already finished in {out}/ with this recipe and data (trained "
                          f"{card.get('date', '?')}): nothing to resume")
            return Outcome(card, "already trained")
        console.print("--resume: no checkpoint found, starting from scratch")
    if restored is not None and restored[0].get("run") != run_id:
        raise ZooError(f"--resume: the checkpoint in {out} was made with another recipe or other data; "
                       "pass --restart to discard it and start over")
    out_of_time = (rolling_origin(spec, recipe, setup.dataset, setup.folds, setup.loss_fn, dev, ranks, console)
                   if setup.folds else None)
    if ranks.distributed:
        console.print(f"data-parallel over {ranks.world} processes: {local_batch_size(recipe.batch_size, ranks)} "
                      f"samples per process and step, global batch {recipe.batch_size}")
    state = RunState.fresh(spec.monitor, setup.model)
    if restored is not None:
        state.restore(restored[0], ckpt.restore_model(setup.model, restored[1]))
        console.print(f"resuming {spec.name} after epoch {state.epoch} (best {spec.monitor} {state.best_value:.4g} "
                      f"at epoch {state.best_epoch})")
    state.log = state.log or new_log_name(out, spec.name)
    data_info = {"name": Path(data).name if data is not None else spec.dataset, "source": setup.dataset.source,
                 "fingerprint": setup.dataset.fingerprint}
    log = RunLog(spec, recipe, data_info, out, state.log if ranks.main else None, state.epoch, console)
    try:
        loop = EpochLoop(spec, recipe, setup.model, setup.loss_fn, setup.train_set, setup.val_set, setup.baselines,
                         dev, ranks, console, out, run_id, MixedPrecision(recipe.amp, dev), log)
        train_time = state.seconds + loop.run(state, restored)   # a resumed run counts its earlier part too
        card = _finish(spec, recipe, setup, state, out, data, train_time, out_of_time, dev, ranks, console, log)
    finally:
        log.close()
    return Outcome(card, "resumed" if restored is not None else "trained")


def _finish(spec: ModelSpec, recipe: Recipe, setup: Setup, state: RunState, out: Path, data, train_time: float,
            out_of_time: dict | None, dev, ranks: Ranks, console: Console, log: RunLog) -> dict:
    """The best epoch's weights scored on every split, and written with their card, history and plots."""
    model = setup.model
    model.load_state_dict(state.best_weights)
    if out_of_time is not None:
        model.alpha.fill_(out_of_time["alpha"])   # the shrink towards persistence chosen out of time
    final = {"train": run_eval(model, spec, setup.train_set, setup.loss_fn, dev, setup.baselines, ranks)}
    if len(setup.val_set):
        final["val"] = run_eval(model, spec, setup.val_set, setup.loss_fn, dev, setup.baselines, ranks)
    if out_of_time is not None:
        final["val"] = oot_headline(out_of_time)
    if not ranks.main:
        return {}
    try:
        card = write_outputs(spec, model, out, setup.dataset, recipe, final, state.history, state.epoch,
                             state.best_epoch, {"train": len(setup.train_set), "val": len(setup.val_set)}, data,
                             train_time, setup.baselines, out_of_time)
    except (OSError, WriteFailed) as e:
        reason = e.reason if isinstance(e, WriteFailed) else e.strerror or e
        raise ZooError(f"cannot write the weights, card or plots of {spec.name} to {out}/: {reason}; the "
                       f"checkpoint after epoch {state.epoch} is kept: free some space and run the same command "
                       "with --resume") from None
    log.finish(card, final, state.history)
    ckpt.remove_checkpoint(out, spec.name)
    headline = card["metrics"].get("val", card["metrics"]["train"]).get(spec.monitor)
    scored = "out-of-time" if out_of_time else "val" if len(setup.val_set) else "train"
    console.print(f"[green]saved[/] {out / (spec.name + '.safetensors')} (+ card, history, plots); best epoch "
                  f"{state.best_epoch}, {scored} {spec.monitor} {headline:.4f}", highlight=False)
    return card


@dataclasses.dataclass
class Summary:
    """One model's line in `train --all`'s table."""
    model: str
    status: str       # trained | resumed | already trained | diverged | failed
    monitor: str
    value: float | None = None
    split: str = ""
    seconds: float = 0.0
    error: str = ""
    card: dict | None = None


def train_all(data_root: str | Path | None = None, *, out: str | Path | None = None, resume: bool = False,
              restart: bool = False, replace_shipped: bool = False, console: Console | None = None,
              **options) -> list[Summary]:
    """Every model, one after another, each on its folder under `data_root` (else its built-in sample), with a
    counter; a model that fails is noted and the others still train. A checkpoint in `out` for any model is
    refused before anything trains unless `resume` or `restart` says what to do with it."""
    console = console or Console(stderr=True)
    names = registry.names()
    folder = Path(out) if out is not None else weights_dir() if replace_shipped else RUNS
    _one_of(resume, restart)
    refuse_unasked_checkpoints(folder, names if folder.is_dir() else [], resume, restart)
    rows = []
    for number, name in enumerate(names, start=1):
        spec = registry.get(name)
        console.rule(escape(f"[{number}/{len(names)}] {name}"), style="dim")
        subfolder = registry.dataset(spec.dataset).folder
        data = str(Path(data_root) / subfolder) if data_root is not None and subfolder is not None else None
        started = time.monotonic()
        row = Summary(name, "failed", spec.monitor)
        try:
            outcome = run_training(name, data, out=out, resume=resume, restart=restart,
                                   replace_shipped=replace_shipped, console=console, **options)
            metrics = outcome.card.get("metrics", {})   # none on the other ranks of a data-parallel run
            split = "val" if "val" in metrics else "train"
            row = dataclasses.replace(row, status=outcome.status, split=split, card=outcome.card,
                                      value=metrics.get(split, {}).get(spec.monitor))
        except ZooError as e:
            console.print(f"[red]{escape(name)}: {escape(str(e))}[/]", highlight=False)
            row = dataclasses.replace(row, status="diverged" if isinstance(e, Diverged) else "failed", error=str(e))
        rows.append(dataclasses.replace(row, seconds=time.monotonic() - started))
    return rows
