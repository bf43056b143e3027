"""Named training augmentations on uint8 image batches (N, C, H, W), vectorised over the batch.

torchvision's v2 transforms draw one set of random parameters per call, so per-sample randomness
would need a Python loop of N calls (about 10 ms per 64x64 rotation here): these draw parameters per
sample and transform the whole batch in one `grid_sample`, so augmentation costs little next to the
training step. Semantics follow the torchvision transforms named in each pipeline.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def _flip(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """RandomHorizontalFlip, each sample with probability p."""
    mask = torch.rand(len(x)) < p
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)


def _affine(x: torch.Tensor, degrees: float, translate: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
            fill: float = 0.0, mode: str = "nearest", reflect: bool = False, per_axis: bool = False) -> torch.Tensor:
    """RandomRotation / RandomAffine: per-sample angle in [-degrees, degrees], shift up to
    `translate` of the size, zoom in `scale` (drawn for each axis apart with `per_axis`, as Keras'
    zoom_range does); uncovered pixels get `fill`, or the mirrored image with `reflect` (for photos,
    where a constant border would be a cue)."""
    n = len(x)
    angle = (torch.rand(n) * 2 - 1) * math.radians(degrees)
    zoom_x = torch.empty(n).uniform_(*scale)
    zoom_y = torch.empty(n).uniform_(*scale) if per_axis else zoom_x
    shift = (torch.rand(n, 2) * 2 - 1) * translate * 2  # grid coordinates span [-1, 1]
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos / zoom_x, -sin / zoom_y, shift[:, 0]], 1),
                         torch.stack([sin / zoom_x, cos / zoom_y, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if reflect:
        out = F.grid_sample(x.float(), grid, mode=mode, padding_mode="reflection", align_corners=False)
    else:   # shift by `fill` so that zero padding of grid_sample becomes the fill value
        out = F.grid_sample(x.float() - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _autocontrast(x: torch.Tensor, p: float = 0.5) -> torch.Tensor:
    """RandomAutocontrast: stretch each channel of a sample to the full [0, 255] range."""
    f = x.float()
    low = f.amin(dim=(2, 3), keepdim=True)
    high = f.amax(dim=(2, 3), keepdim=True)
    stretched = torch.where(high > low, (f - low) * 255 / (high - low).clamp_min(1), f)
    mask = (torch.rand(len(x)) < p).view(-1, 1, 1, 1)
    return torch.where(mask, stretched.round().clamp(0, 255).to(torch.uint8), x)


def _crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """RandomCrop(size, padding, padding_mode="reflect"): a per-sample offset into the padded image."""
    n, _, h, w = x.shape
    padded = F.pad(x.float(), (padding,) * 4, mode="reflect")
    dy = torch.randint(0, 2 * padding + 1, (n,))
    dx = torch.randint(0, 2 * padding + 1, (n,))
    rows = (dy.view(n, 1) + torch.arange(h)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(w)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols).to(torch.uint8)


PIPELINES = {
    "none": lambda x: x,
    # the course's train transforms (Resize(64) already happened when decoding)
    "clouds": lambda x: _autocontrast(_affine(_flip(x), degrees=45)),
    # glyphs: small turns, shifts and zooms on a white background
    "omniglot": lambda x: _affine(x, degrees=10, translate=0.08, scale=(0.9, 1.1), fill=255.0, mode="bilinear"),
    # the standard CIFAR recipe
    "cifar": lambda x: _flip(_crop(x, padding=4)),
    # the notes' ImageDataGenerator for pizza/steak: shifts of 0.2, zoom 0.2 per axis, horizontal flip (its
    # rotation and shear ranges of 0.2 are degrees: next to nothing, left out)
    "pizza_steak": lambda x: _affine(_flip(x), degrees=0, translate=0.2, scale=(0.8, 1.2), mode="bilinear",
                                     reflect=True, per_axis=True),
    # the notes' augmentation layers for transfer learning: flip, RandomRotation(0.2) (a fifth of a turn: 72
    # degrees), RandomZoom(0.2) with RandomHeight/Width(0.2) as a per-axis zoom
    "food": lambda x: _affine(_flip(x), degrees=72, scale=(0.8, 1.2), mode="bilinear", reflect=True, per_axis=True),
}


def augment(name: str, images: torch.Tensor) -> torch.Tensor:
    if name not in PIPELINES:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {sorted(PIPELINES)}")
    return PIPELINES[name](images)
