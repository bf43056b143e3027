"""The one preprocessing: every registered model's raw inputs reach the model identically through
training's data path and through the runtime; the objects read, validate, fit and apply as documented."""

import csv
import gzip
import io
import json
import tarfile
from dataclasses import replace as dataclass_replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import zoo.runtime as rt
from zoo import data as zdata, registry
from zoo.contract import (ImagePreprocess, InvalidField, OneHotPreprocess, SeriesPreprocess, Signature,
                          TabularPreprocess, TensorSpec, preprocess_from_dict, preprocessing_from_dict)
from zoo.training._trainer import fit_preprocessing

from conftest import manifest_of

N = 6  # samples compared per model


# --- raw inputs of each built-in sample, in the order its adapter stores them --------------------------

def _files_by_class(root: Path, classes) -> list[str]:
    return [str(p) for c in classes for p in sorted((root / c).iterdir())]


def _tar_images(path: Path, classes) -> list[bytes]:
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.split("/")[-2] in classes]
        by_class = {c: [tar.extractfile(m).read() for m in members if m.name.split("/")[-2] == c] for c in classes}
    return [item for c in classes for item in by_class[c]]


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def raw_inputs(spec, split="train") -> dict[str, list]:
    """{input name: the first N raw inputs}, read from the built-in sample's files as a user has them."""
    record = registry.dataset(spec.dataset)
    path = zdata.builtin.materialize(spec.dataset, split)
    name = spec.inputs[0].name
    if spec.dataset in ("clouds", "mnist_sample", "pizza_steak", "food10"):
        root = {"mnist_sample": path / "train", "pizza_steak": path / "train",
                "food10": path / "10_food_classes_10_percent" / "train"}.get(spec.dataset, path)
        files = _files_by_class(root, record.classes)
        return {name: files[:N // 2] + files[-(N - N // 2):]}   # both ends: every class of a binary set
    if spec.dataset in ("mnist", "cifar10", "cifar2"):
        return {name: _tar_images(path, record.classes)[:N]}
    if spec.dataset == "fashion_mnist":
        with gzip.open(path / "train-images-idx3-ubyte.gz") as f:
            return {name: list(np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:N])}
    if spec.dataset == "omniglot":
        files = sorted(path.glob("*/*/*.png"), key=lambda p: p.relative_to(path).parts)[:N]
        raw = {"image": [str(f) for f in files]}
        if "alphabet" in spec.preprocess:
            raw["alphabet"] = [f.parent.parent.name for f in files]
        return raw
    if spec.dataset == "electricity":
        values = [float(r["consumption"]) for r in _csv_rows(path)]
        window = spec.preprocess[name].window
        return {name: [values[: window + i] for i in range(N)]}   # the runtime forecasts after each prefix
    if record.columns:   # a table
        return {name: _csv_rows(path if path.is_file() else next(path.glob("*.csv")))[:N]}
    raise AssertionError(f"no raw reader for dataset {spec.dataset!r}: add one to this test")


def runtime_session(spec, preprocess) -> rt.Session:
    """A runtime Session whose manifest carries `preprocess`; prepare() needs no model file."""
    manifest = manifest_of(spec, preprocess)
    no_model = SimpleNamespace(run=None)   # prepare() never runs the model
    return rt.Session(manifest, engine=no_model, backend="onnxruntime", device="cpu")


@pytest.mark.parametrize("name", registry.names())
def test_training_and_runtime_feed_the_model_the_same_numbers(name):
    spec = registry.get(name)
    dataset = zdata.load(spec)
    dataset.preprocess = fit_preprocessing(dataset, torch.arange(len(dataset)))
    raw = raw_inputs(spec)
    session = runtime_session(spec, dataset.preprocess)
    if spec.is_sequence:   # one forecast per series prefix
        served = {k: np.concatenate([session.prepare({k: series})[k] for series in v]) for k, v in raw.items()}
    else:
        served = session.prepare(raw if len(raw) > 1 else next(iter(raw.values())))
    index = torch.arange(N)
    if spec.dataset in ("clouds", "mnist_sample", "pizza_steak", "food10"):
        index = torch.cat([torch.arange(N // 2), torch.arange(len(dataset) - (N - N // 2), len(dataset))])
    trained = zdata.model_inputs(dataset.preprocess, dataset.subset(index).inputs)
    assert set(served) == set(trained) == {t.name for t in spec.inputs}
    for key in served:
        assert served[key].dtype == np.float32 and served[key].shape == tuple(trained[key].shape)
        np.testing.assert_array_equal(served[key], trained[key].numpy(), err_msg=f"{name}: input {key}")


# --- the objects themselves ---------------------------------------------------------------------------

def test_thermometer_scale_applies_in_both_paths():
    spec = registry.get("thermometer-linear")
    pre = spec.preprocess["reading"]
    assert pre.scale == 0.1
    np.testing.assert_allclose(pre.apply(pre.encode([{"t_u": "35.7"}, {"T_U": 81.9}])), [[3.57], [8.19]], rtol=1e-6)


def test_tabular_categories_minmax_and_ranges():
    pre = TabularPreprocess(columns=("age", "sex", "region"), minmax=True,
                            categories={"sex": ("female", "male"), "region": ("north", "south", "west")})
    assert pre.features == ["age", "sex=male", "region=north", "region=south", "region=west"]
    rows = [{"age": 20, "sex": "male", "region": "west"}, {"age": "60", "sex": "Female ", "region": "north"}]
    x = pre.encode(rows)
    np.testing.assert_array_equal(x, [[20, 1, 0, 0, 1], [60, 0, 1, 0, 0]])
    fitted = pre.fit(x)
    assert fitted.ranges == {"age": (20.0, 60.0)} and fitted.low == (20, 0, 0, 0, 0)
    np.testing.assert_allclose(fitted.apply(fitted.encode({"age": 40, "sex": "male", "region": "south"})),
                               [[0.5, 1, 0, 1, 0]])
    with pytest.raises(ValueError, match="unknown category 'east'; expected one of north, south, west"):
        fitted.encode({"age": 1, "sex": "male", "region": "east"})
    warnings = []
    fitted.encode([{"age": 45, "sex": "male", "region": "west"}, {"age": 200, "sex": "male", "region": "west"}],
                  warn=lambda i, m: warnings.append((i, m)))
    assert warnings == [(1, "age = 200 is outside the training range 20 to 60")]
    again = preprocess_from_dict(json.loads(json.dumps(fitted.to_dict())), "p")
    assert again == fitted


def test_version_1_dicts_read_as_before():
    """Cards and bundles written before this schema (no categories, minmax, ranges, resize) still read."""
    v1 = {"columns": ["ph", "Hardness"], "scale": 1.0, "standardize": True, "kind": "tabular",
          "mean": [0.5, 0.4], "std": [0.1, 0.2]}
    pre = preprocess_from_dict(v1, "preprocess.features")
    assert pre == TabularPreprocess(columns=("ph", "Hardness"), standardize=True, mean=(0.5, 0.4), std=(0.1, 0.2))
    image = preprocess_from_dict({"size": [28, 28], "mode": "L", "pad": 2, "mean": None, "std": None,
                                  "standardize": False, "flatten": False, "kind": "image"}, "p")
    assert image == ImagePreprocess(size=(28, 28), mode="L", pad=2)


@pytest.mark.parametrize("d, field", [
    ({"kind": "image", "size": [64]}, "p.size"),
    ({"kind": "image", "size": [8, 8], "mode": "CMYK"}, "p.mode"),
    ({"kind": "image", "size": [8, 8], "mean": [0.5] * 3}, "p.mean/std"),
    ({"kind": "image", "size": [8, 8], "mean": [0.5] * 3, "std": [0, 1, 1]}, "p.std"),
    ({"kind": "tabular", "columns": []}, "p.columns"),
    ({"kind": "tabular", "columns": ["a"], "mean": [1, 2], "std": [1, 1]}, "p.mean"),
    ({"kind": "tabular", "columns": ["a"], "standardize": True, "minmax": True}, "p.standardize/minmax"),
    ({"kind": "tabular", "columns": ["a"], "categories": {"b": ["x", "y"]}}, "p.categories"),
    ({"kind": "series", "column": "v", "window": 0}, "p.window"),
    ({"kind": "onehot", "vocabulary": ["a", "a"]}, "p.vocabulary"),
    ({"kind": "video"}, "p.kind"),
])
def test_invalid_fields_are_named(d, field):
    with pytest.raises(InvalidField) as info:
        preprocess_from_dict(d, "p")
    assert info.value.field == field and f"invalid `{field}`" in str(info.value)


def test_preprocessing_must_give_the_inputs_shape():
    inputs = (TensorSpec("x", ("batch", 3)),)
    with pytest.raises(InvalidField, match="gives the input's shape \\(3,\\)"):
        preprocessing_from_dict({"x": {"kind": "tabular", "columns": ["a", "b"]}}, inputs)


def test_image_fit_and_apply():
    pre = ImagePreprocess(size=(2, 2), standardize=True)
    pixels = np.stack([np.full((3, 2, 2), v, np.uint8) for v in (0, 255)])
    with pytest.raises(ValueError, match="no fitted mean/std"):
        pre.apply(pixels)
    fitted = pre.fit(pixels)
    np.testing.assert_allclose(fitted.mean, [0.5] * 3)
    out = fitted.apply(pixels)
    assert out.dtype == np.float32 and np.allclose(out.mean(), 0) and out[1].min() > 0 > out[0].max()


def test_crop_resize_keeps_the_aspect():
    pre = ImagePreprocess(size=(4, 4), resize="crop")
    wide = np.zeros((4, 12, 3), np.uint8)
    wide[:, 4:8] = 255   # the centre third is white: a centre crop keeps only it
    assert pre.decode(wide).min() == 255
    assert ImagePreprocess(size=(4, 4)).decode(wide).min() == 0   # stretch keeps the black sides


def test_sixteen_bit_images_are_scaled_and_flagged():
    buffer = io.BytesIO()
    Image.fromarray(30000 + 400 * np.arange(64, dtype=np.uint16).reshape(8, 8)).save(buffer, format="PNG")
    notes = []
    pixels = ImagePreprocess(size=(8, 8), mode="L").decode(buffer.getvalue(), warn=lambda i, m: notes.append(m))
    assert pixels.max() == round(55200 / 257) and notes == ["16-bit image: scaled to 8 bits; the model was "
                                                             "trained on 8-bit images"]


def test_series_and_onehot():
    series = SeriesPreprocess(column="v", window=3).fit(np.array([[[0.0], [1.0], [2.0]]]))
    assert series.range == (0.0, 2.0)
    notes = []
    window = series.encode([5, 0.5, 1.0, 9.0], warn=lambda i, m: notes.append(m))
    assert window.shape == (1, 3, 1) and window[0, -1, 0] == 9.0 and "outside the training range" in notes[0]
    onehot = OneHotPreprocess(vocabulary=("a", "b"))
    np.testing.assert_array_equal(onehot.apply(onehot.encode(["b", "a"])), [[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="unknown category 'c'"):
        onehot.encode("c")


# --- the Signature --------------------------------------------------------------------------------

def _signature(kind: str, width: int, task: str = "binary") -> Signature:
    labels = {"y": tuple(f"c{i}" for i in range(Signature.classes(width)))} if task != "regression" else {}
    return Signature(task, kind, (TensorSpec("x", ("batch", 3)),), (TensorSpec("y", ("batch", width)),), labels)


@pytest.mark.parametrize("kind, width", [("logits", 4), ("logits", 1), ("logit", 1), ("logit", 3),
                                         ("probability", 1), ("probability", 3)])
def test_top1_is_the_class_of_the_largest_probability(kind, width):
    signature = _signature(kind, width)
    raw = np.random.default_rng(0).standard_normal((50, width)).astype(np.float32)
    if kind == "probability":
        raw = 1 / (1 + np.exp(-raw))
    probabilities = signature.probabilities("y", raw)
    assert probabilities.shape == (50, max(width, 2)) and np.all((0 <= probabilities) & (probabilities <= 1))
    if kind == "logits" and width > 1:
        np.testing.assert_allclose(probabilities.sum(1), 1)
    np.testing.assert_array_equal(np.asarray(signature.top1(raw)).astype(int), probabilities.argmax(1))
    tensor = signature.top1(torch.from_numpy(raw))   # the trainer's metrics take torch tensors
    np.testing.assert_array_equal(tensor.numpy().astype(int), probabilities.argmax(1))


def test_a_binary_output_of_width_one_has_negative_and_positive():
    probabilities = _signature("logit", 1).probabilities("y", np.array([[0.0], [np.log(3)]]))
    np.testing.assert_allclose(probabilities, [[0.5, 0.5], [0.25, 0.75]])
    with pytest.raises(InvalidField, match=r"expected 2 class names.*\[negative, positive\]"):
        Signature.from_dict(dict(_signature("logit", 1).to_dict(), labels={"y": ["yes"]}))


def test_regressors_have_no_probabilities_and_classifiers_need_labels():
    with pytest.raises(ValueError, match="no class probabilities"):
        _signature("value", 1, "regression").probabilities("y", np.zeros((1, 1)))
    with pytest.raises(InvalidField, match="`labels.y`: expected the class names of every output of a classifier"):
        Signature.from_dict(dict(_signature("logits", 3).to_dict(), labels={}))


@pytest.mark.parametrize("name", registry.names())
def test_every_spec_signature_reads_back_as_it_was_written(name):
    signature = registry.get(name).signature
    assert Signature.from_dict(signature.to_dict()) == signature
    assert signature.difference(Signature.from_dict(signature.to_dict())) is None


def test_the_first_difference_of_two_signatures_is_what_changes_answers_first():
    spec = registry.get("clouds-cnn").signature
    fitted = spec.with_preprocess({"image": dataclass_replace(spec.preprocess["image"], mean=(0.5,) * 3,
                                                              std=(0.2,) * 3)})
    relabelled = dataclass_replace(fitted, labels={"logits": ("a",) * 7})
    assert fitted.difference(spec) == ("preprocess.image.mean", [0.5] * 3, None)
    assert relabelled.difference(spec)[0] == "preprocess.image.mean"   # preprocessing before labels
    assert relabelled.difference(fitted) == ("labels.logits[0]", "a", "cirriform clouds")
    assert dataclass_replace(spec, task="binary").difference(relabelled)[0] == "task"


def test_random_inputs_are_in_the_range_the_preprocessing_gives():
    signature = registry.get("omniglot-two-input").signature
    rng = np.random.default_rng(0)
    arrays = signature.random_inputs(5, 1, rng)
    image, alphabet = arrays["image"], arrays["alphabet"]
    assert image.shape == (5, 1, 64, 64) and image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
    assert alphabet.shape == (5, 30) and np.all(alphabet.sum(1) == 1) and set(np.unique(alphabet)) == {0, 1}
    series = registry.get("electricity-gru").signature.random_inputs(2, 7, rng)["series"]
    assert series.shape == (2, 7, 1)
