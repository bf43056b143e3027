"""Resumable training checkpoints (safetensors + JSON; nothing is pickled), written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from zoo.errors import ZooError
from zoo.outputs import atomic_write


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Atomically; serialised in memory first, so that a failed write (a full disk) is a plain OSError."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: tmp.write_bytes(save(tensors, metadata=metadata)))


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


def _unreadable(path: Path, reason: str) -> ZooError:
    return ZooError(f"the checkpoint {path} cannot be read ({reason}): it cannot be resumed; pass --restart to "
                    "discard it and train from the start")


def read_checkpoint_state(out: Path, name: str) -> dict | None:
    """The JSON part of the checkpoint (epoch, history, ...), or None if there is none; ZooError if it is
    unreadable."""
    path = checkpoint_path(out, name)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            state = json.loads((f.metadata() or {})["state"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise _unreadable(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int):
        raise _unreadable(path, "its state has no epoch")
    return state


def load_checkpoint(out: Path, name: str) -> tuple[dict, dict] | None:
    """(JSON state, tensors) of the checkpoint, or None if there is none; see restore_*."""
    state = read_checkpoint_state(out, name)
    if state is None:
        return None
    try:
        return state, load_file(str(checkpoint_path(out, name)))
    except (SafetensorError, OSError) as e:
        raise _unreadable(checkpoint_path(out, name), str(e).splitlines()[0]) from None


def restore_model(model, tensors: dict) -> dict:
    """Put the checkpoint's weights and RNG state back; return the best-so-far weights."""
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        torch.set_rng_state(tensors["rng.torch"])
    except (RuntimeError, KeyError) as e:
        raise ZooError(f"the checkpoint does not fit the model ({str(e).splitlines()[0]}): pass --restart to "
                       "discard it and train from the start") from None
    return {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}


def restore_optimizer(optimizer, scheduler, state: dict, tensors: dict) -> None:
    """The optimizer's state and the learning-rate schedule's, restored (never replayed on top of the
    restored learning rate)."""
    optim_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, field = key.split(".", 2)
            optim_state.setdefault(int(idx), {})[field] = value
    try:
        optimizer.load_state_dict({"state": optim_state, "param_groups": state["param_groups"]})
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise ZooError(f"the checkpoint's optimizer state does not fit this run ({e}): pass --restart to discard "
                       "it and train from the start") from None


def remove_checkpoint(out: Path, name: str) -> None:
    checkpoint_path(out, name).unlink(missing_ok=True)
