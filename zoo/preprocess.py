"""Raw inputs -> model input arrays, driven by a preprocessing dict (a spec's, or a bundle manifest's).

numpy and Pillow only: the runtime uses this without torch, and training decodes its images with
the same functions, so serving sees exactly the pixels the model was trained on.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = ["decode_image", "images_to_input", "rows_to_input", "series_to_windows", "onehot"]


def decode_image(source, pre: Mapping) -> np.ndarray:
    """Image file path, encoded file contents (bytes), PIL image or uint8 array (H,W) / (H,W,C)
    -> uint8 array (C, H, W) of the preprocessing's mode and size (bilinear resize, as PIL does it)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (str, Path, bytes)):
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                img.load()
                image = img
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            what = f"({len(source)} bytes)" if isinstance(source, bytes) else source
            raise ValueError(f"cannot read image {what}: {e}") from None
    elif isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
            raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 1|3|4), got {source.dtype} {source.shape}")
        image = Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source)
    elif isinstance(source, Image.Image):
        image = source
    else:
        raise ValueError(f"expected an image path, image bytes, PIL image or uint8 array, got {type(source).__name__}")
    height, width = pre["size"]
    image = image.convert(pre["mode"])
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def images_to_input(pixels: np.ndarray, pre: Mapping) -> np.ndarray:
    """uint8 (N, C, H, W) from `decode_image` -> float32 model input: /255, pad, normalise, flatten."""
    if pre.get("standardize") and pre.get("mean") is None:
        raise ValueError("the preprocessing says standardize but carries no fitted mean/std")
    x = pixels.astype(np.float32) / np.float32(255)
    pad = pre.get("pad", 0)
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    if pre.get("mean") is not None:
        mean = np.asarray(pre["mean"], np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(pre["std"], np.float32).reshape(1, -1, 1, 1)
        x = (x - mean) / std
    if pre.get("flatten"):
        x = x.reshape(len(x), -1)
    return np.ascontiguousarray(x, dtype=np.float32)


def rows_to_input(rows: Sequence[Mapping] | Mapping, pre: Mapping) -> np.ndarray:
    """Tabular rows (dicts keyed by column name, matched case-insensitively) -> float32 (N, F):
    scale, then standardise with the mean/std fitted at training time when the preprocessing has them."""
    if isinstance(rows, Mapping):
        rows = [rows]
    columns = list(pre["columns"])
    out = np.empty((len(rows), len(columns)), np.float32)
    for i, row in enumerate(rows):
        lower = {str(k).strip().lower(): v for k, v in row.items()}
        for j, col in enumerate(columns):
            if col.lower() not in lower:
                raise ValueError(f"row {i + 1} has no column {col!r}; expected columns {columns}")
            value = lower[col.lower()]
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"row {i + 1}, column {col!r}: expected a number, got {value!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"row {i + 1}, column {col!r}: value is missing or not finite ({value!r})")
            out[i, j] = number
    return standardize(out * np.float32(pre.get("scale", 1.0)), pre)


def standardize(x: np.ndarray, pre: Mapping) -> np.ndarray:
    if pre.get("standardize"):
        if pre.get("mean") is None or pre.get("std") is None:
            raise ValueError("the preprocessing says standardize but carries no fitted mean/std")
        x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.astype(np.float32)


def series_to_windows(series: Iterable[float], pre: Mapping, window: int | None = None) -> np.ndarray:
    """A 1-D series -> the last window as float32 (1, T, 1) (T = the trained window unless given)."""
    values = np.asarray(list(series), dtype=np.float32).reshape(-1)
    window = window or pre["window"]
    if len(values) < window:
        raise ValueError(f"a series needs at least {window} values (the model's window), got {len(values)}")
    if not np.isfinite(values).all():
        raise ValueError("the series has missing or non-finite values")
    return values[-window:].reshape(1, window, 1)


def onehot(names: Sequence[str] | str, pre: Mapping) -> np.ndarray:
    """Category names -> float32 one-hot (N, len(vocabulary))."""
    vocabulary = list(pre["vocabulary"])
    names = [names] if isinstance(names, str) else list(names)
    out = np.zeros((len(names), len(vocabulary)), np.float32)
    for i, name in enumerate(names):
        if name not in vocabulary:
            raise ValueError(f"unknown category {name!r}; expected one of {vocabulary[:5]}… ({len(vocabulary)})")
        out[i, vocabulary.index(name)] = 1.0
    return out
