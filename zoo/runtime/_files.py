"""Predictions for files, as `zoo predict` takes them: image files, or one CSV for tabular and series models."""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import numpy as np

from zoo.runtime._session import Session


def _read_csv(path: Path) -> list[dict]:
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"cannot read CSV {path}: {e}") from None
    if not rows:
        raise ValueError(f"{path} has a header but no rows (or is empty)")
    return rows


def _series(path: Path, column: str) -> list[float]:
    return series_from_rows(_read_csv(path), column, str(path))


def series_from_rows(rows: list[dict], column: str, path: str = "the CSV") -> list[float]:
    """CSV rows' `column` as numbers, in time order: sorted by the `timestamp` column when there is one
    (as training sorts the readings), else in file order. `path` names the CSV in errors."""
    if not rows:
        raise ValueError(f"{path} has a header but no rows (or is empty)")
    header = {str(k).strip().lower(): k for k in rows[0]}
    if column.lower() not in header:
        raise ValueError(f"{path} has no column {column!r}; found {list(rows[0])}")
    key = header[column.lower()]
    values = []
    for i, row in enumerate(rows):
        try:
            values.append(float(row[key]))
        except (TypeError, ValueError):
            raise ValueError(f"{path}, row {i + 1}: {column} must be a number, got {row[key]!r}") from None
    if "timestamp" in header:
        stamp = header["timestamp"]
        times = []
        for i, row in enumerate(rows):
            try:
                times.append(datetime.fromisoformat(str(row[stamp]).strip()))
            except (TypeError, ValueError):
                raise ValueError(f"{path}, row {i + 1}: timestamp must be an ISO date and time such as "
                                 f"2024-01-01 00:15:00, got {row[stamp]!r}") from None
        try:
            order = sorted(range(len(values)), key=times.__getitem__)   # stable: ties keep file order
        except TypeError:
            raise ValueError(f"{path}: timestamps mix time zones and naive times; use one kind") from None
        values = [values[i] for i in order]
    return values


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
    forecast (the value after the CSV's series, its rows sorted by a `timestamp` column when it has one).
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
        if f.is_dir():
            raise ValueError(f"{f} is a folder; {session.manifest.model} takes {what} (for a folder of images, "
                             f"pass its files, e.g. {f}/*.jpg)")
        if not f.is_file():
            raise ValueError(f"input file {f} does not exist")
    if kind == "image":
        labels, raw = [str(f) for f in files], [str(f) for f in files]
    elif kind in ("tabular", "series"):
        if len(files) != 1:
            raise ValueError(f"a {kind} model takes one CSV file, got {len(files)} files")
        if kind == "tabular":
            raw = _read_csv(files[0])
            labels = [f"{files[0].name} row {i + 1}" for i in range(len(raw))]
        else:
            raw = _series(files[0], pre[name].column)
            labels = [f"{files[0].name}: next value after {len(raw)} readings"]
    else:
        raise ValueError(f"input {name!r} ({kind}) cannot be read from files; use the Python API")
    batch = len(labels)
    inputs = {name: raw}
    for other, value in fixed.items():
        inputs[other] = [value] * batch if getattr(pre.get(other), "kind", None) == "onehot" else value
    notes: list = []
    if session.manifest.is_classifier:
        ranked = session.classify(inputs, top_k=top_k, warnings=notes, strict=strict)
        return [{"input": label, "outputs": {out: [{"label": lab, "probability": p} for lab, p in pairs]
                                             for out, pairs in r.items()}, "warnings": note}
                for label, r, note in zip(labels, ranked, notes)]
    outputs = session.predict_raw(inputs, warnings=notes, strict=strict)
    return [{"input": label, "outputs": {out: np.asarray(v[i]).tolist() for out, v in outputs.items()},
             "warnings": notes[i]} for i, label in enumerate(labels)]
