"""The course's training habits: TensorBoard event files per run (read back with tensorboard's own reader), `zoo
runs` to compare runs, the learning-rate finder (which leaves model and optimizer as they were), the plateau
schedule, and mixed precision on CPU."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

import zoo
from zoo import registry
from zoo.cli import app
from zoo.training._checkpoint import checkpoint_path, read_checkpoint_state
from zoo.training._lrfind import range_test
from zoo.training._run import prepare
from zoo.training._trainer import MixedPrecision, make_optimizer, train_step

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
from tensorboard.plugins.hparams import plugin_data_pb2  # noqa: E402

runner = CliRunner()
ENV = {**os.environ, "ZOO_CHECKPOINT_SECONDS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_folders(out: Path, model: str) -> list[Path]:
    return sorted((out / "logs" / model).iterdir())


def events(folder: Path):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# --- TensorBoard ----------------------------------------------------------------------------------------------

def test_a_run_writes_tensorboard_events_that_tensorboard_reads(tmp_path):
    card = zoo.train("circles-mlp", out=tmp_path, epochs=3)
    (folder,) = run_folders(tmp_path, "circles-mlp")
    acc = events(folder)
    tags = acc.Tags()
    assert {"train/loss", "val/loss", "val/accuracy", "val/f1_macro", "lr", "time/training_seconds",
            "final/val_accuracy", "final/train_loss"} <= set(tags["scalars"])
    history = json.loads((tmp_path / "circles-mlp.history.json").read_text())
    for tag, key in (("val/accuracy", "val_accuracy"), ("lr", "lr"), ("train/loss", "train_loss")):
        steps, values = zip(*scalars(acc, tag))
        assert steps == (1, 2, 3) and values == pytest.approx([h[key] for h in history])
    assert scalars(acc, "final/val_accuracy")[0][1] == pytest.approx(card["metrics"]["val"]["accuracy"])
    assert tags["images"] == ["val/confusion_matrix"]
    image = acc.Images("val/confusion_matrix")[0]
    assert image.encoded_image_string[:4] == b"\x89PNG" and image.width > 100
    hparams = {key: plugin_data_pb2.HParamsPluginData.FromString(value)
               for key, value in acc.PluginTagToContent("hparams").items()}
    started = hparams["_hparams_/session_start_info"].session_start_info.hparams
    assert started["model"].string_value == "circles-mlp" and started["lr"].number_value == pytest.approx(0.01)
    assert started["epochs"].number_value == 3 and started["scheduler"].string_value == "none"
    metrics = [m.name.tag for m in hparams["_hparams_/experiment"].experiment.metric_infos]
    assert "final/val_accuracy" in metrics
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "finished" and record["history"] == history and record["best_epoch"] == card["best_epoch"]


def _kill_at(out: Path, epoch: int, args: list[str]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "zoo.cli", "train", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        state = read_checkpoint_state(out, "circles-mlp") if checkpoint_path(out, "circles-mlp").is_file() else None
        if state and state["epoch"] >= epoch:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_a_resumed_plateau_run_logs_to_the_same_folder_and_equals_the_whole_run(tmp_path):
    args = ["circles-mlp", "--epochs", "30", "--schedule", "plateau", "--plateau-patience", "1",
            "--plateau-factor", "0.5", "--lr", "0.05"]
    whole = subprocess.run([sys.executable, "-m", "zoo.cli", "train", *args, "--out", str(tmp_path / "whole")],
                           env=ENV, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    cut = tmp_path / "cut"
    _kill_at(cut, 8, [*args, "--out", str(cut)])
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "train", *args, "--out", str(cut), "--resume"], env=ENV,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "resuming circles-mlp after epoch" in done.stderr, done.stderr
    a, b = (json.loads((tmp_path / run / "circles-mlp.history.json").read_text()) for run in ("whole", "cut"))
    assert [h["lr"] for h in a] == [h["lr"] for h in b] and [h["train_loss"] for h in a] == [h["train_loss"] for h in b]
    assert min(h["lr"] for h in a) < 0.05, "the plateau schedule lowered the rate"
    (folder,) = run_folders(cut, "circles-mlp")   # the resumed run went on in its folder
    steps = [step for step, _ in scalars(events(folder), "val/accuracy")]
    assert steps == list(range(1, len(b) + 1)), "what the killed run logged after its checkpoint is purged"


@pytest.mark.slow
def test_data_parallel_runs_log_from_rank_0_only(tmp_path):
    done = subprocess.run([sys.executable, "-m", "zoo.cli", "train", "circles-mlp", "--out", str(tmp_path), "--epochs",
                           "2", "--nproc", "2"], env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    (folder,) = run_folders(tmp_path, "circles-mlp")
    writers = {p.name.split(".")[-2] for p in folder.glob("events.out.tfevents.*")}   # ...<host>.<pid>.<n>
    assert len(writers) == 1
    assert scalars(events(folder), "val/accuracy")[-1][0] == 2


# --- zoo runs ---------------------------------------------------------------------------------------------------

def test_zoo_runs_lists_sorts_and_plots_three_tiny_runs(tmp_path):
    for args in (["circles-mlp", "--epochs", "2"], ["circles-mlp", "--epochs", "2", "--lr", "0.05"],
                 ["water-mlp", "--epochs", "2"]):
        result = runner.invoke(app, ["train", *args, "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
    diverged = runner.invoke(app, ["train", "insurance-mlp", "--out", str(tmp_path), "--epochs", "2", "--lr", "1e10"])
    assert diverged.exit_code == 1

    result = runner.invoke(app, ["runs", str(tmp_path), "--json", "--sort", "metric"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(r["model"] for r in rows) == ["circles-mlp", "circles-mlp", "insurance-mlp", "water-mlp"]
    scored = [r for r in rows if r["status"] == "finished"]
    assert [r["value"] for r in scored] == sorted((r["value"] for r in scored), reverse=True)   # accuracy: best first
    assert rows[-1]["status"] == "diverged" and "diverged at epoch 1" in rows[-1]["message"]
    changes = {json.dumps(r["changes"], sort_keys=True) for r in rows if r["model"] == "circles-mlp"}
    assert changes == {'{"epochs": 2}', '{"epochs": 2, "lr": 0.05}'}
    assert all(r["fingerprint"] and r["best_epoch"] in (1, 2) for r in scored)

    result = runner.invoke(app, ["runs", str(tmp_path), "--model", "circles-mlp", "--plot", str(tmp_path / "c.png")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 training run(s)" in result.stdout and "lr=0.05" in result.stdout and "water-mlp" not in result.stdout
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, ["runs", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is not a folder" in result.output


# --- the learning-rate finder -----------------------------------------------------------------------------------

def test_the_range_test_restores_the_model_and_the_optimizer(tmp_path):
    spec = registry.get("water-mlp")   # BatchNorm: its running statistics are state too
    torch.manual_seed(0)
    setup = prepare(spec, spec.recipe, None, False, None, torch.device("cpu"), _quiet())
    optimizer = make_optimizer(setup.model, spec.recipe)
    for start in (0, 32):   # two real steps: AdamW has moments and a step count to restore
        train_step(spec, setup.model, optimizer, setup.loss_fn, setup.train_set.subset(torch.arange(start, start + 32)),
                   spec.recipe, "cpu")
    setup.model.eval()
    model_before = copy.deepcopy(setup.model.state_dict())
    optimizer_before = copy.deepcopy(optimizer.state_dict())
    rng_before = torch.get_rng_state()
    seen = []
    curve = range_test(spec, setup.model, optimizer, setup.loss_fn, setup.train_set, spec.recipe, "cpu", steps=40,
                       on_step=lambda loss, n: seen.append(setup.model.bn1.running_mean.clone()))
    assert len(curve["lrs"]) == len(curve["losses"]) > 10
    assert not torch.equal(seen[-1], model_before["bn1.running_mean"]), "the test did train"
    after = setup.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in model_before.items())
    optimizer_after = optimizer.state_dict()
    assert optimizer_after["param_groups"] == optimizer_before["param_groups"]
    for index, state in optimizer_before["state"].items():
        assert all(torch.equal(optimizer_after["state"][index][k], v) for k, v in state.items())
    assert torch.equal(torch.get_rng_state(), rng_before) and not setup.model.training


def _quiet():
    from rich.console import Console
    return Console(quiet=True)


def test_lr_find_suggests_a_rate_that_zoo_train_takes(tmp_path):
    result = runner.invoke(app, ["lr-find", "water-mlp", "--out", str(tmp_path), "--steps", "100", "--json"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["rule"] == "the learning rate at the lowest smoothed loss, divided by 10"
    skip = max(10, len(found["losses"]) // 10)   # the first tenth is left out: the average is still settling
    lowest = skip + found["losses"][skip:].index(min(found["losses"][skip:]))
    assert found["suggestion"] == float(f"{found['lrs'][lowest] / 10:.2g}") and 1e-7 < found["suggestion"] < 10
    assert found["lrs"][1] / found["lrs"][0] == pytest.approx((10 / 1e-7) ** (1 / 99))
    assert Path(found["plot"]).read_bytes()[:4] == b"\x89PNG"
    text = runner.invoke(app, ["lr-find", "water-mlp", "--out", str(tmp_path), "--steps", "100"]).stdout
    command = next(line for line in text.splitlines() if line.startswith("train with it: "))
    assert command == f"train with it: zoo train water-mlp --lr {found['suggestion']:g}"
    result = runner.invoke(app, [*command.removeprefix("train with it: zoo ").split(), "--out", str(tmp_path),
                                 "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "water-mlp.json").read_text())["recipe"]["lr"] == found["suggestion"]


# --- the plateau schedule and mixed precision --------------------------------------------------------------------

def test_plateau_lowers_the_rate_only_after_epochs_without_improvement(tmp_path):
    card = zoo.train("water-mlp", out=tmp_path, epochs=12, scheduler="plateau", plateau_patience=0,
                     plateau_factor=0.5)
    history = json.loads((tmp_path / "water-mlp.history.json").read_text())
    assert card["recipe"]["scheduler"] == "plateau" and history[0]["lr"] == registry.get("water-mlp").recipe.lr
    best = -1.0
    for before, after in zip(history, history[1:]):
        improved = before["val_accuracy"] > best * (1 + 1e-4)   # ReduceLROnPlateau's default threshold
        best = max(best, before["val_accuracy"])
        assert after["lr"] == pytest.approx(before["lr"] * (1.0 if improved else 0.5))
    assert history[-1]["lr"] < history[0]["lr"]


@pytest.mark.parametrize("settings, message", [
    ({"scheduler": "step"}, "scheduler must be one of none, cosine, onecycle, plateau"),
    ({"plateau_factor": 1.5}, "plateau-factor must be a number between 0 and 1"),
    ({"plateau_patience": -1}, "plateau-patience must be an integer from 0"),
])
def test_bad_schedule_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(zoo.ZooError, match=message):
        zoo.train("circles-mlp", out=tmp_path, **settings)


@pytest.mark.slow
def test_amp_runs_the_forward_in_bfloat16_on_cpu_and_keeps_float32_weights(tmp_path):
    spec = registry.get("clouds-cnn")
    torch.manual_seed(0)
    setup = prepare(spec, spec.recipe, None, False, None, torch.device("cpu"), _quiet())
    dtypes = []
    setup.model.classifier.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    optimizer = make_optimizer(setup.model, spec.recipe)
    loss = train_step(spec, setup.model, optimizer, setup.loss_fn, setup.train_set.subset(torch.arange(16)),
                      spec.recipe, "cpu", MixedPrecision(True, torch.device("cpu")))
    assert dtypes == [torch.bfloat16] and torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in setup.model.parameters())

    card = zoo.train("clouds-cnn", out=tmp_path, epochs=2, amp=True)
    assert card["recipe"]["amp"] is True and card["metrics"]["val"]["accuracy"] > 0
    with safe_open(str(tmp_path / "clouds-cnn.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    from zoo.export import export
    (bundle,) = export("clouds-cnn", ["onnx"], weights=tmp_path / "clouds-cnn.safetensors", out=tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["inputs"][0]["dtype"] == "float32" and manifest["precision"]["name"] == "fp32"


def test_train_help_names_the_new_options():
    text = " ".join(runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"}).output.split())
    assert "--schedule" in text and "none|cosine|onecycle|plateau" in text
    assert "--amp" in text and "Off by default" in text and "--restart" in text


def test_a_log_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, monkeypatch):
    import errno
    import io

    from rich.console import Console
    from torch.utils.tensorboard import SummaryWriter

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    shown = io.StringIO()
    card = zoo.train("circles-mlp", out=tmp_path, epochs=2, console=Console(file=shown, width=200))
    assert card["epochs_run"] == 2 and (tmp_path / "circles-mlp.safetensors").is_file()
    text = " ".join(shown.getvalue().split())
    assert "warning: cannot write the run's log" in text and "No space left on device" in text
    assert text.count("warning:") == 1


def test_zoo_runs_says_which_run_records_it_could_not_read(tmp_path):
    """A broken, oversized or mistyped run.json is left out with a note naming it, not skipped in silence nor a
    traceback; the size is checked before the file is read."""
    import zoo.runs

    for name, text in {"broken": "{not json", "typed": '{"kind": "zoo training run", "model": "x", "metrics": [1]}',
                       "big": " " * (zoo.runs.MAX_RUN_FILE_BYTES + 1)}.items():
        (tmp_path / "logs" / name).mkdir(parents=True)
        (tmp_path / "logs" / name / "run.json").write_text(text)
    result = runner.invoke(app, ["runs", str(tmp_path)])
    assert result.exit_code == 0, result.output
    notes = " ".join(result.stderr.split()).split("note: left out")[1:]   # folded: the console wraps lines
    assert len(notes) == 3, result.stderr
    assert any("big" in n and "over 16 MiB" in n for n in notes)
    assert any("typed" in n and "wrong type" in n for n in notes)
    assert "0 training run(s)" in result.stdout
