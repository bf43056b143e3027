"""A pretrained model in one line of Python: zoo.create_model / zoo.list_models (timm's names), torch.hub through
hubconf.py, a new head for fine-tuning, and the same answers as the exported bundle of the same weights."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import zoo
import zoo.runtime
from zoo import registry
from zoo.data import builtin
from zoo.weights import load_model, weights_dir

ROOT = Path(__file__).resolve().parent.parent
SKY = ROOT / "examples" / "images" / "sky.jpg"


def test_importing_zoo_and_listing_models_loads_no_torch():
    probe = ("import sys, zoo; names = zoo.list_models('cifar2-*', pretrained=True); "
             "print(len(names), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["7", "False"]


def test_list_models_filters_by_pattern_and_by_shipped_weights(tmp_path, monkeypatch):
    assert zoo.list_models("cifar2-*") == sorted(n for n in registry.names() if n.startswith("cifar2-"))
    assert zoo.list_models(pretrained=True) == registry.names()   # every model ships weights
    (tmp_path / "water-mlp.safetensors").write_bytes((weights_dir() / "water-mlp.safetensors").read_bytes())
    monkeypatch.setenv("ZOO_WEIGHTS", str(tmp_path))
    assert zoo.list_models(pretrained=True) == ["water-mlp"]
    assert len(zoo.list_models()) == len(registry.names())


def test_pretrained_without_shipped_weights_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_WEIGHTS", str(tmp_path))
    with pytest.raises(zoo.ZooError, match=r"clouds-cnn has no shipped weights .*pretrained=False") as e:
        zoo.create_model("clouds-cnn", pretrained=True)
    assert "\n" not in str(e.value)
    with pytest.raises(zoo.ZooError, match="did you mean clouds-cnn"):
        zoo.create_model("cloud-cnn", pretrained=True)


def test_create_model_is_in_eval_mode_with_the_shipped_weights_and_their_card():
    model = zoo.create_model("clouds-cnn", pretrained=True)
    shipped = load_model(registry.get("clouds-cnn"), weights_dir() / "clouds-cnn.safetensors")
    assert not model.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped.state_dict().values()))
    info = model.info
    assert info.weights == weights_dir() / "clouds-cnn.safetensors" and info.labels["logits"][1] == "clear sky"
    assert info.metrics["val"]["accuracy"] == info.card["metrics"]["val"]["accuracy"] > 0.7
    assert info.preprocess["image"].mean == tuple(info.card["preprocess"]["image"]["mean"])   # fitted, not the spec's
    assert zoo.create_model("electricity-rnn", pretrained=True).info.caveat   # the card's caveat comes along
    untrained = zoo.create_model("clouds-cnn")
    assert untrained.info.weights is None and not untrained.training


def test_transform_takes_rows_and_warns_about_values_outside_the_training_range():
    model = zoo.create_model("water-mlp", pretrained=True)
    columns = model.info.preprocess["features"].columns
    x = model.info.transform([{c: 0.5 for c in columns}] * 2)
    assert x.shape == (2, 9) and x.dtype == torch.float32
    with pytest.warns(UserWarning, match=r"Hardness = 200 is outside the training range 0 to 1"):
        model.info.transform({**{c: 0.5 for c in columns}, "Hardness": 200})
    two = zoo.create_model("omniglot-two-input", pretrained=True)
    image, alphabet = two.info.transform({"image": np.zeros((105, 105), np.uint8), "alphabet": "Latin"})
    assert two(image, alphabet).shape == (1, 964)
    with pytest.raises(ValueError, match=r"has inputs \['image', 'alphabet'\]"):
        two.info.transform(np.zeros((105, 105), np.uint8))


def test_create_model_matches_the_exported_bundle_of_the_same_weights(tmp_path):
    """Top-1 on real-format images (the JPEG files of the built-in sample and the example photo) and every
    logit within the model's export tolerance."""
    from zoo.export import export

    spec = registry.get("clouds-cnn")
    (bundle,) = export("clouds-cnn", ["onnx"], out=tmp_path)
    images = sorted(str(p) for p in builtin.materialize("clouds", "test").rglob("*.jpg"))[::5] + [str(SKY)]
    model = zoo.create_model("clouds-cnn", pretrained=True)
    with torch.no_grad():
        eager = model(model.info.transform(images)).numpy()
    with zoo.runtime.load(bundle) as session:
        exported = session.predict_raw(images)["logits"]
    assert len(images) >= 15
    assert (eager.argmax(1) == exported.argmax(1)).all()
    np.testing.assert_allclose(eager, exported, atol=spec.atol, rtol=spec.rtol)


def test_num_classes_keeps_the_pretrained_body_and_gives_a_new_head():
    pretrained = zoo.create_model("clouds-cnn", pretrained=True)
    tuned = zoo.create_model("clouds-cnn", pretrained=True, num_classes=3)
    assert tuned.classifier.out_features == 3 and tuned.classifier.in_features == 16384
    assert all(torch.equal(a, b) for a, b in zip(tuned.feature_extractor.state_dict().values(),
                                                 pretrained.feature_extractor.state_dict().values()))
    assert tuned(torch.zeros(2, 3, 64, 64)).shape == (2, 3)
    assert "logits" not in tuned.info.labels and tuned.info.metrics == {}   # the card's belong to the old head
    food = zoo.create_model("food10-mobilenetv2", pretrained=True, num_classes=4)   # torchvision's MobileNetV2
    assert food.classifier[1].out_features == 4 and food(torch.zeros(1, 3, 224, 224)).shape == (1, 4)
    two = zoo.create_model("omniglot-two-input", pretrained=True, num_classes=5)   # two inputs, one head
    assert two(torch.zeros(1, 1, 64, 64), torch.zeros(1, 30)).shape == (1, 5)


@pytest.mark.parametrize("name, reason", [
    ("water-mlp", "ends in a sigmoid"),
    ("omniglot-two-output", "multi-output model with outputs"),
    ("electricity-gru", "regression model"),
    ("mnist-3v7-linear", "single Linear layer: it has no body to keep"),
])
def test_num_classes_is_refused_with_the_reason_where_the_head_is_not_clear(name, reason):
    with pytest.raises(zoo.ZooError, match=reason):
        zoo.create_model(name, pretrained=True, num_classes=3)
    with pytest.raises(zoo.ZooError, match="at least 2"):
        zoo.create_model("clouds-cnn", num_classes=1)


def test_torch_hub_loads_every_model_from_the_local_checkout():
    assert _entry_points() == sorted(n.replace("-", "_") for n in registry.names())
    for name in registry.names():
        model = torch.hub.load(str(ROOT), name.replace("-", "_"), pretrained=True, source="local")
        assert not model.training and model.info.name == name
        assert model.info.weights == weights_dir() / f"{name}.safetensors"
    tuned = torch.hub.load(str(ROOT), "cifar2_net", pretrained=True, num_classes=5, source="local")
    assert tuned(torch.zeros(1, 3, 32, 32)).shape == (1, 5)


def _entry_points() -> list[str]:
    """What torch.hub.list shows (it reads only GitHub repositories): hubconf's public callables."""
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert all(importlib.util.find_spec(d) for d in module.dependencies)
    return [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
