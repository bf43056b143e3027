"""zoo.runtime: loading bundles, validation before the backend, raw inputs, labels, torch-free import, CUDA."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import zoo.runtime as rt
from zoo import registry

from conftest import edited_copy, one_line, read_manifest, valid_inputs

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def clouds(bundle):
    with rt.load(bundle("clouds-cnn"), threads=1) as session:
        yield session


def eager_outputs(name: str, arrays: dict, seed: int = 0) -> list[np.ndarray]:
    """Reference: the registry model with the random weights a bundle was exported with (its seed)."""
    import torch

    model = registry.build(name, seed=seed).eval()
    with torch.no_grad():
        out = model(*(torch.from_numpy(a) for a in arrays.values()))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


# --- every model ------------------------------------------------------------------------------------

# One model per input/output kind runs in the quick loop (`-m "not slow"`); CI runs them all.
QUICK = {"clouds-cnn", "water-mlp", "electricity-gru", "omniglot-two-input", "omniglot-two-output",
         "mnist-3v7-linear", "lenet-mnist", "thermometer-linear"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in QUICK else pytest.mark.slow)
                                  for n in registry.names()])
def test_every_model_runs_raw_inputs_through_its_manifest(bundle, name):
    spec = registry.get(name)
    with rt.load(bundle(name), threads=1) as session:
        assert session.providers == ["CPUExecutionProvider"]
        raw = valid_inputs(session.manifest)
        arrays = session.prepare(raw)
        assert [tuple(a.shape[1:]) for a in arrays.values()] == \
               [tuple(d for d in t.example_shape(batch=1, sequence=96)[1:]) for t in spec.inputs]
        out = session.predict_raw(raw)
        assert list(out) == [t.name for t in spec.outputs]
        batch = 1 if spec.is_sequence else 2
        for t in spec.outputs:
            assert out[t.name].shape == t.example_shape(batch=batch) and out[t.name].dtype == np.float32
        if spec.is_classifier:
            top = session.classify(raw, top_k=2)
            assert len(top) == batch
            for output, pairs in top[0].items():
                assert [label for label, _ in pairs][0] in spec.labels[output]
                assert pairs[0][1] >= pairs[1][1]
        else:
            with pytest.raises(ValueError, match="no class labels"):
                session.classify(raw)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
@pytest.mark.parametrize("name,shape", [("clouds-cnn", (3, 3, 64, 64)), ("electricity-gru", (2, 50, 1))])
def test_every_backend_matches_eager_pytorch(bundle, fmt, name, shape):
    session = rt.load(bundle(name, fmt), threads=1, trust_code=True)   # the test's own export
    assert session.backend == {"onnx": "onnxruntime"}.get(fmt, fmt)
    weights = session.manifest.data["weights"]
    assert weights["random"]
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    (expected,) = eager_outputs(name, {session.input_names[0]: x}, seed=weights.get("seed", 0))
    np.testing.assert_allclose(session.predict(x)[session.output_names[0]], expected, rtol=1e-4, atol=1e-5)


# --- labels and probabilities --------------------------------------------------------------------------

def test_top_k_uses_softmax_and_label_order(clouds):
    x = np.random.default_rng(3).random((2, 3, 64, 64), dtype=np.float32)
    logits = clouds.predict(x)["logits"].astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    top = clouds.classify({"image": x}, top_k=7, arrays=True)
    labels = clouds.manifest.labels["logits"]
    for i, row in enumerate(top):
        pairs = row["logits"]
        assert len(pairs) == 7
        assert sum(p for _, p in pairs) == pytest.approx(1.0)
        for label, p in pairs:
            assert p == pytest.approx(expected[i, labels.index(label)])


@pytest.mark.parametrize("name,kind", [("mnist-3v7-linear", "logit"), ("water-mlp", "probability")])
def test_binary_labels_are_negative_then_positive(bundle, name, kind):
    session = rt.load(bundle(name), threads=1)
    assert session.manifest.output_kind == kind
    arrays = session.prepare(valid_inputs(session.manifest, batch=3))
    (output,) = session.output_names
    value = session.predict(arrays)[output][:, 0].astype(np.float64)
    positive = 1 / (1 + np.exp(-value)) if kind == "logit" else value
    negative_label, positive_label = session.manifest.labels[output]
    for i, row in enumerate(session.classify(arrays, top_k=2, arrays=True)):
        probs = dict(row[output])
        assert probs[positive_label] == pytest.approx(positive[i])
        assert probs[negative_label] == pytest.approx(1 - positive[i])


def test_top_k_must_be_positive(clouds):
    with pytest.raises(ValueError, match="top_k must be a positive integer, got 0"):
        clouds.classify(np.zeros((8, 8, 3), np.uint8), top_k=0)


# --- raw inputs -----------------------------------------------------------------------------------------

def test_image_files_pil_and_arrays_give_the_same_input(clouds, tmp_path):
    from PIL import Image

    pixels = np.random.default_rng(4).integers(0, 256, (80, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    from_file = clouds.prepare(str(tmp_path / "a.png"))["image"]
    np.testing.assert_array_equal(from_file, clouds.prepare(Image.fromarray(pixels))["image"])
    np.testing.assert_array_equal(from_file, clouds.prepare(pixels)["image"])
    assert from_file.shape == (1, 3, 64, 64) and 0 <= from_file.min() and from_file.max() <= 1


def test_unreadable_image_is_a_value_error(clouds, tmp_path):
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(ValueError, match="cannot read image"):
        clouds.predict_raw(tmp_path / "not.png")


def test_tabular_rows_from_csv(bundle, tmp_path):
    session = rt.load(bundle("water-mlp"), threads=1)
    columns = session.manifest.preprocess["features"].columns
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", *columns])
        writer.writeheader()
        writer.writerows({"id": i, **{c: i + j for j, c in enumerate(columns)}} for i in range(4))
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert session.predict_raw(rows)["probability"].shape == (4, 1)
    del rows[1][columns[2]]
    with pytest.raises(ValueError, match=f"row 2 has no column '{columns[2]}'"):
        session.predict_raw(rows)


def test_series_needs_a_full_window(bundle):
    session = rt.load(bundle("electricity-lstm"), threads=1)
    assert session.predict_raw(np.linspace(0, 1, 96))["next_value"].shape == (1, 1)
    with pytest.raises(ValueError, match="at least 96 values"):
        session.predict_raw([0.5] * 10)


def test_two_input_model_takes_a_dict_of_raw_inputs(bundle):
    session = rt.load(bundle("omniglot-two-input"), threads=1)
    image = np.zeros((105, 105), np.uint8)
    top = session.classify({"image": image, "alphabet": "Latin"}, top_k=3)
    assert len(top) == 1 and len(top[0]["character"]) == 3
    with pytest.raises(ValueError, match=r"this model has inputs \['image', 'alphabet'\]: pass a dict"):
        session.predict_raw(image)
    with pytest.raises(ValueError, match=r"expected keys \['image', 'alphabet'\], got \['image'\]"):
        session.predict_raw({"image": image})
    with pytest.raises(ValueError, match="unknown category 'Klingon'"):
        session.predict_raw({"image": image, "alphabet": "Klingon"})


# --- validation before the backend ------------------------------------------------------------------------

@pytest.mark.parametrize("value,message", [
    (np.zeros((3, 64, 64)), r"input 'image': expected rank 4 with shape \(batch, 3, 64, 64\), got rank 3 .*x\[None\]"),
    (np.zeros((1, 3, 32, 64)), r"input 'image': expected shape \(batch, 3, 64, 64\), got \(1, 3, 32, 64\)"),
    (np.zeros((0, 3, 64, 64)), r"input 'image': axis 0 \(batch\) is empty"),
    (np.full((1, 3, 64, 64), np.inf), r"input 'image': expected finite values, got 12288 NaN or infinite"),
    (np.array([[["a"]]]), r"input 'image': expected a numeric array .*got dtype <U1"),
    (np.zeros((1, 3, 64, 64), bool), r"input 'image': expected a numeric array .*got dtype bool"),
    ({"images": np.zeros((1, 3, 64, 64))}, r"unknown input name\(s\) \['images'\]; expected \['image'\]"),
    ({}, r"missing input\(s\) \['image'\]; expected \['image'\], got \[\]"),
    ([[1, 2], [3]], r"input 'image': expected a numeric array, got a list"),
])
def test_bad_inputs_are_value_errors_that_say_what_was_expected(clouds, value, message):
    with pytest.raises(ValueError, match=message):
        clouds.predict(value)


def test_integer_and_float64_arrays_are_converted(clouds):
    a = clouds.predict(np.ones((1, 3, 64, 64), np.int64))["logits"]
    b = clouds.predict(np.ones((1, 3, 64, 64), np.float64))["logits"]
    np.testing.assert_array_equal(a, b)


def test_inputs_must_agree_on_batch(bundle):
    session = rt.load(bundle("omniglot-two-input"), threads=1)
    with pytest.raises(ValueError, match=r"input 'alphabet': axis 0 \(batch\) has size 3 but input 'image' has batch size 2"):
        session.predict({"image": np.zeros((2, 1, 64, 64)), "alphabet": np.zeros((3, 30))})
    with pytest.raises(ValueError, match=r"this model has 2 inputs, so pass a dict with keys \['image', 'alphabet'\]"):
        session.predict(np.zeros((2, 1, 64, 64)))


def test_rnn_accepts_any_sequence_length(bundle):
    session = rt.load(bundle("electricity-gru"), threads=1)
    for length in (1, 5, 200):
        assert session.predict(np.zeros((2, length, 1), np.float32))["next_value"].shape == (2, 1)
    with pytest.raises(ValueError, match=r"input 'series': expected shape \(batch, sequence, 1\), got \(2, 5, 2\)"):
        session.predict(np.zeros((2, 5, 2), np.float32))


_dtypes = st.sampled_from(["float32", "float64", "float16", "int8", "int64", "uint8", "bool", "complex64", "U3", "O"])


def _arrays():
    shapes = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
    near = st.tuples(st.integers(0, 3), st.sampled_from([3, 1]), st.sampled_from([64, 63]), st.sampled_from([64, 0]))
    return st.one_of(
        _dtypes.flatmap(lambda d: hnp.arrays(d, shapes) if d not in ("U3", "O") else hnp.arrays(d, shapes, elements=st.just("x"))),
        near.flatmap(lambda s: hnp.arrays("float32", s, elements=st.sampled_from([0.0, 1.0, np.nan, np.inf, -1e30]))),
    )


# Truncated or corrupt files behind real magic numbers: PNG, JPEG, GIF, BMP, TIFF, WebP.
_IMAGE_HEADERS = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF\x00\x00\x00\x00WEBPVP8 "]
_values = st.one_of(_arrays(), st.none(), st.text(max_size=3), st.integers(), st.floats(),
                    st.lists(st.one_of(st.floats(), st.text(max_size=2)), max_size=3))
_feeds = st.one_of(_values, st.dictionaries(st.one_of(st.sampled_from(["image", "Image", ""]), st.integers()),
                                             _values, max_size=2))


def _accepted_or_refused(call):
    """Either outputs of the declared shape with finite values, or a ValueError naming the input."""
    try:
        out = call()
    except ValueError as e:
        assert "input" in str(e), str(e)
        return False
    assert set(out) == {"logits"} and out["logits"].ndim == 2 and out["logits"].shape[1] == 7
    assert len(out["logits"]) >= 1 and np.isfinite(out["logits"]).all()
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_feeds)
def test_fuzzed_inputs_give_outputs_or_value_errors(clouds, feed):
    _accepted_or_refused(lambda: clouds.predict(feed))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_values, st.binary(max_size=64), st.sampled_from(_IMAGE_HEADERS).flatmap(
    lambda head: st.binary(max_size=48).map(lambda tail: head + tail)),
    st.lists(_values, max_size=2), st.dictionaries(st.text(max_size=3), _values, max_size=2)))
def test_fuzzed_raw_inputs_give_outputs_or_value_errors(clouds, raw):
    _accepted_or_refused(lambda: clouds.predict_raw(raw))


def test_the_fuzz_oracle_can_fail(clouds):
    """The oracle above is not vacuous: valid input is accepted, junk is refused with the input's name."""
    assert _accepted_or_refused(lambda: clouds.predict(np.zeros((2, 3, 64, 64), np.float32)))
    assert _accepted_or_refused(lambda: clouds.predict_raw(np.zeros((9, 9, 3), np.uint8)))
    assert not _accepted_or_refused(lambda: clouds.predict_raw(b"\x89PNG\r\n\x1a\nbroken"))
    with pytest.raises(AssertionError):
        _accepted_or_refused(lambda: {"logits": np.full((1, 7), np.nan)})


