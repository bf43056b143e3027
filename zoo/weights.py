"""Where shipped weights live, their cards, and loading them safely (never unpickling).

A card (`<name>.json` beside `<name>.safetensors`) holds the complete, fitted preprocessing the weights
were trained with; `preprocessing()` is the one place that turns it into the objects every later stage
uses, and a bundle copies them verbatim."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from zoo.contract import InvalidField, Preprocess, preprocessing_from_dict
from zoo.errors import ZooError
from zoo.registry import ModelSpec

__all__ = ["weights_dir", "card_for", "read_card", "sha256_file", "load_model", "preprocessing", "headline",
           "resolve", "latest_trained"]


def weights_dir() -> Path:
    """`$ZOO_WEIGHTS` if set; else, in a checkout, the repository's `weights/` folder; else the copy an
    installed package carries (setup.py puts it in `zoo/shipped_weights/` when the package is built)."""
    env = os.environ.get("ZOO_WEIGHTS")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "weights").is_dir():
        return checkout / "weights"
    return package / "shipped_weights"


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def card_for(weights: Path) -> Path:
    return weights.with_suffix(".json")


def read_card(name: str, directory: Path | None = None) -> dict | None:
    """The card of a model's weights in `directory` (default: the shipped weights), or None when it has none."""
    path = (directory or weights_dir()) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZooError(f"weights card {path} is not valid JSON: {e}") from None
    if not isinstance(card, dict):
        raise ZooError(f"weights card {path}: expected a JSON object, got {type(card).__name__}")
    _check_card(card, path)
    return card


# the card fields zoo reads, and what each must be when present and not null (the preprocessing's own fields
# are checked by `preprocessing`)
CARD_FIELDS = {"model": (str, "a model name"), "sha256": (str, "the weights file's sha256 (64 hex digits)"),
               "preprocess": (dict, "an object {input name: preprocessing}"),
               "metrics": (dict, "an object {split: {metric: value}}"), "caveat": (str, "a sentence"),
               "monitor": (str, "a metric name"), "dataset": (dict, "an object"), "baselines": (dict, "an object")}


def _check_card(card: dict, path: Path) -> None:
    """One line naming the first card field of the wrong type, instead of a crash where it is used."""
    for key, (kind, expected) in CARD_FIELDS.items():
        value = card.get(key)
        bad = value is not None and not isinstance(value, kind)
        if key == "sha256" and isinstance(value, str):
            bad = len(value) != 64 or any(c not in "0123456789abcdef" for c in value)
        if key == "metrics" and isinstance(value, dict):
            bad = not all(isinstance(v, dict) for v in value.values())
        if bad:
            shown = json.dumps(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ZooError(f"weights card {path}: `{key}` must be {expected}, got {shown}")


def headline(card: dict | None) -> str:
    """'accuracy 0.731' style summary of a card's monitored metric, for tables: the validation (or out-of-time)
    figure, else the training one (data too small to hold any out), with the card's caveat flagged."""
    if not card:
        return "none"
    metric, metrics = card.get("monitor"), card.get("metrics", {})
    for split, label in (("val", "out-of-time " if card.get("out_of_time") else ""), ("train", "train ")):
        value = metrics.get(split, {}).get(metric)
        if isinstance(value, (int, float)):
            caveat = " (no better than persistence on a new year)" if card.get("caveat") else ""
            return f"{label}{metric} {value:.4g}{caveat}"
    return "trained"


def resolve(spec: ModelSpec, weights: str | Path | None) -> Path | None:
    """The weights file to use: the given path, else the shipped one, else None."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ZooError(f"weights file {path} does not exist")
        return path
    shipped = weights_dir() / f"{spec.name}.safetensors"
    return shipped if shipped.is_file() else None


def latest_trained(folder: Path) -> Path | None:
    """The weights file of the most recently finished run in `folder` (by its card's time), or None."""
    runs = []
    for card_path in folder.glob("[!.]*.json") if folder.is_dir() else []:
        if card_path.name.endswith(".history.json"):
            continue
        weights = card_path.with_suffix(".safetensors")
        if weights.is_file():
            runs.append((card_path.stat().st_mtime, weights))
    return max(runs)[1] if runs else None


def load_model(spec: ModelSpec, path: str | Path, verify_card: bool = True):
    """Build `spec`'s model and load a safetensors state dict into it, after checking the file's sha256
    against the card beside it and every tensor's name, shape and dtype against the architecture.
    Raises ZooError saying what was wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from zoo.registry import build

    path = Path(path)
    if not path.is_file():
        raise ZooError(f"weights file {path} does not exist")
    card_path = card_for(path)
    if verify_card and card_path.is_file():
        card = read_card(path.stem, path.parent)
        expected = card.get("sha256")
        actual = sha256_file(path)
        if expected and expected != actual:
            raise ZooError(f"{path}: sha256 is {actual[:12]}…, but its card {card_path.name} says "
                           f"{expected[:12]}… (file changed or truncated)")
        if card.get("model") not in (None, spec.name):
            raise ZooError(f"{path} holds weights for {card['model']!r}, not {spec.name!r}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ZooError(f"{path} is not a readable safetensors file: {e}") from None
    model = build(spec)
    reference = model.state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise ZooError(f"{path} does not fit {spec.name}: missing tensors {missing[:5]}, "
                       f"unexpected tensors {unexpected[:5]}")
    for key, ref in reference.items():
        if state[key].shape != ref.shape or state[key].dtype != ref.dtype:
            raise ZooError(f"{path}: tensor {key} is {tuple(state[key].shape)} {state[key].dtype}, "
                           f"{spec.name} expects {tuple(ref.shape)} {ref.dtype}")
    model.load_state_dict(state)
    return model


def preprocessing(spec: ModelSpec, card: dict | None, random_weights: bool = False,
                  where: str = "the weights card") -> dict[str, Preprocess]:
    """The complete preprocessing of a model's weights, one object per input: the card's (fitted at
    training time). Untrained (random) weights get the spec's with identity statistics; weights without
    a card get the spec's only when it needs nothing fitted, since serving them with unfitted
    statistics would silently give wrong answers."""
    if random_weights:
        return {name: pre.untrained() for name, pre in spec.preprocess.items()}
    if card is None or card.get("preprocess") is None:
        unfitted = [name for name, pre in spec.preprocess.items() if not pre.fitted]
        if unfitted:
            raise ZooError(f"{spec.name}: input {unfitted[0]!r} is standardised with statistics fitted at training "
                           "time, but the weights have no card holding them; keep the <name>.json card beside "
                           "the .safetensors file")
        return dict(spec.preprocess)
    try:
        fitted = preprocessing_from_dict(card["preprocess"], spec.inputs)
    except InvalidField as e:
        raise ZooError(f"{where} of {spec.name}: {e}") from None
    missing = [t.name for t in spec.inputs if t.name not in fitted]
    unfitted = [name for name, pre in fitted.items() if not pre.fitted]
    if missing or unfitted:
        raise ZooError(f"{where} of {spec.name}: no complete preprocessing for input "
                       f"{(missing or unfitted)[0]!r}; retrain, or restore the card written with the weights")
    return fitted
