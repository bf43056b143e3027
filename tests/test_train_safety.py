"""zoo train loses no work and says what went wrong in one line: a checkpoint in --out is resumed or discarded only
when asked, one run at a time writes to a folder (and a killed run's lock goes with it), finished models are not
retrained by --all --resume, a full disk, a diverging run, too little data, absurd settings and a corrupt checkpoint
are each one line and a non-zero exit."""

import errno
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import zoo
from zoo import registry
from zoo.cli import app
from zoo.training._checkpoint import checkpoint_path, read_checkpoint_state
from zoo.training._loop import FAR_WORSE, divergence

from conftest import one_line as folded

runner = CliRunner()
ENV = {**os.environ, "ZOO_CHECKPOINT_SECONDS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def one_line(result) -> str:
    return folded(result, forbid=("Warning",))


def _zoo(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zoo.cli", *args], env=ENV, capture_output=True, text=True,
                          timeout=600, preexec_fn=preexec_fn)


def _start(out: Path, *extra: str, model: str = "circles-mlp") -> subprocess.Popen:
    """A long run of `model` into `out`, returned once it has written a checkpoint after epoch 2."""
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", model, "--out", str(out), "--epochs", "100000",
                             *extra], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        state = read_checkpoint_state(out, model) if checkpoint_path(out, model).is_file() else None
        if state and state["epoch"] >= 2:
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no checkpoint from the run: {proc.communicate()[1]}")


def _killed_run(out: Path) -> int:
    """An interrupted run's checkpoint in `out` (the run killed): its epoch."""
    proc = _start(out)
    proc.kill()
    proc.wait()
    return read_checkpoint_state(out, "circles-mlp")["epoch"]


# --- a checkpoint in --out is an interrupted run's work -------------------------------------------------------

def test_a_checkpoint_is_never_replaced_without_resume_or_restart(tmp_path):
    epoch = _killed_run(tmp_path)
    before = checkpoint_path(tmp_path, "circles-mlp").read_bytes()
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "2"])
    text = one_line(result)
    assert result.exit_code == 2 and f"circles-mlp (after epoch {epoch})" in text
    assert "--resume" in text and "--restart" in text
    assert checkpoint_path(tmp_path, "circles-mlp").read_bytes() == before
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--resume", "--restart"])
    assert result.exit_code == 2 and "pass one of them" in one_line(result)

    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "2", "--restart"])
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output and not checkpoint_path(tmp_path, "circles-mlp").exists()
    assert json.loads((tmp_path / "circles-mlp.json").read_text())["epochs_run"] == 2


@pytest.mark.slow
def test_a_second_run_into_the_same_folder_exits_2_and_a_killed_runs_lock_is_gone(tmp_path):
    proc = _start(tmp_path)
    try:
        for model in ("circles-mlp", "water-mlp"):
            result = runner.invoke(app, ["train", model, "--out", str(tmp_path), "--epochs", "1"])
            assert result.exit_code == 2 and "another `zoo train` is writing to" in one_line(result)
        assert proc.poll() is None, "the first run goes on"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    result = runner.invoke(app, ["train", "water-mlp", "--out", str(tmp_path), "--epochs", "1"])
    assert result.exit_code == 0, result.output


