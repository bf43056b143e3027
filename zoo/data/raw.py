"""Raw samples: a model's inputs as an application has them (image files, CSV rows, a series of readings,
category names), read from a dataset's own files (`--data`) or from its built-in sample. The raw-input
bundles' parity against the runtime, the test vectors of every ONNX bundle and the golden cases come from
here.

Images come as the encoded files (several sizes and aspect ratios where the dataset has them); datasets
stored as arrays (IDX files, a CSV of pixels, CIFAR's python batches) give their decoded pixels. Every image
set also gets `DERIVED_SIZES`: the first image resized to odd sizes and aspect ratios and saved as PNG, so
that the resize in the graph is exercised even where every image has the model's size.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from zoo.data._core import DataError
from zoo.data._imagefiles import is_image_name
from zoo.registry import ModelSpec

DERIVED_SIZES = ((97, 61), (61, 97), (300, 41), (13, 29))   # (width, height)
SERIES_EXTRA = 8     # readings before each window: a raw series is longer than the model's window
PER_FOLDER = 2       # from a tar of <class>/<image> members: images per class folder, at most
MAX_TAR_SCAN = 2 << 30   # bytes of a tar read at most while looking for images


@dataclass
class RawSample:
    label: str        # where it comes from: a file, a CSV row, a range of readings
    inputs: dict      # network input name -> raw value: image bytes or uint8 array, row dict, readings, name


def raw_samples(spec: ModelSpec, data: str | Path | None = None, n: int = 16) -> tuple[list[RawSample], dict]:
    """Up to `n` raw samples of `spec`'s inputs (plus the derived image sizes), and what they are:
    {"source": "files" | "built-in", "dataset", "fingerprint": sha256 over the samples' names and contents}
    (no path: a bundle records nothing of the machine it was made on)."""
    from zoo.data import builtin

    path = builtin.materialize(spec.dataset, "train") if data is None else Path(data).expanduser()
    if not path.exists():
        raise DataError(f"--data {path}: no such file or folder")
    kinds = {name: pre.kind for name, pre in spec.preprocess.items()}
    first = spec.inputs[0].name
    if kinds[first] == "image":
        samples = _image_samples(spec, path, data, n)
    elif kinds[first] == "tabular":
        rows, name = _csv_rows(_csv_file(path)), _csv_file(path).name
        samples = [RawSample(f"{name} row {i + 1}", {first: rows[i]}) for i in _spaced(len(rows), n)]
    elif kinds[first] == "series":
        samples = _series_samples(spec, path, n)
    else:
        raise DataError(f"{spec.name}: no raw reader for a first input of kind {kinds[first]!r}")
    for name, kind in kinds.items():   # category inputs beside an image (omniglot's alphabet)
        if kind == "onehot":
            vocabulary = spec.preprocess[name].vocabulary
            for i, sample in enumerate(samples):
                folder = Path(sample.label).parts[-3] if len(Path(sample.label).parts) >= 3 else ""
                sample.inputs[name] = folder if folder in vocabulary else vocabulary[i % len(vocabulary)]
    if not samples:
        raise DataError(f"{spec.name}: no samples found in {path}")
    return samples, {"source": "built-in" if data is None else "files", "dataset": spec.dataset,
                     "fingerprint": _fingerprint(samples)}


def _fingerprint(samples: list[RawSample]) -> str:
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(sample.label.encode())
        for name, value in sorted(sample.inputs.items()):
            digest.update(name.encode())
            digest.update(value.tobytes() if isinstance(value, np.ndarray) else
                          value if isinstance(value, bytes) else json.dumps(value, sort_keys=True).encode())
    return digest.hexdigest()


def _spaced(total: int, n: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, total - 1, min(n, total))}) if total else []


def _image_samples(spec: ModelSpec, path: Path, data, n: int) -> list[RawSample]:
    name = spec.inputs[0].name
    found = _image_files(path, n)
    if found:
        samples = [RawSample(label, {name: content}) for label, content in found]
    else:   # stored as arrays: the decoded pixels the dataset holds
        from zoo.data import load

        dataset = load(spec, data)
        stored = dataset.inputs[name]
        samples = [RawSample(f"{path.name} sample {i + 1}", {name: stored[i].numpy().transpose(1, 2, 0).copy()})
                   for i in _spaced(len(stored), n)]
    return samples + _derived(samples[0], name) if samples else samples


def _image_files(path: Path, n: int) -> list[tuple[str, bytes]]:
    """(relative name, bytes) of up to `n` image files: spread over a folder tree, else from its tars."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_image_name(p.name)
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if files:
            return [(str(files[i].relative_to(path)), files[i].read_bytes()) for i in _spaced(len(files), n)]
        tars = sorted(p for p in path.rglob("*.tar*") if p.is_file())
        return _tar_images(tars[0], n) if tars else []
    return _tar_images(path, n) if tarfile.is_tarfile(path) else []


def _tar_images(path: Path, n: int) -> list[tuple[str, bytes]]:
    out, per_folder, scanned = [], {}, 0
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                scanned += member.size
                folder = member.name.rsplit("/", 1)[0]
                if member.isfile() and is_image_name(member.name) and per_folder.get(folder, 0) < PER_FOLDER:
                    per_folder[folder] = per_folder.get(folder, 0) + 1
                    out.append((member.name, tar.extractfile(member).read()))
                if len(out) >= n or scanned > MAX_TAR_SCAN:
                    break
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read the tar archive ({' '.join(str(e).split())})") from None
    return out


def _derived(sample: RawSample, name: str) -> list[RawSample]:
    """The sample's image resized to DERIVED_SIZES, as PNG files."""
    from PIL import Image

    source = sample.inputs[name]
    with (Image.fromarray(source.squeeze()) if isinstance(source, np.ndarray) else Image.open(io.BytesIO(source))) as im:
        image = im.convert("RGB" if im.mode not in ("L", "1") else "L")
    out = []
    for width, height in DERIVED_SIZES:
        buffer = io.BytesIO()
        image.resize((width, height), Image.LANCZOS).save(buffer, format="PNG")
        out.append(RawSample(f"{sample.label} resized to {width}x{height} (PNG)", {name: buffer.getvalue()}))
    return out


def _csv_file(path: Path) -> Path:
    if path.is_file():
        return path
    files = sorted(path.glob("*.csv"))
    preferred = [f for f in files if "train" in f.stem] or files
    if not preferred:
        raise DataError(f"{path}: no CSV file in the folder")
    return preferred[0]


def _csv_rows(path: Path) -> list[dict]:
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    first = text.split("\n", 1)[0]
    rows = list(csv.DictReader(io.StringIO(text), delimiter=";" if first.count(";") > first.count(",") else ","))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _series_samples(spec: ModelSpec, path: Path, n: int) -> list[RawSample]:
    """Windows of the model's length plus SERIES_EXTRA earlier readings, spread over the series."""
    ((name, pre),) = spec.preprocess.items()
    file = _csv_file(path)
    rows = _csv_rows(file)
    header = {k.strip().lower(): k for k in rows[0]}
    if pre.column.lower() not in header:
        raise DataError(f"{file}: no column {pre.column!r}")
    values = [float(r[header[pre.column.lower()]]) for r in rows]
    if "timestamp" in header:
        times = [datetime.fromisoformat(r[header["timestamp"]].strip()) for r in rows]
        values = [values[i] for i in sorted(range(len(values)), key=times.__getitem__)]
    length = pre.window + SERIES_EXTRA
    ends = [length + i for i in _spaced(len(values) - length + 1, n)]
    return [RawSample(f"{file.name} readings {end - length + 1}-{end}", {name: values[end - length:end]})
            for end in ends]
