"""Raw inputs (image files, CSV rows, JSON records, series, category names) -> model arrays through the
manifest's preprocessing (`Session.prepare`), and predictions -> labels with probabilities.

Raw values are kept as one list per model input, one value per row, whatever they came in (an upload, a
form, a JSON body, a BYTES tensor); `prepare` turns them into the arrays the batcher runs. Used by
`zoo serve` and by the Triton Python-backend model alike."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import numpy as np

from zoo.contract import MAX_IMAGE_PIXELS
from zoo.runtime import read_csv, read_series
from zoo.serve._protocol import RAW_SUFFIX


def _kind(session, name: str) -> str:
    pre = session.manifest.preprocess.get(name)
    if pre is None:
        raise ValueError(f"input {name!r} has no preprocessing in the manifest: send it as a tensor")
    return pre.kind


def _rows(kind: str, value, name: str) -> list:
    """One input's raw value as given in JSON -> one raw value per row."""
    if kind == "tabular":
        rows = [value] if isinstance(value, Mapping) else value
        if not isinstance(rows, list) or not all(isinstance(r, Mapping) for r in rows):
            raise ValueError(f"input {name!r}: expected a record {{column: value}} or a list of records")
        return rows
    if kind == "series":
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return value
        if isinstance(value, list):
            return [value]
        raise ValueError(f"input {name!r}: expected a series (a list of numbers) or a list of series")
    if kind == "onehot":
        rows = [value] if isinstance(value, str) else value
        if not isinstance(rows, list) or not all(isinstance(v, str) for v in rows):
            raise ValueError(f"input {name!r}: expected a category name or a list of names")
        return rows
    raise ValueError(f"input {name!r} is an image: upload it (multipart/form-data or the request body), not JSON")


def from_json(session, data) -> dict[str, list]:
    """A JSON body: the raw value of a single-input model (a record or list of records, a series or list of
    series, a category name or list of names), or {input name: raw value} for any model."""
    names = session.input_names
    if not (isinstance(data, Mapping) and set(data) == set(names)):
        if len(names) != 1:
            raise ValueError(f"this model has inputs {names}: send {{input name: raw value}} for each of them")
        data = {names[0]: data}
    return {name: _rows(_kind(session, name), data[name], name) for name in names}


def from_csv(session, text: str) -> dict[str, list]:
    """A CSV body with a header row, for a model with one tabular input (one prediction per row) or one
    series input (one forecast: the value after the series column, in the order of a `timestamp` column when
    there is one, as `zoo predict` reads a series CSV)."""
    names = session.input_names
    kind = _kind(session, names[0]) if len(names) == 1 else None
    if kind not in ("tabular", "series"):
        raise ValueError("CSV bodies are for models with one tabular or series input; send JSON or an upload instead")
    table = read_csv(text, "the CSV body")   # the reader `zoo predict` uses
    if kind == "series":
        pre = session.manifest.preprocess[names[0]]
        return {names[0]: [read_series(table, pre.column, window=pre.window)[0]]}
    rows = table.records()
    if not rows:
        raise ValueError("the CSV body has no rows under its header")
    return {names[0]: rows}


def from_form(session, fields: Mapping[str, list]) -> dict[str, list]:
    """A form (multipart/form-data) for one prediction: an image input is a file field named after the input
    (or the only file, for a model with one image input); a tabular input is one field per column; a series
    is a field named after the input with numbers separated by commas or spaces; a category is a field
    named after the input. `fields`: field name -> values (bytes for files, str for text)."""
    out = {}
    files = [v for values in fields.values() for v in values if isinstance(v, bytes)]
    for name in session.input_names:
        kind = _kind(session, name)
        given = list(fields.get(name, []))
        if kind == "image":
            images = [v for v in given if isinstance(v, bytes)]
            if not images and len(session.input_names) == 1 and len(files) == 1:
                images = files
            if len(images) != 1:
                raise ValueError(f"input {name!r}: expected one image file in the form field {name!r}, "
                                 f"got {len(images)}")
            out[name] = images
        elif kind == "tabular":
            pre = session.manifest.preprocess[name]
            out[name] = [{c: (fields.get(c) or [""])[0] for c in pre.columns}]
        elif kind == "series":
            text = given[0] if given and isinstance(given[0], str) else ""
            out[name] = [[v for v in re.split(r"[\s,;]+", text.strip()) if v]]
        else:
            if not given or not isinstance(given[0], str):
                raise ValueError(f"input {name!r}: expected a form field {name!r} with a category name")
            out[name] = [given[0]]
    return out


