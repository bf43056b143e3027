"""A model's data contract: the tensors it takes and gives, and the preprocessing that makes them.

`TensorSpec` describes one input or output. One preprocessing object per input does all the
preprocessing there is, for every stage: `from_dict` reads and validates it (the only reader of a
weights card's or a bundle manifest's preprocessing), `fit` fits its statistics on the training split,
`encode` turns raw inputs (image files, CSV rows, a series, category names) into the stored form that
training keeps in memory and augments, and `apply` turns that into the float32 model input. Training,
evaluation, export parity and the runtime all call these objects, so a served model sees exactly what
it was trained on. numpy and Pillow only: no torch.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import ClassVar

import numpy as np

__all__ = ["TensorSpec", "ImagePreprocess", "TabularPreprocess", "SeriesPreprocess", "OneHotPreprocess",
           "Preprocess", "InvalidField", "preprocess_from_dict", "preprocessing_from_dict", "preprocessing_to_dict",
           "RANGE_SLACK", "LIMITS", "decimal_comma", "MAX_IMAGE_PIXELS", "ImageTooLarge"]

RANGE_SLACK = 0.1  # a value more than this share of the training range outside it gets a warning
MAX_IMAGE_PIXELS = 64_000_000   # image files and bytes with more pixels are refused before decoding (8000 x 8000)
STRING = "string"  # the dtype of a tensor of text (category names fed to a raw-input model); not a numpy name

# What a card or manifest may declare, so that a hostile or corrupted one is refused when it is read instead of
# allocating without bound at the first prediction. Each is many times what the largest course model uses
# (in brackets): images 224x224, padding 2, 3x224x224 input values, 9 tabular columns, 4 categories, 30
# one-hot categories, a 96-step window.
LIMITS = {
    "tensor_rank": 8,               # axes of an input or output, batch included (4)
    "tensor_values": 1 << 24,       # values per sample: the product of the fixed axes (150,528)
    "image_side": 2048,             # pixels, height or width after resizing (224)
    "image_pad": 256,               # pixels of zero padding per side (2)
    "tabular_columns": 1024,        # columns read from a row (9)
    "categories": 1024,             # values of one categorical column (4)
    "tabular_features": 4096,       # model input columns after encoding (9)
    "vocabulary": 1024,             # one-hot categories; apply() builds a vocabulary x vocabulary identity (30)
    "series_window": 65536,         # readings per window (96)
}


class ImageTooLarge(ValueError):
    """An image file whose pixel count is over the cap, found before it was decoded."""

Warn = Callable[[int, str], None] | None   # warn(sample index, message) collects per-sample warnings


class InvalidField(ValueError):
    """One invalid field of a card or manifest: its dotted path, what was expected, what was given."""

    def __init__(self, field: str, expected: str, given):
        self.field, self.expected, self.given = field, expected, given
        super().__init__(f"invalid `{field}`: expected {expected}, got {_given(given)}")


def _given(value) -> str:
    try:
        text = json.dumps(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(d: Mapping, key: str, where: str, length: int, positive: bool = False) -> tuple[float, ...] | None:
    """A fitted statistic: null, or `length` finite numbers (> 0 with `positive`)."""
    value = d.get(key)
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != length or not all(_is_number(x) for x in value)
            or (positive and min(value) <= 0)):
        raise InvalidField(f"{where}.{key}", f"null or a list of {length} finite numbers" + (" > 0" if positive else ""),
                           value)
    return tuple(float(x) for x in value)


def _flag(d: Mapping, key: str, where: str, default: bool = False) -> bool:
    value = d.get(key, default)
    if not isinstance(value, bool):
        raise InvalidField(f"{where}.{key}", "true or false", value)
    return value


def decimal_comma(text) -> str:
    """For a text that is a number only with a decimal comma ("7,5", as spreadsheets in many locales write
    it): a hint to add to the error; else ""."""
    if not isinstance(text, str) or "," not in text:
        return ""
    try:
        float(text.replace(",", "."))
    except ValueError:
        return ""
    return " (a decimal comma? write numbers with a point, e.g. 7.5)"


def _out_of_range(value: float, low: float, high: float) -> bool:
    slack = RANGE_SLACK * max(high - low, 1e-12)
    return value < low - slack or value > high + slack


# --- tensors -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    """One model input or output. `shape` includes the batch axis; a string names a dynamic axis. `dtype`: a
    numeric numpy dtype name, or "string" for text (a raw-input model's category names)."""
    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def example_shape(self, **sizes: int) -> tuple[int, ...]:
        """Concrete shape, taking each dynamic axis from `sizes` (e.g. batch=3, sequence=96)."""
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.shape)

    def describe(self) -> str:
        return "(" + ", ".join(str(d) for d in self.shape) + ")"

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "dynamic_axes": {str(i): d for i, d in self.dynamic_axes.items()}}

    @classmethod
    def from_dict(cls, d, where: str) -> "TensorSpec":
        if not isinstance(d, Mapping):
            raise InvalidField(where, "an object {name, shape, dtype}", d)
        if not isinstance(d.get("name"), str) or not d["name"]:
            raise InvalidField(f"{where}.name", "a non-empty string", d.get("name"))
        shape = d.get("shape")
        if not isinstance(shape, list) or not shape or len(shape) > LIMITS["tensor_rank"] or not all(
                (isinstance(x, str) and x) or (_is_int(x) and 0 < x <= LIMITS["tensor_values"]) for x in shape):
            raise InvalidField(f"{where}.shape", f"a list of 1 to {LIMITS['tensor_rank']} positive integers and "
                               "axis names", shape)
        if math.prod(x for x in shape if _is_int(x)) > LIMITS["tensor_values"]:
            raise InvalidField(f"{where}.shape", f"at most {LIMITS['tensor_values']:,} values per sample (the "
                               "product of the fixed axes)", shape)
        dtype = d.get("dtype", "float32")
        try:
            if not isinstance(dtype, str) or (dtype != STRING and np.dtype(dtype).kind not in "iuf"):
                raise TypeError
        except TypeError:
            raise InvalidField(f"{where}.dtype", f'a numeric numpy dtype name such as "float32", or "{STRING}"',
                               dtype) from None
        return cls(d["name"], tuple(shape), dtype)

    @classmethod
    def list_from_dicts(cls, items, where: str) -> tuple["TensorSpec", ...]:
        if not isinstance(items, list) or not items:
            raise InvalidField(where, "a non-empty list of {name, shape, dtype}", items)
        tensors = tuple(cls.from_dict(t, f"{where}[{i}]") for i, t in enumerate(items))
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            raise InvalidField(f"{where}[*].name", "distinct names", names)
        return tensors