# --- bundles and devices --------------------------------------------------------------------------------------

def test_bundle_problems_are_clear(bundle, tmp_path):
    with pytest.raises(rt.BundleError, match="no bundle folder"):
        rt.load(tmp_path / "nowhere")
    with pytest.raises(rt.BundleError, match="has no manifest.json"):
        rt.load(tmp_path)
    source = bundle("clouds-cnn")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text(json.dumps(read_manifest(source)))
    with pytest.raises(rt.BundleError, match="model file model.onnx named by manifest.json is missing"):
        rt.load(copy)
    (copy / "model.onnx").write_bytes((source / "model.onnx").read_bytes()[:-1] + b"\0")
    with pytest.raises(rt.BundleError, match="does not match the manifest"):
        rt.load(copy)
    with pytest.raises(rt.BundleError, match="holds a onnx model; backend 'torchscript' needs a torchscript bundle"):
        rt.load(source, backend="torchscript")


def test_threads_and_arena_are_set_explicitly(bundle):
    session = rt.load(bundle("clouds-cnn"), threads=1, cpu_arena=False)
    assert session.settings["threads"] == 1 and session.settings["cpu_arena"] is False
    assert rt.load(bundle("clouds-cnn")).threads == rt.default_threads() <= (os.cpu_count() or 1)