def from_upload(session, body: bytes) -> dict[str, list]:
    """An image file as the whole request body, for a model with one image input."""
    names = session.input_names
    if len(names) != 1 or _kind(session, names[0]) != "image":
        raise ValueError("an image body is for models with one image input; send JSON, CSV or a form instead")
    if not body:
        raise ValueError("the request body is empty: expected an image file")
    return {names[0]: [body]}


def from_elements(session, raw: dict[str, list[bytes]]) -> dict[str, list]:
    """BYTES tensors (`<input>_raw`): each element an encoded image file, a JSON record, a JSON list of
    numbers (a series) or a category name, per the input's preprocessing."""
    out = {}
    for name, elements in raw.items():
        kind = _kind(session, name)
        if kind == "image":
            out[name] = list(elements)
        elif kind == "onehot":
            out[name] = [_text(e, name) for e in elements]
        else:
            values = []
            for e in elements:
                text = _text(e, name)
                try:
                    values.append(json.loads(text))
                except (ValueError, RecursionError) as err:   # not JSON, or nested too deeply to read
                    what = "a JSON record" if kind == "tabular" else "a JSON list of numbers"
                    raise ValueError(f"input {name + RAW_SUFFIX!r}: each element must be {what}: {err}") from None
            out[name] = [_rows(kind, v, name)[0] if kind == "tabular" else v for v in values]
    return out


def _text(element: bytes, name: str) -> str:
    try:
        return element.decode()
    except UnicodeDecodeError:
        raise ValueError(f"input {name!r}: expected UTF-8 text") from None


def prepare(session, raw: dict[str, list], strict: bool = False,
            max_pixels: int | None = MAX_IMAGE_PIXELS) -> tuple[dict[str, np.ndarray], list[list[str]]]:
    """Raw values (one list per input, one value per row) -> (model arrays, per row the warnings of the
    preprocessing). With `strict`, such a warning is a ValueError instead; an image over `max_pixels` is
    refused before it is decoded (ImageTooLarge)."""
    missing = [n for n in session.input_names if n not in raw]
    if missing:
        raise ValueError(f"raw inputs: every input must be given raw, or every one as a tensor; missing {missing}")
    counts = {len(v) for v in raw.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"raw inputs must give the same number of rows (at least one), got "
                         f"{ {n: len(v) for n, v in raw.items()} }")
    if all(_kind(session, n) != "series" for n in raw):
        notes: list = []
        return session.prepare(raw, warnings=notes, strict=strict, max_pixels=max_pixels), notes
    # a series is one row per call of the preprocessing
    parts, notes = [], []
    for i in range(counts.pop()):
        note: list = []
        parts.append(session.prepare({n: v[i] for n, v in raw.items()}, warnings=note, strict=strict,
                                     max_pixels=max_pixels))
        notes += note
    return {n: np.concatenate([p[n] for p in parts]) for n in session.input_names}, notes


def predictions(session, outputs: dict[str, np.ndarray], top_k: int, warnings: list[list[str]]) -> list[dict]:
    """Per row: {"outputs": {output: [{"label", "probability"}, ...] (the top_k, most likely first) for
    classifiers, or the row's values for regressors}, "warnings": [...]}."""
    rows = len(next(iter(outputs.values())))
    notes = warnings or [[] for _ in range(rows)]
    if session.manifest.is_classifier:
        ranked = session.rank(outputs, top_k)
        return [{"outputs": {out: [{"label": label, "probability": p} for label, p in pairs]
                             for out, pairs in r.items()}, "warnings": note} for r, note in zip(ranked, notes)]
    return [{"outputs": {out: np.asarray(v[i]).ravel().tolist() for out, v in outputs.items()}, "warnings": notes[i]}
            for i in range(rows)]
