import os
import sys

import pytest


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
