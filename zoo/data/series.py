"""Electricity consumption (DataCamp): CSV `timestamp,consumption` at 15-minute steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from zoo.data._core import Dataset, DataError, fingerprint_bytes
from zoo.runtime import read_csv, read_series
from zoo.registry import ModelSpec


def load_electricity(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """Every window of `window` consecutive readings, predicting the next one; in time order."""
    if path.is_dir():
        # a folder: its <split> file, or its only CSV that is not the other split's
        other = "test" if split == "train" else "train"
        named = path / f"electricity_{split}.csv"
        others = [p for p in sorted(path.glob("*.csv")) if not p.stem.endswith(f"_{other}")]
        path = named if named.is_file() else (others[0] if len(others) == 1 else path)
    if not path.is_file():
        raise DataError(f"electricity: no CSV for the {split} split in {path}; expected electricity_{split}.csv "
                        "with columns timestamp,consumption (or pass the file itself)")
    raw = path.read_bytes()
    try:
        table = read_csv(raw, path.name)
        if table.find("timestamp") is None or table.find("consumption") is None:
            raise DataError(f"electricity: {path.name} needs columns timestamp,consumption (found {table.header})")
        values, stamps, uneven = read_series(table, "consumption")   # the runtime's reader, as zoo predict
    except ValueError as e:
        raise DataError(f"electricity: {e}") from None
    window = spec.preprocess["series"].window
    if len(values) < window + 1:
        raise DataError(f"electricity: {path.name} has {len(values)} readings; one training sequence "
                        f"needs {window + 1} (a window of {window} and the value after it)")
    series = torch.tensor(np.asarray(values, dtype=np.float32))
    if not torch.isfinite(series).all():
        raise DataError(f"electricity: {path.name} has missing or non-finite readings")
    notes = [f"{path.name}: {note}" for note in uneven]
    windows = series.unfold(0, window, 1)[:-1].unsqueeze(-1)   # (N, window, 1)
    targets = series[window:].unsqueeze(1)                       # (N, 1)
    return Dataset({"series": windows}, {"next_value": targets}, dict(spec.preprocess),
                   fingerprint=fingerprint_bytes(raw), notes=notes, times=stamps[window:])


def write_sample(root: Path, split: str) -> Path:
    """Two synthetic weeks (train) or four days (test) of 15-minute readings: a daily cycle with a
    weekly modulation and noise, standardised like the course's data."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    steps = 96 * (14 if split == "train" else 4)
    start = np.datetime64("2011-01-01T00:15") if split == "train" else np.datetime64("2014-01-01T00:15")
    t = np.arange(steps)
    day = 2 * np.pi * t / 96
    values = np.sin(day - 1.5) + 0.4 * np.sin(2 * day) + 0.2 * np.sin(day / 7) + rng.normal(0, 0.1, steps)
    stamps = start + t * np.timedelta64(15, "m")
    path = root / f"electricity_{split}.csv"
    with open(path, "w") as f:
        f.write("timestamp,consumption\n")
        for s, v in zip(stamps, values):
            f.write(f"{str(s).replace('T', ' ')}:00,{v:.6f}\n")
    return path
