"""MNIST-family datasets: MNIST (lenet-mnist), fast.ai's MNIST_SAMPLE 3-vs-7 tree (mnist-3v7-*) and
Fashion-MNIST, in the formats they are distributed in.

- a gzip tar of PNGs `[train|test/]<digit>/<index>.png` (rasbt's mnist-pngs), read without unpacking,
  or the same tree unpacked (ImageFolder layout);
- the IDX files as torchvision reads them: `train-images-idx3-ubyte[.gz]` + `train-labels-idx1-ubyte[.gz]`
  (`t10k-*` for the test split), in the folder itself or under `MNIST/raw/` / `FashionMNIST/raw/`;
- a CSV of 784 pixels + a label per row (no header: label last; with a header: the `label` column).
Images stay 28x28 uint8; padding and flattening happen in the spec's preprocessing.
"""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from zoo.contract import ImagePreprocess
from zoo.data._core import Dataset, DataError
from zoo.data._imagefiles import (arrays_to_images, check_groups, decode_groups, fingerprint_entries,
                                  fingerprint_file, read_tar, read_tree, write_tar)
from zoo.registry import ModelSpec, dataset as dataset_spec

FORMATS = ("a gzip tar of <digit>/*.png, an ImageFolder tree of <digit>/*.png, IDX files "
           "({prefix}-images-idx3-ubyte[.gz] + {prefix}-labels-idx1-ubyte[.gz]) or a CSV of 784 pixels + label")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
DIGITS = tuple(str(d) for d in range(10))   # the folder names of every MNIST-like layout


# --- loaders -------------------------------------------------------------------------------------

def load_mnist(spec: ModelSpec, path: Path, split: str) -> Dataset:
    return _load_ten_classes(spec, path, split, "MNIST", "mnist")


def load_fashion_mnist(spec: ModelSpec, path: Path, split: str) -> Dataset:
    return _load_ten_classes(spec, path, split, "FashionMNIST", "fashion-mnist")


