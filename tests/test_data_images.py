"""Image dataset adapters (omniglot, MNIST family, CIFAR): built-in samples, every supported on-disk
format (tiny fixtures written here), bad data, and training-time vs runtime preprocessing."""

import gzip
import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from zoo import registry
from zoo.catalog import CIFAR10_CLASSES, OMNIGLOT_ALPHABETS, OMNIGLOT_CHARACTERS
from zoo.data import DataError, builtin, load, model_inputs
from zoo.data._imagefiles import write_tar
from zoo.data.digits import write_idx

IMAGE_DATASETS = {"omniglot", "mnist", "mnist_sample", "fashion_mnist", "cifar10", "cifar2"}
SPECS = sorted(s.name for s in map(registry.get, registry.names()) if s.dataset in IMAGE_DATASETS)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """Built-in samples go to a private cache, written once for this module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("ZOO_CACHE", str(tmp_path_factory.mktemp("zoo-cache")))
    yield
    mp.undo()


def spec(name):
    return registry.get(name)


# --- built-in samples ----------------------------------------------------------------------------

def test_every_image_dataset_has_specs():
    assert {registry.get(n).dataset for n in SPECS} == IMAGE_DATASETS


@pytest.mark.parametrize("name", SPECS)
def test_builtin_sample_shapes_labels_fingerprint(name):
    s = spec(name)
    train, again, test = load(s), load(s), load(s, None, "test")
    assert train.source == "built-in" and len(train) > len(test) > 0
    for t in s.inputs:
        x, pre = train.inputs[t.name], s.preprocess[t.name]
        if pre.kind == "image":
            channels = 1 if pre.mode == "L" else 3
            assert x.dtype == torch.uint8 and tuple(x.shape) == (len(train), channels, *pre.size)
        else:  # the omniglot alphabet, stored as category indices
            assert x.dtype == torch.int64 and tuple(x.shape) == (len(train),)
            assert 0 <= x.min() and x.max() < len(pre.vocabulary)
    for t in s.outputs:
        y = train.targets[t.name]
        if s.task == "binary":
            assert y.dtype == torch.float32 and tuple(y.shape) == (len(train), 1)
            assert set(y.flatten().tolist()) == {0.0, 1.0}
        else:
            assert y.dtype == torch.int64 and y.shape == (len(train),)
            assert 0 <= y.min() and y.max() < len(s.labels[t.name])
    model = model_inputs(train.preprocess, train.subset(torch.arange(4)).inputs)
    for t in s.inputs:
        assert tuple(model[t.name].shape[1:]) == tuple(t.shape[1:]) and model[t.name].dtype == torch.float32
    assert len(train.fingerprint) == 64 and train.fingerprint == again.fingerprint != test.fingerprint
    assert all(torch.equal(train.inputs[k], again.inputs[k]) for k in train.inputs)


def test_builtin_classes_are_balanced():
    for name, classes in (("lenet-mnist", 10), ("fashion-mnist-mlp", 10), ("cifar10-net", 10), ("cifar2-net", 2)):
        counts = torch.bincount(load(spec(name)).targets["logits"])
        assert len(counts) == classes and counts.min() == counts.max() > 0


def test_builtin_writers_are_deterministic(tmp_path):
    for dataset in ("omniglot", "mnist", "mnist_sample", "fashion_mnist", "cifar10"):
        writer = registry.load_function(registry.dataset(dataset).sample)
        contents = []
        for copy in ("a", "b"):
            folder = tmp_path / dataset / copy
            folder.mkdir(parents=True)
            writer(folder, "test")
            contents.append({p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()})
        assert contents[0] == contents[1] and contents[0], dataset


def test_fingerprint_does_not_depend_on_where_the_files_are(tmp_path):
    source = builtin.materialize("mnist_sample", "train")
    shutil.copytree(source, tmp_path / "copy")
    s = spec("mnist-3v7-linear")
    assert load(s, tmp_path / "copy").fingerprint == load(s).fingerprint


# --- training-time decoding equals runtime preprocessing ------------------------------------------

def _omniglot_tree(root, characters, per=2):
    rng = np.random.default_rng(0)
    for key in characters:
        (root / key).mkdir(parents=True)
        for i in range(per):
            bits = rng.random((105, 105)) > 0.1
            Image.fromarray(bits).convert("1").save(root / key / f"0001_{i:02d}.png")


def test_omniglot_labels_come_from_the_fixed_maps(tmp_path):
    keys = ["Latin/character03", "Greek/character01", "Tifinagh/character55"]
    _omniglot_tree(tmp_path / "omniglot_test", keys)
    (tmp_path / "omniglot_train").mkdir()
    two_output = load(spec("omniglot-two-output"), tmp_path, "test")
    assert two_output.targets["character"].tolist() == [OMNIGLOT_CHARACTERS.index(k) for k in sorted(keys) for _ in range(2)]
    assert two_output.targets["alphabet"].tolist() == [OMNIGLOT_ALPHABETS.index(k.split("/")[0])
                                                       for k in sorted(keys) for _ in range(2)]
    assert two_output.inputs["image"].shape == (6, 1, 64, 64)
    (tmp_path / "omniglot_train").rmdir()
    with pytest.raises(DataError, match="holds omniglot_test but no omniglot_train/ for the train split"):
        load(spec("omniglot-two-output"), tmp_path, "train")
    two_input = load(spec("omniglot-two-input"), tmp_path / "omniglot_test", "train")
    assert set(two_input.targets) == {"character"} and set(two_input.inputs) == {"image", "alphabet"}
    assert torch.equal(two_input.inputs["alphabet"], two_output.targets["alphabet"])
    one_hot = model_inputs(two_input.preprocess, two_input.inputs)["alphabet"]
    assert torch.equal(one_hot.argmax(1), two_output.targets["alphabet"]) and torch.equal(one_hot.sum(1), torch.ones(6))
    assert two_input.fingerprint == two_output.fingerprint


@pytest.mark.parametrize("problem, expected", [
    ("unknown alphabet", "unknown alphabet folder 'Klingon'"),
    ("unknown character", "unknown character folder 'Latin/character27'"),
    ("empty character", "'Latin/character02' has no images"),
    ("corrupt image", "cannot read image Latin/character01/0001_00.png"),
    ("no alphabets", "no alphabet folders"),
])
def test_omniglot_bad_data(tmp_path, problem, expected):
    if problem != "no alphabets":
        _omniglot_tree(tmp_path, ["Latin/character01"], per=1)
    if problem == "unknown alphabet":
        _omniglot_tree(tmp_path, ["Klingon/character01"], per=1)
    elif problem == "unknown character":
        _omniglot_tree(tmp_path, ["Latin/character27"], per=1)
    elif problem == "empty character":
        (tmp_path / "Latin/character02").mkdir()
    elif problem == "corrupt image":
        (tmp_path / "Latin/character01/0001_00.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load(spec("omniglot-two-output"), tmp_path)


# --- MNIST family ---------------------------------------------------------------------------------

def _digits(n_per=2):
    """Label-major random digits, so file-name order (000.png, 001.png, ...) is the array order."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10, dtype=np.uint8), n_per)
    return rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8), labels


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_csv(path, images, labels, header=False, label_first=False):
    rows = []
    if header:
        names = [f"pixel{i}" for i in range(784)]
        rows.append(",".join(["label"] + names if label_first else names + ["label"]))
    for img, lab in zip(images, labels):
        values = [str(v) for v in img.reshape(-1)]
        rows.append(",".join([str(lab)] + values if label_first else values + [str(lab)]))
    text = "\n".join(rows) + "\n"
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _mnist_sources(root, images, labels, split="train"):
    prefix = "train" if split == "train" else "t10k"
    sources = {}
    (root / "idx").mkdir()
    write_idx(root / "idx" / f"{prefix}-images-idx3-ubyte.gz", images)
    write_idx(root / "idx" / f"{prefix}-labels-idx1-ubyte.gz", labels)
    sources["idx gz"] = root / "idx"
    raw = root / "tv" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        write_idx(raw / f"{name}.gz", array)
        (raw / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
        (raw / f"{name}.gz").unlink()
    sources["torchvision raw"] = root / "tv"
    sources["idx file"] = raw / f"{prefix}-images-idx3-ubyte"
    members = [(f"{split}/{lab}/{i:03d}.png", _png(img)) for i, (img, lab) in enumerate(zip(images, labels))]
    (root / "tar").mkdir()
    write_tar(root / "tar" / f"mnist_{split}_png.tar.gz", members)
    sources["png tar"] = root / "tar" / f"mnist_{split}_png.tar.gz"
    sources["folder with png tar"] = root / "tar"
    for name, data in members:
        (root / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "tree" / name).write_bytes(data)
    sources["tree"] = root / "tree"
    sources["class folders"] = root / "tree" / split
    sources["csv gz"] = _write_csv(root / "mnist_5k.csv.gz", images, labels)
    sources["csv header, label first"] = _write_csv(root / "kaggle.csv", images, labels, header=True, label_first=True)
    (root / "csvdir").mkdir()
    _write_csv(root / "csvdir" / f"digits_{split}.csv", images, labels, header=True)
    sources["folder with csv"] = root / "csvdir"
    return sources


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist_every_format_gives_the_same_data(tmp_path, split):
    images, labels = _digits()
    for what, path in _mnist_sources(tmp_path, images, labels, split).items():
        data = load(spec("lenet-mnist"), path, split)
        assert data.inputs["image"].dtype == torch.uint8, what
        assert np.array_equal(data.inputs["image"][:, 0].numpy(), images), what
        assert data.targets["logits"].tolist() == labels.tolist(), what
        assert len(data.fingerprint) == 64, what


def test_fashion_mnist_idx_and_csv(tmp_path):
    images, labels = _digits(3)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw / "t10k-images-idx3-ubyte.gz", images)
    write_idx(raw / "t10k-labels-idx1-ubyte.gz", labels)
    for path, split in ((tmp_path, "test"), (_write_csv(tmp_path / "fashion.csv", images, labels, True, True), "train")):
        data = load(spec("fashion-mnist-mlp"), path, split)
        assert np.array_equal(data.inputs["image"][:, 0].numpy(), images)
        assert data.targets["logits"].tolist() == labels.tolist()
    with pytest.raises(DataError, match="found no train data"):
        load(spec("fashion-mnist-mlp"), raw.parent, "train")
    (tmp_path / "only_train").mkdir()
    _write_csv(tmp_path / "only_train" / "mnist_5k.csv.gz", images, labels)
    assert len(load(spec("lenet-mnist"), tmp_path / "only_train", "train")) == len(labels)
    with pytest.raises(DataError, match="found no test data"):  # never the training CSV as the test split
        load(spec("lenet-mnist"), tmp_path / "only_train", "test")


