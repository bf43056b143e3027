"""`zoo runs`: the training runs under a folder, to compare without TensorBoard. Every `zoo train` run has a log
folder, <out>/logs/<model>/<started>/, holding its TensorBoard event files and `run.json` (written by
zoo/training/_runlog.py): model, data, recipe, history, best epoch, final metrics, time. No torch here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from zoo import registry
from zoo.errors import ZooError

RUN_FILE = "run.json"
KIND = "zoo training run"
SORTS = ("date", "model", "metric", "time")

__all__ = ["RUN_FILE", "KIND", "SORTS", "read_runs", "sort_runs", "plot_runs"]


def _recipe_changes(model: str, recipe: dict) -> dict:
    """The run's recipe fields that differ from the model's recipe in the registry (all of them for a model
    this zoo does not know)."""
    try:
        default = json.loads(json.dumps(dataclasses.asdict(registry.get(model).recipe), default=str))
    except ZooError:
        return dict(recipe)
    return {k: v for k, v in recipe.items() if default.get(k) != v}


def _row(record: dict, folder: Path, root: Path) -> dict:
    metrics = record.get("metrics") or {}
    split = "val" if "val" in metrics else "train"
    data = record.get("data") or {}
    return {"run": str(folder.relative_to(root)), "model": record.get("model"), "status": record.get("status"),
            "date": record.get("finished") or record.get("started"), "data": data.get("name") or data.get("source"),
            "fingerprint": (data.get("fingerprint") or "")[:12],
            "changes": _recipe_changes(record.get("model", ""), record.get("recipe") or {}),
            "best_epoch": record.get("best_epoch"), "epochs_run": record.get("epochs_run"),
            "monitor": record.get("monitor"), "lower_is_better": bool(record.get("lower_is_better")),
            "split": split, "value": (metrics.get(split) or {}).get(record.get("monitor")),
            "metrics": metrics, "seconds": record.get("train_seconds"), "message": record.get("message"),
            "history": record.get("history") or []}


MAX_RUN_FILE_BYTES = 16 * 2**20   # a run.json holds a few numbers per epoch: far below this


def read_runs(folder: str | Path, model: str | None = None, left_out: list[str] | None = None) -> list[dict]:
    """Every run recorded under `folder` (of `model` only, if given), newest first. A run.json that is not one
    of ours is passed over; one that cannot be read is left out, and `left_out` gets a line saying why."""
    root = Path(folder)
    if not root.is_dir():
        raise ZooError(f"{root} is not a folder: expected the folder `zoo train` wrote to (runs/ by default)")
    rows = []
    for path in root.rglob(RUN_FILE):
        try:
            if path.stat().st_size > MAX_RUN_FILE_BYTES:
                raise ValueError(f"over {MAX_RUN_FILE_BYTES // 2**20} MiB")
            record = json.loads(path.read_text())
            if isinstance(record, dict) and record.get("kind") == KIND and model in (None, record.get("model")):
                rows.append(_row(record, path.parent, root))
        except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError) as e:
            if left_out is not None:
                why = "a field of the wrong type" if isinstance(e, (AttributeError, TypeError)) else e
                left_out.append(f"{path}: {why}")
    return sort_runs(rows, "date")


def sort_runs(rows: list[dict], by: str) -> list[dict]:
    """date: newest first; model: by name, then newest; metric: best first (each run by its own monitored
    metric's direction; runs without one last); time: quickest first."""
    if by not in SORTS:
        raise ZooError(f"--sort {by!r}: expected one of {', '.join(SORTS)}")
    newest = sorted(rows, key=lambda r: r["date"] or "", reverse=True)
    if by == "model":
        return sorted(newest, key=lambda r: r["model"] or "")
    if by == "metric":
        return sorted(newest, key=lambda r: (r["value"] is None,
                                              0 if r["value"] is None else r["value"] if r["lower_is_better"]
                                              else -r["value"]))
    if by == "time":
        return sorted(newest, key=lambda r: (r["seconds"] is None, r["seconds"] or 0))
    return newest


def plot_runs(rows: list[dict], path: str | Path) -> Path:
    """The runs' validation curves (of each run's monitored metric; the training split's where nothing was held
    out) on one PNG, one panel per metric."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ZooError("no runs to plot")
    panels = sorted({r["monitor"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, monitor in zip(axes[0], panels):
        for r in (r for r in rows if r["monitor"] == monitor):
            key = f"{r['split']}_{monitor}"
            points = [(h["epoch"], h[key]) for h in r["history"] if h.get(key) is not None]
            if not points:
                continue
            changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items())
            ax.plot(*zip(*points), label=f"{r['run']}" + (f" ({changes})" if changes else ""), marker=".")
        ax.set(xlabel="epoch", ylabel=monitor, title=f"{monitor} by epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
