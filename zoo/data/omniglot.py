"""Omniglot (DataCamp's split of "images_background"): `<Alphabet>/characterNN/*.png`, 105x105 1-bit.

Labels come from the dataset record's fixed list of 964 characters ("<Alphabet>/characterNN", sorted; the
30 alphabets are their prefixes), never from which folders a copy happens to hold, so an evaluation set
with a subset of them keeps the same indices.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from zoo.data._core import Dataset, DataError
from zoo.data._imagefiles import decode_bytes, fingerprint_entries, is_image_name
from zoo.registry import ModelSpec, dataset as dataset_spec

LAYOUT = "<Alphabet>/characterNN/*.png (or a folder holding omniglot_train/ and omniglot_test/)"


def label_maps() -> tuple[dict[str, int], dict[str, int]]:
    """{alphabet: index}, {"<alphabet>/characterNN": index}, from the dataset record."""
    characters = dataset_spec("omniglot").classes
    alphabets = sorted({c.split("/")[0] for c in characters})
    return {a: i for i, a in enumerate(alphabets)}, {c: i for i, c in enumerate(characters)}


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def _root(path: Path, split: str) -> Path:
    if not path.is_dir():
        raise DataError(f"omniglot data {path}: not a folder; expected {LAYOUT}")
    names = [f"omniglot_{split}"] + (["images_background"] if split == "train" else [])
    for name in names:
        if (path / name).is_dir():
            return path / name
    splits = [name for name in _subfolders(path) if name.startswith("omniglot_")]
    if splits:
        raise DataError(f"omniglot data {path}: holds {', '.join(splits)} but no {names[0]}/ for the {split} split")
    return path


def load(spec: ModelSpec, path: Path, split: str) -> Dataset:
    """Images with alphabet and character labels, shaped for `spec`: omniglot-two-input takes the
    alphabet as a one-hot input and predicts the character; omniglot-two-output predicts both."""
    root = _root(path, split)
    alphabets = _subfolders(root)
    if not alphabets:
        raise DataError(f"omniglot folder {root}: no alphabet folders; expected {LAYOUT}")
    pre = spec.preprocess["image"]
    alphabet_index, character_index = label_maps()
    arrays, alphabet_labels, character_labels, entries, skipped = [], [], [], [], []
    for alphabet in alphabets:
        if alphabet not in alphabet_index:
            raise DataError(f"omniglot folder {root}: unknown alphabet folder {alphabet!r}; expected the 30 "
                            f"Omniglot background alphabets ({', '.join(list(alphabet_index)[:3])}, ...)")
        characters = _subfolders(root / alphabet)
        if not characters:
            raise DataError(f"omniglot folder {root}: alphabet folder {alphabet!r} has no character folders")
        for character in characters:
            key = f"{alphabet}/{character}"
            if key not in character_index:
                last = max(c for c in character_index if c.startswith(alphabet + "/")).split("/")[1]
                raise DataError(f"omniglot folder {root}: unknown character folder {key!r}; {alphabet} has "
                                f"character01 to {last}")
            folder = root / alphabet / character
            with os.scandir(folder) as it:
                files = sorted(e.name for e in it if e.is_file() and is_image_name(e.name))
            if not files:
                raise DataError(f"omniglot folder {root}: character folder {key!r} has no images")
            for name in files:
                entry = (f"{key}/{name}", (folder / name).read_bytes())
                entries.append(entry)
                try:
                    arrays.append(decode_bytes(*entry, pre))
                except DataError as e:
                    skipped.append(str(e))
                    continue
                alphabet_labels.append(alphabet_index[alphabet])
                character_labels.append(character_index[key])
    if not arrays:
        raise DataError(f"omniglot folder {root}: none of its images can be read ({skipped[0]})")
    images = torch.from_numpy(np.stack(arrays))
    alphabet = torch.tensor(alphabet_labels, dtype=torch.int64)
    character = torch.tensor(character_labels, dtype=torch.int64)
    inputs = {"image": images}
    if "alphabet" in spec.preprocess:
        inputs["alphabet"] = alphabet   # category indices: the one-hot preprocessing's stored form
    labels = {"alphabet": alphabet, "character": character}
    targets = {t.name: labels[t.name] for t in spec.outputs}
    note = (f"omniglot: {len(images)} images of {len(set(character_labels))} characters in "
            f"{len(set(alphabet_labels))} alphabets")
    return Dataset(inputs, targets, dict(spec.preprocess), fingerprint=fingerprint_entries(entries), notes=[note],
                   skipped=skipped)


def write_sample(root: Path, split: str) -> Path:
    """All 30 alphabets x 2 characters x 8 (train) or 3 (test) drawings, 105x105 1-bit PNGs. Each
    character is a fixed random glyph of 2-3 strokes; each drawing shifts, scales, rotates and
    wobbles it a little, as different people drawing the same character would."""
    from PIL import Image, ImageDraw

    per_character = 8 if split == "train" else 3
    rng = np.random.default_rng(0 if split == "train" else 1)
    for a, alphabet in enumerate(label_maps()[0]):
        for c in range(2):
            glyph_rng = np.random.default_rng(1000 + 2 * a + c)
            strokes = [glyph_rng.uniform(-30, 30, (glyph_rng.integers(3, 5), 2))
                       for _ in range(glyph_rng.integers(2, 4))]
            folder = root / alphabet / f"character{c + 1:02d}"
            folder.mkdir(parents=True)
            for i in range(per_character):
                angle = np.deg2rad(rng.uniform(-8, 8))
                rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
                scale, shift = rng.uniform(0.9, 1.1), rng.uniform(-4, 4, 2) + 52
                image = Image.new("1", (105, 105), 1)
                draw = ImageDraw.Draw(image)
                for stroke in strokes:
                    points = (stroke + rng.normal(0, 1.5, stroke.shape)) @ rotation.T * scale + shift
                    draw.line([tuple(p) for p in points], fill=0, width=int(rng.integers(3, 5)))
                image.save(folder / f"{a:02d}{c}_{i:02d}.png")
    return root
