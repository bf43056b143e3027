"""One trainer for every spec: recipe from the spec, validation split with a fixed seed, torchmetrics,
early stopping, best-epoch weights, resumable checkpoints, weights + card + history + plots."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from zoo import __version__, data as zdata, registry
from zoo.contract import preprocessing_to_dict
from zoo.data.augment import augment
from zoo.errors import ZooError
from zoo.outputs import RUNS, write_json, writable_folder
from zoo.registry import ModelSpec, Recipe
from zoo.training import _checkpoint as ckpt
from zoo.training._metrics import Metrics, lower_is_better, scalars
from zoo.training._plots import plot_confusion, plot_history
from zoo.weights import read_card, sha256_file, weights_dir

EVAL_BATCH = 512
BUILTIN_EPOCHS = 15  # epochs on the built-in sample unless --epochs says otherwise


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ZooError("--device cuda: no CUDA device is available to torch on this machine")
    if device not in ("cpu", "cuda"):
        raise ZooError(f"--device {device!r}: expected auto, cpu or cuda")
    return torch.device(device)


def split_indices(dataset: zdata.Dataset, spec: ModelSpec, fraction: float, seed: int):
    """(train, val) index tensors. Time-ordered data: the last `fraction` of the windows, with the
    windows overlapping the boundary dropped; otherwise a split stratified by class with a fixed seed."""
    n = len(dataset)
    if fraction <= 0:
        return torch.arange(n), torch.arange(0)
    if dataset.ordered:
        n_val = max(1, int(n * fraction))
        gap = next(iter(dataset.inputs.values())).shape[1]
        return torch.arange(0, max(0, n - n_val - gap)), torch.arange(n - n_val, n)
    generator = torch.Generator().manual_seed(seed)
    if spec.is_classifier:
        target = next(iter(dataset.targets.values())).view(n, -1)[:, 0].long()
        train, val = [], []
        for cls in target.unique():
            members = (target == cls).nonzero().view(-1)
            members = members[torch.randperm(len(members), generator=generator)]
            k = int(round(len(members) * fraction))
            val.append(members[:k])
            train.append(members[k:])
        return torch.cat(train).sort().values, torch.cat(val).sort().values
    order = torch.randperm(n, generator=generator)
    n_val = max(1, int(n * fraction))
    return order[n_val:].sort().values, order[:n_val].sort().values


def card_split(dataset: zdata.Dataset, spec: ModelSpec, card: dict | None):
    """(train, val) index tensors as the trainer split `dataset` for the weights of `card`: the validation
    fraction and seed the card records (the spec's recipe for weights without a card), so the validation
    part is the one the card's validation metrics were measured on when the data is the same."""
    recipe = (card or {}).get("recipe") or {}
    fraction = float(recipe.get("val_fraction", spec.recipe.val_fraction))
    seed = int((card or {}).get("seed", recipe.get("seed", spec.recipe.seed)))
    return split_indices(dataset, spec, fraction, seed)


def fit_preprocessing(dataset: zdata.Dataset, train_idx: torch.Tensor) -> dict:
    """Each input's preprocessing fitted on the training split only (statistics, training ranges)."""
    return {name: pre.fit(dataset.inputs[name][train_idx].numpy()) for name, pre in dataset.preprocess.items()}


def make_loss(spec: ModelSpec, recipe: Recipe):
    kind = recipe.loss
    weight = recipe.loss_weights
    if kind == "cross_entropy":
        ce = torch.nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        return lambda outputs, targets: sum(weight.get(k, 1.0) * ce(outputs[k], targets[k]) for k in outputs)
    if kind == "bce":
        bce = torch.nn.BCELoss()
        return lambda outputs, targets: sum(bce(outputs[k].clamp(1e-7, 1 - 1e-7), targets[k]) for k in outputs)
    if kind == "bce_with_logits":
        bcel = torch.nn.BCEWithLogitsLoss()
        return lambda outputs, targets: sum(bcel(outputs[k], targets[k]) for k in outputs)
    if kind == "mse":
        mse = torch.nn.MSELoss()
        return lambda outputs, targets: sum(mse(outputs[k], targets[k]) for k in outputs)
    if kind == "mnist_loss":  # fast.ai lesson 4: distance of sigmoid(prediction) from the target
        def mnist_loss(outputs, targets):
            return sum(torch.where(targets[k] == 1, 1 - outputs[k].sigmoid(), outputs[k].sigmoid()).mean()
                       for k in outputs)
        return mnist_loss
    raise ZooError(f"unknown loss {kind!r} in the recipe of {spec.name}")


def make_optimizer(model, recipe: Recipe):
    params = model.parameters()
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    raise ZooError(f"unknown optimizer {recipe.optimizer!r}; expected sgd, adam or adamw")


def make_scheduler(optimizer, recipe: Recipe, total_steps: int):
    if recipe.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if recipe.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.lr, total_steps=max(1, total_steps),
                                                   pct_start=0.15)
    if recipe.scheduler == "none":
        return None
    raise ZooError(f"unknown scheduler {recipe.scheduler!r}; expected none, cosine or onecycle")


