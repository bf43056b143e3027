"""Tabular datasets: water potability (course CSV), circles (make_circles), thermometer (the book's 11 readings)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import torch

from zoo.data._core import Dataset, DataError, fingerprint_bytes, spec_preprocess
from zoo.registry import ModelSpec


def read_csv_columns(path: Path, columns: list[str], what: str, delimiter: str | None = None,
                     drop_missing: bool = False) -> tuple[np.ndarray, int, str]:
    """Named columns of a CSV (matched case-insensitively) as float64 (N, len(columns)).
    Returns the array, the number of rows dropped for missing values, and a fingerprint."""
    if not path.is_file():
        raise DataError(f"{what}: {path} is not a file")
    raw = path.read_bytes()
    text = raw.decode("utf-8-sig", errors="replace")
    if delimiter is None:
        delimiter = ";" if text.split("\n", 1)[0].count(";") > text.split("\n", 1)[0].count(",") else ","
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    header = [h.strip().strip('"').lower() for h in next(reader, [])]
    missing = [c for c in columns if c.lower() not in header]
    if missing:
        raise DataError(f"{what}: {path.name} has no column(s) {missing}; expected columns {columns} "
                        f"(found {header})")
    index = [header.index(c.lower()) for c in columns]
    rows, dropped = [], 0
    for line_no, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        values = []
        for i, col in zip(index, columns):
            cell = row[i].strip() if i < len(row) else ""
            if cell == "" or cell.lower() in ("nan", "na", "null"):
                values.append(math.nan)
                continue
            try:
                values.append(float(cell))
            except ValueError:
                raise DataError(f"{what}: {path.name} line {line_no}, column {col!r}: "
                                f"expected a number, got {cell!r}") from None
        if any(math.isnan(v) for v in values):
            if not drop_missing:
                raise DataError(f"{what}: {path.name} line {line_no} has a missing value")
            dropped += 1
            continue
        rows.append(values)
    if not rows:
        raise DataError(f"{what}: {path.name} has no complete data rows")
    return np.asarray(rows, dtype=np.float64), dropped, fingerprint_bytes(raw)


def _find_csv(path: Path, split: str, names: tuple[str, ...], what: str) -> Path:
    if path.is_file():
        return path
    for name in names:
        if (path / name.format(split=split)).is_file():
            return path / name.format(split=split)
    raise DataError(f"{what}: no CSV in {path}; expected one of {[n.format(split=split) for n in names]}")


def _binary_dataset(spec: ModelSpec, table: np.ndarray, n_features: int, fingerprint: str,
                    notes: list[str]) -> Dataset:
    (input_name,) = (t.name for t in spec.inputs)
    (output_name,) = (t.name for t in spec.outputs)
    labels = table[:, n_features]
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{spec.dataset}: the label column must be 0 or 1, found {sorted(set(labels))[:5]}")
    return Dataset({input_name: torch.tensor(table[:, :n_features], dtype=torch.float32)},
                   {output_name: torch.tensor(labels, dtype=torch.float32).unsqueeze(1)},
                   spec_preprocess(spec), fingerprint=fingerprint, notes=notes)


def load_water(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """The course CSV `ph,Hardness,...,Turbidity,Potability` (columns by name, any order/case).
    Rows with a missing value are dropped, and the card says how many."""
    csv_path = _find_csv(path, split, ("water_{split}.csv", "water_potability.csv"), "water potability")
    columns = list(spec.preprocess["features"].columns) + ["Potability"]
    table, dropped, fingerprint = read_csv_columns(csv_path, columns, "water potability", drop_missing=True)
    notes = [f"dropped {dropped} row(s) with missing values"] if dropped else []
    return _binary_dataset(spec, table, 9, fingerprint, notes)


def load_circles(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """A CSV `x1,x2,label` (label 1 = inner circle)."""
    csv_path = _find_csv(path, split, ("circles_{split}.csv", "circles.csv"), "circles")
    table, _, fingerprint = read_csv_columns(csv_path, ["x1", "x2", "label"], "circles")
    return _binary_dataset(spec, table, 2, fingerprint, [])


def load_thermometer(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """A CSV `t_u,t_c`: readings in the unknown unit and in Celsius."""
    csv_path = _find_csv(path, split, ("thermometer.csv",), "thermometer")
    table, _, fingerprint = read_csv_columns(csv_path, ["t_u", "t_c"], "thermometer")
    return Dataset({"reading": torch.tensor(table[:, :1], dtype=torch.float32)},
                   {"celsius": torch.tensor(table[:, 1:], dtype=torch.float32)},
                   spec_preprocess(spec), fingerprint=fingerprint)


def make_circles(n: int = 1000, noise: float = 0.03, factor: float = 0.8, seed: int = 42):
    """Two concentric circles (outer label 0, inner label 1) with Gaussian noise, shuffled;
    the same construction as scikit-learn's make_circles."""
    rng = np.random.RandomState(seed)
    n_out, n_in = n // 2, n - n // 2
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.vstack([np.append(np.cos(t_out), factor * np.cos(t_in)),
                   np.append(np.sin(t_out), factor * np.sin(t_in))]).T
    y = np.hstack([np.zeros(n_out), np.ones(n_in)])
    order = np.arange(n)
    rng.shuffle(order)
    x, y = x[order], y[order]
    return x + rng.normal(scale=noise, size=x.shape), y


def _write_csv(path: Path, header: list[str], rows) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_circles_sample(root: Path, split: str) -> Path:
    """The course's data: make_circles(1000, noise=0.03, random_state=42); the test split is
    another draw (seed 43) of 200 points."""
    x, y = make_circles(1000, seed=42) if split == "train" else make_circles(200, seed=43)
    return _write_csv(root / "circles.csv", ["x1", "x2", "label"],
                      ([f"{a:.6f}", f"{b:.6f}", int(c)] for (a, b), c in zip(x, y)))


# Deep Learning with PyTorch, ch. 5: readings in Celsius and in the unknown unit.
THERMOMETER_T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
THERMOMETER_T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]


def write_thermometer_sample(root: Path, split: str) -> Path:
    return _write_csv(root / "thermometer.csv", ["t_u", "t_c"], zip(THERMOMETER_T_U, THERMOMETER_T_C))


def write_water_sample(root: Path, split: str) -> Path:
    """A synthetic CSV with the course's columns in [0, 1]: potable when a fixed nonlinear score of
    pH, sulfate and solids is high, with 10 % label noise (so a small MLP can learn it)."""
    from zoo.catalog import WATER_FEATURES

    rng = np.random.default_rng(0 if split == "train" else 1)
    n = 600 if split == "train" else 200
    x = rng.uniform(0, 1, (n, len(WATER_FEATURES)))
    score = -((x[:, 0] - 0.5) ** 2) * 8 + x[:, 4] - x[:, 2] + 0.2
    y = (score > 0).astype(int)
    flip = rng.uniform(0, 1, n) < 0.1
    y[flip] = 1 - y[flip]
    return _write_csv(root / f"water_{split}.csv", list(WATER_FEATURES) + ["Potability"],
                      ([*(f"{v:.6f}" for v in row), label] for row, label in zip(x, y)))
