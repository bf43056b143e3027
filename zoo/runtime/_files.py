"""Predictions for files, as `zoo predict` takes them: image files, or one CSV for tabular and series models."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.runtime._csv import read_csv, read_series
from zoo.runtime._session import Session


def _check_file(f: Path, model: str, what: str) -> None:
    try:
        if f.is_dir():
            raise ValueError(f"{f} is a folder; {model} takes {what} (for a folder of images, pass its files, "
                             f"e.g. {f}/*.jpg)")
        if not f.is_file():
            raise ValueError(f"input file {f} does not exist")
    except OSError as e:   # a name longer than the filesystem allows, a folder that cannot be searched
        raise ValueError(f"input file {f} cannot be read: {e.strerror or e}") from None


def _image_files(folder: Path, notes: list) -> list[Path]:
    """The image files in `folder` (by the extensions Pillow reads), sorted; what else is there goes in a note."""
    from PIL import Image

    readable = {ext.lower() for ext in Image.registered_extensions()}
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in entries if p.is_file() and p.suffix.lower() in readable]
    others = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in images]
    if not images:
        found = f" (found {', '.join(others[:5])})" if others else ""
        raise ValueError(f"folder {folder} has no image files{found}")
    if others:
        notes.append(f"{folder}: skipped {len(others)} entr{'y' if len(others) == 1 else 'ies'} that "
                     f"{'is' if len(others) == 1 else 'are'} not an image file: {', '.join(others[:5])}"
                     + (", ..." if len(others) > 5 else ""))
    return images


def _missing_inputs_hint(session: Session, fixed: dict) -> str:
    """`--set NAME=VALUE` with a valid example for each category input not given, for the error."""
    hints = [f"--set {n}={pre.vocabulary[0]} (one of {len(pre.vocabulary)}; `zoo info {session.manifest.model}` "
             "lists them)" for n, pre in session.manifest.preprocess.items()
             if n not in fixed and getattr(pre, "kind", None) == "onehot"]
    return f"; add {' and '.join(hints)}" if hints else ""


def predict_files(session: Session, files: list[str | Path], top_k: int = 3,
                  fixed: dict[str, str] | None = None, strict: bool = False, notes: list | None = None) -> list[dict]:
    """Image models: one result per image file (a folder gives its image files, sorted; anything else in it
    is skipped with a message in `notes`). Tabular models: one per CSV row. Series models: one
    forecast (the value after the CSV's series, its rows sorted by a `timestamp` column when it has one,
    with a warning when the timestamps of the readings the model reads have gaps or repeats).
    `fixed` gives the other inputs of a multi-input model as raw values (e.g. {"alphabet": "Latin"}), the same for every file.

    Each result: {"input": what it is, "outputs": {name: [{"label", "probability"}, ...] for classifiers,
    or [values] for regressors}, "warnings": [what the preprocessing found unusual about this input]};
    with `strict`, such a finding is a ValueError instead."""
    files = [Path(f) for f in files]
    fixed = dict(fixed or {})
    pre = session.manifest.preprocess
    free = [n for n in session.input_names if n not in fixed]
    unknown = [n for n in fixed if n not in session.input_names]
    if unknown or len(free) != 1:
        raise ValueError(f"inputs {session.input_names}: give the files for exactly one of them and a value for "
                         f"each other one, got values for {list(fixed)}{_missing_inputs_hint(session, fixed)}")
    (name,) = free
    kind = getattr(pre.get(name), "kind", None)
    if not files:
        raise ValueError("no input files given")
    what = {"image": "image files", "tabular": "one CSV file", "series": "one CSV file"}.get(kind, "files")
    if kind == "image":
        notes = [] if notes is None else notes
        files = [image for f in files for image in (_image_files(f, notes) if f.is_dir() else [f])]
    for f in files:
        _check_file(f, session.manifest.model, what)
    uneven: list[str] = []   # a series' timestamps: what is uneven about the readings the model reads
    if kind == "image":
        labels, raw = [str(f) for f in files], [str(f) for f in files]
    elif kind in ("tabular", "series"):
        if len(files) != 1:
            raise ValueError(f"a {kind} model takes one CSV file, got {len(files)} files")
        if kind == "tabular":
            raw = read_csv(files[0]).records()
            if not raw:
                raise ValueError(f"{files[0]} has a header but no rows (or is empty)")
            labels = [f"{files[0].name} row {i + 1}" for i in range(len(raw))]
        else:
            raw, _, uneven = read_series(files[0], pre[name].column, window=pre[name].window)
            if uneven and strict:
                raise ValueError(f"{files[0].name}: {uneven[0]}")
            labels = [f"{files[0].name}: next value after {len(raw)} readings"]
    else:
        raise ValueError(f"input {name!r} ({kind}) cannot be read from files; use the Python API")
    batch = len(labels)
    inputs = {name: raw}
    for other, value in fixed.items():
        inputs[other] = [value] * batch if getattr(pre.get(other), "kind", None) == "onehot" else value
    found: list = []   # per sample, what the preprocessing found unusual
    if session.manifest.is_classifier:
        ranked = session.classify(inputs, top_k=top_k, warnings=found, strict=strict)
        results = [{"input": label, "outputs": {out: [{"label": lab, "probability": p} for lab, p in pairs]
                                                for out, pairs in r.items()}, "warnings": note}
                   for label, r, note in zip(labels, ranked, found)]
    else:
        outputs = session.predict_raw(inputs, warnings=found, strict=strict)
        results = [{"input": label, "outputs": {out: np.asarray(v[i]).tolist() for out, v in outputs.items()},
                    "warnings": found[i]} for i, label in enumerate(labels)]
    results[0]["warnings"][:0] = uneven
    return results