def as_dict(spec: ModelSpec, output) -> dict[str, torch.Tensor]:
    outputs = output if isinstance(output, tuple) else (output,)
    return {t.name: o for t, o in zip(spec.outputs, outputs)}


def batches(n: int, batch_size: int, generator: torch.Generator | None, limit: int | None = None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    order = order[:limit] if limit else order
    n = len(order)
    stops = list(range(batch_size, n, batch_size)) + [n]
    if generator is not None and len(stops) > 1 and stops[-1] - stops[-2] == 1:
        stops.pop()  # a final batch of one breaks BatchNorm; its sample comes back next epoch
    start = 0
    for stop in stops:
        yield order[start:stop]
        start = stop


@torch.no_grad()
def run_eval(model, spec: ModelSpec, dataset: zdata.Dataset, loss_fn, device) -> dict:
    """Loss and every metric over a whole split, in eval mode, without augmentation."""
    model.eval()
    metrics = Metrics(spec)
    total, count = 0.0, 0
    for idx in batches(len(dataset), EVAL_BATCH, None):
        part = dataset.subset(idx)
        inputs = {k: v.to(device) for k, v in zdata.model_inputs(dataset.preprocess, part.inputs).items()}
        targets = {k: v.to(device) for k, v in part.targets.items()}
        outputs = as_dict(spec, model(*inputs.values()))
        total += float(loss_fn(outputs, targets)) * len(idx)
        count += len(idx)
        metrics.update({k: v.cpu() for k, v in outputs.items()}, {k: v.cpu() for k, v in targets.items()},
                       {k: v.cpu() for k, v in inputs.items()})
    return {"loss": total / max(count, 1), **metrics.compute()}


def _real_data_weights(out: Path, name: str) -> bool:
    card = read_card(name, out)
    return bool(card) and card.get("dataset", {}).get("source") == "files"


def output_folder(name: str, out: str | Path | None, *, builtin_data: bool, replace_shipped: bool = False,
                  force: bool = False) -> Path:
    """Where a run writes: `out`, else runs/ (the shipped weights folder only with `replace_shipped`).
    Refuses, before any work, to replace shipped weights without `replace_shipped`, to replace weights
    trained on real data with a built-in-sample run without `force`, and any folder it cannot write."""
    shipped = weights_dir()
    folder = Path(out) if out is not None else (shipped if replace_shipped else RUNS)
    if (folder.resolve() == shipped.resolve() and (shipped / f"{name}.safetensors").exists()
            and not replace_shipped):
        raise ZooError(f"{folder} holds the shipped {name} weights, which this run would replace: pass "
                       f"--replace-shipped to do that on purpose, or write elsewhere (the default is {RUNS}/)")
    if builtin_data and not force and _real_data_weights(folder, name):
        raise ZooError(f"{folder}/{name}.safetensors holds weights trained on the real dataset; training on "
                       "the built-in sample would replace them: pass another --out DIR (or --force)")
    return writable_folder(folder, "--out")


def _checkpoint_interval() -> float:
    return float(os.environ.get("ZOO_CHECKPOINT_SECONDS", "2"))


def train(name: str, data: str | Path | None = None, *, out: str | Path | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          seed: int | None = None, device: str = "auto", resume: bool = False, force: bool = False,
          replace_shipped: bool = False, strict: bool = False, console: Console | None = None) -> dict:
    """Train `name` on `data` (or the built-in sample) and write `<out>/<name>.safetensors` plus its
    card, history and plots; `out` defaults to runs/, and the shipped weights folder is written only with
    `replace_shipped`. `strict` stops at the first unreadable sample instead of skipping it. Returns the card."""
    spec = registry.get(name)
    console = console or Console(stderr=True)
    overrides = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed}.items()
                 if v is not None}
    for key, value in overrides.items():
        if key != "seed" and value <= 0:
            raise ZooError(f"--{key.replace('_', '-')} must be positive, got {value}")
    recipe = dataclasses.replace(spec.recipe, **overrides)
    course_data = registry.dataset(spec.dataset).course_data
    if data is None and not course_data and epochs is None and recipe.epochs > BUILTIN_EPOCHS:
        # the built-in sample is a quick, learnable smoke run, not the real thing
        recipe = dataclasses.replace(recipe, epochs=BUILTIN_EPOCHS)
    out = output_folder(name, out, builtin_data=data is None and not course_data, replace_shipped=replace_shipped,
                        force=force)
    dev = resolve_device(device)
    torch.manual_seed(recipe.seed)

    if data is None and course_data:
        console.print(f"training {name} on the course's own data ({spec.dataset}, built in)")
    elif data is None:
        console.print(f"[yellow]no --data given: training {name} on the built-in sample of "
                      f"{spec.dataset} ({recipe.epochs} epochs); pass --data DIR for the real dataset[/]")
    dataset = zdata.load(spec, data, strict=strict)
    train_idx, val_idx = split_indices(dataset, spec, recipe.val_fraction, recipe.seed)
    if len(train_idx) == 0:
        raise ZooError(f"{spec.dataset}: too few samples ({len(dataset)}) to train on")
    dataset.preprocess = fit_preprocessing(dataset, train_idx)
    train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    has_val = len(val_set) > 0
    console.print(f"{name}: {len(train_set)} training and {len(val_set)} validation samples "
                  f"({dataset.source}); device {dev}")

    model = registry.build(spec, seed=recipe.seed).to(dev)
    loss_fn = make_loss(spec, recipe)
    optimizer = make_optimizer(model, recipe)
    steps_per_epoch = len(list(batches(len(train_set), recipe.batch_size, torch.Generator(),
                                       recipe.samples_per_epoch)))
    scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps_per_epoch)
    monitor, minimize = spec.monitor, lower_is_better(spec.monitor)

    history: list[dict] = []
    best_state = copy.deepcopy(model.state_dict())
    best_value, best_epoch, start_epoch = math.inf if minimize else -math.inf, 0, 1
    best_loss = math.inf
    run_id = {"recipe": dataclasses.asdict(recipe), "fingerprint": dataset.fingerprint}
    if resume:
        restored = ckpt.load_checkpoint(out, name, model, optimizer, scheduler)
        if restored is None:
            console.print("--resume: no checkpoint found, starting from scratch")
        else:
            state, best_state = restored
            if state["run"] != run_id:
                raise ZooError(f"--resume: the checkpoint in {out} was made with another recipe or other data; "
                               "rerun without --resume to start over")
            history, best_value, best_epoch = state["history"], state["best_value"], state["best_epoch"]
            best_loss = state.get("best_loss", math.inf)
            start_epoch = state["epoch"] + 1
            console.print(f"resuming {name} after epoch {state['epoch']} (best {monitor} {best_value:.4g} "
                          f"at epoch {best_epoch})")

    epochs_run = start_epoch - 1
    stale = epochs_run - best_epoch
    last_save = time.monotonic()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                        console=console, transient=True, disable=not console.is_terminal)
    started = time.monotonic()
    try:
        with progress:
            for epoch in range(start_epoch, recipe.epochs + 1):
                if stale >= recipe.patience:
                    console.print(f"early stop: no {monitor} improvement for {recipe.patience} epochs")
                    break
                model.train()
                task = progress.add_task(f"epoch {epoch}/{recipe.epochs}", total=steps_per_epoch, loss=0.0)
                generator = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
                running, seen = 0.0, 0
                for idx in batches(len(train_set), recipe.batch_size, generator, recipe.samples_per_epoch):
                    part = train_set.subset(idx)
                    stored = part.inputs
                    if recipe.augment != "none":
                        stored = {k: augment(recipe.augment, v) if v.dtype == torch.uint8 else v
                                  for k, v in stored.items()}
                    inputs = zdata.model_inputs(dataset.preprocess, stored)
                    outputs = as_dict(spec, model(*(v.to(dev) for v in inputs.values())))
                    loss = loss_fn(outputs, {k: v.to(dev) for k, v in part.targets.items()})
                    if not torch.isfinite(loss):
                        raise ZooError(f"training diverged at epoch {epoch} (loss {float(loss)}); "
                                       "lower --lr or check the data", exit_code=1)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if recipe.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    running += loss.item() * len(idx)
                    seen += len(idx)
                    progress.update(task, advance=1, loss=running / seen)
                progress.remove_task(task)

                record = {"epoch": epoch, "train_loss": running / max(seen, 1), "lr": optimizer.param_groups[0]["lr"]}
                if has_val:
                    record.update({f"val_{k}": v for k, v in scalars(run_eval(model, spec, val_set, loss_fn, dev)).items()})
                else:
                    record.update({f"train_{k}": v
                                   for k, v in scalars(run_eval(model, spec, train_set, loss_fn, dev)).items()})
                history.append(record)
                split = "val" if has_val else "train"
                value, loss_value = record[f"{split}_{monitor}"], record[f"{split}_loss"]
                # ties on the monitored metric (accuracy saturates on easy data) go to the lower loss
                improved = (value < best_value if minimize else value > best_value) or (
                    value == best_value and loss_value < best_loss)
                if improved:
                    best_value, best_loss, best_epoch, stale = value, loss_value, epoch, 0
                    best_state = copy.deepcopy(model.state_dict())
                else:
                    stale += 1
                epochs_run = epoch
                shown = {k: v for k, v in record.items() if k in ("train_loss", "val_loss") or k.endswith(monitor)}
                if recipe.epochs <= 100 or epoch % (recipe.epochs // 50) == 0 or epoch == recipe.epochs:
                    console.print(f"epoch {epoch:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                                  + ("  *" if improved else ""), highlight=False)
                now = time.monotonic()
                if now - last_save >= _checkpoint_interval() or epoch == recipe.epochs:
                    ckpt.save_checkpoint(out, name, model, best_state, optimizer, scheduler, {
                        "epoch": epoch, "history": history, "best_value": best_value, "best_loss": best_loss,
                        "best_epoch": best_epoch,
                        "run": run_id})
                    last_save = now

    except KeyboardInterrupt:
        saved = ckpt.read_checkpoint_state(out, name)
        where = f"its checkpoint after epoch {saved['epoch']} is" if saved else "no checkpoint was"
        console.print(f"interrupted: {where} written to {out}/; the same command with --resume continues "
                      "from there")
        raise

    model.load_state_dict(best_state)
    train_time = time.monotonic() - started
    final = {"train": run_eval(model, spec, train_set, loss_fn, dev)}
    if has_val:
        final["val"] = run_eval(model, spec, val_set, loss_fn, dev)
    card = write_outputs(spec, model, out, dataset, recipe, final, history, epochs_run, best_epoch,
                         {"train": len(train_set), "val": len(val_set)}, data, train_time)
    ckpt.remove_checkpoint(out, name)
    headline = card["metrics"].get("val", card["metrics"]["train"]).get(monitor)
    console.print(f"[green]saved[/] {out / (name + '.safetensors')} (+ card, history, plots); best epoch {best_epoch}, "
                  f"{'val' if has_val else 'train'} {monitor} {headline:.4f}", highlight=False)
    return card


def _command(spec: ModelSpec, data, recipe: Recipe) -> str:
    parts = ["zoo train", spec.name]
    if data is not None:
        parts.append(f"--data <data-root>/{Path(data).name}")
    parts += [f"--epochs {recipe.epochs}", f"--batch-size {recipe.batch_size}", f"--lr {recipe.lr:g}",
              f"--seed {recipe.seed}"]
    return " ".join(parts)


def write_outputs(spec: ModelSpec, model, out: Path, dataset, recipe: Recipe, final: dict, history: list,
                  epochs_run: int, best_epoch: int, samples: dict, data, train_time: float) -> dict:
    import torchmetrics

    weights_path = out / f"{spec.name}.safetensors"
    ckpt.save_tensors(weights_path, {k: v.float() if v.is_floating_point() else v
                                     for k, v in model.state_dict().items()},
                      metadata={"model": spec.name, "format": "pt"})
    metrics = {split: scalars(values) for split, values in final.items()}
    for split, values in final.items():
        extra = {k: v for k, v in values.items() if isinstance(v, list) and k != "confusion_matrix"
                 and not k.endswith("_confusion_matrix")}
        if extra:
            metrics[split]["per_class"] = extra
    card = {
        "model": spec.name, "format_version": 2,
        "weights_file": weights_path.name, "sha256": sha256_file(weights_path), "params": spec.params,
        "dataset": {"name": spec.dataset, "source": dataset.source, "fingerprint": dataset.fingerprint,
                    "samples": samples, "notes": dataset.notes, "skipped": dataset.skipped},
        "preprocess": preprocessing_to_dict(dataset.preprocess),
        "labels": {k: list(v) for k, v in spec.labels.items()},
        "recipe": dataclasses.asdict(recipe), "seed": recipe.seed,
        "epochs_run": epochs_run, "best_epoch": best_epoch, "monitor": spec.monitor,
        "metrics": metrics,
        "train_seconds": round(train_time, 1),
        # the fitted numbers themselves, for models small enough to read (thermometer: w and b)
        **({"parameters": {k: v.flatten().tolist() for k, v in model.state_dict().items()}}
           if spec.params <= 2 else {}),
        "versions": {"zoo": __version__, "torch": torch.__version__, "torchmetrics": torchmetrics.__version__,
                     "python": sys.version.split()[0]},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": _command(spec, data, recipe),
        "notes": [spec.recipe_notes, *dataset.notes],
    }
    write_json(out / f"{spec.name}.json", card)
    write_json(out / f"{spec.name}.history.json", history)
    plot_history(history, spec.monitor, out / f"{spec.name}.curves.png", spec.name)
    split = "val" if "val" in final else "train"
    write_confusion_plots(spec, final[split], out, f"{spec.name}.confusion.png", f"{spec.name} ({split})")
    return card


def write_confusion_plots(spec: ModelSpec, values: dict, out: Path, filename: str, title: str) -> list[Path]:
    written = []
    for head in spec.outputs:
        key = "confusion_matrix" if len(spec.outputs) == 1 else f"{head.name}_confusion_matrix"
        if key in values:
            labels = list(spec.labels[head.name])
            path = out / (filename if len(spec.outputs) == 1 else filename.replace(".confusion", f".{head.name}-confusion"))
            plot_confusion(values[key], labels, path, title)
            written.append(path)
    return written
