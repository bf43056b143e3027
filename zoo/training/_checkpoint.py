"""Atomic writes and resumable training checkpoints (safetensors + JSON; nothing is pickled)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, default=str) + "\n"))


def checkpoint_paths(out: Path, name: str) -> tuple[Path, Path]:
    return out / f".{name}.ckpt.safetensors", out / f".{name}.ckpt.json"


def save_checkpoint(out: Path, name: str, model, best_state: dict, optimizer, state: dict) -> None:
    """Model, best-so-far weights, optimizer tensors and RNG in safetensors; the rest in JSON.
    The JSON is written last, so a checkpoint is complete once its JSON names its epoch."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best_state.items()})
    opt = optimizer.state_dict()
    for idx, param_state in opt["state"].items():
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensor_path, json_path = checkpoint_paths(out, name)
    save_tensors(tensor_path, tensors)
    save_json(json_path, {**state, "param_groups": opt["param_groups"]})


def load_checkpoint(out: Path, name: str, model, optimizer) -> tuple[dict, dict] | None:
    """Restore model, optimizer and RNG; return (json state, best weights) or None if there is none."""
    tensor_path, json_path = checkpoint_paths(out, name)
    if not (tensor_path.is_file() and json_path.is_file()):
        return None
    state = json.loads(json_path.read_text())
    tensors = load_file(str(tensor_path))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    optim_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, field = key.split(".", 2)
            optim_state.setdefault(int(idx), {})[field] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": state["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    return state, best


def remove_checkpoint(out: Path, name: str) -> None:
    for path in checkpoint_paths(out, name):
        path.unlink(missing_ok=True)
