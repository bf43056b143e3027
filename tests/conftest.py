import os
import sys

import pytest

# Tests must never depend on a GPU or on more threads than the CI machine has.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(autouse=True)
def _few_threads():
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(2)
    yield