def test_train_all_resume_skips_finished_models_and_sums_up(tmp_path, monkeypatch):
    names = ["circles-mlp", "thermometer-linear", "water-mlp"]
    monkeypatch.setattr(registry, "names", lambda: names)
    result = runner.invoke(app, ["train", "--all", "--out", str(tmp_path), "--epochs", "2"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert all(f"[{i}/3] {name}" in result.output for i, name in enumerate(names, start=1))
    first = {n: (tmp_path / f"{n}.safetensors").stat().st_mtime_ns for n in names}
    summary = result.stdout[result.stdout.index("zoo train --all"):]
    assert all(name in summary for name in names) and summary.count("trained") == 3 and "val accuracy" in summary

    result = runner.invoke(app, ["train", "--all", "--out", str(tmp_path), "--epochs", "2", "--resume", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["status"]) for r in rows] == [(n, "already trained") for n in names]
    assert {n: (tmp_path / f"{n}.safetensors").stat().st_mtime_ns for n in names} == first
    assert "starting from scratch" not in result.output

    # another recipe is another run: trained again, not skipped
    result = runner.invoke(app, ["train", "--all", "--out", str(tmp_path), "--epochs", "3", "--resume", "--json"])
    assert [r["status"] for r in json.loads(result.stdout)] == ["trained"] * 3


def test_train_all_refuses_a_checkpoint_before_training_anything(tmp_path, monkeypatch):
    _killed_run(tmp_path)
    monkeypatch.setattr(registry, "names", lambda: ["water-mlp", "circles-mlp"])
    result = runner.invoke(app, ["train", "--all", "--out", str(tmp_path), "--epochs", "1"])
    assert result.exit_code == 2 and "circles-mlp (after epoch" in one_line(result)
    assert not (tmp_path / "water-mlp.safetensors").exists()


def test_progress_has_a_rate_and_eta_on_a_terminal_and_is_quiet_otherwise(tmp_path):
    shown = io.StringIO()
    zoo.train("clouds-cnn", out=tmp_path / "a", epochs=1,
              console=Console(file=shown, force_terminal=True, width=160))
    assert "samples/s" in shown.getvalue() and "0:00:" in shown.getvalue()
    piped = io.StringIO()
    zoo.train("clouds-cnn", out=tmp_path / "b", epochs=1, console=Console(file=piped, width=160))
    assert "samples/s" not in piped.getvalue() and "\x1b" not in piped.getvalue()
    assert "epoch   1" in piped.getvalue()


# --- a full disk ---------------------------------------------------------------------------------------------

def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # so that a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (a real full disk: ENOSPC), where this test may mount one (as root)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_one_line(tiny_disk):
    done = _zoo("train", "clouds-cnn", "--out", str(tiny_disk), "--epochs", "1")   # its checkpoint: 2.2 MB
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.count("error:") == 1
    assert "cannot write the checkpoint" in done.stderr and "No space left on device" in done.stderr
    assert not [p for p in tiny_disk.iterdir() if p.name.endswith(".tmp")], "the partial file is removed"


@pytest.mark.slow
def test_a_file_size_limit_while_checkpointing_is_one_line(tmp_path):
    """The same without root: writes past RLIMIT_FSIZE fail (EFBIG) as they would on a full disk."""
    done = _zoo("train", "clouds-cnn", "--out", str(tmp_path), "--epochs", "1",
                preexec_fn=_file_size_limit(1_000_000))
    assert done.returncode == 2, done.stderr
    text = folded(done.stderr)
    assert "Traceback" not in text and "cannot write the checkpoint" in text and "File too large" in text
    assert "--resume" in text


def test_a_full_disk_while_writing_the_weights_is_one_line_and_resumable(tmp_path, monkeypatch):
    from zoo.training import _checkpoint

    real = _checkpoint.save_tensors

    def full_for_weights(path, tensors, metadata=None):
        if path.name == "water-mlp.safetensors":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, tensors, metadata)

    monkeypatch.setattr(_checkpoint, "save_tensors", full_for_weights)
    result = runner.invoke(app, ["train", "water-mlp", "--out", str(tmp_path), "--epochs", "3"])
    text = one_line(result)
    assert result.exit_code == 2 and "No space left on device" in text and "after epoch 3 is kept" in text
    assert not (tmp_path / "water-mlp.safetensors").exists()
    monkeypatch.setattr(_checkpoint, "save_tensors", real)
    result = runner.invoke(app, ["train", "water-mlp", "--out", str(tmp_path), "--epochs", "3", "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming water-mlp after epoch 3" in result.output and "epoch   1" not in result.output
    assert json.loads((tmp_path / "water-mlp.json").read_text())["epochs_run"] == 3


# --- divergence -----------------------------------------------------------------------------------------------

def test_a_regressor_far_worse_than_its_baseline_stops_at_that_epoch(tmp_path):
    result = runner.invoke(app, ["train", "insurance-mlp", "--out", str(tmp_path), "--epochs", "3", "--lr", "1e10"])
    text = one_line(result)
    assert result.exit_code == 1 and "training diverged at epoch 1" in text
    assert f"more than {FAR_WORSE} times the training median's" in text and "lower --lr" in text
    assert not (tmp_path / "insurance-mlp.safetensors").exists()


def test_a_loss_that_is_not_finite_stops_in_one_line(tmp_path):
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "2", "--lr", "1e30"])
    text = one_line(result)
    assert result.exit_code == 1 and "training diverged at epoch 1: the training loss is nan" in text
    assert not (tmp_path / "circles-mlp.safetensors").exists()


def test_the_divergence_rule():
    record = {"epoch": 4, "train_loss": 1.0, "val_loss": 1.0, "val_mae": 99.0 * 50, "val_median_mae": 50.0}
    assert divergence(record, "val", "mae") is None
    assert "is more than 100 times" in divergence({**record, "val_mae": 101.0 * 50}, "val", "mae")
    forecaster = {"train_loss": 1.0, "val_loss": 1.0, "val_mae": 30.0, "val_persistence_mae": 0.2,
                  "val_skill_vs_persistence": -2.0}
    assert "persistence's" in divergence(forecaster, "val", "skill_vs_persistence")
    assert "the val accuracy is nan" in divergence({"train_loss": 0.3, "val_loss": 0.4, "val_accuracy": float("nan")},
                                                   "val", "accuracy")


# --- one line instead of a traceback -----------------------------------------------------------------------------

@pytest.mark.parametrize("model, header, row", [
    ("circles-mlp", "x1,x2,label", "0.1,0.2,1"),
    ("water-mlp", "ph,Hardness,Solids,Chloramines,Sulfate,Conductivity,Organic_carbon,Trihalomethanes,Turbidity,"
                  "Potability", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"),
    ("thermometer-linear", "t_u,t_c", "35.7,0.5"),
])
def test_a_one_row_csv_is_one_line(tmp_path, model, header, row):
    (tmp_path / "one.csv").write_text(f"{header}\n{row}\n")
    result = runner.invoke(app, ["train", model, "--data", str(tmp_path / "one.csv"), "--out", str(tmp_path / "o"),
                                 "--epochs", "1"])
    assert result.exit_code == 2 and "too few samples (1) to train on" in one_line(result)


@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "inf"], "--lr must be a positive finite number, got inf"),
    (["--lr", "-inf"], "--lr must be a positive finite number, got -inf"),
    (["--lr", "0"], "--lr must be a positive finite number, got 0.0"),
    (["--seed", "-1"], "--seed must be an integer from 0 to 4294967295, got -1"),
    (["--seed", str(2**70)], "--seed must be an integer from 0 to 4294967295"),
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
])
def test_settings_that_cannot_work_are_one_line(tmp_path, args, message):
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in one_line(result)


@pytest.mark.slow
def test_a_corrupt_checkpoint_says_to_restart(tmp_path):
    _killed_run(tmp_path)
    path = checkpoint_path(tmp_path, "circles-mlp")
    path.write_bytes(path.read_bytes()[:100])
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "100000", "--resume"])
    text = one_line(result)
    assert result.exit_code == 2 and "cannot be read" in text and "--restart" in text
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "2"])
    assert result.exit_code == 2 and "circles-mlp (unreadable)" in one_line(result)
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "2", "--restart"])
    assert result.exit_code == 0, result.output
