"""Export: every model to every format with parity, the bundle contract, tampering, failure paths."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import zoo.runtime
from zoo import registry
from zoo.cli import app
from zoo.contract import preprocess_from_dict
from zoo.errors import ParityError, ZooError
from zoo.export import export, verify
from zoo.weights import sha256_file

from conftest import edit_manifest, one_line, read_manifest


# The exporters each model is expected to get (ONNX, TorchScript). Stated here independently of
# the code that chooses them; a model missing from this table fails the guard below.
DYNAMO, LEGACY = "torch.onnx (dynamo)", "torch.onnx (legacy)"
SCRIPT, TRACE = "torch.jit.script", "torch.jit.trace"
EXPECTED = {
    "water-mlp": (DYNAMO, SCRIPT), "clouds-cnn": (DYNAMO, SCRIPT),
    # nn.RNN: dynamo fixes the sequence; scripting the forward is order-dependent in TorchScript
    "electricity-rnn": (LEGACY, TRACE), "electricity-lstm": (LEGACY, TRACE), "electricity-gru": (LEGACY, TRACE),
    "omniglot-two-input": (DYNAMO, SCRIPT), "omniglot-two-output": (DYNAMO, SCRIPT),
    "lenet-mnist": (DYNAMO, SCRIPT), "cifar10-net": (DYNAMO, SCRIPT),
    "mnist-3v7-linear": (DYNAMO, SCRIPT), "mnist-3v7-simplenet": (DYNAMO, SCRIPT),
    "thermometer-linear": (DYNAMO, SCRIPT), "thermometer-mlp": (DYNAMO, SCRIPT),
    "cifar2-fc": (DYNAMO, SCRIPT), "cifar2-net": (DYNAMO, SCRIPT), "cifar2-netwidth": (DYNAMO, SCRIPT),
    "cifar2-netdropout": (DYNAMO, SCRIPT), "cifar2-netbatchnorm": (DYNAMO, SCRIPT),
    "cifar2-netres": (DYNAMO, SCRIPT), "cifar2-netresdeep": (DYNAMO, SCRIPT),
    "circles-mlp": (DYNAMO, SCRIPT), "fashion-mnist-mlp": (DYNAMO, SCRIPT),
    "tinyvgg-pizza-steak": (DYNAMO, SCRIPT), "insurance-mlp": (DYNAMO, SCRIPT), "food10-mobilenetv2": (DYNAMO, SCRIPT),
    "boston-housing-mlp": (DYNAMO, SCRIPT),
}
FORMATS = ("onnx", "torchscript", "pt2")
runner = CliRunner()


def test_every_registered_model_has_an_export_test():
    assert set(EXPECTED) == set(registry.names())


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_exports_with_parity(bundle, name, fmt):
    """The session's export of each model in every format and precision (tests/test_precision.py checks the
    reduced ones), each bundle checked here against the registry."""
    spec = registry.get(name)
    folder, paths, _ = bundle.family(name)
    bundle = folder / f"{name}-{fmt}"
    assert bundle in paths
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in paths)   # no staging folder left
    manifest = zoo.runtime.read_manifest(bundle).data
    file = bundle / manifest["file"]
    assert manifest["file_sha256"] == sha256_file(file)
    assert manifest["model"] == name and manifest["format"] == fmt and manifest["task"] == spec.task
    assert manifest["inputs"] == [t.to_dict() for t in spec.inputs]
    assert manifest["outputs"] == [t.to_dict() for t in spec.outputs]
    for key, pre in manifest["preprocess"].items():   # the spec's, with identity statistics where it fits them
        declared = spec.preprocess[key]
        if getattr(declared, "standardize", False) and declared.mean is None:
            assert set(pre["mean"]) == {0.0} and set(pre["std"]) == {1.0}
            pre = {**pre, "mean": None, "std": None}
        if getattr(declared, "minmax", False) and declared.low is None:
            assert set(pre["low"]) == {0.0} and set(pre["high"]) == {1.0}
            pre = {**pre, "low": None, "high": None}
        assert preprocess_from_dict(pre, key) == declared
    assert manifest["weights"]["random"] is True and manifest["weights"]["sha256"] is None
    expected_exporter = {"onnx": EXPECTED[name][0], "torchscript": EXPECTED[name][1], "pt2": "torch.export"}[fmt]
    assert manifest["exporter"]["name"] == expected_exporter
    assert manifest["versions"]["torch"] and manifest["versions"]["onnxruntime"]

    parity = manifest["parity"]
    assert parity["passed"] and not parity["failures"]
    assert len(parity["cases"]) == (12 if spec.is_sequence else 3)
    batches = sorted({c["shapes"][spec.inputs[0].name][0] for c in parity["cases"]})
    assert batches == [1, 2, 7]
    for case in parity["cases"]:
        assert set(case["outputs"]) == {t.name for t in spec.outputs}
        for out in case["outputs"].values():
            assert out["passed"] and out["max_abs"] <= spec.atol + spec.rtol * 1e3
            assert ("top1_agreement" in out) == spec.is_classifier

    if fmt == "onnx":
        model = onnx.load(str(file))
        onnx.checker.check_model(model, full_check=True)
        props = {p.key: p.value for p in model.metadata_props}
        sealed = {k: v for k, v in manifest.items() if k not in ("file_sha256", "parity", "test_data")}
        assert json.loads(props["zoo.manifest"]) == sealed   # the manifest, sealed into the file it describes
        assert [i.name for i in model.graph.input] == [t.name for t in spec.inputs]
        assert [o.name for o in model.graph.output] == [t.name for t in spec.outputs]
        for declared, actual in zip((*spec.inputs, *spec.outputs), (*model.graph.input, *model.graph.output)):
            for axis, dim in enumerate(_dims(actual)):
                assert isinstance(dim, str) == isinstance(declared.shape[axis], str), (declared.name, axis, dim)
    assert manifest["format_version"] == 3 and manifest["external_data"] == {}   # the weights are in the file
    assert verify(bundle, trust_code=True).note   # random weights: consistency checked, parity not re-run


def test_rnn_sequence_axis_is_symbolic_in_onnx(tmp_path):
    (bundle,) = export("electricity-rnn", "onnx", out=tmp_path, random_weights=True)
    model = onnx.load(str(bundle / "model.onnx"))
    batch, sequence, features = _dims(model.graph.input[0])
    assert isinstance(batch, str) and isinstance(sequence, str) and batch != sequence and features == 1
    assert "RNN" in {n.op_type for n in model.graph.node}   # the native op, not an unrolled graph
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    eager = registry.build("electricity-rnn", seed=0).eval()
    for length in (3, 150):   # lengths the export never saw
        x = np.random.default_rng(length).standard_normal((4, length, 1)).astype(np.float32)
        with torch.no_grad():
            expected = eager(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(session.run(None, {"series": x})[0], expected, atol=1e-5, rtol=1e-5)


def test_refuses_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_WEIGHTS", str(tmp_path / "no-weights"))
    result = runner.invoke(app, ["export", "clouds-cnn", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "--random-weights" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out" / "clouds-cnn-onnx").exists()


def test_failed_parity_exits_1_with_the_table_and_writes_nothing(tmp_path):
    result = runner.invoke(app, ["export", "cifar2-net", "--random-weights", "--out", str(tmp_path),
                                 "--atol", "0", "--rtol", "0"])
    assert result.exit_code == 1, result.output
    assert "max abs" in result.output and "FAIL" in result.output and "logits" in result.output
    assert "no bundle written" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_bad_artefact_fails_and_keeps_the_previous_bundle(tmp_path, monkeypatch):
    """Parity runs the staged bundle through zoo.runtime, as users do: what the session answers is judged."""
    (bundle,) = export("circles-mlp", "onnx", out=tmp_path, random_weights=True)
    before = (bundle / "manifest.json").read_text()
    predict = zoo.runtime.Session.predict
    monkeypatch.setattr(zoo.runtime.Session, "predict",
                        lambda self, arrays: {k: v + 1e-3 for k, v in predict(self, arrays).items()})
    with pytest.raises(ParityError) as info:
        export("circles-mlp", "onnx", out=tmp_path, random_weights=True)
    assert "parity failed" in str(info.value) and "probability" in str(info.value)
    (refused,) = export("circles-mlp", "onnx", out=tmp_path, random_weights=True, check=False).refused
    assert refused.refusal is ParityError and not refused.passed and refused.bundle is None
    assert refused.parity.cases[0]["outputs"]["probability"]["max_abs"] == pytest.approx(1e-3, rel=1e-3)
    assert (bundle / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["circles-mlp-onnx"]


def test_random_and_given_weights_exclude_each_other(tmp_path):
    with pytest.raises(ZooError, match="exclude"):
        export("circles-mlp", "onnx", weights=tmp_path / "w.safetensors", out=tmp_path, random_weights=True)


# --- verify: bundles exported from a weights file ----------------------------------------------

def _weights(path, seed):
    save_file(registry.build("thermometer-mlp", seed=seed).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def exported_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("thermometer")
    export("thermometer-mlp", "all", weights=_weights(root / "thermo.safetensors", seed=3), out=root / "bundles")
    return root


@pytest.fixture
def trained(exported_once, tmp_path):
    """A thermometer-mlp bundle per format, exported from a weights file (not random): a copy of the module's
    one export, for the test to change."""
    root = shutil.copytree(exported_once, tmp_path / "thermometer")
    return root / "thermo.safetensors", {fmt: root / "bundles" / f"thermometer-mlp-{fmt}" for fmt in FORMATS}


def _verify(*args):
    result = runner.invoke(app, ["verify", "--trust-code", *map(str, args)])   # the test's own bundles
    result.text = one_line(result)
    return result


def test_verify_reruns_parity_against_the_source_weights(trained, tmp_path, monkeypatch):
    weights, bundles = trained
    for bundle in bundles.values():
        result = _verify(bundle, "--weights", weights)
        assert result.exit_code == 0, result.output
        assert "max abs" in result.text and "parity passed" in result.text
    # without --weights: found among the shipped weights by sha256, whatever the file is called
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    shutil.copy(weights, shipped / "some-other-name.safetensors")
    monkeypatch.setenv("ZOO_WEIGHTS", str(shipped))
    assert verify(bundles["onnx"]).weights == str(shipped / "some-other-name.safetensors")
    monkeypatch.setenv("ZOO_WEIGHTS", str(tmp_path / "empty"))
    result = _verify(bundles["onnx"])
    assert result.exit_code == 2 and "--weights" in result.text


def test_verify_rejects_other_weights(trained, tmp_path):
    _, bundles = trained
    result = _verify(bundles["pt2"], "--weights", _weights(tmp_path / "other.safetensors", seed=4))
    assert result.exit_code == 1 and "not the weights this bundle was exported from" in result.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_verify_reports_a_truncated_model_file(trained, fmt):
    weights, bundles = trained
    file = bundles[fmt] / read_manifest(bundles[fmt])["file"]
    file.write_bytes(file.read_bytes()[:200])
    result = _verify(bundles[fmt], "--weights", weights)
    assert result.exit_code == 1 and "sha256" in result.text and "truncated" in result.text
    # a tamperer who also fixes the checksum gets "does not load"
    edit_manifest(bundles[fmt], lambda m: m.update(file_sha256=sha256_file(file)))
    result = _verify(bundles[fmt], "--weights", weights)
    assert result.exit_code == 1 and "does not load" in result.text


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["outputs"][0].update(shape=["batch", 2]), "was edited after export: outputs[0].shape[1] is 2"),
    (lambda m: m.update(file_sha256="0" * 64), "sha256"),
    (lambda m: m.pop("weights"), "lacks"),
    (lambda m: m.update(task="binary", labels={"celsius": ["cold", "hot"]}),   # a classifier needs labels
     'edited after export: task is "binary", but the copy sealed in model.onnx says "regression"'),
    (lambda m: m.update(output_kind="logit"), "edited after export: output_kind is \"logit\""),
    (lambda m: m.update(labels={"celsius": ["cold", "hot"]}), "edited after export: labels.celsius is [\"cold\", \"hot\"]"),
    (lambda m: m["preprocess"]["reading"].update(scale=2.0), "edited after export: preprocess.reading.scale is 2.0"),
    (lambda m: m["inputs"][0].update(dtype="foo"), "invalid `inputs[0].dtype`"),
    (lambda m: m["preprocess"]["reading"].update(columns=[]), "invalid `preprocess.reading.columns`"),
    (lambda m: m.update(format_version=99), "format_version 99"),
])
def test_verify_reports_a_tampered_manifest(trained, edit, message):
    weights, bundles = trained
    edit_manifest(bundles["onnx"], edit)
    result = _verify(bundles["onnx"], "--weights", weights)
    assert result.exit_code == 1 and message in result.text


def test_verify_refuses_a_swapped_model_file(trained, tmp_path):
    """Another model file with its checksum fixed in the manifest: its sealed manifest names other weights."""
    weights, bundles = trained
    (other,) = export("thermometer-mlp", "onnx", weights=_weights(tmp_path / "b.safetensors", seed=5),
                      out=tmp_path / "other")
    shutil.copy(other / "model.onnx", bundles["onnx"] / "model.onnx")
    edit_manifest(bundles["onnx"], lambda m: m.update(file_sha256=sha256_file(bundles["onnx"] / "model.onnx")))
    result = _verify(bundles["onnx"], "--weights", weights)
    assert result.exit_code == 1 and "edited after export: weights.sha256" in result.text


def test_verify_reruns_parity_on_what_the_runtime_answers(trained, monkeypatch):
    weights, bundles = trained
    predict = zoo.runtime.Session.predict
    monkeypatch.setattr(zoo.runtime.Session, "predict",
                        lambda self, arrays: {k: v * 1.01 for k, v in predict(self, arrays).items()})
    result = _verify(bundles["onnx"], "--weights", weights)
    assert result.exit_code == 1 and "FAIL" in result.text and "parity" in result.text


def test_manifest_records_the_source_weights_and_the_parity_table_as_json(trained):
    weights, bundles = trained
    manifest = read_manifest(bundles["torchscript"])
    assert manifest["weights"] == {"sha256": sha256_file(weights), "random": False, "seed": None,
                                   "source": weights.name, "metrics": None, "caveat": None}
    result = runner.invoke(app, ["verify", str(bundles["torchscript"]), "--weights", str(weights), "--json",
                                 "--trust-code"])
    assert result.exit_code == 0
    assert json.loads(result.output)["parity"]["passed"] is True


def test_real_samples_join_the_parity_matrix(tmp_path):
    from zoo.data import builtin

    data = builtin.materialize("electricity", "train")
    (bundle,) = export("electricity-lstm", "onnx", out=tmp_path, random_weights=True, data=data)
    real = [c for c in read_manifest(bundle)["parity"]["cases"] if c["inputs"] == "real"]
    assert len(real) == 1 and real[0]["outputs"]["next_value"]["passed"]
    assert real[0]["shapes"]["series"][1:] == [96, 1]   # the trained window, from the data


def test_parity_is_measured_through_the_runtime_with_its_default_threads(trained):
    _, bundles = trained
    backends = {fmt: read_manifest(b)["parity"]["backend"] for fmt, b in bundles.items()}
    threads = zoo.runtime.default_threads()
    assert backends["onnx"] == f"zoo.runtime onnxruntime on CPUExecutionProvider ({threads} threads)"
    assert backends["torchscript"] == f"zoo.runtime torchscript on torch:cpu ({threads} threads)"


def test_real_samples_use_the_weights_fitted_normalisation(water_run, tmp_path):
    """Parity on real data feeds the samples as serving will, with the card's fitted statistics
    (water-mlp standardises its features; without them the real samples could not be prepared)."""
    from zoo.data import builtin, real_samples
    from zoo.weights import preprocessing

    run, card, _ = water_run
    data = builtin.materialize("water_potability")
    (bundle,) = export("water-mlp", formats=["onnx"], weights=run / "water-mlp.safetensors",
                       out=tmp_path / "b", data=data)
    cases = read_manifest(bundle)["parity"]["cases"]
    assert [c["inputs"] for c in cases].count("real") == 1
    spec = registry.get("water-mlp")
    samples = real_samples(spec, data, preprocessing(spec, card), n=500)["features"]
    assert abs(samples.mean()) < 0.2 and 0.8 < samples.std() < 1.2   # standardised, not raw [0, 1] values


# --- bundles exported before the redesign (manifest format_version 1) -----------------------------------

V1 = Path(__file__).resolve().parent / "fixtures" / "v1"


@pytest.mark.parametrize("fmt", FORMATS)
def test_bundles_exported_before_the_redesign_still_verify(fmt):
    bundle = V1 / f"mnist-3v7-linear-{fmt}"
    assert read_manifest(bundle)["format_version"] == 1
    result = verify(bundle, trust_code=True)   # the source weights are the shipped ones, found by sha256
    assert result.passed and result.parity.passed
    if fmt == "onnx":   # version-1 ONNX files already carried a copy of their manifest: they still load
        zoo.runtime.load(bundle).close()
    else:               # the others carry none: refused unless the caller opts out
        assert "re-export" in result.note
        with pytest.raises(zoo.runtime.UnsealedBundle, match="verify=False"):
            zoo.runtime.load(bundle, trust_code=True)
        session = zoo.runtime.load(bundle, verify=False, trust_code=True)
        assert session.predict(np.zeros((1, 784)))["logit"].shape == (1, 1)


def test_a_version_2_bundle_still_loads_and_verifies():
    """Written by zoo before format 3 sealed `external_data` (tests/fixtures/v2, the shipped weights)."""
    bundle = Path(__file__).resolve().parent / "fixtures" / "v2" / "mnist-3v7-linear-onnx"
    assert read_manifest(bundle)["format_version"] == 2 and "external_data" not in read_manifest(bundle)
    result = verify(bundle)
    assert result.passed and result.parity.passed and result.note is None
    with zoo.runtime.load(bundle) as session:
        assert session.predict(np.zeros((1, 784)))["logit"].shape == (1, 1)


def test_a_version_1_standardised_tabular_bundle_verifies_and_serves():
    weights = V1 / "water-mlp-weights" / "water-mlp.safetensors"
    result = verify(V1 / "water-mlp-onnx", weights=weights)
    assert result.passed and result.parity.passed
    with zoo.runtime.load(V1 / "water-mlp-onnx") as session:
        pre = session.manifest.preprocess["features"]
        assert pre.standardize and len(pre.mean) == 9 and pre.ranges is None
        (top,) = session.classify({c: 0.5 for c in pre.columns}, top_k=2)
        assert {label for label, _ in top["probability"]} == {"potable", "not potable"}
