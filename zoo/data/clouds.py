"""Clouds (DataCamp): an ImageFolder tree of 7 cloud-type folders, JPEGs of any size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoo.data._core import Dataset, DataError, read_image_folder
from zoo.registry import ModelSpec, dataset as dataset_spec


def load(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """`path` is the class folders' parent, or a folder holding `clouds_train/` and `clouds_test/`."""
    classes = list(dataset_spec(spec.dataset).classes)
    if (path / f"clouds_{split}").is_dir():
        path = path / f"clouds_{split}"
    elif not any((path / c).is_dir() for c in classes):
        raise DataError(f"--data {path}: expected the 7 cloud-type folders ({', '.join(classes)}) "
                        f"or a folder holding clouds_train/ and clouds_test/")
    images, labels, fingerprint, skipped = read_image_folder(path, spec.preprocess["image"], classes, "clouds folder")
    return Dataset({"image": images}, {"logits": labels}, dict(spec.preprocess), fingerprint=fingerprint,
                   skipped=skipped)


def write_sample(root: Path, split: str) -> Path:
    """7 classes x 24 (train) or 10 (test) JPEGs of 96x96: each class a distinct sky colour and
    texture (smooth gradient, stripes, blobs, ...) with per-image noise, so a CNN learns it quickly."""
    from PIL import Image

    rng = np.random.default_rng(0 if split == "train" else 1)
    per_class = 24 if split == "train" else 10
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    palette = [(200, 220, 255), (60, 130, 230), (90, 90, 110), (150, 190, 240), (230, 230, 240),
               (170, 170, 180), (120, 140, 170)]
    for k, name in enumerate(dataset_spec("clouds").classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            freq = 2 + k
            angle = rng.uniform(0, np.pi)
            pattern = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6))
            base = np.asarray(palette[k], np.float32)
            img = base[None, None] * (0.75 + 0.25 * pattern[..., None]) + rng.normal(0, 12, (96, 96, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{k}_{i:03d}.jpg", quality=90)
    return root

