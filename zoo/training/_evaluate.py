"""Score weights on a held-out split in the dataset's own format."""

from __future__ import annotations

from pathlib import Path

from zoo import data as zdata, registry
from zoo.errors import ZooError
from zoo.training._trainer import make_loss, resolve_device, run_eval, write_confusion_plots
from zoo.weights import load_model, preprocessing, read_card, resolve


def evaluate(name: str, data: str | Path | None, *, weights: str | Path | None = None,
             out: str | Path | None = None, device: str = "cpu") -> dict:
    """Metrics of `name`'s weights (given, or shipped) on `data`'s test split (or the built-in test
    sample), prepared with the weights' own preprocessing (the card's). Writes the confusion matrix
    PNG(s) to `out` for classifiers. Returns the metrics."""
    spec = registry.get(name)
    path = resolve(spec, weights)
    if path is None:
        raise ZooError(f"{name} has no shipped weights; pass --weights PATH (train some with `zoo train {name}`)")
    card = read_card(path.stem, path.parent)
    fitted = preprocessing(spec, card)
    dev = resolve_device(device)
    model = load_model(spec, path).to(dev)
    dataset = zdata.load(spec, data, split="test")
    dataset.preprocess = fitted
    values = run_eval(model, spec, dataset, make_loss(spec, spec.recipe), dev)
    result = {"model": name, "weights": path.name, "weights_sha256": (card or {}).get("sha256"),
              "data": dataset.source if data is None else Path(data).name, "samples": len(dataset),
              "fingerprint": dataset.fingerprint, "notes": dataset.notes, "metrics": values}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        result["plots"] = [str(p) for p in write_confusion_plots(spec, values, out, f"{name}.test-confusion.png",
                                                                 f"{name} (test)")]
    return result