def test_mnist_sample_targets_three_is_one(tmp_path):
    rng = np.random.default_rng(2)
    rows = ["name,label"]
    for folder in ("train", "valid"):
        for digit, count in (("3", 3), ("7", 2)):
            (tmp_path / folder / digit).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / folder / digit / f"{i}.png")
                rows.append(f"{folder}/{digit}/{i}.png,{0 if digit == '3' else 1}")
    (tmp_path / "labels.csv").write_text("\n".join(rows))
    s = spec("mnist-3v7-linear")
    assert s.labels["logit"] == ("7", "3")
    for path, split in ((tmp_path, "train"), (tmp_path, "test"), (tmp_path / "valid", "test")):
        data = load(s, path, split)
        assert data.targets["logit"].flatten().tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]  # "7" then "3"
        assert data.inputs["pixels"].shape == (5, 1, 28, 28)
        assert model_inputs(data.preprocess, data.inputs)["pixels"].shape == (5, 784)
    (tmp_path / "train" / "7" / "0.png").unlink()
    (tmp_path / "train" / "7" / "1.png").unlink()
    with pytest.raises(DataError, match="class folder '7' has no images"):
        load(s, tmp_path, "train")
    with pytest.raises(DataError, match="expected folders 7/3"):
        load(s, tmp_path / "train" / "3", "train")


