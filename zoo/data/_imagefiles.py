"""Plumbing shared by the image-dataset adapters (omniglot, digits, cifar): read image bytes from a
folder tree or a tar in one pass, fingerprint them, and decode them with the preprocessing's own
`decode` (the runtime's) so training sees exactly the pixels serving will."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from zoo.contract import ImagePreprocess
from zoo.data._core import DataError, IMAGE_SUFFIXES

Entry = tuple[str, bytes]  # (name relative to the dataset root, file bytes)


def is_image_name(name: str) -> bool:
    leaf = name.rsplit("/", 1)[-1]
    return not leaf.startswith(".") and "." in leaf and "." + leaf.rsplit(".", 1)[1].lower() in IMAGE_SUFFIXES


def fingerprint_entries(entries) -> str:
    """sha256 over (relative name, sha256 of bytes) in sorted order: the same value
    `_core.fingerprint_files` gives for the same files on disk."""
    h = hashlib.sha256()
    for name, data in sorted(entries, key=lambda e: e[0].split("/")):
        h.update(name.encode())
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def fingerprint_file(path: Path) -> str:
    return fingerprint_entries([(path.name, path.read_bytes())])


def read_tree(root: Path, classes) -> dict[str, list[Entry]]:
    """The image files of each class folder `root/<class>/` (those that exist), as bytes."""
    groups = {}
    for name in classes:
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(e.name for e in _scandir(folder) if e.is_file() and is_image_name(e.name))
        groups[name] = [(f"{name}/{f}", (folder / f).read_bytes()) for f in files]
    return groups


def _scandir(folder: Path):
    with os.scandir(folder) as it:
        return list(it)


def read_tar(path: Path, classes, split: str, what: str) -> dict[str, list[Entry]]:
    """Image members `[<prefix>/]<class>/<file>` of a (gzip) tar; only the given classes are kept.
    When members sit under a `<split>/` folder, only those are used. A gzip or plain tar is
    decompressed once and its members sliced out of memory (half the cost of tarfile's streaming)."""
    wanted = set(classes)
    found: dict[str, list[tuple[tuple[str, ...], Entry]]] = {}
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        plain = data[257:262] == b"ustar"
        view = memoryview(data)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if not member.isfile() or len(parts) < 2 or parts[-2] not in wanted or not is_image_name(member.name):
                    continue
                content = (bytes(view[member.offset_data:member.offset_data + member.size]) if plain
                           else tar.extractfile(member).read())
                found.setdefault(parts[-2], []).append((parts, (member.name, content)))
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        reason = " ".join(str(e).split())  # tarfile's messages can span lines
        raise DataError(f"{what} {path.name}: cannot read the tar archive ({reason}); "
                        f"expected a gzip tar of <class>/<image> files") from None
    in_split = any(len(p) >= 3 and p[-3] == split for items in found.values() for p, _ in items)
    return {name: [entry for p, entry in items if not in_split or (len(p) >= 3 and p[-3] == split)]
            for name, items in found.items()}


def check_groups(groups: dict[str, list[Entry]], classes, what: str, where: str) -> None:
    missing = [c for c in classes if c not in groups]
    if missing:
        raise DataError(f"{what} {where}: missing class folder(s) {missing}; expected one folder per class "
                        f"{list(classes)}")
    empty = [c for c in classes if not groups[c]]
    if empty:
        raise DataError(f"{what} {where}: class folder {empty[0]!r} has no images")


def decode_bytes(name: str, data: bytes, pre: ImagePreprocess) -> np.ndarray:
    """One encoded image -> uint8 (C, H, W), as the runtime decodes it."""
    try:
        return pre.decode(data)
    except ValueError as e:
        raise DataError(f"cannot read image {name}: {str(e).split(': ', 1)[-1]}; expected a PNG or JPEG file") from None


def decode_groups(groups: dict[str, list[Entry]], classes, pre: ImagePreprocess):
    """Class groups -> uint8 images (N, C, H, W), int64 labels (index in `classes`), fingerprint, and the
    files that could not be decoded (skipped; a class none of whose files decode is an error)."""
    arrays, labels, entries, skipped = [], [], [], []
    for index, name in enumerate(classes):
        decoded, first_failure = 0, len(skipped)
        for entry in groups[name]:
            entries.append(entry)   # the fingerprint covers every file read
            try:
                arrays.append(decode_bytes(*entry, pre))
            except DataError as e:
                skipped.append(str(e))
                continue
            labels.append(index)
            decoded += 1
        if groups[name] and not decoded:
            raise DataError(f"class {name!r}: none of its {len(groups[name])} image(s) can be read "
                            f"({skipped[first_failure]})")
    return (torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64), fingerprint_entries(entries),
            skipped)


def arrays_to_images(arrays: np.ndarray, pre: ImagePreprocess) -> torch.Tensor:
    """uint8 (N, H, W) or (N, H, W, C) pixels -> uint8 (N, C, H, W) of the preprocessing's mode and
    size. Stored arrays that already fit are used as they are (what `decode` would return)."""
    height, width = pre.size
    fits = arrays.shape[1:3] == (height, width) and (arrays.ndim == 3 if pre.channels == 1 else
                                                      arrays.ndim == 4 and arrays.shape[3] == 3)
    if fits:
        out = arrays[:, None] if arrays.ndim == 3 else arrays.transpose(0, 3, 1, 2)
        return torch.from_numpy(out.copy())  # a writable, contiguous copy
    return torch.from_numpy(np.stack([pre.decode(a) for a in arrays]))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A reproducible gzip tar (sorted names, mtime 0, owner 0), like the real dataset tars."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
