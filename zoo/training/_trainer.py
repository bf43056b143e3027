"""The trainer's parts for every spec: validation split with a fixed seed, preprocessing fitted on the training
split, loss, optimizer and schedule from the recipe, training steps and epochs, torchmetrics evaluation, transfer-
learning phases, and the weights + card + history + plots a run writes. A run itself is zoo/training/_run.py, its
epoch loop zoo/training/_loop.py."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console

from zoo import __version__, data as zdata, registry
from zoo.contract import preprocessing_to_dict
from zoo.data.augment import augment
from zoo.errors import ZooError
from zoo.outputs import RUNS, write_json, writable_folder
from zoo.registry import SCHEDULES, ModelSpec, Pretrained, Recipe
from zoo.training import _checkpoint as ckpt
from zoo.training._distributed import Ranks, epoch_indices, local_batch_size, shard, sum_across, wrap
from zoo.training._outoftime import caveat, choose_alpha, corrections
from zoo.training._metrics import Metrics, scalars
from zoo.training._plots import plot_confusion, plot_history
from zoo.weights import read_card, sha256_file, weights_dir

EVAL_BATCH = 512


class Diverged(ZooError):
    """Training stopped: the loss or the monitored metric is not finite, or far worse than the baseline."""

    exit_code = 1


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

        def bce_loss(outputs, targets):   # BCELoss raises on NaN: a diverged model's NaN is a NaN loss here
            if not all(torch.isfinite(v).all() for v in outputs.values()):
                return torch.tensor(math.nan)
            return sum(bce(outputs[k].clamp(1e-7, 1 - 1e-7), targets[k]) for k in outputs)
        return bce_loss
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


def make_scheduler(optimizer, recipe: Recipe, total_steps: int, minimize: bool = False):
    """The recipe's learning-rate schedule: cosine and one-cycle step after every batch (over `total_steps`),
    plateau (ReduceLROnPlateau) after every epoch with the monitored metric (`minimize`: lower is better)."""
    if recipe.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if recipe.scheduler == "onecycle":
        peak = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=max(1, total_steps),
                                                   pct_start=0.15)
    if recipe.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min" if minimize else "max",
                                                          factor=recipe.plateau_factor,
                                                          patience=recipe.plateau_patience)
    if recipe.scheduler == "none":
        return None
    raise ZooError(f"unknown scheduler {recipe.scheduler!r}; expected {', '.join(SCHEDULES)}")


def per_step(scheduler):
    """The schedule if it steps after every batch, else None (plateau steps once per epoch)."""
    return None if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) else scheduler


class MixedPrecision:
    """`--amp`: the forward pass under autocast, bfloat16 on CPU, float16 on CUDA with a gradient scaler (float16's
    small range underflows gradients; bfloat16 has float32's). The weights stay float32. Off: plain float32 steps."""

    def __init__(self, enabled: bool, device: torch.device):
        self.enabled, self.device_type = enabled, device.type
        self.dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")

    def autocast(self):
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def step(self, loss: torch.Tensor, optimizer, parameters, grad_clip: float | None) -> None:
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if grad_clip:
            self.scaler.unscale_(optimizer)   # clip the true gradients
            torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()


def as_dict(spec: ModelSpec, output) -> dict[str, torch.Tensor]:
    outputs = output if isinstance(output, tuple) else (output,)
    return {t.name: o for t, o in zip(spec.outputs, outputs)}


def train_step(spec: ModelSpec, trained, optimizer, loss_fn, part: zdata.Dataset, recipe: Recipe, device,
               precision: MixedPrecision | None = None) -> torch.Tensor:
    """One optimizer step on the batch `part` (augmentation, the preprocessing's apply, forward, backward,
    clipping); returns the loss, and takes no step when it is not finite. `trained` is the model, or its DDP
    wrapper."""
    precision = precision or MixedPrecision(False, torch.device(device))
    stored = part.inputs
    if recipe.augment != "none":
        stored = {k: augment(recipe.augment, v) if v.dtype == torch.uint8 else v for k, v in stored.items()}
    inputs = zdata.model_inputs(part.preprocess, stored)
    with precision.autocast():
        outputs = as_dict(spec, trained(*(v.to(device) for v in inputs.values())))
    outputs = {k: v.float() for k, v in outputs.items()}   # the loss in float32
    loss = loss_fn(outputs, {k: v.to(device) for k, v in part.targets.items()})
    if torch.isfinite(loss):
        precision.step(loss, optimizer, trained.parameters(), recipe.grad_clip)
    return loss.detach()


def train_epoch(spec: ModelSpec, trained, optimizer, scheduler, loss_fn, train_set: zdata.Dataset, recipe: Recipe,
                epoch: int, ranks: Ranks, device, on_step=None, precision: MixedPrecision | None = None
                ) -> tuple[float, int, int]:
    """One epoch of steps and of the per-step schedule (a plateau schedule is the caller's); returns this rank's
    summed loss, samples seen and steps. Diverged (exit 1) at the first loss that is not finite.
    `on_step(mean loss, batch size)` after each step."""
    running, seen, steps = 0.0, 0, 0
    scheduler = per_step(scheduler)
    for idx in epoch_batches(len(train_set), recipe, epoch, ranks):
        loss = float(train_step(spec, trained, optimizer, loss_fn, train_set.subset(idx), recipe, device, precision))
        if not math.isfinite(loss):
            raise Diverged(f"training diverged at epoch {epoch}: the training loss is {loss} at step {steps + 1}; "
                           f"lower --lr (this run's is {optimizer.defaults['lr']:g}) or check the data")
        if scheduler is not None:
            scheduler.step()
        running += loss * len(idx)
        seen += len(idx)
        steps += 1
        if on_step:
            on_step(running / seen, len(idx))
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
