"""The page at /: what a person needs to try each model without the README, from its manifest alone (what the
model tells apart, each input in words with its training ranges, a title for each result), embedded as JSON
that no model name or label can break out of."""

from __future__ import annotations

import json
from pathlib import Path

from zoo.contract import RANGE_SLACK

HERE = Path(__file__).parent
PAGE = HERE / "page.html"
WEB_PAGE = HERE / "web.html"
GENERIC_OUTPUTS = {"logits", "logit", "probability", "probabilities", "output", "outputs", "scores", "value", "y"}


def render(entries: list[dict]) -> str:
    """page.html with the models' entries embedded."""
    return _fill(PAGE, "__MODELS__", entries)


def web_page(manifest, runtime: dict) -> str:
    """The static page of a web folder (`zoo export --format web`): web.html with what it needs of the raw-input
    bundle's `manifest` embedded, the page's entry plus the graph's feeds and outputs. `runtime`: {"model": the model
    file, "entry": the onnxruntime-web module, "version"}, paths relative to the page."""
    if manifest.raw is None:
        raise ValueError(f"{manifest.bundle}: a web page needs a raw-input bundle (zoo export --raw-inputs)")
    data = entry(manifest.model, manifest)
    for item, t in zip(data["inputs"], manifest.network_inputs):
        pre = manifest.preprocess[t.name]
        if pre.kind == "image":
            item["channels"] = pre.channels
    probabilities = manifest.raw.probabilities
    data.update(labels=manifest.labels, probabilities=probabilities, range_slack=RANGE_SLACK, runtime=dict(runtime),
                value_outputs=[t.name for t in manifest.outputs if t.name not in probabilities.values()])
    return _fill(WEB_PAGE, "__MODEL__", data)


def _fill(template: Path, key: str, data) -> str:
    """A page template with the shared style and script (page.css, page.js) and `data` as JSON in place of `key`.
    `<`, `>` and `&` are written as JSON escapes, so no string can end the <script> element or open a comment
    inside it (`</script>`, `<!--<script>`); the data goes in last, so nothing in it is taken for a placeholder."""
    text = template.read_text().replace("__PAGE_CSS__", (HERE / "page.css").read_text())
    text = text.replace("__PAGE_JS__", (HERE / "page.js").read_text())
    return text.replace(key, json.dumps(data).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def entry(name: str, manifest) -> dict:
    """What the page shows for one model: its summary, a form control per input, a title per output."""
    labelled = [manifest.labels[t.name] for t in manifest.outputs if t.name in manifest.labels]
    notes = []
    if manifest.random_weights:
        notes.append("This bundle has random (untrained) weights: its predictions are meaningless.")
    if manifest.caveat:
        notes.append(f"Caveat: {manifest.caveat}")
    return {"name": name, "summary": _summary(manifest), "notes": notes,
            "classifier": manifest.is_classifier,
            "top_k": manifest.is_classifier and max(map(len, labelled)) > 2,
            "inputs": [_input(t.name, manifest.preprocess.get(t.name)) for t in manifest.network_inputs],
            "outputs": {t.name: _title(t.name, manifest.labels.get(t.name)) for t in manifest.outputs}}


def _summary(manifest) -> str:
    outputs = [t.name for t in manifest.outputs]
    if not manifest.is_classifier:
        return f"Predicts {', '.join(_words(n) for n in outputs)} ({manifest.task})."
    parts = []
    for name in outputs:
        labels = manifest.labels.get(name)
        if labels:
            shown = ", ".join(labels[:6]) + (", …" if len(labels) > 6 else "")
            parts.append(("" if name.lower() in GENERIC_OUTPUTS else f"{_words(name)}: ") +
                         (f"{labels[0]} or {labels[1]}" if len(labels) == 2 else f"one of {len(labels)} ({shown})"))
    return "Tells apart " + "; ".join(parts) + "."


def _title(name: str, labels) -> str:
    """A result's heading: what the model answers, not its tensor's name (unless that name says it)."""
    own = "" if name.lower() in GENERIC_OUTPUTS else _words(name)
    if labels and len(labels) == 2:
        return f"{labels[0]} or {labels[1]}?"
    if labels and own:
        return f"{own.capitalize()}: the most likely of {len(labels)}"
    if labels:
        return f"The most likely of {len(labels)} classes"
    return f"Predicted {own or 'value'}"


def _words(name: str) -> str:
    return name.replace("_", " ")


def _input(name: str, pre) -> dict:
    kind = getattr(pre, "kind", None)
    out = {"name": name, "kind": kind, "help": pre.describe() if pre is not None else ""}
    if kind == "tabular":
        out["columns"] = list(pre.columns)
        out["categories"] = {k: list(v) for k, v in pre.categories.items()}
        out["ranges"] = {k: list(v) for k, v in (pre.ranges or {}).items()}
        out["note"] = _units_note(pre)
    elif kind == "onehot":
        out["vocabulary"] = list(pre.vocabulary)
    elif kind == "series":
        out["window"] = pre.window
        out["column"] = pre.column
        out["range"] = None if pre.range is None else list(pre.range)
    return out


def _units_note(pre) -> str:
    """What scale to type the numbers in, from the ranges the training data covered."""
    if not pre.ranges:
        return ("This bundle records no training ranges: enter values in the units of the data the model was "
                "trained on.")
    note = ("Enter values in the units of the training data: beside each field is the range it covered in "
            "training (a value far outside it gets a warning, and the answer is not to be trusted).")
    if all(0 <= low and high <= 1 for low, high in pre.ranges.values()):
        note += (" Every number in the training data lies between 0 and 1: the data was given on a 0-1 scale "
                 "(e.g. min-max scaled), so enter values on that scale, not raw measurements.")
    return note
