from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zoo import preprocess as pp
from zoo.errors import ZooError
from zoo.registry import ModelSpec


class DataError(ZooError):
    """Bad or missing data: one clear line, exit code 2."""


@dataclass
class Dataset:
    inputs: dict[str, torch.Tensor]    # input name -> uint8 (N,C,H,W) images, or float32 features
    targets: dict[str, torch.Tensor]   # output name -> int64 class indices, or float32 (N, 1) values
    preprocess: dict[str, dict]        # input name -> complete preprocessing dict (spec + fitted)
    source: str = "files"              # "files" or "built-in"
    fingerprint: str = ""              # sha256 over the files read (relative names + bytes)
    notes: list[str] = field(default_factory=list)
    ordered: bool = False              # samples are in time order: split without shuffling

    def __len__(self) -> int:
        return len(next(iter(self.targets.values())))

    def subset(self, index) -> "Dataset":
        return Dataset({k: v[index] for k, v in self.inputs.items()},
                       {k: v[index] for k, v in self.targets.items()},
                       self.preprocess, self.source, self.fingerprint, self.notes, self.ordered)


def spec_preprocess(spec: ModelSpec) -> dict[str, dict]:
    import dataclasses
    return {name: dataclasses.asdict(pre) for name, pre in spec.preprocess.items()}


def to_model_input(spec: ModelSpec, inputs: dict[str, torch.Tensor], preprocess: dict[str, dict]) -> dict:
    """A batch as stored -> the float32 tensors the model takes: the torch twin of
    `zoo.preprocess.images_to_input` / `rows_to_input` (tests check both agree)."""
    out = {}
    for t in spec.inputs:
        x, pre = inputs[t.name], preprocess[t.name]
        if pre["kind"] == "image":
            if pre.get("standardize") and pre.get("mean") is None:
                raise DataError(f"input {t.name!r}: standardize is set but no fitted mean/std was given")
            x = x.float().div_(255)
            if pre.get("pad"):
                x = torch.nn.functional.pad(x, (pre["pad"],) * 4)
            if pre.get("mean") is not None:
                mean = torch.tensor(pre["mean"], dtype=torch.float32).view(1, -1, 1, 1)
                std = torch.tensor(pre["std"], dtype=torch.float32).view(1, -1, 1, 1)
                x = (x - mean) / std
            if pre.get("flatten"):
                x = x.flatten(1)
        elif pre["kind"] == "tabular":
            x = x * pre.get("scale", 1.0)
            if pre.get("standardize"):
                if pre.get("mean") is None:
                    raise DataError(f"input {t.name!r}: standardize is set but no fitted mean/std was given")
                x = (x - torch.tensor(pre["mean"])) / torch.tensor(pre["std"])
        out[t.name] = x.float()
    return out


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


def read_image_folder(root: Path, pre: dict, classes: list[str] | None = None,
                      what: str = "image folder") -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """An ImageFolder tree (one sub-folder per class) -> uint8 images, int64 labels, class names,
    fingerprint. With `classes`, those folders must exist and define the label order."""
    if not root.is_dir():
        raise DataError(f"{what} {root}: not a folder")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    missing = [c for c in classes if c not in found]
    if missing or not classes:
        raise DataError(f"{what} {root}: expected one folder per class {classes}, missing {missing or 'all'}")
    files, labels = [], []
    for index, name in enumerate(classes):
        members = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise DataError(f"{what} {root}: class folder {name!r} has no images")
        files += members
        labels += [index] * len(members)
    images = decode_all(files, pre)
    return images, torch.tensor(labels), classes, fingerprint_files(root, files)


def decode_all(files: list[Path], pre: dict) -> torch.Tensor:
    arrays = []
    for f in files:
        try:
            arrays.append(pp.decode_image(f, pre))
        except ValueError as e:
            raise DataError(str(e)) from None
    return torch.from_numpy(np.stack(arrays))