def _idx_bytes(array, magic=None):
    header = (magic or 0x800 + array.ndim).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


@pytest.mark.parametrize("problem, expected", [
    ("wrong magic", "magic number 2049, expected 2051"),
    ("truncated idx", "header says 20x28x28 = 15680 bytes of data, file has 15000 (truncated)"),
    ("bad gzip", "not a readable gzip file"),
    ("missing labels", "missing the labels file"),
    ("count mismatch", "(20 images) and train-labels-idx1-ubyte.gz (19 labels) do not match"),
    ("label out of range", "labels must be 0-9"),
    ("csv columns", "CSV digits.csv: 11 columns, expected 785"),
    ("csv non-numeric", "expected 785 numeric columns per row"),
    ("csv range", "whole numbers 0-255"),
    ("missing class folder", "missing class folder(s) ['9']"),
    ("empty class folder", "class folder '4' has no images"),
    ("corrupt png", "cannot read image train/3/006.png"),
    ("corrupt tar", "cannot read the tar archive"),
    ("nothing there", "found no train data"),
])
def test_mnist_bad_data(tmp_path, problem, expected):
    images, labels = _digits()
    path = tmp_path / "data"
    path.mkdir()
    idx_images, idx_labels = path / "train-images-idx3-ubyte.gz", path / "train-labels-idx1-ubyte.gz"
    if problem in ("wrong magic", "truncated idx", "bad gzip", "missing labels", "count mismatch",
                   "label out of range"):
        body = {"wrong magic": _idx_bytes(images, 2049), "truncated idx": _idx_bytes(images)[:15016]}
        idx_images.write_bytes(b"not gzip" if problem == "bad gzip" else gzip.compress(body.get(problem, _idx_bytes(images))))
        if problem != "missing labels":
            lab = labels[:19] if problem == "count mismatch" else labels + (5 if problem == "label out of range" else 0)
            idx_labels.write_bytes(gzip.compress(_idx_bytes(lab)))
    elif problem.startswith("csv"):
        _write_csv(path / "digits.csv", images, labels)
        text = (path / "digits.csv").read_text().splitlines()
        if problem == "csv columns":
            text = [",".join(line.split(",")[:11]) for line in text]
        elif problem == "csv non-numeric":
            text[3] = text[3].replace("", "x", 1)
        else:
            text[2] = "300" + text[2][text[2].index(","):]
        path = path / "digits.csv"
        path.write_text("\n".join(text))
    elif problem in ("missing class folder", "empty class folder"):
        skip = 9 if problem == "missing class folder" else 4
        for i, (img, lab) in enumerate(zip(images, labels)):
            if lab != skip:
                (path / str(lab)).mkdir(exist_ok=True)
                Image.fromarray(img).save(path / str(lab) / f"{i}.png")
        (path / "4").mkdir(exist_ok=True)
    elif problem == "corrupt png":
        members = [(f"train/{lab}/{i:03d}.png", _png(img)) for i, (img, lab) in enumerate(zip(images, labels))]
        members = [(n, b"garbage" if n.startswith("train/3/") else d) for n, d in members]
        write_tar(path / "mnist_train_png.tar.gz", members)
    elif problem == "corrupt tar":
        (path / "mnist_train_png.tar.gz").write_bytes(gzip.compress(b"\x00" * 100)[:40])
    with pytest.raises(DataError) as error:
        load(spec("lenet-mnist"), path)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_bad_data_is_exit_code_2_on_the_cli(tmp_path):
    from zoo.cli import app

    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 5)
    result = CliRunner().invoke(app, ["train", "lenet-mnist", "--data", str(tmp_path), "--out", str(tmp_path / "w")])
    output = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 2, output
    assert "magic number 2049, expected 2051" in output and "Traceback" not in output