def load_mnist_sample(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """The fast.ai MNIST_SAMPLE tree: `train/{3,7}` (`valid/{3,7}` for the test split) or the two
    digit folders directly. The target is float32 (N, 1): the index of the folder's digit in the
    spec's labels ("7", "3"), so 1.0 means "3" as in the course (labels.csv, which says 0 for "3",
    is not used)."""
    out = spec.outputs[0].name
    labels = list(dataset_spec(spec.dataset).classes)
    folders = ("train",) if split == "train" else ("valid", "test")
    root = next((path / f for f in folders if (path / f).is_dir()), path)
    if not root.is_dir() or not any((root / d).is_dir() for d in labels):
        raise DataError(f"mnist_sample data {path}: expected folders {'/'.join(labels)} of PNGs, directly or "
                        f"under {folders[0]}/ (the fast.ai MNIST_SAMPLE layout)")
    name, pre = next(iter(spec.preprocess.items()))
    groups = read_tree(root, labels)
    check_groups(groups, labels, "mnist_sample folder", str(root))
    images, index, fingerprint, skipped = decode_groups(groups, labels, pre)
    return Dataset({name: images}, {out: index.float().unsqueeze(1)}, dict(spec.preprocess), fingerprint=fingerprint,
                   skipped=skipped)


def _load_ten_classes(spec: ModelSpec, path: Path, split: str, raw: str, what: str) -> Dataset:
    (name, pre), out = next(iter(spec.preprocess.items())), spec.outputs[0].name
    images, labels, fingerprint, skipped = read_digits(path, split, pre, raw, what)
    return Dataset({name: images}, {out: labels}, dict(spec.preprocess), fingerprint=fingerprint, skipped=skipped)


def read_digits(path: Path, split: str, pre: ImagePreprocess, raw: str, what: str):
    """Any of the supported formats -> uint8 (N, C, H, W) images, int64 labels 0-9, fingerprint, and the
    names of image files that could not be decoded."""
    prefix = "train" if split == "train" else "t10k"
    if path.is_file():
        lower = path.name.lower()
        if lower.endswith(TAR_SUFFIXES):
            return _from_tar(path, split, pre, what)
        if "idx3" in lower:
            return _from_idx(path, _labels_next_to(path), pre)
        if lower.endswith((".csv", ".csv.gz")):
            return _from_csv(path, pre)
        raise DataError(f"{what} data {path.name}: unknown file type; expected {FORMATS.format(prefix=prefix)}")
    for folder in (path, path / raw / "raw", path / "raw"):
        for suffix in (".gz", ""):
            images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
            if images.is_file():
                return _from_idx(images, _labels_next_to(images), pre)
    tars = [p for p in sorted(path.iterdir()) if p.name.lower().endswith(TAR_SUFFIXES) and _names_split(p.name, split)]
    if tars:
        return _from_tar(tars[0], split, pre, what)
    for root in (path / split, path):
        if any((root / d).is_dir() for d in DIGITS):
            groups = read_tree(root, DIGITS)
            check_groups(groups, DIGITS, f"{what} folder", str(root))
            return decode_groups(groups, DIGITS, pre)
    csvs = [p for p in sorted(path.iterdir()) if p.name.lower().endswith((".csv", ".csv.gz"))
            and _names_split(p.name, split) and _looks_like_pixels(p)]
    if csvs:
        return _from_csv(csvs[0], pre)
    raise DataError(f"{what} data {path}: found no {split} data; expected {FORMATS.format(prefix=prefix)}")


def _names_split(name: str, split: str) -> bool:
    """A file in a folder belongs to the test split only if its name says so (test, t10k)."""
    is_test = any(word in name.lower() for word in ("test", "t10k"))
    return is_test == (split != "train")


def _from_tar(path: Path, split: str, pre: ImagePreprocess, what: str):
    groups = read_tar(path, DIGITS, split, f"{what} tar")
    check_groups(groups, DIGITS, f"{what} tar", path.name)
    images, labels, _, skipped = decode_groups(groups, DIGITS, pre)
    return images, labels, fingerprint_file(path), skipped


# --- IDX -----------------------------------------------------------------------------------------

def _labels_next_to(images: Path) -> Path:
    name = images.name.replace("images-idx3", "labels-idx1")
    for candidate in (images.with_name(name), images.with_name(name.removesuffix(".gz")),
                      images.with_name(name + ".gz")):
        if candidate.is_file():
            return candidate
    raise DataError(f"IDX images {images.name}: missing the labels file {name} next to it")


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path.name}: not a readable gzip file ({e})") from None
    return data


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file of unsigned bytes (magic 2051 for images, 2049 for labels) -> uint8 array."""
    data = _read_bytes(path)
    expected = 0x800 + ndim
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != expected:
        raise DataError(f"IDX file {path.name}: magic number {magic}, expected {expected} "
                        f"({'images' if ndim == 3 else 'labels'} of unsigned bytes)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path.name}: truncated header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise DataError(f"IDX file {path.name}: header says {'x'.join(map(str, dims))} = {size} bytes of data, "
                        f"file has {len(data) - header} ({'truncated' if len(data) - header < size else 'extra bytes'})")
    return np.frombuffer(data, np.uint8, size, header).reshape(dims)


def _from_idx(images_path: Path, labels_path: Path, pre: ImagePreprocess):
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise DataError(f"IDX files {images_path.name} ({len(images)} images) and {labels_path.name} "
                        f"({len(labels)} labels) do not match")
    _check_labels(labels, labels_path.name)
    fingerprint = fingerprint_entries([(p.name, p.read_bytes()) for p in (images_path, labels_path)])
    return arrays_to_images(images, pre), torch.from_numpy(labels.astype(np.int64)), fingerprint, []


def _check_labels(labels: np.ndarray, where: str) -> None:
    if len(labels) == 0:
        raise DataError(f"{where}: no samples")
    if labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{where}: labels must be 0-9, found {labels.min()} to {labels.max()}")


# --- CSV -----------------------------------------------------------------------------------------

def _text(path: Path) -> str:
    try:
        return _read_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"CSV {path.name}: not a text file") from None


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


def _looks_like_pixels(path: Path) -> bool:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as f:
            return len(f.readline().split(",")) == 785
    except (OSError, EOFError, UnicodeDecodeError, zlib.error):
        return False


def _from_csv(path: Path, pre: ImagePreprocess):
    """784 pixel columns (0-255, row-major 28x28) and a label column. Without a header the label is
    the last column; with one, the column named `label` (else the last)."""
    lines = [line for line in _text(path).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"CSV {path.name}: empty; expected rows of 784 pixels + label")
    first = [f.strip().strip('"').lower() for f in lines[0].split(",")]
    header = not all(_is_number(f) for f in first)
    if len(first) != 785:
        raise DataError(f"CSV {path.name}: {len(first)} columns, expected 785 (784 pixels of a 28x28 image "
                        f"and a label)")
    label_column = first.index("label") if header and "label" in first else 784
    rows = lines[1:] if header else lines
    if not rows:
        raise DataError(f"CSV {path.name}: a header but no rows")
    try:
        table = np.loadtxt(rows, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as e:
        line = str(e).splitlines()[0]
        raise DataError(f"CSV {path.name}: expected 785 numeric columns per row; {line}") from None
    if not np.isfinite(table).all() or (table != np.round(table)).any() or table.min() < 0 or table.max() > 255:
        raise DataError(f"CSV {path.name}: pixel and label values must be whole numbers 0-255")
    labels = table[:, label_column].astype(np.int64)
    pixels = np.delete(table, label_column, axis=1).astype(np.uint8).reshape(-1, 28, 28)
    _check_labels(labels, f"CSV {path.name}")
    return arrays_to_images(pixels, pre), torch.from_numpy(labels), fingerprint_file(path), []


# --- built-in samples ----------------------------------------------------------------------------

def _digit(d: int, rng: np.random.Generator) -> np.ndarray:
    """A 28x28 uint8 white-on-black digit in PIL's default font, scaled, rotated, shifted, thickened."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    font = ImageFont.load_default(size=24)
    canvas = Image.new("L", (48, 48), 0)
    ImageDraw.Draw(canvas).text((12, 8), str(d), fill=255, font=font)
    glyph = canvas.crop(canvas.getbbox())
    height = int(rng.integers(15, 21))
    width = max(4, round(glyph.width * height / glyph.height * rng.uniform(0.8, 1.2)))
    glyph = glyph.resize((width, height), Image.BILINEAR).rotate(rng.uniform(-12, 12), Image.BILINEAR, expand=True)
    if rng.random() < 0.5:
        glyph = glyph.filter(ImageFilter.MaxFilter(3))
    image = Image.new("L", (28, 28), 0)
    x = (28 - glyph.width) // 2 + int(rng.integers(-2, 3))
    y = (28 - glyph.height) // 2 + int(rng.integers(-2, 3))
    image.paste(glyph, (x, y))
    return np.asarray(image)


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_mnist_sample(root: Path, split: str) -> Path:
    """`mnist_<split>_png.tar.gz` holding `<split>/<digit>/<index>.png`: 100 (train) or 20 (test)
    rendered digits per class, 28x28 8-bit grayscale, as in the real MNIST PNG tar."""
    rng = np.random.default_rng(0 if split == "train" else 1)
    per_class = 100 if split == "train" else 20
    members = [(f"{split}/{d}/{d * per_class + i}.png", _png(_digit(d, rng)))
               for d in range(10) for i in range(per_class)]
    path = root / f"mnist_{split}_png.tar.gz"
    write_tar(path, members)
    return path