def _cuda_usable() -> str:
    try:
        return rt.cuda_problem()
    except ImportError as e:
        return str(e)


def test_cuda_without_a_usable_gpu_fails_loudly(bundle):
    reason = _cuda_usable()
    if not reason:
        pytest.skip("a GPU is usable here; test_cuda_really_runs_on_cuda covers it")
    with pytest.raises(rt.DeviceUnavailable, match="device='cuda' requested but") as info:
        rt.load(bundle("clouds-cnn"), device="cuda")
    assert reason in str(info.value)


def test_cuda_really_runs_on_cuda(bundle):
    reason = _cuda_usable()
    if reason:
        pytest.skip(f"CUDA is not usable here: {reason}")
    session = rt.load(bundle("clouds-cnn"), device="cuda")
    assert session.providers[0] == "CUDAExecutionProvider"
    assert session.predict(np.zeros((2, 3, 64, 64), np.float32))["logits"].shape == (2, 7)


# --- embedding without torch ----------------------------------------------------------------------------------

NO_TORCH = """
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this process")
sys.meta_path.insert(0, NoTorch())
import numpy as np
import zoo.runtime as rt
session = rt.load(sys.argv[1], threads=1)
print(session.classify(sys.argv[2], top_k=2)[0]["logits"][0][0])
print(session.predict(np.zeros((2, 3, 64, 64), np.float32))["logits"].shape)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
"""


