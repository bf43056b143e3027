"""Loss/metric curves and confusion matrices as PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_history(history: list[dict], monitor: str, path: Path, title: str) -> None:
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train")
    if any("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h.get("val_loss") for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend()
    key = f"val_{monitor}" if any(f"val_{monitor}" in h for h in history) else f"train_{monitor}"
    ax_metric.plot(epochs, [h.get(key) for h in history], color="tab:green")
    ax_metric.set(xlabel="epoch", ylabel=monitor, title=key.replace("_", " ", 1))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def confusion_figure(matrix: list[list[int]], labels: list[str], title: str):
    """The confusion matrix as a matplotlib figure (the caller saves or logs it, then closes it)."""
    plt = _pyplot()
    n = len(labels)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    if n <= 12:
        peak = max(max(row) for row in matrix) or 1
        for i, row in enumerate(matrix):
            for j, value in enumerate(row):
                ax.text(j, i, str(value), ha="center", va="center",
                        color="white" if value > peak / 2 else "black", fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    fig = confusion_figure(matrix, labels, title)
    fig.savefig(path, dpi=90)
    _pyplot().close(fig)


def plot_lr_find(lrs: list[float], losses: list[float], suggestion: float | None, recipe_lr: float, path: Path,
                 title: str) -> None:
    """The learning-rate range test: smoothed loss against the learning rate (log scale), with the suggestion and
    the recipe's learning rate marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", label=f"suggested {suggestion:.2g}")
    ax.axvline(recipe_lr, color="tab:gray", linestyle="--", label=f"recipe {recipe_lr:.2g}")
    ax.set(xlabel="learning rate", ylabel="training loss (smoothed)", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