def write_mnist_sample_sample(root: Path, split: str) -> Path:
    """The MNIST_SAMPLE tree: `train/{3,7}/<index>.png` (`valid/` for the test split), 100 (train) or
    30 (test) digits per class, and fast.ai's `labels.csv` (name,label with 0 for "3", 1 for "7")."""
    rng = np.random.default_rng(2 if split == "train" else 3)
    per_class = 100 if split == "train" else 30
    folder = "train" if split == "train" else "valid"
    rows = ["name,label"]
    for label, digit in enumerate((3, 7)):
        (root / folder / str(digit)).mkdir(parents=True)
        for i in range(per_class):
            name = f"{folder}/{digit}/{digit * 1000 + i}.png"
            (root / name).write_bytes(_png(_digit(digit, rng)))
            rows.append(f"{name},{label}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


# Ten garment-like silhouettes on a 28x28 grid, in Fashion-MNIST's class order; extra dark lines
# (collar, buttons, zip) tell the similar ones apart.
_GARMENTS = [
    ([(8, 5), (20, 5), (26, 10), (23, 13), (20, 11), (20, 24), (8, 24), (8, 11), (5, 13), (2, 10)], []),
    ([(9, 3), (19, 3), (21, 25), (16, 25), (14, 10), (12, 25), (7, 25)], []),
    ([(8, 4), (20, 4), (25, 8), (26, 24), (22, 24), (20, 12), (20, 25), (8, 25), (8, 12), (6, 24), (2, 24), (3, 8)], []),
    ([(11, 2), (17, 2), (17, 8), (23, 26), (5, 26), (11, 8)], []),
    ([(8, 2), (20, 2), (25, 6), (27, 26), (23, 26), (21, 12), (21, 27), (7, 27), (7, 12), (5, 26), (1, 26), (3, 6)],
     [((14, 3), (14, 27))]),
    ([(3, 17), (25, 17), (25, 19), (3, 19)], [((5, 12), (22, 12)), ((8, 22), (26, 22)), ((6, 19), (15, 11))]),
    ([(8, 5), (20, 5), (26, 12), (23, 14), (20, 12), (20, 25), (8, 25), (8, 12), (5, 14), (2, 12)],
     [((11, 5), (14, 9)), ((17, 5), (14, 9)), ((14, 9), (14, 25))]),
    ([(2, 14), (10, 12), (16, 16), (26, 18), (26, 23), (2, 23)], []),
    ([(4, 11), (24, 11), (24, 25), (4, 25)], [((8, 11), (10, 4)), ((10, 4), (18, 4)), ((18, 4), (20, 11))]),
    ([(6, 4), (14, 4), (14, 14), (25, 18), (26, 24), (5, 24)], []),
]


def _garment(k: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    outline, lines = _GARMENTS[k]
    scale, shift = rng.uniform(0.85, 1.1), rng.uniform(-1.5, 1.5, 2)

    def place(points):
        return [tuple((np.asarray(p, float) - 14) * scale + 14 + shift) for p in points]

    image = Image.new("L", (28, 28), 0)
    draw = ImageDraw.Draw(image)
    shade = int(rng.integers(120, 250))
    draw.polygon(place(outline), fill=shade)
    for line in lines:
        draw.line(place(line), fill=shade // 4 if k != 5 and k != 8 else shade, width=1 if k != 5 else 2)
    noise = rng.normal(0, 12, (28, 28)) * (np.asarray(image) > 0)
    return np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzip IDX file of unsigned bytes (reproducible: gzip mtime 0)."""
    header = struct.pack(">I", 0x800 + array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_fashion_mnist_sample(root: Path, split: str) -> Path:
    """`train-images-idx3-ubyte.gz` + `train-labels-idx1-ubyte.gz` (`t10k-*` for test): 30 (train) or
    10 (test) jittered garment silhouettes per class, in interleaved class order."""
    rng = np.random.default_rng(4 if split == "train" else 5)
    per_class = 30 if split == "train" else 10
    labels = np.tile(np.arange(10, dtype=np.uint8), per_class)
    images = np.stack([_garment(int(k), rng) for k in labels])
    prefix = "train" if split == "train" else "t10k"
    write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root