def test_runtime_imports_and_runs_onnx_where_torch_cannot_be_imported(bundle, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64), (30, 90, 200)).save(tmp_path / "sky.png")
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle("clouds-cnn")), str(tmp_path / "sky.png")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    label, shape = result.stdout.splitlines()
    assert label in registry.get("clouds-cnn").labels["logits"] and shape == "(2, 7)"


# --- zoo predict ------------------------------------------------------------------------------------------------

def test_zoo_predict_images_as_table_and_json(bundle, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from zoo.cli import app

    for i in range(2):
        Image.new("RGB", (40, 30), (i * 100, 50, 200)).save(tmp_path / f"img{i}.png")
    folder = str(bundle("clouds-cnn"))
    result = CliRunner().invoke(app, ["predict", folder, str(tmp_path / "img0.png"), str(tmp_path / "img1.png"),
                                      "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["input"] for r in data] == [str(tmp_path / "img0.png"), str(tmp_path / "img1.png")]
    assert len(data[0]["outputs"]["logits"]) == 2
    assert data[0]["outputs"]["logits"][0]["label"] in registry.get("clouds-cnn").labels["logits"]
    table = CliRunner().invoke(app, ["predict", folder, str(tmp_path / "img0.png")])
    assert table.exit_code == 0 and data[0]["outputs"]["logits"][0]["label"] in table.stdout


def test_zoo_predict_csv_for_tabular_and_series(bundle, tmp_path):
    from typer.testing import CliRunner

    from zoo.cli import app

    (tmp_path / "points.csv").write_text("x1,x2\n0,0\n1,1\n0.5,-2\n")
    result = CliRunner().invoke(app, ["predict", str(bundle("circles-mlp")), str(tmp_path / "points.csv"), "--json"])
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in json.loads(result.stdout)] == [f"points.csv row {i}" for i in (1, 2, 3)]
    (tmp_path / "series.csv").write_text("timestamp,consumption\n" + "".join(
        f"2024-01-{1 + i // 96:02d} {i % 96 // 4:02d}:{i % 4 * 15:02d}:00,{i / 100}\n" for i in range(100)))
    result = CliRunner().invoke(app, ["predict", str(bundle("electricity-gru")), str(tmp_path / "series.csv"), "--json"])
    assert result.exit_code == 0, result.output
    (forecast,) = json.loads(result.stdout)
    assert len(forecast["outputs"]["next_value"]) == 1


@pytest.mark.parametrize("args,message", [
    (["nope.png"], "input file nope.png does not exist"),
    (["--top-k", "0", "x.png"], "greater than or equal to 1"),
])
def test_zoo_predict_errors_are_one_line(bundle, args, message):
    from typer.testing import CliRunner

    from zoo.cli import app

    result = CliRunner().invoke(app, ["predict", str(bundle("clouds-cnn")), *args])
    assert result.exit_code == 2 and message in one_line(result)
    assert "Traceback" not in result.output


def test_zoo_predict_on_a_folder_that_is_not_a_bundle(tmp_path):
    from typer.testing import CliRunner

    from zoo.cli import app

    result = CliRunner().invoke(app, ["predict", str(tmp_path), "x.png"])
    assert result.exit_code == 2 and "has no manifest.json" in result.output


# --- examples/embed_app.py --------------------------------------------------------------------------------------

def test_embed_app_classifies_a_folder(bundle, tmp_path):
    from PIL import Image

    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (50, 70), (20, 120, 220)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "embed_app.py"), str(bundle("clouds-cnn")),
                             str(tmp_path), "--top-k", "2", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["a.jpg", "b.png"] and all(len(line) == 3 for line in lines)
    assert lines[0][1].rsplit(" ", 1)[0] in registry.get("clouds-cnn").labels["logits"]


EMBED_PROBE = """
import json, runpy, sys
bound = []
sys.addaudithook(lambda event, args: bound.append(repr(args[1])) if event == "socket.bind" else None)
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as e:
    code = e.code
zoo_modules = sorted(m for m in sys.modules if m == "zoo" or m.startswith("zoo."))
print(json.dumps({"exit": code, "bound": bound, "torch": "torch" in sys.modules, "zoo": zoo_modules}), file=sys.stderr)
"""


def test_embed_app_is_in_process_only(bundle, tmp_path):
    """It classifies a folder in its own process (no socket bound, no torch, only zoo.runtime and what that
    depends on); its HTTP server mode was replaced by `zoo serve`; a missing folder is one line."""
    script = str(ROOT / "examples" / "embed_app.py")

    def embed(*args):
        result = subprocess.run([sys.executable, "-c", EMBED_PROBE, script, *map(str, args)],
                                capture_output=True, text=True, timeout=120)
        return result, json.loads(result.stderr.strip().splitlines()[-1])

    (tmp_path / "images").mkdir()
    for name in ("sky.jpg", "copy.jpg"):
        (tmp_path / "images" / name).write_bytes((ROOT / "examples" / "images" / "sky.jpg").read_bytes())
    result, probe = embed(bundle("clouds-cnn"), tmp_path / "images", "--top-k", "2")
    assert probe["exit"] == 0 and probe["bound"] == [] and not probe["torch"], probe
    assert {m.split(".")[1] for m in probe["zoo"] if "." in m} <= {"runtime", "contract", "errors"}, probe
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [line[0] for line in lines] == ["copy.jpg", "sky.jpg"] and all(len(line) == 3 for line in lines)
    assert {line[1].rsplit(" ", 1)[0] for line in lines} <= set(registry.get("clouds-cnn").labels["logits"])
    result, probe = embed(bundle("clouds-cnn"), tmp_path / "images", "--serve")
    assert probe["exit"] == 2 and "unrecognized arguments: --serve" in result.stderr
    result, probe = embed(bundle("clouds-cnn"), tmp_path / "nowhere")
    assert probe["exit"] == 2 and result.stderr.strip().splitlines()[-2].endswith("is not a folder of images")


def test_validate_checks_without_running(clouds):
    x = np.zeros((2, 3, 64, 64), np.float64)
    checked = clouds.validate(x)
    assert checked["image"].dtype == np.float32 and checked["image"].shape == x.shape
    x[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="expected finite values"):
        clouds.validate(x)


# --- tampered manifests: one BundleError naming the field, never a crash later ----------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda m: m["labels"].update(logits=m["labels"]["logits"][:3]),
     "`labels.logits`: expected 7 class names, one per column of the output, got \"3 names\""),
    (lambda m: m["inputs"][0].update(dtype="foo"), "`inputs[0].dtype`: expected a numeric numpy dtype"),
    (lambda m: m["preprocess"]["image"].update(size=[64]), "`preprocess.image.size`: expected [height, width]"),
    (lambda m: m["preprocess"]["image"].update(kind="video"), "`preprocess.image.kind`: expected image | tabular"),
    (lambda m: m["preprocess"].update(picture=m["preprocess"].pop("image")), "`preprocess.picture`"),
    (lambda m: m.update(format="tflite"), "`format`: expected onnx | torchscript | pt2, got \"tflite\""),
    (lambda m: m.update(output_kind="scores"), "`output_kind`"),
    (lambda m: m["outputs"][0].update(shape=["batch", 0]), "`outputs[0].shape`"),
])
def test_a_tampered_manifest_is_one_bundle_error(bundle, tmp_path, edit, message):
    folder = edited_copy(bundle("clouds-cnn"), tmp_path / "b", edit)
    with pytest.raises(rt.BundleError) as info:
        rt.load(folder)
    assert message in str(info.value) and info.value.exit_code == 1
    assert "\n" not in str(info.value)


