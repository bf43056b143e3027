"""Dataset adapters: the on-disk formats users have (`--data DIR`) and a built-in default for each.

Every adapter returns a `Dataset` of in-memory tensors keyed by the spec's input and output names, in
the stored form of the model's preprocessing (`zoo.contract`): images decoded once to uint8
(N, C, H, W), tabular rows encoded to numbers, category names to indices, series cut into windows.
`model_inputs` applies the preprocessing to a batch. Which adapter reads which dataset is the dataset's
record in the registry. Without `--data`, the adapter reads a small sample written in the very same
format (`zoo.data.builtin`), so the built-in default exercises the real reading path.
"""

from __future__ import annotations

from pathlib import Path

from zoo.data._core import Dataset, DataError, model_inputs
from zoo.registry import ModelSpec, dataset as dataset_spec, load_function

__all__ = ["Dataset", "DataError", "load", "model_inputs", "real_samples"]


def load(spec: ModelSpec, data: str | Path | None = None, split: str = "train", strict: bool = False) -> Dataset:
    """Load `spec.dataset` from `data` (a folder or file in the dataset's real format), or the
    built-in sample when `data` is None. `split` ("train" or "test") picks the split when `data`
    holds both (e.g. a folder with `clouds_train/` and `clouds_test/`). Unreadable image files are left
    out and listed in `dataset.skipped` (and its notes), or with `strict` refused."""
    from zoo.data import builtin

    record = dataset_spec(spec.dataset)
    adapter = load_function(record.adapter)
    if data is None:
        dataset = adapter(spec, builtin.materialize(spec.dataset, split), split)
        dataset.source = "built-in"
    else:
        path = Path(data).expanduser()
        if not path.exists():
            raise DataError(f"--data {path}: no such file or folder")
        dataset = adapter(spec, path, split)
    if dataset.skipped:
        if strict:
            raise DataError(f"{len(dataset.skipped)} unreadable image(s) and --strict: {dataset.skipped[0]}"
                            + (f" (and {len(dataset.skipped) - 1} more)" if len(dataset.skipped) > 1 else ""))
        dataset.notes.append(f"skipped {len(dataset.skipped)} unreadable image(s): "
                             + "; ".join(dataset.skipped[:3]) + (" ..." if len(dataset.skipped) > 3 else ""))
    if record.caveat:   # travels into the card's notes and every evaluation's
        dataset.notes.append(record.caveat)
    return dataset


def real_samples(spec: ModelSpec, data: str | Path | Dataset | None, preprocess: dict, n: int = 32,
                 split: str = "train") -> dict | None:
    """Up to `n` real model inputs as float32 numpy arrays keyed by input name, prepared with
    `preprocess` (the weights' own, fitted statistics included), for parity checks. `data`: a path, or
    a Dataset already loaded."""
    if data is None:
        return None
    dataset = data if isinstance(data, Dataset) else load(spec, data, split)
    import torch

    idx = torch.linspace(0, len(dataset) - 1, min(n, len(dataset))).long()
    return {k: v.numpy() for k, v in model_inputs(preprocess, dataset.subset(idx).inputs).items()}
