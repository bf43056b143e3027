"""Food photos of the fundamentals notes: pizza_steak and 10_food_classes_10_percent, ImageFolder trees
`[<collection>/]{train,test}/<class>/*.jpg` of photos of any size (the training copies have a shorter side
of 256 px, the test photos are Food-101's originals)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from zoo.data._core import Dataset, DataError, read_image_folder
from zoo.registry import ModelSpec, dataset as dataset_spec


def _split_root(path: Path, split: str, classes: list[str], what: str) -> Path:
    """The folder holding the class folders of `split`: <path>/<split>/, <path>/<collection>/<split>/, or
    <path> itself when the class folders are directly in it."""
    if not path.is_dir():
        raise DataError(f"{what} {path}: not a folder; expected {split}/<class>/*.jpg")
    candidates = [path / split]
    candidates += [sub / split for sub in sorted(path.iterdir()) if sub.is_dir() and not sub.name.startswith(".")]
    candidates.append(path)
    for folder in candidates:
        if folder.is_dir() and any((folder / c).is_dir() for c in classes):
            return folder
    raise DataError(f"{what} {path}: expected {split}/<class>/ folders for the classes {', '.join(classes)} "
                    "(or the class folders themselves)")


def load(spec: ModelSpec, path: Path, split: str) -> Dataset:
    classes = list(dataset_spec(spec.dataset).classes)
    root = _split_root(path, split, classes, f"{spec.dataset} data")
    ((name, pre),) = spec.preprocess.items()
    images, labels, fingerprint, skipped = read_image_folder(root, pre, classes, f"{spec.dataset} folder")
    target = labels.float().unsqueeze(1) if spec.task == "binary" else labels
    return Dataset({name: images}, {spec.outputs[0].name: target}, dict(spec.preprocess), fingerprint=fingerprint,
                   skipped=skipped)


# --- built-in samples: synthetic photos in the real layout ---------------------------------------------------

def _photo_size(rng: np.random.Generator, split: str) -> tuple[int, int]:
    """(width, height): a shorter side of 256 px for training copies, up to 512 px for test originals."""
    short = 256 if split == "train" else int(rng.integers(300, 513))
    long = int(short * rng.uniform(1.0, 1.4))
    return (long, short) if rng.random() < 0.5 else (short, long)


def _save(image, path: Path) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())


def _dish(rng: np.random.Generator, size: tuple[int, int], style: int, n_styles: int):
    """A plate on a table with a dish on it; `style` fixes the dish's colours and texture."""
    from PIL import Image, ImageDraw, ImageFilter

    width, height = size
    hue = np.array([np.cos(2 * np.pi * style / n_styles), np.sin(2 * np.pi * style / n_styles)])
    table = tuple(int(c) for c in rng.integers(60, 200, 3))
    image = Image.new("RGB", size, table)
    draw = ImageDraw.Draw(image)
    cx, cy = width * rng.uniform(0.4, 0.6), height * rng.uniform(0.4, 0.6)
    plate = min(width, height) * rng.uniform(0.38, 0.46)
    draw.ellipse([cx - plate, cy - plate, cx + plate, cy + plate], fill=(235, 235, 230))
    base = np.clip(np.array([150 + 90 * hue[0], 110 + 80 * hue[1], 70 + 60 * (hue[0] - hue[1])]), 0, 255)
    food = plate * rng.uniform(0.7, 0.85)
    spots = tuple(int(c) for c in np.clip(255 - base * 0.6 + rng.normal(0, 10, 3), 0, 255))
    if style % 2 == 0:   # round dishes with toppings
        draw.ellipse([cx - food, cy - food, cx + food, cy + food], fill=tuple(int(c) for c in base))
        for _ in range(int(rng.integers(6, 14))):
            x, y, r = cx + rng.uniform(-0.6, 0.6) * food, cy + rng.uniform(-0.6, 0.6) * food, food * 0.1
            draw.ellipse([x - r, y - r, x + r, y + r], fill=spots)
    else:                # irregular pieces with stripes
        points = [(cx + food * rng.uniform(0.6, 1.0) * np.cos(a), cy + food * rng.uniform(0.5, 0.8) * np.sin(a))
                  for a in np.linspace(0, 2 * np.pi, 9, endpoint=False)]
        draw.polygon(points, fill=tuple(int(c) for c in base))
        for k in range(-3, 4):
            x = cx + k * food * 0.22
            draw.line([(x - food * 0.3, cy - food * 0.5), (x + food * 0.3, cy + food * 0.5)], fill=spots, width=5)
    image = image.rotate(rng.uniform(-20, 20), fillcolor=table).filter(ImageFilter.GaussianBlur(1))
    pixels = np.asarray(image, np.float32) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _write_sample(root: Path, split: str, dataset: str, per_class: int, seed: int) -> Path:
    classes = dataset_spec(dataset).classes
    rng = np.random.default_rng(seed + (0 if split == "train" else 1))
    for k, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            _save(_dish(rng, _photo_size(rng, split), k, len(classes)), folder / f"{k}{i:03d}.jpg")
    return root


def write_pizza_steak_sample(root: Path, split: str) -> Path:
    """train/{pizza,steak}/*.jpg (24 each; 10 each for test): a round dish with toppings against pieces
    with grill stripes, on a plate, in synthetic photos."""
    return _write_sample(root, split, "pizza_steak", 24 if split == "train" else 10, seed=20)


def write_food10_sample(root: Path, split: str) -> Path:
    """10_food_classes_10_percent/{train,test}/<class>/*.jpg, 8 (train) or 3 (test) synthetic photos per class."""
    _write_sample(root / "10_food_classes_10_percent", split, "food10", 8 if split == "train" else 3, seed=30)
    return root
