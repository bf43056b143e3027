"""Score weights on a held-out split in the dataset's own format."""

from __future__ import annotations

from pathlib import Path

from zoo import data as zdata, registry
from zoo.errors import ZooError
from zoo.outputs import writable_folder
from zoo.training._trainer import make_loss, resolve_device, run_eval, write_confusion_plots
from zoo.weights import load_model, preprocessing, read_card, resolve


def evaluate(name: str, data: str | Path | None, *, weights: str | Path | None = None,
             out: str | Path | None = None, device: str = "cpu", builtin: bool = False, strict: bool = False) -> dict:
    """Metrics of `name`'s weights (given, or shipped) on `data`'s test split, prepared with the weights'
    own preprocessing (the card's). Without `data`: the built-in test sample, for weights trained on the
    built-in sample (or the course's own built-in data); weights trained on real data are only scored on
    the synthetic sample with `builtin=True`, and the result says so. Writes the confusion matrix PNG(s)
    to `out` for classifiers. Returns the metrics, with `warnings` when the data is the very data the weights
    were trained on (the card's dataset fingerprint)."""
    spec = registry.get(name)
    path = resolve(spec, weights)
    if path is None:
        raise ZooError(f"{name} has no shipped weights; pass --weights PATH (train some with `zoo train {name}`)")
    if out is not None:
        out = writable_folder(out, "--out")
    card = read_card(path.stem, path.parent)
    fitted = preprocessing(spec, card)
    synthetic = data is None and not registry.dataset(spec.dataset).course_data
    trained_on_files = (card or {}).get("dataset", {}).get("source") == "files"
    if synthetic and trained_on_files and not builtin:
        raise ZooError(f"{path.name} was trained on the real {spec.dataset} data; scoring it on the built-in "
                       "synthetic sample says nothing about it: pass --data TEST_SPLIT (the held-out split in "
                       "the dataset's format), or --builtin to score it on the sample anyway")
    dev = resolve_device(device)
    model = load_model(spec, path).to(dev)
    dataset = zdata.load(spec, data, split="test", strict=strict)
    dataset.preprocess = fitted
    baselines = ((card or {}).get("baselines") or {}).get("values")
    values = run_eval(model, spec, dataset, make_loss(spec, spec.recipe), dev, baselines)
    result = {"model": name, "weights": path.name, "weights_sha256": (card or {}).get("sha256"),
              "data": dataset.source if data is None else Path(data).name, "samples": len(dataset),
              "fingerprint": dataset.fingerprint, "notes": dataset.notes, "metrics": values}
    if synthetic:
        result["notes"] = [f"scored on the built-in synthetic sample of {spec.dataset}, not on real data", *dataset.notes]
    trained_on = ((card or {}).get("dataset") or {}).get("fingerprint")
    result["warnings"] = [] if not trained_on or trained_on != dataset.fingerprint else [
        f"{path.name} was trained on this very data (its fingerprint matches the card's): these scores measure "
        "how well the weights fit their training data, not how they do on new data; pass the held-out test split"]
    if out is not None:
        result["plots"] = [str(p) for p in write_confusion_plots(spec, values, out, f"{name}.test-confusion.png",
                                                                 f"{name} (test)")]
    return result
