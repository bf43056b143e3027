"""CIFAR-10 and the book's CIFAR-2 (airplane vs bird), from:

- a gzip tar of images `train/<class>/NNNN.jpg` (`cifar10_train_jpg.tar.gz`; `cifar10_test_jpg.tar.gz`
  or `test/` members for the test split), read in one pass without unpacking;
- an ImageFolder tree (`train/`, `test/`, or the class folders directly);
- torchvision's python batches `cifar-10-batches-py/` (data_batch_1..5, test_batch), unpickled with
  an unpickler that only admits numpy's array-rebuilding functions.
Class indices follow the spec's labels: CIFAR-10 order (= sorted folder names) for cifar10,
0 airplane / 1 bird for cifar2.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from zoo.contract import ImagePreprocess
from zoo.data._core import Dataset, DataError
from zoo.data._imagefiles import (arrays_to_images, check_groups, decode_groups, fingerprint_entries,
                                  fingerprint_file, read_tar, read_tree, write_tar)
from zoo.registry import ModelSpec, dataset as dataset_spec

FORMATS = ("a gzip tar of <class>/*.jpg, an ImageFolder tree (train/, test/ or the class folders) or "
           "torchvision's cifar-10-batches-py/ folder")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def load(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """CIFAR-10, or a subset of its classes (the book's CIFAR-2: airplane and bird): the dataset
    record's classes, in its label order."""
    (name, pre), out = next(iter(spec.preprocess.items())), spec.outputs[0].name
    images, labels, fingerprint, skipped = read_cifar(path, split, list(dataset_spec(spec.dataset).classes), pre)
    return Dataset({name: images}, {out: labels}, dict(spec.preprocess), fingerprint=fingerprint, skipped=skipped)


def read_cifar(path: Path, split: str, classes: list[str], pre: ImagePreprocess):
    """Any supported source -> uint8 (N, C, H, W), int64 labels (index in `classes`), fingerprint, and the
    names of image files that could not be decoded."""
    if path.is_file():
        if path.name.lower().endswith(TAR_SUFFIXES):
            return _from_tar(path, split, classes, pre)
        if path.name in BATCHES["train"] + BATCHES["test"]:
            return _from_batches([path], classes, pre)
        raise DataError(f"cifar data {path.name}: unknown file type; expected {FORMATS}")
    batches = path / "cifar-10-batches-py"
    for folder in (batches, path):
        if any((folder / b).is_file() for b in BATCHES["train"] + BATCHES["test"]):
            missing = [b for b in BATCHES[split] if not (folder / b).is_file()]
            if missing:
                raise DataError(f"cifar batches {folder}: missing {', '.join(missing)} for the {split} split")
            return _from_batches([folder / b for b in BATCHES[split]], classes, pre)
    tars = [p for p in sorted(path.iterdir()) if p.name.lower().endswith(TAR_SUFFIXES) and split in p.name]
    if tars:
        return _from_tar(tars[0], split, classes, pre)
    for root in (path / split, path):
        if any((root / c).is_dir() for c in classes):
            groups = read_tree(root, classes)
            check_groups(groups, classes, "cifar folder", str(root))
            return decode_groups(groups, classes, pre)
    raise DataError(f"cifar data {path}: found no {split} data; expected {FORMATS}")


def _from_tar(path: Path, split: str, classes: list[str], pre: ImagePreprocess):
    groups = read_tar(path, classes, split, "cifar tar")
    check_groups(groups, classes, "cifar tar", path.name)
    images, labels, _, skipped = decode_groups(groups, classes, pre)
    return images, labels, fingerprint_file(path), skipped


class _NumpyUnpickler(pickle.Unpickler):
    """Admits only what a pickled dict of numpy arrays needs; anything else is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
        return super().find_class(module, name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    data = path.read_bytes()
    try:
        batch = _NumpyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # truncated or foreign pickles raise many types
        raise DataError(f"cifar batch {path.name}: not a readable CIFAR python batch ({e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"cifar batch {path.name}: expected a dict with 'data' and 'labels'")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    images, labels = batch.get("data"), batch.get("labels")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 or images.shape[1] != 3072:
        raise DataError(f"cifar batch {path.name}: 'data' must be a uint8 array (N, 3072)")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(images),) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"cifar batch {path.name}: 'labels' must be {len(images)} class indices 0-9")
    return images.reshape(-1, 3, 32, 32), labels


def _from_batches(files: list[Path], classes: list[str], pre: ImagePreprocess):
    parts = [_read_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    mapping = np.full(10, -1, np.int64)
    for i, name in enumerate(classes):
        mapping[dataset_spec("cifar10").classes.index(name)] = i
    keep = mapping[labels] >= 0
    if not keep.any():
        raise DataError(f"cifar batches: no images of the classes {classes}")
    pixels = arrays_to_images(images[keep].transpose(0, 2, 3, 1), pre)
    fingerprint = fingerprint_entries([(f.name, f.read_bytes()) for f in files])
    return pixels, torch.from_numpy(mapping[labels[keep]]), fingerprint, []


def write_sample(root: Path, split: str) -> Path:
    """`cifar10_<split>_jpg.tar.gz` holding `<split>/<class>/NNNN.jpg`: 30 (train) or 10 (test)
    32x32 JPEGs (quality 75, like the real copy) per class; each class a shape in its own colour on
    its own background, placed, sized and shaded a little differently every time."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(6 if split == "train" else 7)
    per_class = 30 if split == "train" else 10
    backgrounds = [(90, 140, 220), (70, 70, 75), (120, 180, 100), (200, 170, 130), (60, 110, 50),
                   (150, 120, 90), (40, 80, 40), (170, 140, 80), (30, 60, 140), (110, 110, 120)]
    colours = [(235, 235, 240), (200, 30, 30), (90, 60, 30), (240, 200, 60), (150, 90, 40),
               (250, 250, 250), (60, 200, 60), (90, 40, 20), (230, 230, 230), (240, 120, 20)]
    members = []
    for k, name in enumerate(dataset_spec("cifar10").classes):
        for i in range(per_class):
            background = tuple(int(c) for c in np.clip(np.array(backgrounds[k]) + rng.normal(0, 15, 3), 0, 255))
            image = Image.new("RGB", (32, 32), background)
            draw = ImageDraw.Draw(image)
            cx, cy = rng.uniform(12, 20, 2)
            r = rng.uniform(6, 10)
            box = [cx - r, cy - r, cx + r, cy + r]
            colour = tuple(int(c) for c in np.clip(np.array(colours[k]) + rng.normal(0, 15, 3), 0, 255))
            shape = k % 5
            if shape == 0:
                draw.ellipse(box, fill=colour)
            elif shape == 1:
                draw.rectangle(box, fill=colour)
            elif shape == 2:
                draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
            elif shape == 3:
                draw.line([(cx - r, cy), (cx + r, cy)], fill=colour, width=4)
                draw.line([(cx, cy - r), (cx, cy + r)], fill=colour, width=4)
            else:
                draw.ellipse(box, outline=colour, width=3)
            if k >= 5:  # the second five classes add stripes to tell them from the first five
                for y in range(int(rng.integers(0, 4)), 32, 6):
                    draw.line([(0, y), (31, y)], fill=tuple(c // 2 for c in background), width=1)
            pixels = np.asarray(image, np.float32) + rng.normal(0, 6, (32, 32, 3))
            buffer = io.BytesIO()
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=75)
            members.append((f"{split}/{name}/{i:04d}.jpg", buffer.getvalue()))
    path = root / f"cifar10_{split}_jpg.tar.gz"
    write_tar(path, members)
    return path
