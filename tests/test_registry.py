"""Every registered model matches MODELS.md: parameter count, declared shapes, deterministic build."""

import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from zoo import registry
from zoo.cli import app
from zoo.errors import ZooError

# Parameter counts exactly as ../shared/MODELS.md gives them (an independent source, not the specs).
MODELS_MD_PARAMS = {
    "water-mlp": 353, "clouds-cnn": 134_087, "electricity-rnn": 3_265, "electricity-lstm": 12_961,
    "electricity-gru": 9_729, "omniglot-two-input": 2_229_756, "omniglot-two-output": 2_225_666,
    "lenet-mnist": 81_194, "cifar10-net": 62_006, "mnist-3v7-linear": 785, "mnist-3v7-simplenet": 23_581,
    "thermometer-linear": 2, "thermometer-mlp": 40, "cifar2-fc": 1_574_402, "cifar2-net": 18_090,
    "cifar2-netwidth": 38_386, "cifar2-netdropout": 38_386, "cifar2-netbatchnorm": 38_482,
    "cifar2-netres": 16_130, "cifar2-netresdeep": 159_330, "circles-mlp": 151, "fashion-mnist-mlp": 52_650,
    # the fundamentals notes' later models (not in MODELS.md; counted by hand from the issues' architectures:
    # 4 convs 280 + 3 x 910, Linear(10*53*53, 1) 28,091; 9*100+100 + 100*10+10 + 10+1; torchvision's
    # MobileNetV2 features 2,223,872 + Linear(1280, 10) 12,810; 13*100+100 + 100*100+100 + 100*10+10 + 10+1)
    "tinyvgg-pizza-steak": 31_101, "insurance-mlp": 2_021, "food10-mobilenetv2": 2_236_682,
    "boston-housing-mlp": 12_521,
}
ALL = registry.names()


def test_every_model_is_listed_in_models_md():
    assert set(ALL) == set(MODELS_MD_PARAMS)


def example_inputs(spec, batch=3, sequence=96):
    return [torch.rand(t.example_shape(batch=batch, sequence=sequence)) for t in spec.inputs]


@pytest.mark.parametrize("name", ALL)
def test_param_count_matches_models_md(name):
    model = registry.build(name)
    assert sum(p.numel() for p in model.parameters()) == MODELS_MD_PARAMS[name] == registry.get(name).params


@pytest.mark.parametrize("name", ALL)
def test_forward_returns_declared_shapes(name):
    spec = registry.get(name)
    model = registry.build(spec).eval()
    with torch.no_grad():
        out = model(*example_inputs(spec))
    outs = out if isinstance(out, tuple) else (out,)
    assert len(outs) == len(spec.outputs)
    for got, declared in zip(outs, spec.outputs):
        assert tuple(got.shape) == declared.example_shape(batch=3)
        assert got.dtype == torch.float32
        assert torch.isfinite(got).all()


@pytest.mark.parametrize("name", ALL)
def test_build_is_deterministic_under_a_seed(name):
    a, b = registry.build(name, seed=7).state_dict(), registry.build(name, seed=7).state_dict()
    c = dict(registry.build(name, seed=8).named_parameters())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in c)


@pytest.mark.parametrize("name", [s.name for s in registry.specs() if s.is_sequence])
@pytest.mark.parametrize("length", [1, 5, 200])
def test_rnn_family_runs_any_sequence_length(name, length):
    spec = registry.get(name)
    model = registry.build(spec).eval()
    with torch.no_grad():
        out = model(*example_inputs(spec, batch=3, sequence=length))
    assert tuple(out.shape) == (3, 1)


def test_rnn_family_is_the_three_electricity_models():
    assert sorted(s.name for s in registry.specs() if s.is_sequence) == [
        "electricity-gru", "electricity-lstm", "electricity-rnn"]


def test_labels_match_output_widths():
    for spec in registry.specs():
        for out in spec.outputs:
            if out.name in spec.labels:
                width = out.shape[-1]
                expected = 2 if (width == 1 and spec.task == "binary") else width
                assert len(spec.labels[out.name]) == expected, (spec.name, out.name)


def test_omniglot_label_maps_are_fixed():
    spec = registry.get("omniglot-two-output")
    assert len(spec.labels["alphabet"]) == 30 and len(spec.labels["character"]) == 964
    assert spec.labels["character"][0] == "Alphabet_of_the_Magi/character01"
    assert spec.labels["character"][-1] == "Tifinagh/character55"


def test_register_refuses_a_duplicate():
    with pytest.raises(ValueError, match="twice"):
        registry.register(registry.get("clouds-cnn"))


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ZooError, match="did you mean clouds-cnn"):
        registry.get("cloud-cnn")


def test_import_zoo_does_not_import_torch():
    code = "import sys, zoo, zoo.registry; zoo.names(); zoo.get('clouds-cnn'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


runner = CliRunner()


def test_cli_list_table_and_json():
    result = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "clouds-cnn" in result.output and "134,087" in result.output
    result = runner.invoke(app, ["list", "--json"])
    rows = __import__("json").loads(result.output)
    assert {r["name"] for r in rows} == set(ALL)
    assert {r["name"]: r["params"] for r in rows} == MODELS_MD_PARAMS


def test_cli_info_shows_the_spec():
    result = runner.invoke(app, ["info", "clouds-cnn"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "stratocumulus clouds" in result.output and "134,087" in result.output
    data = __import__("json").loads(runner.invoke(app, ["info", "omniglot-two-input", "--json"]).output)
    assert [i["name"] for i in data["inputs"]] == ["image", "alphabet"]
    assert data["inputs"][0]["dynamic_axes"] == {"0": "batch"}


def test_cli_unknown_name_exits_2_with_a_suggestion():
    result = runner.invoke(app, ["info", "cloud-cnn"])
    assert result.exit_code == 2
    assert "did you mean clouds-cnn" in result.output
    assert "Traceback" not in result.output
