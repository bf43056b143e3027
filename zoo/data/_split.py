"""The trainer's validation split: which samples a run held out, and which the weights of a card were chosen on."""

from __future__ import annotations

import torch

from zoo.data._core import Dataset
from zoo.specs import ModelSpec


def split_indices(dataset: Dataset, spec: ModelSpec, fraction: float, seed: int):
    """(train, val) index tensors. Time-ordered data: the last `fraction` of the windows, with the
    windows overlapping the boundary dropped; otherwise a split stratified by class with a fixed seed."""
    n = len(dataset)
    if fraction <= 0:
        return torch.arange(n), torch.arange(0)
    if dataset.ordered:
        n_val = max(1, int(n * fraction))
        gap = next(iter(dataset.inputs.values())).shape[1]
        return torch.arange(0, max(0, n - n_val - gap)), torch.arange(n - n_val, n)
    generator = torch.Generator().manual_seed(seed)
    if spec.is_classifier:
        target = next(iter(dataset.targets.values())).view(n, -1)[:, 0].long()
        train, val = [], []
        for cls in target.unique():
            members = (target == cls).nonzero().view(-1)
            members = members[torch.randperm(len(members), generator=generator)]
            k = int(round(len(members) * fraction))
            val.append(members[:k])
            train.append(members[k:])
        return torch.cat(train).sort().values, torch.cat(val).sort().values
    order = torch.randperm(n, generator=generator)
    n_val = max(1, int(n * fraction))
    return order[n_val:].sort().values, order[:n_val].sort().values


def card_split(dataset: Dataset, spec: ModelSpec, card):
    """(train, val) index tensors as the trainer split `dataset` for the weights of `card` (a zoo.weights.Card):
    the validation fraction and seed the card records (the spec's recipe for weights without a card), so the
    validation part is the one the card's validation metrics were measured on when the data is the same."""
    fraction = spec.recipe.val_fraction if card is None or card.val_fraction is None else card.val_fraction
    seed = spec.recipe.seed if card is None or card.seed is None else card.seed
    return split_indices(dataset, spec, fraction, seed)
