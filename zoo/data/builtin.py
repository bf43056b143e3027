"""The built-in default data: small, deterministic, learnable samples written in each dataset's real
on-disk format (so they are read by the same adapter as the real thing), cached under
`$ZOO_CACHE` (default ~/.cache/zoo)."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path

VERSION = 2  # bump when a writer changes, so stale caches are not reused

# dataset name -> "module:function(folder, split)" writing the sample and returning the path to read
WRITERS = {
    "clouds": "zoo.data.clouds:write_sample",
    "water_potability": "zoo.data.tabular:write_water_sample",
    "circles": "zoo.data.tabular:write_circles_sample",
    "thermometer": "zoo.data.tabular:write_thermometer_sample",
    "electricity": "zoo.data.series:write_sample",
    "omniglot": "zoo.data.omniglot:write_sample",
    "mnist": "zoo.data.digits:write_mnist_sample",
    "mnist_sample": "zoo.data.digits:write_mnist_sample_sample",
    "fashion_mnist": "zoo.data.digits:write_fashion_mnist_sample",
    "cifar10": "zoo.data.cifar:write_cifar10_sample",
    "cifar2": "zoo.data.cifar:write_cifar10_sample",
}


# datasets whose built-in data is the course's own data (the book's 11 readings, make_circles)
COURSE_DATA = {"thermometer", "circles"}


def cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE", Path.home() / ".cache" / "zoo"))


def materialize(dataset: str, split: str = "train") -> Path:
    """Write (once) and return the built-in sample of `dataset` for `split`."""
    module, func = WRITERS[dataset].split(":")
    writer = getattr(importlib.import_module(module), func)
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
