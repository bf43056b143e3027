"""The learning-rate finder against the shipped recipes' rates: for each model, `zoo lr-find` on the real training
split, then two whole training runs that differ only in the rate (the recipe's, the suggestion), same seed, same
epochs, and their validation metric.

    OMP_NUM_THREADS=1 flock /tmp/zoo-bench.lock python benchmarks/lr_find.py --data-root ../shared/data \\
        --json benchmarks/lr_find.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

import zoo
from zoo import registry
from zoo.training import find_lr

MODELS = ("clouds-cnn", "water-mlp", "insurance-mlp")


def train_at(name: str, data: str, lr: float, epochs: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="zoo-lr-") as out:
        started = time.monotonic()
        card = zoo.train(name, data, out=out, lr=lr, epochs=epochs, console=Console(quiet=True))
    spec = registry.get(name)
    return {"lr": lr, "val_metric": card["metrics"]["val"][spec.monitor], "best_epoch": card["best_epoch"],
            "epochs_run": card["epochs_run"], "seconds": round(time.monotonic() - started, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--epochs", type=int, help="instead of each recipe's")
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               "steps": args.steps, "loadavg_before": Path("/proc/loadavg").read_text().split()[:3], "models": {}}
    for name in args.models.split(","):
        spec = registry.get(name)
        data = str(Path(args.data_root) / registry.dataset(spec.dataset).folder)
        with tempfile.TemporaryDirectory(prefix="zoo-lr-") as out:
            found = find_lr(name, data, out=out, steps=args.steps, console=Console(quiet=True))
        row = {"recipe_lr": spec.recipe.lr, "optimizer": spec.recipe.optimizer, "batch_size": found["batch_size"],
               "suggestion": found["suggestion"], "steepest_lr": found["steepest_lr"],
               "lowest_loss_lr": found["lowest_loss_lr"], "steps_run": found["steps_run"], "stopped": found["stopped"],
               "monitor": spec.monitor, "recipe": train_at(name, data, spec.recipe.lr, args.epochs)}
        if found["suggestion"] is not None:
            row["suggested"] = train_at(name, data, found["suggestion"], args.epochs)
        results["models"][name] = row
        print(f"{name}: recipe lr {row['recipe_lr']:g} -> val {spec.monitor} {row['recipe']['val_metric']:.4f}; "
              f"suggested {row['suggestion']} -> {row.get('suggested', {}).get('val_metric')}", flush=True)
    results["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
