"""Where shipped weights live, their cards, and loading them safely (never unpickling)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from zoo.errors import ZooError
from zoo.registry import ModelSpec

__all__ = ["weights_dir", "card_for", "read_card", "sha256_file", "load_state_dict", "headline"]


def weights_dir() -> Path:
    """`$ZOO_WEIGHTS` if set, else the repository's `weights/` folder."""
    env = os.environ.get("ZOO_WEIGHTS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "weights"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def card_for(weights: Path) -> Path:
    return weights.with_suffix(".json")


def read_card(name: str, directory: Path | None = None) -> dict | None:
    """The card of a model's shipped weights, or None when it has none."""
    path = (directory or weights_dir()) / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ZooError(f"weights card {path} is not valid JSON: {e}") from None


def headline(card: dict | None) -> str:
    """'accuracy 0.731' style summary of a card's validation metric, for tables."""
    if not card:
        return "none"
    metric = card.get("monitor")
    value = card.get("metrics", {}).get("val", {}).get(metric)
    return f"{metric} {value:.4g}" if isinstance(value, (int, float)) else "trained"


def resolve(spec: ModelSpec, weights: str | Path | None) -> Path | None:
    """The weights file to use: the given path, else the shipped one, else None."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise ZooError(f"weights file {path} does not exist")
        return path
    shipped = weights_dir() / f"{spec.name}.safetensors"
    return shipped if shipped.is_file() else None


def load_state_dict(spec: ModelSpec, path: str | Path, verify_card: bool = True) -> dict:
    """Load a safetensors state dict, check its sha256 against the card beside it and its tensor
    names and shapes against the spec's architecture. Raises ZooError with what was wrong."""
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
    reference = build(spec).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    if missing or unexpected:
        raise ZooError(f"{path} does not fit {spec.name}: missing tensors {missing[:5]}, "
                       f"unexpected tensors {unexpected[:5]}")
    for key, ref in reference.items():
        if state[key].shape != ref.shape or state[key].dtype != ref.dtype:
            raise ZooError(f"{path}: tensor {key} is {tuple(state[key].shape)} {state[key].dtype}, "
                           f"{spec.name} expects {tuple(ref.shape)} {ref.dtype}")
    return state


def preprocess_for(spec: ModelSpec, card: dict | None, random_weights: bool = False) -> dict:
    """The complete preprocessing per input: the spec's, plus what training fitted (the card's).
    Untrained (random) weights get an identity normalisation; trained weights without their fitted
    statistics are refused, since serving them unnormalised would silently give wrong answers."""
    import dataclasses

    merged = {name: dataclasses.asdict(pre) for name, pre in spec.preprocess.items()}
    for name, fitted in ((card or {}).get("preprocess") or {}).items():
        merged.setdefault(name, {}).update(fitted)
    for tensor in spec.inputs:
        pre = merged.get(tensor.name, {})
        if pre.get("standardize") and pre.get("mean") is None:
            if not random_weights:
                raise ZooError(f"{spec.name}: input {tensor.name!r} is standardised with statistics fitted at "
                               "training time, but the weights have no card holding them; keep the "
                               "<name>.json card beside the .safetensors file")
            width = len(pre["columns"]) if pre["kind"] == "tabular" else tensor.shape[1]
            pre["mean"], pre["std"] = [0.0] * width, [1.0] * width
    return merged