# --- CIFAR ----------------------------------------------------------------------------------------

def _cifar_arrays(per=2):
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(10), per)
    return rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8), labels


def _write_batches(folder, images, labels):
    folder.mkdir(parents=True)
    for name, part in [(f"data_batch_{i}", slice(4 * (i - 1), 4 * i)) for i in range(1, 6)] + [("test_batch", slice(0, 20))]:
        batch = {"batch_label": name, "data": images[part].reshape(-1, 3072), "labels": labels[part].tolist(),
                 "filenames": [f"{i}.png" for i in range(len(labels[part]))]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2 if name == "test_batch" else 4))


def test_cifar_batches_tree_and_tar_agree(tmp_path):
    images, labels = _cifar_arrays()
    _write_batches(tmp_path / "tv" / "cifar-10-batches-py", images, labels)
    members = [(f"{split}/{CIFAR10_CLASSES[lab]}/{i:04d}.png", _png(img.transpose(1, 2, 0)))
               for split in ("train", "test") for i, (img, lab) in enumerate(zip(images, labels))]
    write_tar(tmp_path / "both.tar.gz", members)
    for name, data in members:
        (tmp_path / "tree" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / name).write_bytes(data)
    for split in ("train", "test"):
        for path in (tmp_path / "tv", tmp_path / "tv" / "cifar-10-batches-py", tmp_path / "both.tar.gz",
                     tmp_path / "tree", tmp_path / "tree" / split):
            ten = load(spec("cifar10-net"), path, split)
            assert np.array_equal(ten.inputs["image"].numpy(), images), (path, split)
            assert ten.targets["logits"].tolist() == labels.tolist()
            two = load(spec("cifar2-fc"), path, split)
            keep = (labels == 0) | (labels == 2)
            assert np.array_equal(two.inputs["image"].numpy(), images[keep])
            assert two.targets["logits"].tolist() == [0, 0, 1, 1]  # airplane 0, bird 1


