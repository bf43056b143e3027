"""The built-in default data: small, deterministic, learnable samples written in each dataset's real
on-disk format (so they are read by the same adapter as the real thing), cached under
`$ZOO_CACHE` (default ~/.cache/zoo)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from zoo.registry import dataset as dataset_spec, load_function

VERSION = 2  # bump when a writer changes, so stale caches are not reused


def cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo"))


def materialize(dataset: str, split: str = "train") -> Path:
    """Write (once) and return the built-in sample of `dataset` for `split`."""
    writer = load_function(dataset_spec(dataset).sample)
    target = cache_dir() / "builtin" / f"v{VERSION}" / dataset / split
    done = target / ".complete"
    if not done.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{split}-"))
        rel = writer(tmp, split).relative_to(tmp)
        (tmp / ".complete").write_text(str(rel))
        if target.exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return target / done.read_text()
