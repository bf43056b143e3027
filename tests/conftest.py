import os
import sys
from pathlib import Path

import pytest


class BundleCache:
    """make(name, fmt) -> a random-weights bundle folder written by zoo.export, exported once per cache."""

    def __init__(self, root: Path):
        self.root, self.made = root, {}

    def __call__(self, name: str, fmt: str = "onnx") -> Path:
        if (name, fmt) not in self.made:
            from zoo.export import export

            (self.made[name, fmt],) = export(name, formats=(fmt,), random_weights=True, out=self.root)
        return self.made[name, fmt]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory):
    """Random-weights bundles, exported once per test session and shared by the test modules."""
    return BundleCache(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session", autouse=True)
def _own_cache(tmp_path_factory):
    """Built-in samples are written to a cache of this test session, never a stale shared one."""
    os.environ["ZOO_CACHE"] = str(tmp_path_factory.mktemp("zoo-cache"))
    yield


@pytest.fixture(autouse=True)
def _few_threads():
    # 2, or OMP_NUM_THREADS where set: on a busy machine, OpenMP threads waiting for each other on the
    # many tiny ops of a recurrent model make a 1-minute test take half an hour
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    yield
