"""Raw-input bundles (preprocessing in the ONNX graph) and the test vectors of every ONNX bundle: the graph
answers as zoo.runtime does on raw inputs of odd sizes and kinds, bare onnxruntime runs it and reproduces the
vectors (with the README's own snippet), and verify catches edited vectors."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from typer.testing import CliRunner

import zoo.runtime as rt
from zoo.cli import app
from zoo.errors import ZooError
from zoo.export import RAW, export, verify
from zoo.export import _raw, _rawparity, _vectors
from zoo.weights import sha256_file

from conftest import edit_manifest, one_line, read_manifest

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


class RawBundles:
    """(fp32 bundle, raw-input bundle) of a model with random weights, exported once per test session."""

    def __init__(self, root: Path):
        self.root, self.made = root, {}

    def __call__(self, name: str) -> tuple[Path, Path]:
        if name not in self.made:
            fp32, raw = export(name, ["onnx"], random_weights=True, out=self.root, raw_inputs=True)
            assert raw.name == f"{name}-onnx-{RAW}"
            self.made[name] = fp32, raw
        return self.made[name]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    return RawBundles(tmp_path_factory.mktemp("raw-bundles"))


def odd_images(folder: Path, mode: str = "RGB") -> list[Path]:
    """Image files as users have them: JPEG and PNG, odd sizes and aspect ratios, transparency, grayscale."""
    rng = np.random.default_rng(7)
    files = []
    for i, (width, height, fmt, kind) in enumerate([(37, 91, "JPEG", "RGB"), (300, 41, "PNG", "RGBA"),
                                                    (129, 128, "PNG", "L"), (640, 480, "JPEG", "RGB"),
                                                    (13, 29, "PNG", "RGB")]):
        base = np.linspace(0, 255, width * height * 4).reshape(height, width, 4) + rng.normal(0, 40, (height, width, 4))
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGBA").convert(kind if mode == "RGB" else "L")
        path = folder / f"odd_{i}.{fmt.lower().replace('jpeg', 'jpg')}"
        image.save(path, format=fmt)
        files.append(path)
    return files


def assert_within_budget(reference: dict, raw: dict):
    """The raw-input parity budget (zoo.export._rawparity), applied to classify() results side by side."""
    for ref, got in zip(reference, raw):
        for output, ranked in ref.items():
            want, have = dict(ranked), dict(got[output])
            assert max(abs(want[k] - have[k]) for k in want) <= _rawparity.MAX_PROBABILITY_DIFFERENCE
            margin = ranked[0][1] - ranked[1][1]
            assert got[output][0][0] == ranked[0][0] or margin <= _rawparity.NEAR_TIE


# --- images: the graph against the runtime on odd files -------------------------------------------------

@pytest.mark.parametrize("name", ["clouds-cnn", "tinyvgg-pizza-steak", "lenet-mnist", "mnist-3v7-linear"])
def test_images_of_odd_sizes_answer_as_the_runtime(bundles, name, tmp_path):
    """stretch (clouds-cnn), shorter side + centre crop (tinyvgg), grayscale with padding (lenet) and flattened
    (mnist-3v7-linear): the raw-input bundle within budget of the fp32 bundle's runtime preprocessing."""
    fp32, raw = bundles(name)
    files = [str(f) for f in odd_images(tmp_path)]
    with rt.load(fp32) as reference, rt.load(raw) as session:
        pre = session.manifest.preprocess[session.manifest.network_inputs[0].name]
        assert session.manifest.inputs[0].dtype == "uint8"
        assert session.manifest.inputs[0].shape == ("batch", "height", "width", pre.channels)
        k = 2
        assert_within_budget(reference.classify(files, top_k=k), session.classify(files, top_k=k))
        # what an application does: decode, convert to the model's mode, feed the pixels to bare onnxruntime
        bare = ort.InferenceSession(str(raw / "model.onnx"), providers=["CPUExecutionProvider"])
        for f in files:
            with Image.open(f) as im:
                pixels = np.asarray(im.convert(pre.mode))
            pixels = pixels[None, ..., None] if pixels.ndim == 2 else pixels[None]
            got = dict(zip([o.name for o in bare.get_outputs()], bare.run(None, {session.input_names[0]: pixels})))
            expected = session.predict_raw([f])
            for key, value in expected.items():
                np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6)


