"""Tabular datasets: water potability (course CSV), insurance and Boston housing (the fundamentals notes' tables),
circles (make_circles), thermometer (the book's 11 readings)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from zoo.contract import TabularPreprocess
from zoo.data._core import Dataset, DataError, fingerprint_bytes
from zoo.runtime import read_csv
from zoo.registry import ModelSpec, dataset as dataset_spec

MISSING = ("", "nan", "na", "null")


def read_rows(path: Path, columns: list[str], what: str, drop_missing: bool = False):
    """The CSV's rows as dicts (read by the runtime's reader, as `zoo predict` reads them: `,` or `;`
    separated, a byte-order mark skipped, a repeated column name refused, header matched case-insensitively),
    keeping those with a value in every one of `columns`. Returns (rows, their line numbers, rows dropped,
    fingerprint)."""
    if not path.is_file():
        raise DataError(f"{what}: {path} is not a file")
    raw = path.read_bytes()
    try:
        table = read_csv(raw, path.name)
    except ValueError as e:
        raise DataError(f"{what}: {e}") from None
    missing = [c for c in columns if table.find(c) is None]
    if missing:
        raise DataError(f"{what}: {path.name} has no column(s) {missing}; expected columns {columns} "
                        f"(found {table.header})")
    index = {c: table.find(c) for c in columns}
    rows, lines, dropped = [], [], 0
    for cells, line_no in zip(table.rows, table.lines):
        row = {c: cells[i] for c, i in index.items()}
        if any(v.lower() in MISSING for v in row.values()):
            if not drop_missing:
                raise DataError(f"{what}: {path.name} line {line_no} has a missing value")
            dropped += 1
            continue
        rows.append(row)
        lines.append(line_no)
    if not rows:
        raise DataError(f"{what}: {path.name} has no complete data rows")
    return rows, lines, dropped, fingerprint_bytes(raw)


def encode_rows(pre: TabularPreprocess, rows: list[dict], lines: list[int], path: Path, what: str) -> torch.Tensor:
    """The rows through the preprocessing's own `encode` (the runtime's), errors naming file and line."""
    try:
        return torch.from_numpy(pre.encode(rows, labels=[f"{path.name} line {n}" for n in lines]))
    except ValueError as e:
        raise DataError(f"{what}: {e}") from None


def numbers(rows: list[dict], column: str, lines: list[int], path: Path, what: str) -> np.ndarray:
    out = np.empty(len(rows), np.float64)
    for i, (row, line) in enumerate(zip(rows, lines)):
        try:
            out[i] = float(row[column])
        except ValueError:
            raise DataError(f"{what}: {path.name} line {line}, column {column!r}: expected a number, "
                            f"got {row[column]!r}") from None
    return out


def find_csv(path: Path, split: str, names: tuple[str, ...], what: str) -> Path:
    if path.is_file():
        return path
    for name in names:
        if (path / name.format(split=split)).is_file():
            return path / name.format(split=split)
    raise DataError(f"{what}: no CSV in {path}; expected one of {[n.format(split=split) for n in names]}")


def load_table(spec: ModelSpec, path: Path, what: str, drop_missing: bool = False) -> Dataset:
    """A CSV of the input's columns and the dataset's target column (its last): 0/1 labels for binary
    classifiers, values for regressors. Rows with a missing value are dropped (and counted) with
    `drop_missing`."""
    target = dataset_spec(spec.dataset).columns[-1]
    ((name, pre),) = spec.preprocess.items()
    (output,) = spec.outputs
    rows, lines, dropped, fingerprint = read_rows(path, [*pre.columns, target], what, drop_missing)
    features = encode_rows(pre, rows, lines, path, what)
    values = numbers(rows, target, lines, path, what)
    if spec.task == "binary" and not np.isin(values, (0, 1)).all():
        raise DataError(f"{what}: the {target} column must be 0 or 1, found {sorted(set(values))[:5]}")
    notes = [f"dropped {dropped} row(s) with missing values"] if dropped else []
    return Dataset({name: features}, {output.name: torch.tensor(values, dtype=torch.float32).unsqueeze(1)},
                   dict(spec.preprocess), fingerprint=fingerprint, notes=notes)


def load_water(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """The course CSV `ph,Hardness,...,Turbidity,Potability` (columns by name, any order/case)."""
    csv_path = find_csv(path, split, ("water_{split}.csv", "water_potability.csv"), "water potability")
    return load_table(spec, csv_path, "water potability", drop_missing=True)


def load_circles(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """A CSV `x1,x2,label` (label 1 = inner circle)."""
    return load_table(spec, find_csv(path, split, ("circles_{split}.csv", "circles.csv"), "circles"), "circles")


def load_thermometer(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """A CSV `t_u,t_c`: readings in the unknown unit and in Celsius."""
    return load_table(spec, find_csv(path, split, ("thermometer.csv",), "thermometer"), "thermometer")


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
    return _write_csv(root / "circles.csv", list(dataset_spec("circles").columns),
                      ([f"{a:.6f}", f"{b:.6f}", int(c)] for (a, b), c in zip(x, y)))


# Deep Learning with PyTorch, ch. 5: readings in Celsius and in the unknown unit.
THERMOMETER_T_C = [0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0]
THERMOMETER_T_U = [35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4]


def write_thermometer_sample(root: Path, split: str) -> Path:
    return _write_csv(root / "thermometer.csv", list(dataset_spec("thermometer").columns),
                      zip(THERMOMETER_T_U, THERMOMETER_T_C))


def write_water_sample(root: Path, split: str) -> Path:
    """A synthetic CSV with the course's columns in [0, 1]: potable when a fixed nonlinear score of
    pH, sulfate and solids is high, with 10 % label noise (so a small MLP can learn it)."""
    columns = dataset_spec("water_potability").columns
    rng = np.random.default_rng(0 if split == "train" else 1)
    n = 600 if split == "train" else 200
    x = rng.uniform(0, 1, (n, len(columns) - 1))
    score = -((x[:, 0] - 0.5) ** 2) * 8 + x[:, 4] - x[:, 2] + 0.2
    y = (score > 0).astype(int)
    flip = rng.uniform(0, 1, n) < 0.1
    y[flip] = 1 - y[flip]
    return _write_csv(root / f"water_{split}.csv", list(columns),
                      ([*(f"{v:.6f}" for v in row), label] for row, label in zip(x, y)))


def load_insurance(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """The notes' CSV `age,sex,bmi,children,smoker,region,charges` (columns by name, any order/case); the
    categorical columns hold the category names ("male", "yes", "southwest")."""
    csv_path = find_csv(path, split, ("insurance_{split}.csv", "insurance.csv"), "insurance")
    return load_table(spec, csv_path, "insurance")


def write_insurance_sample(root: Path, split: str) -> Path:
    """400 (train) or 100 (test) synthetic rows shaped like the real table: charges grow with age and bmi
    and jump for smokers, with noise."""
    rng = np.random.default_rng(40 if split == "train" else 41)
    n = 400 if split == "train" else 100
    age = rng.integers(18, 65, n)
    sex = rng.choice(["female", "male"], n)
    bmi = np.round(rng.normal(30.5, 6.0, n).clip(16, 53), 2)
    children = rng.integers(0, 6, n)
    smoker = rng.choice(["no", "yes"], n, p=[0.8, 0.2])
    region = rng.choice(["northeast", "northwest", "southeast", "southwest"], n)
    charges = 260 * age + 330 * (bmi - 30) * (smoker == "yes") * 4 + 500 * children + 23000 * (smoker == "yes")
    charges = np.round(np.maximum(1100, charges + rng.normal(0, 2500, n)), 5)
    return _write_csv(root / f"insurance_{split}.csv", list(dataset_spec("insurance").columns),
                      zip(age, sex, bmi, children, smoker, region, charges))


def load_boston(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """The CSV `crim,zn,...,lstat,medv` (columns by name, any order/case): Keras's boston_housing training split
    as boston_train.csv, its test split as boston_test.csv where a user has it."""
    csv_path = find_csv(path, split, ("boston_{split}.csv",), "boston housing")
    return load_table(spec, csv_path, "boston housing")


def write_boston_sample(root: Path, split: str) -> Path:
    """300 (train) or 100 (test) synthetic towns in the real table's columns and ranges: medv (in $1000s) rises
    with rooms and falls with lstat, crime and the pupil-teacher ratio, with noise, capped at 50 as the real one."""
    rng = np.random.default_rng(50 if split == "train" else 51)
    n = 300 if split == "train" else 100
    crim = np.round(rng.exponential(3.7, n).clip(0.006, 89), 5)
    zn = np.where(rng.uniform(0, 1, n) < 0.73, 0.0, rng.choice([12.5, 20.0, 25.0, 40.0, 80.0, 95.0], n))
    indus = np.round(rng.uniform(0.46, 27.74, n), 2)
    chas = (rng.uniform(0, 1, n) < 0.07).astype(int)
    nox = np.round(rng.uniform(0.385, 0.871, n), 3)
    rm = np.round(rng.normal(6.27, 0.7, n).clip(3.56, 8.78), 3)
    age = np.round(rng.uniform(2.9, 100, n), 1)
    dis = np.round(rng.uniform(1.13, 10.71, n), 4)
    rad = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 24], n)
    tax = rng.integers(188, 712, n)
    ptratio = np.round(rng.uniform(12.6, 22.0, n), 1)
    b = np.round(np.where(rng.uniform(0, 1, n) < 0.8, 396.9, rng.uniform(0.32, 396.9, n)), 2)
    lstat = np.round(rng.uniform(1.73, 37.97, n), 2)
    medv = 22 + 7 * (rm - 6.27) - 0.45 * (lstat - 12.7) - 0.15 * crim - 0.8 * (ptratio - 18.5) + 3 * chas
    medv = np.round((medv + rng.normal(0, 2.0, n)).clip(5, 50), 1)
    return _write_csv(root / f"boston_{split}.csv", list(dataset_spec("boston_housing").columns),
                      zip(crim, zn, indus, chas, nox, rm, age, dis, rad, tax, ptratio, b, lstat, medv))
