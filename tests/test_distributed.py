"""zoo train --nproc: data-parallel training under torchrun (gloo on CPU) gives the single-process result at the
same global batch size, and a process that dies fails the whole run cleanly and resumably."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from zoo.training._checkpoint import read_checkpoint_state

pytestmark = pytest.mark.slow   # several training processes each: CI runs them

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ZOO_CHECKPOINT_SECONDS": "0"}


def zoo_train(out: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", "train", "circles-mlp", "--out", str(out), *args],
                          env=ENV, capture_output=True, text=True, timeout=600, **kwargs)


def test_two_processes_train_what_one_process_trains(tmp_path):
    single = zoo_train(tmp_path / "one", "--epochs", "2")
    double = zoo_train(tmp_path / "two", "--epochs", "2", "--nproc", "2")
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr
    assert "data-parallel over 2 processes: 16 samples per process and step, global batch 32" in double.stderr
    a, b = (load_file(str(tmp_path / run / "circles-mlp.safetensors")) for run in ("one", "two"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    histories = [json.loads((tmp_path / run / "circles-mlp.history.json").read_text()) for run in ("one", "two")]
    assert [(h["steps"], h["lr"]) for h in histories[0]] == [(h["steps"], h["lr"]) for h in histories[1]] == \
        [(25, 0.01), (25, 0.01)]
    # metrics are reduced across ranks: the validation figures of the whole split, as one process has them
    assert histories[1][-1]["val_accuracy"] == pytest.approx(histories[0][-1]["val_accuracy"])
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def _worker(out: Path, rank: int) -> int | None:
    """The pid of the training process of `rank` writing to `out` (a torchrun worker), if it runs."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(out).encode() in cmdline and b"zoo.cli" in cmdline and f"RANK={rank}".encode() in environ:
            return int(proc.name)
    return None


def test_a_dying_process_fails_the_run_cleanly_and_it_resumes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", "circles-mlp", "--out", str(out), "--epochs",
                             "200", "--nproc", "2"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        state = read_checkpoint_state(out, "circles-mlp")
        if state and state["epoch"] >= 3:
            break
        time.sleep(0.05)
    victim = _worker(out, 1)
    assert victim is not None, "rank 1 not found"
    os.kill(victim, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=300)
    text = " ".join(stderr.split())
    assert proc.returncode == 1 and "a training process failed" in text and "--resume" in text
    saved = read_checkpoint_state(out, "circles-mlp")   # the last good checkpoint, intact and readable
    assert saved["epoch"] >= 3 and not (out / "circles-mlp.json").exists()
    done = zoo_train(out, "--epochs", "200", "--nproc", "2", "--resume")
    assert done.returncode == 0, done.stderr
    assert f"resuming circles-mlp after epoch {saved['epoch']}" in done.stderr
    history = json.loads((out / "circles-mlp.history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