def _warn_if_flat(array: np.ndarray, warn: Warn, index: int) -> None:
    colours = array.reshape(-1, array.shape[2] if array.ndim == 3 else 1)
    if warn and (colours == colours[0]).all():
        warn(index, f"the image is one flat colour {tuple(int(v) for v in colours[0])}: there is nothing in it "
                    "for the model to recognise, so its answer means little")


# --- images --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImagePreprocess:
    """Image -> float32 (C, H, W): convert to `mode`, resize to `size`, /255, pad, normalise, flatten."""
    kind: ClassVar[str] = "image"
    size: tuple[int, int]                      # (height, width) after resizing
    mode: str = "RGB"                          # "RGB" or "L"
    resize: str = "stretch"                    # stretch: to `size` (aspect not kept); crop: shorter side, centre crop
    pad: int = 0                               # zero padding on every side after resizing
    mean: tuple[float, ...] | None = None      # per channel, applied after /255
    std: tuple[float, ...] | None = None
    standardize: bool = False                  # mean/std are fitted per channel on the training split
    flatten: bool = False                      # (C, H, W) -> (C*H*W,) for MLPs on pixels

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def fitted(self) -> bool:
        return not self.standardize or self.mean is not None

    def model_shape(self) -> tuple:
        h, w = self.size[0] + 2 * self.pad, self.size[1] + 2 * self.pad
        return (self.channels * h * w,) if self.flatten else (self.channels, h, w)

    def image(self, source, warn: Warn = None, index: int = 0, max_pixels: int | None = MAX_IMAGE_PIXELS):
        """Image file path, encoded bytes, PIL image or uint8 array (H, W) / (H, W, C) -> PIL image in `mode`,
        8 bits, at its own size. A file or bytes of more than `max_pixels` pixels is refused (ImageTooLarge)
        before it is decoded (None: only Pillow's own limit, 179 Mpx). 16-bit images are scaled to 8 bits;
        images the model cannot take as they are (16/32-bit, transparency, several frames) are still decoded,
        with a warning through `warn`."""
        from PIL import Image

        if isinstance(source, (str, Path, bytes)):
            what = f"({len(source)} bytes)" if isinstance(source, bytes) else source
            try:
                with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
                    pixels = img.width * img.height
                    if max_pixels is not None and pixels > max_pixels:
                        raise ImageTooLarge(f"image {what} is {img.width}x{img.height} ({pixels / 1e6:.1f} Mpx): "
                                            f"more than the {max_pixels / 1e6:g} Mpx allowed")
                    frames = getattr(img, "n_frames", 1) if img.format != "MPO" else 1   # MPO: photo + previews
                    img.load()
                    image = img
            except ImageTooLarge:
                raise
            except Image.DecompressionBombError:
                limit = 2 * Image.MAX_IMAGE_PIXELS / 1e6
                raise ImageTooLarge(f"image {what} has more than Pillow's limit of {limit:.0f} Mpx") from None
            except Exception as e:  # noqa: BLE001 - Pillow's decoders raise many types on hostile files
                reason = str(e) or type(e).__name__
                if isinstance(source, bytes) and " <_io.BytesIO" in reason:   # PIL names the buffer object
                    reason = reason[: reason.index(" <_io.BytesIO")]
                raise ValueError(f"cannot read image {what}: {reason}") from None
            if frames > 1 and warn:
                warn(index, f"{frames} frames (an animation or a multi-page file): only the first was used")
        elif isinstance(source, np.ndarray):
            if source.dtype != np.uint8 or source.ndim not in (2, 3) or (source.ndim == 3 and source.shape[2] not in (1, 3, 4)):
                raise ValueError(f"an image array must be uint8 (H, W) or (H, W, 1|3|4), got {source.dtype} {source.shape}")
            image = Image.fromarray(source[..., 0] if source.ndim == 3 and source.shape[2] == 1 else source)
        elif isinstance(source, Image.Image):
            image = source
        else:
            raise ValueError(f"expected an image path, image bytes, PIL image or uint8 array, got {type(source).__name__}")
        image = self._to_8bit(image, warn, index)
        return image if image.mode == self.mode else image.convert(self.mode)

    def pixels(self, source, warn: Warn = None, index: int = 0,
               max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
        """What a raw-input model takes: `image`'s pixels, uint8 (H, W, channels), not resized."""
        array = np.asarray(self.image(source, warn, index, max_pixels), dtype=np.uint8)
        _warn_if_flat(array, warn, index)
        return array[..., None] if array.ndim == 2 else array

    def decode(self, source, warn: Warn = None, index: int = 0,
               max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
        """`image`, resized to `size` as `resize` says -> uint8 (C, H, W) (a flat colour gets a warning)."""
        from PIL import Image

        image = self.image(source, warn, index, max_pixels)
        height, width = self.size
        if self.resize == "crop" and image.size != (width, height):
            scale = max(width / image.width, height / image.height)
            image = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                                 Image.BILINEAR)
            left, top = (image.width - width) // 2, (image.height - height) // 2
            image = image.crop((left, top, left + width, top + height))
        elif image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        _warn_if_flat(array, warn, index)
        return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)

    @staticmethod
    def _to_8bit(image, warn: Warn, index: int):
        from PIL import Image

        if image.mode.startswith("I;16") or image.mode in ("I", "F"):
            values = np.asarray(image)   # uint16, int32 or float32 as stored: no wider copy
            low, high = values.min(), values.max()
            if image.mode == "I" and 0 <= low and high <= 255:   # 8-bit values in a 32-bit container
                return Image.fromarray(values.astype(np.uint8))
            if image.mode != "F" and 0 <= low and high <= 65535:
                if warn:
                    warn(index, "16-bit image: scaled to 8 bits; the model was trained on 8-bit images")
                # round(v / 257) for every 16-bit value, looked up: one byte per pixel, no float copy
                table = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)
                return Image.fromarray(table[values])
            if warn:
                warn(index, f"{image.mode} image with values {low:g} to {high:g}: clipped to 0-255; the model was "
                            "trained on 8-bit images")
            return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))
        if warn and (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info):
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
            if alpha.min() < 255:
                warn(index, f"{int((alpha < 255).sum())} transparent pixel(s): the alpha channel was dropped")
        return image

    def encode(self, items, warn: Warn = None, max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:
        """One image or a list of them -> uint8 (N, C, H, W); `max_pixels` as in `decode`."""
        many = isinstance(items, (list, tuple)) or (isinstance(items, np.ndarray) and items.ndim == 4)
        items = list(items) if many else [items]
        if not items:
            raise ValueError("expected at least one image, got none")
        return np.stack([self.decode(item, warn, i, max_pixels) for i, item in enumerate(items)])

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) -> float32 model input."""
        if not self.fitted:
            raise ValueError("the preprocessing says standardize but carries no fitted mean/std")
        x = pixels.astype(np.float32) / np.float32(255)
        if self.pad:
            x = np.pad(x, ((0, 0), (0, 0), (self.pad, self.pad), (self.pad, self.pad)))
        if self.mean is not None:
            x -= np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
            x /= np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        if self.flatten:
            x = x.reshape(len(x), -1)
        return np.ascontiguousarray(x)

    def fit(self, pixels: np.ndarray) -> "ImagePreprocess":
        """Per-channel mean and (unbiased) std of the training pixels /255, when `standardize`."""
        if not self.standardize:
            return self
        x = np.asarray(pixels).transpose(1, 0, 2, 3).reshape(self.channels, -1).astype(np.float64) / 255
        n = x.shape[1]
        mean = x.mean(1)
        std = np.sqrt(((x - mean[:, None]) ** 2).sum(1) / max(n - 1, 1)).clip(1e-3)
        return dataclasses.replace(self, mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))

    def describe(self) -> str:
        """What a user must feed, and what happens to it, in words."""
        how = "stretched to" if self.resize == "stretch" else "shorter side scaled and centre-cropped to"
        text = (f"an image of any size in a format Pillow reads, converted to {self.mode} 8-bit, {how} "
                f"{self.size[1]}x{self.size[0]}, pixels /255")
        if self.pad:
            text += f", zero-padded by {self.pad}"
        if self.mean is not None:
            fitted = "fitted on the training split" if self.standardize else "fixed"
            text += (f", normalised per channel with mean {_fmt(self.mean)} and std {_fmt(self.std)} ({fitted})")
        elif self.standardize:
            text += ", normalised per channel with statistics that training fits (none yet)"
        return text + ("; flattened" if self.flatten else "") + "; 16-bit or transparent images get a warning"

    def untrained(self) -> "ImagePreprocess":
        """The identity statistics that untrained (random) weights are exported with."""
        return self if self.fitted else dataclasses.replace(self, mean=(0.0,) * self.channels, std=(1.0,) * self.channels)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "size": list(self.size), "mode": self.mode, "resize": self.resize, "pad": self.pad,
                "mean": _list(self.mean), "std": _list(self.std), "standardize": self.standardize,
                "flatten": self.flatten}

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "ImagePreprocess":
        size = d.get("size")
        if not isinstance(size, list) or len(size) != 2 or not all(_is_int(x) and 0 < x <= LIMITS["image_side"]
                                                                    for x in size):
            raise InvalidField(f"{where}.size", f"[height, width], two integers from 1 to {LIMITS['image_side']}", size)
        mode = d.get("mode", "RGB")
        if mode not in ("RGB", "L"):
            raise InvalidField(f"{where}.mode", '"RGB" or "L"', mode)
        resize = d.get("resize", "stretch")
        if resize not in ("stretch", "crop"):
            raise InvalidField(f"{where}.resize", '"stretch" or "crop"', resize)
        pad = d.get("pad", 0)
        if not _is_int(pad) or not 0 <= pad <= LIMITS["image_pad"]:
            raise InvalidField(f"{where}.pad", f"an integer from 0 to {LIMITS['image_pad']}", pad)
        channels = 1 if mode == "L" else 3
        if (d.get("mean") is None) != (d.get("std") is None):
            raise InvalidField(f"{where}.mean/std", "both given or both null", [d.get("mean"), d.get("std")])
        mean, std = _numbers(d, "mean", where, channels), _numbers(d, "std", where, channels, positive=True)
        return cls(size=tuple(size), mode=mode, resize=resize, pad=pad, mean=mean, std=std,
                   standardize=_flag(d, "standardize", where), flatten=_flag(d, "flatten", where))


def _list(values):
    return None if values is None else list(values)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


# --- tabular -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TabularPreprocess:
    """CSV rows -> float32 (N, F): numeric columns as numbers, categorical columns encoded (two
    categories: one column, 1 for the second; more: one-hot), times `scale`, then standardised or
    min-max scaled with statistics fitted on the training split."""
    kind: ClassVar[str] = "tabular"
    columns: tuple[str, ...]                                   # the CSV columns read, in order
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)   # categorical column -> its values
    scale: float = 1.0
    standardize: bool = False                                  # (x - mean) / std, fitted on the training split
    minmax: bool = False                                       # (x - low) / (high - low), fitted likewise
    mean: tuple[float, ...] | None = None                      # per feature (after encoding and `scale`)
    std: tuple[float, ...] | None = None
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    ranges: dict[str, tuple[float, float]] | None = None       # numeric column -> training [min, max], raw units

    @property
    def features(self) -> list[str]:
        """The encoded feature names, one per model input column."""
        out = []
        for column in self.columns:
            values = self.categories.get(column)
            if values is None:
                out.append(column)
            elif len(values) == 2:
                out.append(f"{column}={values[1]}")
            else:
                out += [f"{column}={v}" for v in values]
        return out

    @property
    def fitted(self) -> bool:
        return (not self.standardize or self.mean is not None) and (not self.minmax or self.low is not None)

    def model_shape(self) -> tuple:
        return (len(self.features),)

    def values(self, rows, warn: Warn = None, labels: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """A row (mapping keyed by column name, matched case-insensitively) or a list of rows -> per column
        (N,): float64 numbers, or int64 indices into the column's categories (names matched case-insensitively,
        surrounding spaces ignored). `labels` name the rows in error messages (default "row 1", "row 2", ...)."""
        if isinstance(rows, Mapping):
            rows = [rows]
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)) or not all(isinstance(r, Mapping) for r in rows):
            raise ValueError(f"expected a row (a dict keyed by {list(self.columns)}) or a list of rows, "
                             f"got a {type(rows).__name__}")
        if not rows:
            raise ValueError("expected at least one row, got none")
        out = {c: np.empty(len(rows), np.int64 if c in self.categories else np.float64) for c in self.columns}
        lookup = {c: {v.lower(): i for i, v in enumerate(vs)} for c, vs in self.categories.items()}
        for i, row in enumerate(rows):
            where = labels[i] if labels else f"row {i + 1}"
            lower = {str(k).strip().lower(): v for k, v in row.items()}
            for column in self.columns:
                if column.lower() not in lower:
                    raise ValueError(f"{where} has no column {column!r}; expected columns {list(self.columns)}")
                value = lower[column.lower()]
                if column in self.categories:
                    index = lookup[column].get(str(value).strip().lower())
                    if index is None:
                        raise ValueError(f"{where}, column {column!r}: unknown category {value!r}; expected one of "
                                         f"{', '.join(self.categories[column])}")
                    out[column][i] = index
                    continue
                try:
                    number = float(value)
                except (TypeError, ValueError):
                    raise ValueError(f"{where}, column {column!r}: expected a number, got {value!r}"
                                     + decimal_comma(value)) from None
                if not math.isfinite(number):
                    raise ValueError(f"{where}, column {column!r}: value is missing or not finite ({value!r})")
                if warn and self.ranges and column in self.ranges and _out_of_range(number, *self.ranges[column]):
                    low, high = self.ranges[column]
                    warn(i, f"{column} = {number:g} is outside the training range {low:g} to {high:g}")
                out[column][i] = number
        return out

    def encode(self, rows, warn: Warn = None, labels: Sequence[str] | None = None) -> np.ndarray:
        """`values`, encoded -> float64 (N, F): numbers as they are; a column of two categories as 0/1 (1 for
        the second), of more as one-hot columns."""
        columns = self.values(rows, warn, labels)
        parts = []
        for column in self.columns:
            values, names = columns[column], self.categories.get(column)
            if names is None or len(names) == 2:
                parts.append(values.astype(np.float64)[:, None])
            else:
                parts.append(np.eye(len(names), dtype=np.float64)[values])
        return np.concatenate(parts, axis=1)

    def apply(self, x: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise ValueError("the preprocessing says standardize/minmax but carries no fitted statistics")
        x = np.asarray(x, np.float64) * self.scale
        if self.standardize:
            x = (x - np.asarray(self.mean)) / np.asarray(self.std)
        if self.minmax:
            low, high = np.asarray(self.low), np.asarray(self.high)
            x = (x - low) / np.where(high > low, high - low, 1.0)
        return np.ascontiguousarray(x, dtype=np.float32)

    def fit(self, x: np.ndarray) -> "TabularPreprocess":
        """Training ranges of the numeric columns, and the statistics `standardize` / `minmax` need."""
        x = np.asarray(x, np.float64)
        ranges, j = {}, 0
        for column in self.columns:
            values = self.categories.get(column)
            if values is None:
                ranges[column] = (float(x[:, j].min()), float(x[:, j].max()))
            j += 1 if values is None or len(values) == 2 else len(values)
        fitted = dataclasses.replace(self, ranges=ranges)
        scaled = x * self.scale
        if self.standardize:
            std = scaled.std(0, ddof=1) if len(scaled) > 1 else np.ones(scaled.shape[1])
            fitted = dataclasses.replace(fitted, mean=tuple(map(float, scaled.mean(0))),
                                         std=tuple(map(float, np.maximum(std, 1e-8))))
        if self.minmax:
            fitted = dataclasses.replace(fitted, low=tuple(map(float, scaled.min(0))), high=tuple(map(float, scaled.max(0))))
        return fitted

    def describe(self) -> str:
        parts = []
        for column in self.columns:
            if column in self.categories:
                parts.append(f"{column} (one of {', '.join(self.categories[column])})")
            elif self.ranges and column in self.ranges:
                low, high = self.ranges[column]
                parts.append(f"{column} (a number; training range {low:.4g} to {high:.4g})")
            else:
                parts.append(f"{column} (a number)")
        text = "a CSV row or dict with " + ", ".join(parts)
        if self.scale != 1.0:
            text += f"; multiplied by {self.scale:g}"
        if self.standardize:
            text += "; standardised with the mean/std fitted on the training split"
        if self.minmax:
            text += "; scaled to [0, 1] with the min/max fitted on the training split"
        if self.ranges:
            text += f"; values more than {RANGE_SLACK:.0%} of a range outside it get a warning"
        return text

    def untrained(self) -> "TabularPreprocess":
        width = len(self.features)
        out = self
        if self.standardize and self.mean is None:
            out = dataclasses.replace(out, mean=(0.0,) * width, std=(1.0,) * width)
        if self.minmax and self.low is None:
            out = dataclasses.replace(out, low=(0.0,) * width, high=(1.0,) * width)
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "columns": list(self.columns),
                "categories": {k: list(v) for k, v in self.categories.items()}, "scale": self.scale,
                "standardize": self.standardize, "minmax": self.minmax, "mean": _list(self.mean),
                "std": _list(self.std), "low": _list(self.low), "high": _list(self.high),
                "ranges": None if self.ranges is None else {k: list(v) for k, v in self.ranges.items()}}

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "TabularPreprocess":
        columns = d.get("columns")
        if (not isinstance(columns, list) or not columns or len(columns) > LIMITS["tabular_columns"]
                or not all(isinstance(c, str) and c for c in columns)):
            raise InvalidField(f"{where}.columns", f"a list of 1 to {LIMITS['tabular_columns']} column names", columns)
        categories = d.get("categories") or {}
        if not isinstance(categories, Mapping) or not all(
                k in columns and isinstance(v, list) and 2 <= len(v) <= LIMITS["categories"]
                and all(isinstance(x, str) and x for x in v) for k, v in categories.items()):
            raise InvalidField(f"{where}.categories", f"an object {{column: [2 to {LIMITS['categories']} category "
                               "names]} over the columns", categories)
        scale = d.get("scale", 1.0)
        if not _is_number(scale) or scale == 0:
            raise InvalidField(f"{where}.scale", "a finite non-zero number", scale)
        standardize, minmax = _flag(d, "standardize", where), _flag(d, "minmax", where)
        if standardize and minmax:
            raise InvalidField(f"{where}.standardize/minmax", "at most one of them true", [standardize, minmax])
        partial = cls(columns=tuple(columns), categories={k: tuple(v) for k, v in categories.items()})
        width = len(partial.features)
        if width > LIMITS["tabular_features"]:
            raise InvalidField(f"{where}.columns/categories", f"at most {LIMITS['tabular_features']} model input "
                               "columns once categories are encoded", f"{width} columns")
        stats = {key: _numbers(d, key, where, width, positive=key == "std") for key in ("mean", "std", "low", "high")}
        for a, b in (("mean", "std"), ("low", "high")):
            if (stats[a] is None) != (stats[b] is None):
                raise InvalidField(f"{where}.{a}/{b}", "both given or both null", [d.get(a), d.get(b)])
        ranges = d.get("ranges")
        if ranges is not None:
            numeric = [c for c in columns if c not in categories]
            if not isinstance(ranges, Mapping) or not all(
                    k in numeric and isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v) and v[0] <= v[1]
                    for k, v in ranges.items()):
                raise InvalidField(f"{where}.ranges", "null or an object {numeric column: [min, max]}", ranges)
            ranges = {k: (float(v[0]), float(v[1])) for k, v in ranges.items()}
        return dataclasses.replace(partial, scale=float(scale), standardize=standardize, minmax=minmax,
                                   ranges=ranges, **stats)


# --- series and categories ------------------------------------------------------------------------

@dataclass(frozen=True)
class SeriesPreprocess:
    """A 1-D series -> its last `window` values as float32 (1, window, 1); the model predicts the next one."""
    kind: ClassVar[str] = "series"
    column: str                                  # the CSV column holding the readings
    window: int                                  # readings per input window
    range: tuple[float, float] | None = None     # training [min, max], for out-of-range warnings

    fitted: ClassVar[bool] = True

    def model_shape(self) -> tuple:
        return ("sequence", 1)

    def encode(self, values, warn: Warn = None) -> np.ndarray:
        if isinstance(values, (str, bytes, Mapping)):
            raise ValueError(f"expected a 1-D series of numbers, got a {type(values).__name__}")
        try:
            array = np.asarray(list(values), dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as e:
            raise ValueError(f"expected a 1-D series of numbers: {e}") from None
        if len(array) < self.window:
            raise ValueError(f"a series needs at least {self.window} values (the model's window), got {len(array)}")
        window = array[-self.window:]
        if not np.isfinite(window).all():
            raise ValueError("the series has missing or non-finite values")
        if warn and self.range is not None:
            outside = [v for v in (float(window.min()), float(window.max())) if _out_of_range(v, *self.range)]
            if outside:
                warn(0, f"the window reaches {outside[0]:g}, outside the training range "
                        f"{self.range[0]:g} to {self.range[1]:g}")
        return window.reshape(1, self.window, 1)

    def apply(self, windows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(windows, dtype=np.float32)

    def fit(self, windows: np.ndarray) -> "SeriesPreprocess":
        values = np.asarray(windows)
        return dataclasses.replace(self, range=(float(values.min()), float(values.max())))

    def untrained(self) -> "SeriesPreprocess":
        return self

    def describe(self) -> str:
        text = f"a series of {self.column!r} readings in time order, at least {self.window}; the last {self.window} are used"
        if self.range is not None:
            text += (f"; training range {self.range[0]:.4g} to {self.range[1]:.4g} (a window reaching more than "
                     f"{RANGE_SLACK:.0%} of it outside gets a warning)")
        return text

    def to_dict(self) -> dict:
        return {"kind": self.kind, "column": self.column, "window": self.window, "range": _list(self.range)}

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "SeriesPreprocess":
        if not isinstance(d.get("column"), str) or not d["column"]:
            raise InvalidField(f"{where}.column", "a column name", d.get("column"))
        if not _is_int(d.get("window")) or not 1 <= d["window"] <= LIMITS["series_window"]:
            raise InvalidField(f"{where}.window", f"an integer from 1 to {LIMITS['series_window']}", d.get("window"))
        span = _numbers(d, "range", where, 2)
        if span is not None and span[0] > span[1]:
            raise InvalidField(f"{where}.range", "[min, max] with min <= max", d.get("range"))
        return cls(column=d["column"], window=d["window"], range=span)


@dataclass(frozen=True)
class OneHotPreprocess:
    """Category names -> float32 one-hot (N, len(vocabulary)); stored as int64 indices."""
    kind: ClassVar[str] = "onehot"
    vocabulary: tuple[str, ...]

    fitted: ClassVar[bool] = True

    def model_shape(self) -> tuple:
        return (len(self.vocabulary),)

    def encode(self, names, warn: Warn = None) -> np.ndarray:
        if not (isinstance(names, str) or (isinstance(names, Sequence) and all(isinstance(n, str) for n in names))):
            raise ValueError(f"expected a category name or a list of names, got a {type(names).__name__}")
        names = [names] if isinstance(names, str) else list(names)
        index = {name: i for i, name in enumerate(self.vocabulary)}
        for name in names:
            if name not in index:
                raise ValueError(f"unknown category {name!r}; expected one of {', '.join(self.vocabulary[:5])}, ... "
                                 f"({len(self.vocabulary)} in all)")
        return np.asarray([index[n] for n in names], np.int64)

    def apply(self, indices: np.ndarray) -> np.ndarray:
        return np.eye(len(self.vocabulary), dtype=np.float32)[np.asarray(indices, np.int64)]

    def fit(self, indices) -> "OneHotPreprocess":
        return self

    def untrained(self) -> "OneHotPreprocess":
        return self

    def describe(self) -> str:
        shown = ", ".join(self.vocabulary[:6]) + (", ..." if len(self.vocabulary) > 6 else "")
        return f"a category name, one of {len(self.vocabulary)}: {shown}"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "vocabulary": list(self.vocabulary)}

    @classmethod
    def from_dict(cls, d: Mapping, where: str) -> "OneHotPreprocess":
        v = d.get("vocabulary")
        if (not isinstance(v, list) or not v or len(v) > LIMITS["vocabulary"] or not all(isinstance(x, str) for x in v)
                or len(set(v)) != len(v)):
            raise InvalidField(f"{where}.vocabulary", f"a list of 1 to {LIMITS['vocabulary']} distinct category "
                               "names", v)
        return cls(vocabulary=tuple(v))


Preprocess = ImagePreprocess | TabularPreprocess | SeriesPreprocess | OneHotPreprocess
KINDS = {c.kind: c for c in (ImagePreprocess, TabularPreprocess, SeriesPreprocess, OneHotPreprocess)}


def prepare(pre: Preprocess, raw, warn: Warn = None) -> np.ndarray:
    """Raw inputs -> the float32 model input: `encode`, then `apply`."""
    return pre.apply(pre.encode(raw, warn))


def preprocess_from_dict(d, where: str) -> Preprocess:
    if not isinstance(d, Mapping):
        raise InvalidField(where, "an object with a `kind`", d)
    if d.get("kind") not in KINDS:
        raise InvalidField(f"{where}.kind", " | ".join(KINDS), d.get("kind"))
    return KINDS[d["kind"]].from_dict(d, where)


def preprocessing_from_dict(data, inputs: Sequence[TensorSpec], where: str = "preprocess") -> dict[str, Preprocess]:
    """{input name: preprocessing dict} -> objects, checked against the inputs they feed."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InvalidField(where, "an object {input name: preprocessing}", data)
    tensors = {t.name: t for t in inputs}
    out = {}
    for name, d in data.items():
        key = f"{where}.{name}"
        if name not in tensors:
            raise InvalidField(key, f"preprocessing for an input ({', '.join(tensors)})", name)
        pre = preprocess_from_dict(d, key)
        declared = tensors[name].shape[1:]
        expected = pre.model_shape()
        if len(declared) != len(expected) or any(isinstance(e, int) and e != g for e, g in zip(expected, declared)):
            raise InvalidField(key, f"preprocessing that gives the input's shape {tuple(declared)}",
                               f"one that gives {expected}")
        out[name] = pre
    return out


def preprocessing_to_dict(preprocessing: Mapping[str, Preprocess]) -> dict:
    return {name: pre.to_dict() for name, pre in preprocessing.items()}