def test_cifar_batches_are_never_plainly_unpickled(tmp_path):
    images, labels = _cifar_arrays()
    folder = tmp_path / "cifar-10-batches-py"
    _write_batches(folder, images, labels)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": Evil(), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="data_batch_3: not a readable CIFAR python batch .*not allowed"):
        load(spec("cifar10-net"), tmp_path)
    assert not marker.exists()
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="missing data_batch_3 for the train split"):
        load(spec("cifar10-net"), tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:200])
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR python batch"):
        load(spec("cifar10-net"), tmp_path, "test")


def test_cifar_bad_images_and_folders(tmp_path):
    path = builtin.materialize("cifar10", "test")
    members = []
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.isfile():
                members.append((m.name, tar.extractfile(m).read()))
    broken = [(n, d[: len(d) // 3] if n == "test/bird/0003.jpg" else d) for n, d in members]
    write_tar(tmp_path / "cifar10_test_jpg.tar.gz", broken)
    with pytest.raises(DataError, match="cannot read image test/bird/0003.jpg"):
        load(spec("cifar2-net"), tmp_path, "test", strict=True)
    kept = load(spec("cifar2-net"), tmp_path, "test")   # without strict: left out, listed and counted
    assert len(kept) == 19 and len(kept.skipped) == 1 and kept.skipped[0].startswith("cannot read image test/bird/0003")
    assert any("skipped 1 unreadable image" in note for note in kept.notes)
    without_bird = [(n, d) for n, d in members if "/bird/" not in n]
    write_tar(tmp_path / "cifar10_test_jpg.tar.gz", without_bird)
    with pytest.raises(DataError, match=r"missing class folder\(s\) \['bird'\]"):
        load(spec("cifar10-net"), tmp_path, "test")
    with pytest.raises(DataError, match="found no train data"):
        load(spec("cifar10-net"), tmp_path, "train")