def test_binary_labels_must_be_negative_and_positive(bundle, tmp_path):
    folder = edited_copy(bundle("water-mlp"), tmp_path / "b", lambda m: m["labels"].update(probability=["yes"]))
    with pytest.raises(rt.BundleError, match=r"expected 2 class names.*\[negative, positive\]"):
        rt.read_manifest(folder)


def test_zoo_predict_on_a_tampered_manifest_is_one_line(bundle, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from zoo.cli import app

    Image.new("RGB", (40, 30)).save(tmp_path / "img.png")
    folder = edited_copy(bundle("clouds-cnn"), tmp_path / "b",
                       lambda m: m["labels"].update(logits=m["labels"]["logits"][:3]))
    result = CliRunner().invoke(app, ["predict", str(folder), str(tmp_path / "img.png")])
    assert result.exit_code == 1 and "labels.logits" in result.output and "Traceback" not in result.output


def test_series_csv_is_read_in_timestamp_order(bundle, tmp_path):
    rows = [(f"2024-01-{1 + i // 96:02d} {i % 96 // 4:02d}:{i % 4 * 15:02d}:00", float(np.sin(i / 5)))
            for i in range(120)]
    ordered, shuffled = tmp_path / "ordered.csv", tmp_path / "shuffled.csv"
    ordered.write_text("timestamp,consumption\n" + "".join(f"{t},{v}\n" for t, v in rows))
    mixed = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    shuffled.write_text("timestamp,consumption\n" + "".join(f"{t},{v}\n" for t, v in mixed))
    with rt.load(bundle("electricity-gru"), threads=1) as session:
        a = rt.predict_files(session, [ordered])[0]["outputs"]
        b = rt.predict_files(session, [shuffled])[0]["outputs"]
        assert a == b
        shuffled.write_text("timestamp,consumption\nyesterday,1.0\n" + "".join(f"{t},{v}\n" for t, v in rows))
        with pytest.raises(ValueError, match="shuffled.csv line 2: timestamp must be an ISO date"):
            rt.predict_files(session, [shuffled])


def test_zoo_predict_takes_a_folder_of_images(bundle, tmp_path):
    """The image files in it, sorted; anything else is skipped with a note. A folder with no image, or a
    folder for a tabular model, is one line."""
    import shutil

    from typer.testing import CliRunner

    from zoo.cli import app

    sky = Path(__file__).resolve().parent.parent / "examples" / "images" / "sky.jpg"
    for name in ("b.jpg", "a.JPG"):
        shutil.copy(sky, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "more").mkdir()
    result = CliRunner().invoke(app, ["predict", str(bundle("clouds-cnn")), str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["input"] for a in answers] == [str(tmp_path / "a.JPG"), str(tmp_path / "b.jpg")]
    assert answers[0]["outputs"] == answers[1]["outputs"]
    note = one_line(result.stderr)
    assert "skipped 2 entries that are not an image file: more/, notes.txt" in note
    empty = tmp_path / "more"
    result = CliRunner().invoke(app, ["predict", str(bundle("clouds-cnn")), str(empty)])
    assert result.exit_code == 2 and f"folder {empty} has no image files" in one_line(result)
    result = CliRunner().invoke(app, ["predict", str(bundle("water-mlp")), str(tmp_path)])
    assert result.exit_code == 2 and "is a folder; water-mlp takes one CSV file" in one_line(result)


def test_a_two_input_model_without_its_other_input_suggests_set_with_a_valid_value(bundle):
    from typer.testing import CliRunner

    from zoo.cli import app

    sky = Path(__file__).resolve().parent.parent / "examples" / "images" / "sky.jpg"
    result = CliRunner().invoke(app, ["predict", str(bundle("omniglot-two-input")), str(sky)])
    text = one_line(result)
    assert result.exit_code == 2 and "add --set alphabet=Alphabet_of_the_Magi (one of 30" in text
    result = CliRunner().invoke(app, ["predict", str(bundle("omniglot-two-input")), str(sky),
                                      "--set", "alphabet=Alphabet_of_the_Magi", "--json"])
    assert result.exit_code == 0, result.output


def test_bench_labels_the_eager_baseline_weights_truthfully(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from zoo.bench import _eager_weights
    from zoo.weights import sha256_file

    monkeypatch.setenv("ZOO_WEIGHTS", str(tmp_path))
    save_file(registry.build("thermometer-mlp", seed=3).state_dict(), str(tmp_path / "mine.safetensors"))
    digest = sha256_file(tmp_path / "mine.safetensors")
    assert _eager_weights("thermometer-mlp", rt.WeightsRecord(random=True))[0] is None
    path, label = _eager_weights("thermometer-mlp", rt.WeightsRecord(sha256=digest))
    assert path == str(tmp_path / "mine.safetensors") and "source weights" in label
    path, label = _eager_weights("thermometer-mlp", rt.WeightsRecord(sha256="0" * 64))
    assert path is None and "not the bundle's source weights (latency only)" in label