def test_the_resize_is_the_one_measured_closest_to_pillow(tmp_path):
    """The Resize settings of the graph give Pillow's BILINEAR values for at least 98.5 % of the resized
    values (benchmarks/resize_modes.py: 99.1 %), never more than 2 levels apart; without exclude_outside the border is far off."""
    from onnx import TensorProto, helper

    def resize(settings):
        node = helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], axes=[1, 2], **settings)
        graph = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", "h", "w", 3]),
                                                 helper.make_tensor_value_info("sizes", TensorProto.INT64, [2])],
                                  [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _raw.OPSET)], ir_version=10)
        return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    chosen, no_exclude = resize(_raw.RESIZE), resize({**_raw.RESIZE, "exclude_outside": 0})
    equal = total = worst = worst_border = 0
    for path in odd_images(tmp_path):
        image = Image.open(path).convert("RGB")
        for size in ((64, 64), (32, 32), (28, 28), (224, 224), (100, 37)):
            pillow = np.asarray(image.resize(size[::-1], Image.BILINEAR)).astype(int)
            feeds = {"x": np.asarray(image)[None], "sizes": np.array(size, np.int64)}
            onnx_values = chosen.run(None, feeds)[0][0].astype(int)
            equal += int((onnx_values == pillow).sum())
            total += pillow.size
            worst = max(worst, int(np.abs(onnx_values - pillow).max()))
            worst_border = max(worst_border, int(np.abs(no_exclude.run(None, feeds)[0][0].astype(int) - pillow).max()))
    assert equal / total >= 0.985 and worst <= 2
    assert worst_border > 2


def test_images_of_several_sizes_in_one_call_keep_their_order(bundles, tmp_path):
    fp32, raw = bundles("clouds-cnn")
    files = [str(f) for f in odd_images(tmp_path)]
    files = files + files[:2]   # two sizes occur twice: batched together, answered in place
    with rt.load(raw) as session:
        together = session.predict_raw(files)
        one_by_one = [session.predict_raw([f]) for f in files]
        for name, values in together.items():
            np.testing.assert_allclose(values, np.concatenate([o[name] for o in one_by_one]), rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="different sizes cannot be one batch.*predict_raw"):
            session.prepare(files)
        with pytest.raises(ValueError, match=r"input 'image': expected uint8 values \(whole numbers 0 to 255\)"):
            session.predict(np.full((1, 64, 64, 3), 0.5, np.float32))   # 0-1 floats are not pixels


def test_predict_on_a_raw_bundle_prints_what_the_fp32_bundle_prints(bundles, tmp_path):
    fp32, raw = bundles("clouds-cnn")
    files = [str(f) for f in odd_images(tmp_path)[:3]]
    outputs = []
    for bundle in (fp32, raw):
        result = runner.invoke(app, ["predict", str(bundle), *files, "--json"])
        assert result.exit_code == 0, result.output
        outputs.append(json.loads(result.output))
    assert [r["input"] for r in outputs[0]] == [r["input"] for r in outputs[1]] == files
    ranked = [[{"logits": [(o["label"], o["probability"]) for o in r["outputs"]["logits"]]} for r in out]
              for out in outputs]
    assert_within_budget(*ranked)


# --- tables, series and category names -------------------------------------------------------------------

