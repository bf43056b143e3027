"""Resumable training checkpoints (safetensors + JSON; nothing is pickled), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from zoo.outputs import atomic_write


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def checkpoint_path(out: Path, name: str) -> Path:
    return out / f".{name}.ckpt.safetensors"


def save_checkpoint(out: Path, name: str, model, best_state: dict, optimizer, scheduler, state: dict) -> None:
    """One file, written atomically: model, best-so-far weights, optimizer tensors and RNG as tensors,
    the rest (epoch, history, optimizer settings, the learning-rate schedule's state) as JSON in the
    safetensors metadata, so a kill at any moment leaves either the previous checkpoint or this one,
    never a mix."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    opt = optimizer.state_dict()
    for idx, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    schedule = scheduler.state_dict() if scheduler is not None else None
    meta = json.dumps({**state, "param_groups": opt["param_groups"], "scheduler": schedule}, default=str)
    save_tensors(checkpoint_path(out, name), tensors, metadata={"state": meta})


def read_checkpoint_state(out: Path, name: str) -> dict | None:
    """The JSON part of the checkpoint (epoch, history, ...), or None if there is none."""
    path = checkpoint_path(out, name)
    if not path.is_file():
        return None
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["state"])


def load_checkpoint(out: Path, name: str) -> tuple[dict, dict] | None:
    """(JSON state, tensors) of the checkpoint, or None if there is none; see restore_*."""
    state = read_checkpoint_state(out, name)
    if state is None:
        return None
    return state, load_file(str(checkpoint_path(out, name)))


def restore_model(model, tensors: dict) -> dict:
    """Put the checkpoint's weights and RNG state back; return the best-so-far weights."""
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    torch.set_rng_state(tensors["rng.torch"])
    return {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def restore_optimizer(optimizer, scheduler, state: dict, tensors: dict) -> None:
    """The optimizer's state and the learning-rate schedule's, restored (never replayed on top of the
    restored learning rate)."""
    optim_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, field = key.split(".", 2)
            optim_state.setdefault(int(idx), {})[field] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": state["param_groups"]})
    if scheduler is not None:
        scheduler.load_state_dict(state["scheduler"])


def remove_checkpoint(out: Path, name: str) -> None:
    checkpoint_path(out, name).unlink(missing_ok=True)
