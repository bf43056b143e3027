"""The trainer end to end on built-in data: cards, determinism, resume after a kill, safe loading,
evaluate, and clear errors for bad data."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import zoo
from zoo import data as zdata, registry
from zoo.cli import app
from zoo.errors import ZooError
from zoo.weights import load_model, sha256_file

runner = CliRunner()


@pytest.fixture(scope="module")
def circles(tmp_path_factory):
    out = tmp_path_factory.mktemp("circles")
    card = zoo.train("circles-mlp", out=out, epochs=4)
    return out, card


def test_card_is_complete_and_true(circles):
    out, card = circles
    weights = out / "circles-mlp.safetensors"
    assert card["sha256"] == sha256_file(weights)
    assert json.loads((out / "circles-mlp.json").read_text()) == json.loads(json.dumps(card, default=str))
    assert card["params"] == 151 and card["epochs_run"] == 4 and card["dataset"]["source"] == "built-in"
    assert card["dataset"]["samples"] == {"train": 800, "val": 200}
    assert {"accuracy", "f1_macro", "precision_micro", "recall_macro"} <= set(card["metrics"]["val"])
    assert len(json.loads((out / "circles-mlp.history.json").read_text())) == 4
    for png in ("curves", "confusion"):
        assert (out / f"circles-mlp.{png}.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*ckpt*")), "the checkpoint is removed once training is complete"
    model = load_model(registry.get("circles-mlp"), weights)
    assert model.state_dict()["0.weight"].shape == (10, 2)


def test_training_is_reproducible_under_a_seed(water_run, tmp_path):
    """Same seed, same weights (up to the last bits: multi-threaded reductions may add in another order)."""
    from safetensors.torch import load_file
    run, card, _ = water_run   # one epoch, the default seed
    for other, seed in (("b", card["recipe"]["seed"]), ("c", card["recipe"]["seed"] + 1)):
        zoo.train("water-mlp", out=tmp_path / other, epochs=1, seed=seed)
    a, b, c = (load_file(str(folder / "water-mlp.safetensors")) for folder in (run, tmp_path / "b", tmp_path / "c"))
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-5, atol=1e-6) for k in a)
    assert not all(torch.allclose(a[k].float(), c[k].float(), rtol=1e-3, atol=1e-4) for k in a)


def test_standardisation_is_fitted_and_stored(water_run):
    _, card, _ = water_run
    pre = card["preprocess"]["features"]
    assert len(pre["mean"]) == 9 and all(s > 0 for s in pre["std"])


def test_loading_checks_checksum_shapes_and_model(circles, tmp_path):
    out, _ = circles
    spec = registry.get("circles-mlp")
    bad = tmp_path / "circles-mlp.safetensors"
    bad.write_bytes((out / "circles-mlp.safetensors").read_bytes()[:-7])
    (tmp_path / "circles-mlp.json").write_text((out / "circles-mlp.json").read_text())
    with pytest.raises(ZooError, match="sha256"):
        load_model(spec, bad)
    with pytest.raises(ZooError, match="not a readable safetensors"):
        load_model(spec, bad, verify_card=False)
    with pytest.raises(ZooError, match="holds weights for 'circles-mlp'"):
        load_model(registry.get("water-mlp"), out / "circles-mlp.safetensors")
    with pytest.raises(ZooError, match="missing tensors"):
        load_model(registry.get("water-mlp"), out / "circles-mlp.safetensors", verify_card=False)


def test_evaluate_on_the_builtin_test_split(circles):
    out, _ = circles
    result = runner.invoke(app, ["evaluate", "circles-mlp", "--weights", str(out / "circles-mlp.safetensors"),
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["samples"] == 200 and report["metrics"]["accuracy"] > 0.6   # 4 epochs on well-separated circles
    assert (out / "circles-mlp.test-confusion.png").is_file()


def test_electricity_is_judged_against_persistence(tmp_path):
    zoo.train("electricity-gru", out=tmp_path, epochs=1)
    report = zoo.evaluate("electricity-gru", None, weights=tmp_path / "electricity-gru.safetensors")
    metrics = report["metrics"]
    assert {"mse", "mae", "persistence_mse", "persistence_mae", "skill_vs_persistence"} <= set(metrics)
    assert report["samples"] == 96 * 4 - 96


def test_time_ordered_split_keeps_validation_after_training():
    spec = registry.get("electricity-rnn")
    dataset = zdata.load(spec)
    from zoo.data import split_indices
    train, val = split_indices(dataset, spec, 0.15, 0)
    assert train.max() + 96 < val.min() and val.max() == len(dataset) - 1


def test_cli_train_announces_the_builtin_sample(tmp_path):
    result = runner.invoke(app, ["train", "water-mlp", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "no --data given" in result.output and "built-in sample" in result.output
    assert json.loads((tmp_path / "water-mlp.json").read_text())["epochs_run"] <= 15, "built-in runs are short"
    result = runner.invoke(app, ["train", "circles-mlp", "--out", str(tmp_path), "--epochs", "1"])
    assert "the course's own data" in result.output


def test_builtin_weights_never_replace_real_data_weights(water_run, tmp_path):
    run, card, _ = water_run
    shutil.copy(run / "water-mlp.safetensors", tmp_path)
    card = {**card, "dataset": {**card["dataset"], "source": "files"}}
    (tmp_path / "water-mlp.json").write_text(json.dumps(card))
    result = runner.invoke(app, ["train", "water-mlp", "--out", str(tmp_path), "--epochs", "1"])
    assert result.exit_code == 2 and "trained on the real dataset" in result.output
    assert runner.invoke(app, ["train", "water-mlp", "--out", str(tmp_path), "--epochs", "1", "--force"]).exit_code == 0


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _cloud_tree(tmp_path: Path, skip: str | None = None, empty: str | None = None, broken: str | None = None):
    from PIL import Image
    from zoo.catalog import CLOUD_TYPES
    for c in CLOUD_TYPES:
        if c == skip:
            continue
        (tmp_path / c).mkdir(parents=True)
        if c != empty:
            Image.new("RGB", (80, 80), (10, 20, 30)).save(tmp_path / c / "a.jpg")
    if broken:
        (tmp_path / broken / "b.jpg").write_bytes(b"not a jpeg")
    return tmp_path


@pytest.mark.parametrize("model, make_data, message", [
    ("clouds-cnn", lambda p: p / "nowhere", "no such file or folder"),
    ("clouds-cnn", lambda p: _cloud_tree(p, skip="clear sky"), "missing ['clear sky']"),
    ("clouds-cnn", lambda p: _cloud_tree(p, empty="cumulus clouds"), "'cumulus clouds' has no images"),
    ("clouds-cnn", lambda p: _cloud_tree(p, broken="clear sky"), "cannot read image"),
    ("clouds-cnn", lambda p: p, "expected the 7 cloud-type folders"),
    ("water-mlp", lambda p: _write_csv(p / "w.csv", "ph,Hardness\n0.1,0.2\n"), "has no column(s)"),
    ("water-mlp", lambda p: _write_csv(p / "w.csv", "ph,Hardness,Solids,Chloramines,Sulfate,Conductivity,"
                                       "Organic_carbon,Trihalomethanes,Turbidity,Potability\n"
                                       "0.1,0.2,abc,0.4,0.5,0.6,0.7,0.8,0.9,1\n"), "expected a number, got 'abc'"),
    ("electricity-lstm", lambda p: _write_csv(p / "e.csv", "timestamp,consumption\n2011-01-01 00:15:00,0.1\n"),
     "one training sequence needs 97"),
    ("electricity-lstm", lambda p: _write_csv(p / "e.csv", "time,value\n"), "needs columns timestamp,consumption"),
    ("circles-mlp", lambda p: _write_csv(p / "c.csv", "x1,x2,label\n0.1,0.2,7\n"), "must be 0 or 1"),
])
def test_bad_data_is_one_clear_line_and_exit_2(tmp_path, model, make_data, message):
    path = make_data(tmp_path)
    result = runner.invoke(app, ["train", model, "--data", str(path), "--out", str(tmp_path / "out"),
                                 "--epochs", "1", "--strict"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_cuda_request_without_a_gpu_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = runner.invoke(app, ["train", "circles-mlp", "--device", "cuda", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no CUDA device" in result.output