def test_insurance_rows_with_category_names_answer_exactly_as_the_runtime(bundles):
    fp32, raw = bundles("insurance-mlp")
    rows = [{"age": "19", "sex": "female", "bmi": "27.9", "children": "0", "smoker": "yes", "region": "southwest"},
            {"age": 64, "sex": " Male", "bmi": 35.5, "children": 3, "smoker": "NO", "region": "northeast"}]
    with rt.load(fp32) as reference, rt.load(raw) as session:
        assert {t.name: t.dtype for t in session.manifest.inputs} == {
            "age": "float64", "sex": "string", "bmi": "float64", "children": "float64", "smoker": "string",
            "region": "string"}
        np.testing.assert_allclose(session.predict_raw(rows)["charges"], reference.predict_raw(rows)["charges"],
                                   rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="unknown category 'east'"):
            session.predict_raw([{**rows[0], "region": "east"}])
    # bare onnxruntime: exact names, numbers in the CSV's units; an unknown name fails the run
    bare = ort.InferenceSession(str(raw / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"age": np.array([19.0]), "sex": np.array(["female"], object), "bmi": np.array([27.9]),
             "children": np.array([0.0]), "smoker": np.array(["yes"], object), "region": np.array(["southwest"], object)}
    with rt.load(raw) as session:
        np.testing.assert_allclose(bare.run(["charges"], feeds)[0], session.predict_raw(rows[:1])["charges"], rtol=1e-6)
    with pytest.raises(Exception, match="out of data bounds|out of bounds|indices"):
        bare.run(None, {**feeds, "region": np.array(["east"], object)})
    with pytest.raises(Exception, match="out of data bounds|out of bounds|indices"):
        bare.run(None, {**feeds, "sex": np.array(["Male"], object)})   # the graph matches exactly; the runtime folds case


def test_a_series_longer_than_the_window_uses_its_last_readings(bundles):
    fp32, raw = bundles("electricity-rnn")
    rng = np.random.default_rng(3)
    series = rng.normal(size=150).astype(np.float32)
    with rt.load(fp32) as reference, rt.load(raw) as session:
        np.testing.assert_allclose(session.predict_raw(series.tolist())["next_value"],
                                   reference.predict_raw(series.tolist())["next_value"], rtol=1e-6, atol=1e-6)
        window = session.manifest.preprocess["series"].window
    bare = ort.InferenceSession(str(raw / "model.onnx"), providers=["CPUExecutionProvider"])
    whole = bare.run(None, {"series": series[None]})[0]
    last = bare.run(None, {"series": series[None, -window:]})[0]
    np.testing.assert_array_equal(whole, last)
    for level in (ort.GraphOptimizationLevel.ORT_DISABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        strict = ort.InferenceSession(str(raw / "model.onnx"), options, providers=["CPUExecutionProvider"])
        with pytest.raises(Exception, match="out of data bounds|out of bounds|indices"):
            strict.run(None, {"series": np.concatenate([series[None, :48]] * 2)})   # shorter than the window
    with rt.load(raw) as session, pytest.raises(ValueError, match="at least 96"):
        session.predict_raw(series[:50].tolist())


def test_omniglot_takes_an_image_and_an_alphabet_name(bundles, tmp_path):
    fp32, raw = bundles("omniglot-two-input")
    files = [str(f) for f in odd_images(tmp_path, mode="L")[:3]]
    inputs = {"image": files, "alphabet": ["Latin", "Korean", "Braille"]}
    with rt.load(fp32) as reference, rt.load(raw) as session:
        assert {t.name: t.dtype for t in session.manifest.inputs} == {"image": "uint8", "alphabet": "string"}
        assert session.manifest.raw.probabilities == {"character": "probabilities"}
        assert_within_budget(reference.classify(inputs, top_k=2), session.classify(inputs, top_k=2))
    bare = ort.InferenceSession(str(raw / "model.onnx"), providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(files[0]).convert("L"))[None, ..., None]
    out = bare.run(["probabilities"], {"image": pixels, "alphabet": np.array(["Latin"], object)})[0]
    assert out.shape == (1, 964) and abs(out.sum() - 1) < 1e-5
    with pytest.raises(Exception, match="out of data bounds|out of bounds|indices"):
        bare.run(None, {"image": pixels, "alphabet": np.array(["Klingon"], object)})


def test_a_model_that_cannot_have_one_is_refused_in_one_line():
    import dataclasses

    from zoo import registry
    from zoo.contract import TensorSpec

    spec = registry.get("insurance-mlp")
    clash = dataclasses.replace(spec, outputs=(TensorSpec("age", ("batch", 1)),))
    reason = _raw.refusal(clash, spec.preprocess)
    assert reason and "'age'" in reason and "\n" not in reason
    with pytest.raises(ZooError, match="named 'age'"):
        _raw.compose(clash, None, spec.preprocess)
    assert all(_raw.refusal(s, s.preprocess) is None for s in registry.specs())


# --- test vectors ----------------------------------------------------------------------------------------

def readme_snippet(bundle: Path) -> str:
    """The README's bare-onnxruntime check, verbatim but for the bundle it names."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Checking a bundle without zoo", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 'bundle = "bundles/' in code
    return re.sub(r'bundle = "bundles/[^"]+"', f"bundle = {str(bundle)!r}", code)


def run_snippet(bundle: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", readme_snippet(bundle)], capture_output=True, text=True, timeout=300)


def test_every_onnx_bundle_has_vectors_that_bare_onnxruntime_reproduces(bundles, tmp_path):
    """fp32, a reduced precision and a raw-input bundle: the ONNX Model Zoo layout, covered by the manifest's
    checksums, reproduced by the README's snippet (onnx + onnxruntime, no zoo)."""
    made = [*bundles("clouds-cnn"),
            *export("circles-mlp", ["onnx"], random_weights=True, out=tmp_path, precisions=["fp16"])]
    for bundle in made:
        manifest = read_manifest(bundle)
        record = manifest["test_data"]
        names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                       if p.is_file() and p.name not in ("manifest.json", "model.onnx"))
        assert names == sorted(record["files"])   # every test file is checksummed, and nothing else is there
        model = onnx.load(str(bundle / "model.onnx"))
        first = sorted(n for n in names if n.startswith("test_data_set_0/"))
        assert first == [f"test_data_set_0/input_{i}.pb" for i in range(len(model.graph.input))] + \
            [f"test_data_set_0/output_{j}.pb" for j in range(len(model.graph.output))]
        for i, t in enumerate(model.graph.input):
            assert onnx.load_tensor(str(bundle / f"test_data_set_0/input_{i}.pb")).name == t.name
        result = run_snippet(bundle)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "test_data_set_" in result.stdout
    assert read_manifest(made[-1])["test_data"]["tolerance"]["rtol"] == \
        _vectors.TOLERANCES["fp16"]["rtol"]


def test_golden_cases_are_files_and_rows_with_their_expected_answers(bundles):
    _, raw = bundles("insurance-mlp")
    golden = json.loads((raw / "golden" / "cases.json").read_text())
    assert len(golden["cases"]) >= 2
    case = golden["cases"][0]
    assert set(case["inputs"]["features"]["row"]) == {"age", "sex", "bmi", "children", "smoker", "region"}
    with rt.load(raw) as session:
        value = session.predict_raw([case["inputs"]["features"]["row"]])["charges"][0]
    np.testing.assert_allclose(value, case["expected"]["charges"], rtol=1e-6)
    _, image_raw = bundles("clouds-cnn")
    case = json.loads((image_raw / "golden" / "cases.json").read_text())["cases"][0]
    with Image.open(image_raw / case["inputs"]["image"]["file"]) as im:
        assert im.format == "PNG" and im.mode == "RGB"
    assert len(case["expected"]["logits"]) == _vectors.TOP_K


@pytest.fixture
def copied(bundles, tmp_path):
    _, raw = bundles("clouds-cnn")
    target = tmp_path / raw.name
    shutil.copytree(raw, target)
    return target


def _verify_cli(bundle: Path):
    result = runner.invoke(app, ["verify", str(bundle)])
    result.text = one_line(result)
    return result


def test_verify_checks_the_vectors_and_golden_cases(copied):
    result = _verify_cli(copied)
    assert result.exit_code == 0, result.output
    assert "3 sets reproduced by bare onnxruntime, 3 golden cases" in result.text


def test_verify_detects_an_edited_vector(copied):
    path = copied / "test_data_set_0" / "output_1.pb"
    tensor = onnx.load_tensor(str(path))
    values = onnx.numpy_helper.to_array(tensor).copy()
    values[0, 0] += 0.25
    path.write_bytes(onnx.numpy_helper.from_array(values, tensor.name).SerializeToString())
    result = _verify_cli(copied)
    assert result.exit_code == 1 and "test file test_data_set_0/output_1.pb was changed after export" in result.text
    # with its checksum fixed in the manifest, the model no longer reproduces it
    edit_manifest(copied, lambda m: m["test_data"]["files"].update({"test_data_set_0/output_1.pb": sha256_file(path)}))
    result = _verify_cli(copied)
    assert result.exit_code == 1 and "not reproduced" in result.text and "probabilities differs" in result.text
    assert run_snippet(copied).returncode != 0   # the bare check fails too


def test_verify_detects_an_edited_golden_case(copied):
    path = copied / "golden" / "cases.json"
    golden = json.loads(path.read_text())
    golden["cases"][0]["expected"]["logits"][0][1] -= 0.1
    path.write_text(json.dumps(golden))
    edit_manifest(copied, lambda m: m["test_data"]["files"].update({"golden/cases.json": sha256_file(path)}))
    result = _verify_cli(copied)
    assert result.exit_code == 1 and "golden case" in result.text and "probabilities differ" in result.text


@pytest.mark.parametrize("name, message", [
    ("../manifest.json", "not a test file of the bundle"),
    ("test_data_set_0/../../x.pb", "not a test file of the bundle"),
    ("/etc/passwd", "not a test file of the bundle"),
])
def test_test_files_outside_the_bundle_are_refused(copied, name, message):
    edit_manifest(copied, lambda m: m["test_data"]["files"].update({name: "0" * 64}))
    result = _verify_cli(copied)
    assert result.exit_code == 1 and message in result.text


def test_test_files_are_bounded_before_they_are_read(copied, monkeypatch):
    size = (copied / "test_data_set_0" / "input_0.pb").stat().st_size
    monkeypatch.setattr(_vectors, "MAX_FILE_BYTES", size - 1)
    with pytest.raises(ZooError, match=f"test_data_set_0/input_0.pb is {size:,} bytes, over the {size - 1:,} allowed"):
        verify(copied)


# --- the command line and the runtime's dependencies -------------------------------------------------------

def test_raw_inputs_need_the_onnx_format(tmp_path):
    result = runner.invoke(app, ["export", "circles-mlp", "--random-weights", "--format", "torchscript",
                                 "--raw-inputs", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--raw-inputs makes an ONNX bundle: add --format onnx" in one_line(result)


def test_running_a_raw_bundle_loads_no_torch(bundles):
    _, raw = bundles("insurance-mlp")
    probe = (f"import sys, zoo.runtime; s = zoo.runtime.load({str(raw)!r}); "
             "s.predict_raw([{'age': 30, 'sex': 'male', 'bmi': 25, 'children': 1, 'smoker': 'no', 'region': 'northwest'}]); "
             "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('zoo.')}), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT, check=True)
    assert out.stdout.split("\n")[-2] == "['contract', 'errors', 'runtime'] False"


@pytest.mark.parametrize("command", [["serve"], ["bench", "--device", "cpu"]])
def test_commands_built_on_the_network_tensors_refuse_a_raw_bundle_in_one_line(bundles, command):
    _, raw = bundles("insurance-mlp")
    result = runner.invoke(app, [command[0], str(raw), *command[1:]])
    assert result.exit_code == 2 and "is a raw-input bundle" in one_line(result)
    assert "Traceback" not in result.output
