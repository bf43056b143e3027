"""zoo: the classic PyTorch course models, trained, exported with measured parity, and served.

Importing `zoo` imports nothing else: each entry point loads its stage on first use, so `zoo.runtime`
stays torch-free and depends only on `zoo.contract` and `zoo.errors`.
"""

import importlib

__version__ = "0.1.0"
__all__ = ["ZooError", "create_model", "list_models", "build", "get", "names", "train", "evaluate", "export", "verify",
           "__version__"]

_LAZY = {"ZooError": "zoo.errors", "create_model": "zoo.hub", "list_models": "zoo.hub",
         "build": "zoo.registry", "get": "zoo.registry", "names": "zoo.registry",
         "train": "zoo.training", "evaluate": "zoo.training", "export": "zoo.export", "verify": "zoo.export"}


def __getattr__(attr):
    if attr in _LAZY:
        return getattr(importlib.import_module(_LAZY[attr]), attr)
    raise AttributeError(f"module 'zoo' has no attribute {attr!r}")
