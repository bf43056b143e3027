from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoo.contract import ImagePreprocess, Preprocess
from zoo.errors import ZooError


class DataError(ZooError):
    """Bad or missing data: one clear line, exit code 2."""


@dataclass
class Dataset:
    inputs: dict[str, torch.Tensor]    # input name -> stored form (uint8 images, encoded features, indices, windows)
    targets: dict[str, torch.Tensor]   # output name -> int64 class indices, or float32 (N, 1) values
    preprocess: dict[str, Preprocess]  # input name -> the spec's preprocessing (fitted by training)
    source: str = "files"              # "files" or "built-in"
    fingerprint: str = ""              # sha256 over the files read (relative names + bytes)
    notes: list[str] = field(default_factory=list)
    times: np.ndarray | None = None    # time-ordered data: datetime64 of each sample's target (split by time)
    skipped: list[str] = field(default_factory=list)   # unreadable files left out, each with the reason

    @property
    def ordered(self) -> bool:
        return self.times is not None

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))

    def subset(self, index) -> "Dataset":
        times = None if self.times is None else self.times[np.asarray(index)]
        return Dataset({k: v[index] for k, v in self.inputs.items()},
                       {k: v[index] for k, v in self.targets.items()},
                       self.preprocess, self.source, self.fingerprint, self.notes, times, self.skipped)


def model_inputs(preprocess: dict[str, Preprocess], stored: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch in stored form -> the float32 tensors the model takes, through each input's `apply`
    (the same numpy code the runtime runs)."""
    return {name: torch.from_numpy(preprocess[name].apply(x.numpy())) for name, x in stored.items()}


def fingerprint_files(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root) if f.is_relative_to(root) else f.name).encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def fingerprint_bytes(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return h.hexdigest()


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def read_image_folder(root: Path, pre: ImagePreprocess, classes: list[str] | None = None,
                      what: str = "image folder") -> tuple[torch.Tensor, torch.Tensor, str, list[str]]:
    """An ImageFolder tree (one sub-folder per class) -> uint8 images, int64 labels, fingerprint, and the
    files that could not be decoded (skipped). With `classes`, those folders must exist and define the
    label order."""
    if not root.is_dir():
        raise DataError(f"{what} {root}: not a folder")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    missing = [c for c in classes if c not in found]
    if missing or not classes:
        raise DataError(f"{what} {root}: expected one folder per class {classes}, missing {missing or 'all'}")
    files, arrays, labels, skipped = [], [], [], []
    for index, name in enumerate(classes):
        members = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise DataError(f"{what} {root}: class folder {name!r} has no images")
        files += members
        for f in members:
            try:
                arrays.append(pre.decode(f))
            except ValueError as e:
                reason = str(e).split(": ", 1)[-1]
                skipped.append(f"cannot read image {f.relative_to(root)}: {reason}")
                continue
            labels.append(index)
        if index not in labels:
            raise DataError(f"{what} {root}: none of the images in class folder {name!r} can be read ({skipped[-1]})")
    return torch.from_numpy(np.stack(arrays)), torch.tensor(labels), fingerprint_files(root, files), skipped
