"""zoo: the classic PyTorch course models, trained, exported with measured parity, and served.

Importing `zoo` does not import torch; the stages that need it load it when called.
"""

from zoo.errors import ZooError
from zoo.registry import build, get, names

__version__ = "0.1.0"
__all__ = ["ZooError", "build", "get", "names", "train", "evaluate", "export", "verify", "__version__"]


def __getattr__(attr):
    # Stage entry points are imported on first use so that `import zoo` stays torch-free.
    lazy = {"train": "zoo.training", "evaluate": "zoo.training", "export": "zoo.export", "verify": "zoo.export"}
    if attr in lazy:
        import importlib
        return getattr(importlib.import_module(lazy[attr]), attr)
    raise AttributeError(f"module 'zoo' has no attribute {attr!r}")
