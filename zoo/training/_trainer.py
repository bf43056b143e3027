"""One trainer for every spec: recipe from the spec, validation split with a fixed seed, torchmetrics,
early stopping, best-epoch weights, resumable checkpoints, weights + card + history + plots."""

from __future__ import annotations

import copy
import json
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
from zoo.registry import ModelSpec, Pretrained, Recipe
from zoo.training import _checkpoint as ckpt
from zoo.training._distributed import (Ranks, epoch_indices, local_batch_size, shard, start as start_ranks,
                                      stop as stop_ranks, sum_across, wrap)
from zoo.training._outoftime import caveat, choose_alpha, corrections, headline as oot_headline, year_folds
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
    if kind == "l1":
        l1 = torch.nn.L1Loss()
        return lambda outputs, targets: sum(l1(outputs[k], targets[k]) for k in outputs)
    if kind == "mnist_loss":  # fast.ai lesson 4: distance of sigmoid(prediction) from the target
        def mnist_loss(outputs, targets):
            return sum(torch.where(targets[k] == 1, 1 - outputs[k].sigmoid(), outputs[k].sigmoid()).mean()
                       for k in outputs)
        return mnist_loss
    raise ZooError(f"unknown loss {kind!r} in the recipe of {spec.name}")


def make_optimizer(model, recipe: Recipe, lr: float | None = None):
    """The recipe's optimizer over the model's trainable parameters, at `lr` (default: the recipe's)."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = recipe.lr if lr is None else lr
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=recipe.weight_decay)
    raise ZooError(f"unknown optimizer {recipe.optimizer!r}; expected sgd, adam or adamw")


def make_scheduler(optimizer, recipe: Recipe, total_steps: int):
    if recipe.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if recipe.scheduler == "onecycle":
        peak = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=max(1, total_steps),
                                                   pct_start=0.15)
    if recipe.scheduler == "none":
        return None
    raise ZooError(f"unknown scheduler {recipe.scheduler!r}; expected none, cosine or onecycle")


def as_dict(spec: ModelSpec, output) -> dict[str, torch.Tensor]:
    outputs = output if isinstance(output, tuple) else (output,)
    return {t.name: o for t, o in zip(spec.outputs, outputs)}


def train_epoch(spec: ModelSpec, trained, optimizer, scheduler, loss_fn, train_set: zdata.Dataset, recipe: Recipe,
                epoch: int, ranks: Ranks, device, on_step=None) -> tuple[float, int, int]:
    """One epoch of steps (augmentation, the preprocessing's apply, forward, backward, clipping, the schedule);
    returns this rank's summed loss, samples seen and steps. `trained` is the model, or its DDP wrapper."""
    running, seen, steps = 0.0, 0, 0
    for idx in epoch_batches(len(train_set), recipe, epoch, ranks):
        part = train_set.subset(idx)
        stored = part.inputs
        if recipe.augment != "none":
            stored = {k: augment(recipe.augment, v) if v.dtype == torch.uint8 else v for k, v in stored.items()}
        inputs = zdata.model_inputs(train_set.preprocess, stored)
        outputs = as_dict(spec, trained(*(v.to(device) for v in inputs.values())))
        loss = loss_fn(outputs, {k: v.to(device) for k, v in part.targets.items()})
        if not torch.isfinite(loss):
            raise ZooError(f"training diverged at epoch {epoch} (loss {float(loss)}); lower --lr or check the data",
                           exit_code=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(trained.parameters(), recipe.grad_clip)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        running += loss.item() * len(idx)
        seen += len(idx)
        steps += 1
        if on_step:
            on_step(running / seen)
    return running, seen, steps


def rolling_origin(spec: ModelSpec, recipe: Recipe, dataset: zdata.Dataset, folds, loss_fn, device, ranks: Ranks,
                   console: Console) -> dict:
    """Train a fresh model per out-of-time fold (every window before the scored year), score the year, and choose
    the shrink towards persistence on the folds' months (see zoo/training/_outoftime.py)."""
    scored = []
    for year, train_idx, score_idx in folds:
        started = time.monotonic()
        model = registry.build(spec, seed=recipe.seed).to(device)
        trained = wrap(model, ranks, device)
        train_set = dataset.subset(train_idx)
        optimizer = make_optimizer(model, recipe)
        steps = len(list(epoch_batches(len(train_set), recipe, 1, ranks)))
        scheduler = make_scheduler(optimizer, recipe, recipe.epochs * steps)
        for epoch in range(1, recipe.epochs + 1):
            trained.train()
            train_epoch(spec, trained, optimizer, scheduler, loss_fn, train_set, recipe, epoch, ranks, device)
        part = dataset.subset(score_idx)
        (windows,) = zdata.model_inputs(dataset.preprocess, part.inputs).values()
        (targets,) = part.targets.values()
        c, r = corrections(model, windows, targets, device)
        scored.append({"year": year, "c": c, "r": r, "months": part.times.astype("datetime64[M]").astype(str)})
        console.print(f"out of time: trained on {len(train_idx)} windows before {year}, {year} skill vs persistence "
                      f"{1 - float(((r - c) ** 2).mean() / (r ** 2).mean()):+.3f} unshrunk "
                      f"({time.monotonic() - started:.0f} s)")
    alpha, report = choose_alpha(scored, recipe.max_alpha)
    worst = report["worst_month"]
    console.print(f"out of time: shrink alpha {alpha:g}; skill " + ", ".join(
        f"{f['scored_year']} {f['skill']:+.3f}" for f in report["folds"]) +
        f"; worst month {worst['month']} {worst['skill']:+.3f}")
    return report


def epoch_batches(n: int, recipe: Recipe, epoch: int, ranks: Ranks):
    """The training batches of `epoch`: a permutation seeded by the recipe's seed and the epoch (its first
    `samples_per_epoch`); in a distributed run, this rank's DistributedSampler share of the same batches."""
    seed = recipe.seed * 100_003
    if not ranks.distributed:
        yield from batches(n, recipe.batch_size, torch.Generator().manual_seed(seed + epoch), recipe.samples_per_epoch)
        return
    indices = epoch_indices(n, seed, epoch, ranks, recipe.samples_per_epoch)
    size = local_batch_size(recipe.batch_size, ranks)
    chunks = list(indices.split(size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks.pop()   # as batches() does: a final batch of one breaks BatchNorm
    yield from chunks


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
def run_eval(model, spec: ModelSpec, dataset: zdata.Dataset, loss_fn, device, baselines: dict | None = None,
             ranks: Ranks = Ranks()) -> dict:
    """Loss and every metric over a whole split, in eval mode, without augmentation; `baselines` are the
    constant predictions regressors are compared with (the training split's median). In a distributed run
    each rank scores its shard and the figures are reduced across ranks (torchmetrics syncs on compute)."""
    model.eval()
    metrics = Metrics(spec, baselines)
    if ranks.distributed:
        dataset = dataset.subset(shard(len(dataset), ranks))
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
    total, count = sum_across([total, count], ranks)
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


def median_baselines(spec: ModelSpec, train_set: zdata.Dataset) -> dict[str, float]:
    """For regressors that are not forecasters (those have persistence): the training split's median per output,
    the constant prediction a model must beat."""
    if spec.is_classifier or spec.is_sequence:
        return {}
    return {t.name: float(train_set.targets[t.name].median()) for t in spec.outputs}


@dataclasses.dataclass(frozen=True)
class Phase:
    first_epoch: int
    last_epoch: int
    lr: float
    frozen: tuple[str, ...]          # parameter-name prefixes kept fixed
    unfrozen: tuple[str, ...] = ()   # prefixes trainable again although under `frozen`
    label: str = ""


def training_phases(recipe: Recipe) -> list[Phase]:
    """The recipe's epochs in order: one phase, or for transfer learning the frozen-backbone phase and then
    the fine-tuning phase at its own learning rate."""
    first = Phase(1, recipe.epochs, recipe.lr, recipe.frozen,
                  label="training the head on the frozen backbone" if recipe.frozen else "")
    if not recipe.finetune_epochs:
        return [first]
    return [first, Phase(recipe.epochs + 1, recipe.epochs + recipe.finetune_epochs, recipe.finetune_lr, recipe.frozen,
                         recipe.finetune, label=f"fine-tuning {', '.join(recipe.finetune)}")]


def set_trainable(model, phase: Phase) -> None:
    for name, parameter in model.named_parameters():
        frozen = any(name.startswith(p) for p in phase.frozen) and not any(name.startswith(p) for p in phase.unfrozen)
        parameter.requires_grad_(not frozen)


def keep_batchnorm_statistics(model, prefixes: tuple[str, ...]) -> None:
    """Put the BatchNorm layers under `prefixes` in eval mode (after model.train()): a pretrained backbone's
    statistics are not re-estimated from a small dataset's batches, frozen or fine-tuned."""
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    for name, module in model.named_modules():
        if isinstance(module, norms) and any(name.startswith(p) for p in prefixes):
            module.eval()


def find_pretrained(pretrained: Pretrained, data, given: str | Path | None) -> Path:
    """The file a transfer-learning recipe starts from: `given` (a file or folder), else $ZOO_PRETRAINED, the
    pretrained/ folder beside the dataset (a data root laid out as ../shared/data), the cache, or the
    ../shared/data/pretrained folder beside this checkout. Checked by sha256."""
    from zoo.data.builtin import cache_dir
    from zoo.weights import sha256_file

    places = []
    if given is not None:   # said explicitly: only there
        given = Path(given)
        places.append(given / pretrained.file if given.is_dir() else given)
    elif os.environ.get("ZOO_PRETRAINED"):
        places.append(Path(os.environ["ZOO_PRETRAINED"]) / pretrained.file)
    if given is None and data is not None:
        places += [Path(data).resolve().parent / "pretrained" / pretrained.file,
                   Path(data).resolve().parent.parent / "pretrained" / pretrained.file]
    if given is None:
        places += [cache_dir() / "pretrained" / pretrained.file,
                   Path(__file__).resolve().parents[3] / "shared" / "data" / "pretrained" / pretrained.file]
    for place in places:
        if place.is_file():
            digest = sha256_file(place)
            if digest != pretrained.sha256:
                raise ZooError(f"{place}: sha256 {digest[:12]}… is not the expected {pretrained.sha256[:12]}… "
                               f"({pretrained.source})")
            return place
    raise ZooError(f"this recipe starts from pretrained weights, {pretrained.file} ({pretrained.source}; sha256 "
                   f"{pretrained.sha256[:12]}…), which is not at {', '.join(str(p) for p in places)}; "
                   "pass --pretrained FILE or set ZOO_PRETRAINED to its folder")


def _checkpoint_interval() -> float:
    return float(os.environ.get("ZOO_CHECKPOINT_SECONDS", "2"))


def train(name: str, data: str | Path | None = None, *, out: str | Path | None = None,
          epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
          seed: int | None = None, device: str = "auto", resume: bool = False, force: bool = False,
          replace_shipped: bool = False, strict: bool = False, pretrained: str | Path | None = None,
          finetune_epochs: int | None = None, console: Console | None = None) -> dict:
    """Train `name` on `data` (or the built-in sample) and write `<out>/<name>.safetensors` plus its
    card, history and plots; `out` defaults to runs/, and the shipped weights folder is written only with
    `replace_shipped`. `strict` stops at the first unreadable sample instead of skipping it. `pretrained`: the
    file (or folder) of the weights a transfer-learning recipe starts from, if not in the usual places.
    Returns the card."""
    spec = registry.get(name)
    console = console or Console(stderr=True)
    overrides = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed,
                                   "finetune_epochs": finetune_epochs}.items() if v is not None}
    for key, value in overrides.items():
        if key != "seed" and value <= 0:
            raise ZooError(f"--{key.replace('_', '-')} must be positive, got {value}")
    recipe = dataclasses.replace(spec.recipe, **overrides)
    course_data = registry.dataset(spec.dataset).course_data
    if data is None and not course_data and epochs is None:
        # the built-in sample is a quick, learnable smoke run, not the real thing
        recipe = dataclasses.replace(recipe, epochs=min(recipe.epochs, BUILTIN_EPOCHS))
    if data is None and not course_data and finetune_epochs is None:
        recipe = dataclasses.replace(recipe, finetune_epochs=min(recipe.finetune_epochs, BUILTIN_EPOCHS // 3))
    out = output_folder(name, out, builtin_data=data is None and not course_data, replace_shipped=replace_shipped,
                        force=force)
    dev = resolve_device(device)
    ranks = start_ranks(dev.type)
    try:
        return _train(spec, recipe, data, out, dev, ranks, resume, strict, pretrained,
                      console if ranks.main else Console(stderr=True, quiet=True))
    finally:
        stop_ranks(ranks)


def _train(spec: ModelSpec, recipe: Recipe, data, out: Path, dev, ranks: Ranks, resume: bool, strict: bool,
           pretrained, console: Console) -> dict:
    name = spec.name
    course_data = registry.dataset(spec.dataset).course_data
    torch.manual_seed(recipe.seed)

    if data is None and course_data:
        console.print(f"training {name} on the course's own data ({spec.dataset}, built in)")
    elif data is None:
        console.print(f"[yellow]no --data given: training {name} on the built-in sample of "
                      f"{spec.dataset} ({recipe.epochs} epochs); pass --data DIR for the real dataset[/]")
    dataset = zdata.load(spec, data, strict=strict)
    folds = year_folds(dataset.times) if recipe.validation == "rolling-years" and dataset.ordered else []
    if folds:   # out of time on the folds, then the model itself is refitted on every year
        train_idx, val_idx = torch.arange(len(dataset)), torch.arange(0)
    else:
        if recipe.validation == "rolling-years":
            dataset.notes.append("out-of-time validation needs two calendar years of data and this data has one: the "
                                 f"latest {recipe.val_fraction:.0%} of the windows were held out instead")
        train_idx, val_idx = split_indices(dataset, spec, recipe.val_fraction, recipe.seed)
    if len(train_idx) == 0:
        raise ZooError(f"{spec.dataset}: too few samples ({len(dataset)}) to train on")
    dataset.preprocess = fit_preprocessing(dataset, train_idx)
    train_set, val_set = dataset.subset(train_idx), dataset.subset(val_idx)
    has_val = len(val_set) > 0
    baselines = median_baselines(spec, train_set)
    console.print(f"{name}: {len(train_set)} training and {len(val_set)} validation samples "
                  f"({dataset.source}); device {dev}")

    model = registry.build(spec, seed=recipe.seed)
    if recipe.pretrained is not None:
        path = find_pretrained(recipe.pretrained, data, pretrained)
        registry.load_function(recipe.pretrained.load)(model, path)
        console.print(f"{name} starts from {path.name} (sha256 {recipe.pretrained.sha256[:12]}…)", highlight=False)
    model.to(dev)
    loss_fn = make_loss(spec, recipe)
    out_of_time = rolling_origin(spec, recipe, dataset, folds, loss_fn, dev, ranks, console) if folds else None
    steps_per_epoch = len(list(epoch_batches(len(train_set), recipe, 1, ranks)))
    if ranks.distributed:
        console.print(f"data-parallel over {ranks.world} processes: {local_batch_size(recipe.batch_size, ranks)} samples "
                      f"per process and step, global batch {recipe.batch_size}")
    monitor, minimize = spec.monitor, lower_is_better(spec.monitor)
    phases = training_phases(recipe)
    # as the checkpoint stores it (JSON: tuples become lists), so that a resumed run compares equal
    run_id = json.loads(json.dumps({"recipe": dataclasses.asdict(recipe), "fingerprint": dataset.fingerprint},
                                   default=str))

    run = {"history": [], "best_value": math.inf if minimize else -math.inf, "best_loss": math.inf,
           "best_epoch": 0, "epoch": 0, "seconds": 0.0}   # seconds: training time before this process
    best_state = copy.deepcopy(model.state_dict())
    restored = None
    if resume:
        restored = ckpt.load_checkpoint(out, name)
        if restored is None:
            console.print("--resume: no checkpoint found, starting from scratch")
        else:
            state, tensors = restored
            if state["run"] != run_id:
                raise ZooError(f"--resume: the checkpoint in {out} was made with another recipe or other data; "
                               "rerun without --resume to start over")
            best_state = ckpt.restore_model(model, tensors)
            run = {**run, **{key: state[key] for key in run if key in state}}
            console.print(f"resuming {name} after epoch {run['epoch']} (best {monitor} {run['best_value']:.4g} "
                          f"at epoch {run['best_epoch']})")

    last_save = time.monotonic()
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), TextColumn("loss {task.fields[loss]:.4f}"),
                        console=console, transient=True, disable=not console.is_terminal)
    started = time.monotonic()
    total_epochs = phases[-1].last_epoch
    try:
        with progress:
            for phase in phases:
                if run["epoch"] >= phase.last_epoch:
                    continue
                set_trainable(model, phase)
                trained = wrap(model, ranks, dev)   # DDP registers the parameters that train in this phase
                optimizer = make_optimizer(model, recipe, phase.lr)
                scheduler = make_scheduler(optimizer, recipe, (phase.last_epoch - phase.first_epoch + 1) * steps_per_epoch)
                if restored is not None and run["epoch"] >= phase.first_epoch:   # the checkpoint is inside this phase
                    ckpt.restore_optimizer(optimizer, scheduler, *restored)
                if phase.label:
                    console.print(f"{phase.label}: epochs {phase.first_epoch}-{phase.last_epoch} at lr {phase.lr:g}")
                stale = run["epoch"] - max(run["best_epoch"], phase.first_epoch - 1)
                for epoch in range(max(phase.first_epoch, run["epoch"] + 1), phase.last_epoch + 1):
                    if stale >= recipe.patience:
                        console.print(f"early stop: no {monitor} improvement for {recipe.patience} epochs")
                        break
                    trained.train()
                    keep_batchnorm_statistics(model, recipe.bn_eval)
                    task = progress.add_task(f"epoch {epoch}/{total_epochs}", total=steps_per_epoch, loss=0.0)
                    running, seen, steps = train_epoch(
                        spec, trained, optimizer, scheduler, loss_fn, train_set, recipe, epoch, ranks, dev,
                        lambda loss: progress.update(task, advance=1, loss=loss))
                    progress.remove_task(task)

                    running, seen = sum_across([running, seen], ranks)
                    record = {"epoch": epoch, "train_loss": running / max(seen, 1), "lr": optimizer.param_groups[0]["lr"],
                              "steps": steps}
                    split = "val" if has_val else "train"
                    scored = val_set if has_val else train_set
                    record.update({f"{split}_{k}": v
                                   for k, v in scalars(run_eval(model, spec, scored, loss_fn, dev, baselines,
                                                                ranks)).items()})
                    run["history"].append(record)
                    value, loss_value = record[f"{split}_{monitor}"], record[f"{split}_loss"]
                    # ties on the monitored metric (accuracy saturates on easy data) go to the lower loss
                    improved = (value < run["best_value"] if minimize else value > run["best_value"]) or (
                        value == run["best_value"] and loss_value < run["best_loss"])
                    if improved:
                        run.update(best_value=value, best_loss=loss_value, best_epoch=epoch)
                        best_state, stale = copy.deepcopy(model.state_dict()), 0
                    else:
                        stale += 1
                    run["epoch"] = epoch
                    shown = {k: v for k, v in record.items() if k in ("train_loss", "val_loss") or k.endswith(monitor)}
                    if total_epochs <= 100 or epoch % (total_epochs // 50) == 0 or epoch == total_epochs:
                        console.print(f"epoch {epoch:3d}  " + "  ".join(f"{k} {v:.4f}" for k, v in shown.items())
                                      + ("  *" if improved else ""), highlight=False)
                    now = time.monotonic()
                    if ranks.main and (now - last_save >= _checkpoint_interval() or epoch == phase.last_epoch):
                        ckpt.save_checkpoint(out, name, model, best_state, optimizer, scheduler,
                                             {**run, "seconds": run["seconds"] + now - started, "run": run_id})
                        last_save = now
                restored = None
    except KeyboardInterrupt:
        saved = ckpt.read_checkpoint_state(out, name)
        where = f"its checkpoint after epoch {saved['epoch']} is" if saved else "no checkpoint was"
        console.print(f"interrupted: {where} written to {out}/; the same command with --resume continues "
                      "from there")
        raise
    history, best_epoch, epochs_run = run["history"], run["best_epoch"], run["epoch"]

    model.load_state_dict(best_state)
    if out_of_time is not None:
        model.alpha.fill_(out_of_time["alpha"])   # the shrink towards persistence chosen out of time
    train_time = run["seconds"] + time.monotonic() - started   # a resumed run counts its earlier part too
    final = {"train": run_eval(model, spec, train_set, loss_fn, dev, baselines, ranks)}
    if has_val:
        final["val"] = run_eval(model, spec, val_set, loss_fn, dev, baselines, ranks)
    if out_of_time is not None:
        final["val"] = oot_headline(out_of_time)
    if not ranks.main:
        return {}
    card = write_outputs(spec, model, out, dataset, recipe, final, history, epochs_run, best_epoch,
                         {"train": len(train_set), "val": len(val_set)}, data, train_time, baselines, out_of_time)
    ckpt.remove_checkpoint(out, name)
    headline = card["metrics"].get("val", card["metrics"]["train"]).get(monitor)
    scored = "out-of-time" if out_of_time else "val" if has_val else "train"
    console.print(f"[green]saved[/] {out / (name + '.safetensors')} (+ card, history, plots); best epoch {best_epoch}, "
                  f"{scored} {monitor} {headline:.4f}", highlight=False)
    return card


def _command(spec: ModelSpec, data, recipe: Recipe) -> str:
    parts = ["zoo train", spec.name]
    if data is not None:
        parts.append(f"--data <data-root>/{Path(data).name}")
    parts += [f"--epochs {recipe.epochs}", f"--batch-size {recipe.batch_size}", f"--lr {recipe.lr:g}",
              f"--seed {recipe.seed}"]
    return " ".join(parts)


def write_outputs(spec: ModelSpec, model, out: Path, dataset, recipe: Recipe, final: dict, history: list,
                  epochs_run: int, best_epoch: int, samples: dict, data, train_time: float, baselines: dict,
                  out_of_time: dict | None = None) -> dict:
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
        **({"baselines": {"kind": "the training split's median", "values": baselines}} if baselines else {}),
        **({"out_of_time": out_of_time, "caveat": caveat(out_of_time)} if out_of_time else {}),
        "train_seconds": round(train_time, 1),
        # the fitted numbers themselves, for models small enough to read (thermometer: w and b)
        **({"parameters": {k: v.flatten().tolist() for k, v in model.state_dict().items()}}
           if spec.params <= 2 else {}),
        "versions": {"zoo": __version__, "torch": torch.__version__, "torchmetrics": torchmetrics.__version__,
                     "python": sys.version.split()[0]},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": _command(spec, data, recipe),
        "notes": [spec.recipe_notes, *dataset.notes, *([caveat(out_of_time)] if out_of_time and caveat(out_of_time) else [])],
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
