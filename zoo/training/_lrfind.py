"""`zoo lr-find`: the learning-rate range test (Leslie Smith's, as fast.ai's `lr_find` runs it). From the model's
starting weights, one batch per learning rate, the rate grows exponentially from `start` to `end` while the training
loss is recorded and smoothed (an exponential moving average, bias-corrected); the test stops early once the smoothed
loss is STOP_FACTOR times its lowest, or not finite. The model's and the optimizer's state and torch's RNG are put
back afterwards: the test leaves no trace on what it measured.

The suggestion's rule (SUGGESTION_RULE): the rate at the lowest smoothed loss, divided by 10 — the lowest point is
already where the loss is about to blow up, and a tenth of it is still in the steep part of the fall; the first
tenth of the curve is left out, where the moving average has seen too few batches. The steepest fall's rate is
reported beside it."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from zoo import registry
from zoo.errors import ZooError
from zoo.outputs import RUNS, writable_folder
from zoo.registry import ModelSpec, Recipe
from zoo.training._distributed import Ranks
from zoo.training._loop import progress_bar
from zoo.training._plots import plot_lr_find
from zoo.training._run import prepare, recipe_for
from zoo.training._trainer import (epoch_batches, keep_batchnorm_statistics, make_optimizer, resolve_device,
                                   set_trainable, train_step, training_phases)

STOP_FACTOR = 4
SMOOTHING = 0.98
SKIP = 10   # at least this many of the curve's first points are left out (the average is still settling)
SUGGESTION_RULE = "the learning rate at the lowest smoothed loss, divided by 10"


def range_test(spec: ModelSpec, model, optimizer, loss_fn, train_set, recipe: Recipe, device, *, start: float = 1e-7,
               end: float = 10.0, steps: int = 200, on_step=None) -> dict:
    """Run the test with `optimizer` (its learning rate is overwritten at each step) on `train_set`'s batches
    (as many epochs as `steps` needs); returns the rates, the smoothed losses and why it stopped. Whatever happens,
    the model, the optimizer, the model's train/eval mode and torch's RNG are restored afterwards."""
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    rng, training = torch.get_rng_state(), model.training
    try:
        return _sweep(spec, model, optimizer, loss_fn, train_set, recipe, device, start, end, steps, on_step)
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        torch.set_rng_state(rng)
        model.train(training)


def _sweep(spec, model, optimizer, loss_fn, train_set, recipe, device, start, end, steps, on_step) -> dict:
    growth = (end / start) ** (1 / max(1, steps - 1))
    lrs, losses, average, lowest, epoch = [], [], 0.0, math.inf, 1
    model.train()
    keep_batchnorm_statistics(model, recipe.bn_eval)
    while True:
        for idx in epoch_batches(len(train_set), recipe, epoch, Ranks()):
            lr = start * growth ** len(lrs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = float(train_step(spec, model, optimizer, loss_fn, train_set.subset(idx), recipe, device))
            if not math.isfinite(loss):
                return {"lrs": lrs, "losses": losses, "stopped": f"the loss was {loss} at learning rate {lr:.3g}"}
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (len(lrs) + 1))
            lrs.append(lr)
            losses.append(smoothed)
            lowest = min(lowest, smoothed)
            if on_step:
                on_step(smoothed, len(idx))
            if smoothed > STOP_FACTOR * lowest:
                return {"lrs": lrs, "losses": losses,
                        "stopped": f"the smoothed loss passed {STOP_FACTOR} times its lowest at learning rate {lr:.3g}"}
            if len(lrs) == steps:
                return {"lrs": lrs, "losses": losses, "stopped": f"reached {end:g} after {steps} steps"}
        epoch += 1


def suggest(lrs: list[float], losses: list[float]) -> dict:
    """The suggestion (SUGGESTION_RULE) rounded to two significant digits, and the steepest fall's rate (the most
    negative slope of the smoothed loss against log10 of the rate, up to the lowest point). Both leave out the
    first tenth of the curve (at least SKIP points), where the moving average has seen too few batches to be more
    than noise. None where the loss never fell after that."""
    skip = max(SKIP, len(losses) // 10)
    if len(losses) < skip + 3:
        return {"suggestion": None, "lowest_loss_lr": None, "steepest_lr": None}
    lowest = skip + int(np.argmin(losses[skip:]))
    if lowest < skip + 2:
        return {"suggestion": None, "lowest_loss_lr": lrs[lowest], "steepest_lr": None}
    slopes = np.gradient(np.asarray(losses[skip:lowest + 1]), np.log10(lrs[skip:lowest + 1]))
    return {"suggestion": float(f"{lrs[lowest] / 10:.2g}"), "lowest_loss_lr": lrs[lowest],
            "steepest_lr": float(f"{lrs[skip + int(np.argmin(slopes))]:.2g}")}


def find_lr(name: str, data: str | Path | None = None, *, out: str | Path | None = None, steps: int = 200,
            start: float = 1e-7, end: float = 10.0, batch_size: int | None = None, device: str = "auto",
            strict: bool = False, pretrained: str | Path | None = None, console: Console | None = None) -> dict:
    """The range test for `name` on `data`'s training split (the built-in sample without it), with the recipe's
    optimizer at `batch_size` (default: the recipe's), in the first phase of a transfer-learning recipe (the head on
    the frozen backbone). Writes <out>/<name>.lr-find.png and returns the curve, the suggestion and its rule."""
    if not (isinstance(steps, int) and steps >= 10):
        raise ZooError(f"--steps must be an integer of at least 10, got {steps}")
    if not (math.isfinite(start) and math.isfinite(end) and 0 < start < end):
        raise ZooError(f"--start and --end must be finite with 0 < start < end, got {start:g} and {end:g}")
    spec = registry.get(name)
    console = console or Console(stderr=True)
    recipe = recipe_for(spec, data, {"batch_size": batch_size})
    folder = writable_folder(out if out is not None else RUNS, "--out")
    dev = resolve_device(device)
    torch.manual_seed(recipe.seed)
    setup = prepare(spec, recipe, data, strict, pretrained, dev, console)
    set_trainable(setup.model, training_phases(recipe)[0])
    optimizer = make_optimizer(setup.model, recipe, start)
    with progress_bar(console) as progress:
        task = progress.add_task(f"lr-find {name}", total=steps * recipe.batch_size, loss=0.0)
        curve = range_test(spec, setup.model, optimizer, setup.loss_fn, setup.train_set, recipe, dev, start=start,
                           end=end, steps=steps, on_step=lambda loss, n: progress.update(task, advance=n, loss=loss))
    result = {"model": name, "data": setup.dataset.source if data is None else Path(data).name,
              "batch_size": recipe.batch_size, "optimizer": recipe.optimizer, "recipe_lr": recipe.lr,
              "steps_run": len(curve["lrs"]), **suggest(curve["lrs"], curve["losses"]), "rule": SUGGESTION_RULE,
              "stopped": curve["stopped"], "plot": str(folder / f"{name}.lr-find.png"), **curve}
    plot_lr_find(curve["lrs"], curve["losses"], result["suggestion"], recipe.lr, Path(result["plot"]),
                 f"{name}: learning-rate range test ({result['data']}, batch {recipe.batch_size})")
    return result
