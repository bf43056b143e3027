"""Bundles from anyone: no code of theirs runs unless the caller trusts them, signatures say who made a bundle,
every file the model reads is checked, and a manifest cannot make the runtime allocate without bound."""

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import zoo.runtime as rt
from zoo import registry
from zoo.cli import app
from zoo.contract import LIMITS
from zoo.weights import sha256_file

from conftest import edit_manifest, edited_copy, one_line, read_manifest, zoo_serve

runner = CliRunner()
V2 = Path(__file__).resolve().parent / "fixtures" / "v2" / "mnist-3v7-linear-onnx"


def _fix_checksum(folder: Path) -> None:
    """What a hostile author does: the manifest's checksum made to match the model file."""
    edit_manifest(folder, lambda m: m.update(file_sha256=sha256_file(folder / m["file"])))


def _points(tmp_path: Path) -> str:
    (tmp_path / "points.csv").write_text("x1,x2\n0.5,0.5\n")
    return str(tmp_path / "points.csv")


# --- hostile bundles: code that runs inside torch.export.load / torch.jit.load ------------------------------

class PickledCode:
    """A weight whose unpickling writes `marker`, then returns the weight so that loading goes on normally."""

    def __init__(self, marker: Path, shape: list[int]):
        self.marker, self.shape = marker, shape

    def __reduce__(self):
        code = (f"(__import__('pathlib').Path({str(self.marker)!r}).write_text('ran'), "
                f"__import__('torch').nn.Parameter(__import__('torch').zeros({self.shape})))[1]")
        return eval, (code,)


@pytest.fixture
def hostile_pt2(bundle, tmp_path):
    """circles-mlp's pt2 bundle with one weight marked use_pickle (torch.export.load unpickles it with
    weights_only=False), its checksum fixed; the sealed manifest is untouched, so every check passes."""
    folder = shutil.copytree(bundle("circles-mlp", "pt2"), tmp_path / "hostile-pt2")
    marker = tmp_path / "pt2-code-ran"
    model = folder / "model.pt2"
    source = zipfile.ZipFile(io.BytesIO(model.read_bytes()))
    config_name = next(n for n in source.namelist() if n.endswith("data/weights/model_weights_config.json"))
    config = json.loads(source.read(config_name))
    entry = next(iter(config["config"].values()))
    entry["use_pickle"] = True
    shape = [size["as_int"] for size in entry["tensor_meta"]["sizes"]]
    payload = io.BytesIO()
    torch.save(PickledCode(marker, shape), payload)
    weight_name = config_name.rsplit("/", 1)[0] + "/" + entry["path_name"]
    with zipfile.ZipFile(model, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            data = {config_name: json.dumps(config).encode(), weight_name: payload.getvalue()}.get(info.filename)
            out.writestr(info.filename, source.read(info) if data is None else data)
    _fix_checksum(folder)
    return folder, marker


class FileWriter(torch.nn.Module):
    """A scripted module whose __setstate__, run by torch.jit.load, overwrites the file at `path`."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def forward(self, x):
        return torch.zeros(x.shape[0], 1)

    @torch.jit.export
    def __getstate__(self):
        return self.path, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]):
        self.path = state[0]
        written = torch.from_file(self.path, shared=True, size=4, dtype=torch.uint8).fill_(66)
        self.training = bool(written.sum() > 0) and state[1]


@pytest.fixture
def hostile_torchscript(bundle, tmp_path):
    """circles-mlp's TorchScript bundle with the model file replaced by a FileWriter sealed with the bundle's
    own manifest, its checksum fixed."""
    folder = shutil.copytree(bundle("circles-mlp", "torchscript"), tmp_path / "hostile-ts")
    victim = tmp_path / "victim.bin"
    module = torch.jit.script(FileWriter(str(victim)))
    torch.jit.save(module, str(folder / "model.ts"), _extra_files={"zoo.manifest": rt.seal_text(read_manifest(folder))})
    victim.write_bytes(b"AAAA")
    _fix_checksum(folder)
    return folder, victim


def test_a_hostile_pt2_bundle_runs_nothing_unless_trusted(hostile_pt2, tmp_path):
    folder, marker = hostile_pt2
    with pytest.raises(rt.UntrustedCode) as info:
        rt.load(folder)
    message = str(info.value)
    assert "trust_code=True" in message and "--trust-code" in message and "run any code" in message
    assert "\n" not in message and info.value.exit_code == 2 and not marker.exists()
    for args in (["predict", str(folder), _points(tmp_path)], ["verify", str(folder)],
                 ["serve", str(folder), "--port", "0"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "--trust-code" in one_line(result), (args, result.output)
        assert not marker.exists(), args
    result = runner.invoke(app, ["bench", str(folder), "--backend", "pt2", "--device", "cpu", "--batch", "1",
                                 "--iters", "1", "--warmup", "0"])
    assert result.exit_code == 1 and "--trust-code" in one_line(result) and not marker.exists()
    # the bundle is really hostile: trusted, its code runs inside torch.export.load
    rt.load(folder, trust_code=True).close()
    assert marker.read_text() == "ran"


def test_a_hostile_torchscript_bundle_touches_no_file_unless_trusted(hostile_torchscript, tmp_path):
    folder, victim = hostile_torchscript
    with pytest.raises(rt.UntrustedCode, match="--trust-code"):
        rt.load(folder)
    for args in (["predict", str(folder), _points(tmp_path)], ["verify", str(folder)]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "--trust-code" in one_line(result)
    assert victim.read_bytes() == b"AAAA"
    with rt.load(folder, trust_code=True) as session:   # trusted: __setstate__ wrote the file while loading
        assert victim.read_bytes() == b"BBBB"
        assert session.predict(np.zeros((2, 2), np.float32))[session.output_names[0]].shape == (2, 1)


def test_the_refusal_comes_before_torch_opens_the_file(bundle, monkeypatch):
    """torch.jit.load and torch.export.load run the file's code themselves, so they must never be called."""
    def opened(*args, **kwargs):
        raise AssertionError("torch opened an untrusted file")

    monkeypatch.setattr(torch.jit, "load", opened)
    monkeypatch.setattr(torch.export, "load", opened)
    for fmt in ("torchscript", "pt2"):
        with pytest.raises(rt.UntrustedCode):
            rt.load(bundle("circles-mlp", fmt))
        with pytest.raises(rt.UntrustedCode):
            rt.load(bundle("circles-mlp", fmt), verify=False)


def test_serve_loads_onnx_without_the_flag_and_torch_formats_only_with_it(bundle, monkeypatch):
    result, sessions = zoo_serve(monkeypatch, bundle("circles-mlp"))
    assert result.exit_code == 0 and [s.backend for s in sessions] == ["onnxruntime"]
    result, sessions = zoo_serve(monkeypatch, bundle("circles-mlp", "torchscript"))
    assert result.exit_code == 2 and "--trust-code" in one_line(result) and not sessions
    result, sessions = zoo_serve(monkeypatch, bundle("circles-mlp", "torchscript"), "--trust-code")
    assert result.exit_code == 0, result.output
    assert [s.backend for s in sessions] == ["torchscript"]


# --- signatures: who made a bundle -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    for name in ("alice", "mallory"):
        result = runner.invoke(app, ["keygen", str(root / f"{name}.pem")])
        assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def signed(keys, tmp_path_factory):
    out = tmp_path_factory.mktemp("signed")
    result = runner.invoke(app, ["export", "circles-mlp", "--random-weights", "--out", str(out),
                                 "--sign", str(keys / "alice.pem")])
    assert result.exit_code == 0, result.output
    return out / "circles-mlp-onnx"


def test_keygen_keeps_the_private_key_private_and_never_overwrites(keys):
    assert os.stat(keys / "alice.pem").st_mode & 0o777 == 0o600
    assert (keys / "alice.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = (keys / "alice.pem").read_bytes()
    result = runner.invoke(app, ["keygen", str(keys / "alice.pem")])
    assert result.exit_code == 2 and "never overwritten" in one_line(result)
    assert (keys / "alice.pem").read_bytes() == before


def test_a_signed_bundle_loads_with_its_makers_key_and_no_other(signed, keys, bundle):
    assert (signed / rt.SIGNATURE_NAME).is_file()
    rt.load(signed, trusted_keys=[keys / "alice.pub"]).close()
    rt.load(signed, trusted_keys=[keys / "mallory.pub", keys / "alice.pub"]).close()
    with pytest.raises(rt.SignatureError, match="none of the trusted keys") as info:
        rt.load(signed, trusted_keys=[keys / "mallory.pub"])
    assert info.value.exit_code == 1 and "\n" not in str(info.value)
    with pytest.raises(rt.SignatureError, match=r"is not signed \(no model.sig\)"):
        rt.load(bundle("circles-mlp"), trusted_keys=[keys / "alice.pub"])
    rt.load(signed).close()   # without trusted keys a signature is not required, nor checked


def test_re_signing_covers_the_files_a_user_kept_in_the_bundle(keys, tmp_path):
    """A re-export carries a user's files over (they are never deleted) and signs the folder with them in it;
    the old signature is not carried over as if it were the user's."""
    out = tmp_path / "out"
    command = ["export", "circles-mlp", "--random-weights", "--out", str(out), "--sign", str(keys / "alice.pem")]
    assert runner.invoke(app, command).exit_code == 0
    folder = out / "circles-mlp-onnx"
    (folder / "notes.txt").write_text("mine")
    old_signature = (folder / rt.SIGNATURE_NAME).read_bytes()
    result = runner.invoke(app, [*command[:-2], "--sign", str(keys / "mallory.pem")])
    assert result.exit_code == 0, result.output
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / rt.SIGNATURE_NAME).read_bytes() != old_signature
    rt.load(folder, trusted_keys=[keys / "mallory.pub"]).close()
    with pytest.raises(rt.SignatureError):
        rt.load(folder, trusted_keys=[keys / "alice.pub"])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("change, reason", [
    (lambda b: _flip_a_byte(b / "model.onnx"), "changed: model.onnx"),
    (lambda b: b.joinpath("manifest.json").write_text(b.joinpath("manifest.json").read_text() + " "),
     "changed: manifest.json"),
    (lambda b: b.joinpath("notes.txt").write_text("added"), "added: notes.txt"),
    (lambda b: b.joinpath(".gitignore").write_text("*"), "added: .gitignore"),
    (lambda b: b.joinpath("model.sig").unlink(), "is not signed"),
])
def test_a_signed_bundle_changed_anywhere_is_refused(signed, keys, tmp_path, change, reason):
    folder = shutil.copytree(signed, tmp_path / "b")
    change(folder)
    with pytest.raises(rt.SignatureError, match=reason):
        rt.load(folder, trusted_keys=[keys / "alice.pub"])
    result = runner.invoke(app, ["predict", str(folder), _points(tmp_path), "--trusted-key", str(keys / "alice.pub")])
    assert result.exit_code == 1 and reason in one_line(result)


def test_signature_flags_on_the_commands(signed, keys, tmp_path, monkeypatch):
    import zoo.serve

    points = _points(tmp_path)
    assert runner.invoke(app, ["predict", str(signed), points, "--trusted-key", str(keys / "alice.pub")]).exit_code == 0
    result = runner.invoke(app, ["predict", str(signed), points, "--trusted-key", str(keys / "mallory.pub")])
    assert result.exit_code == 1 and "none of the trusted keys" in one_line(result)
    result = runner.invoke(app, ["verify", str(signed), "--trusted-key", str(keys / "mallory.pub")])
    assert result.exit_code == 1 and "none of the trusted keys" in one_line(result)
    assert runner.invoke(app, ["verify", str(signed), "--trusted-key", str(keys / "alice.pub")]).exit_code == 0
    monkeypatch.setattr(zoo.serve, "serve", lambda *a, **k: None)
    result = runner.invoke(app, ["serve", str(signed), "--port", "0", "--trusted-key", str(keys / "mallory.pub")])
    assert result.exit_code == 1 and "none of the trusted keys" in one_line(result)


def test_export_refuses_a_bad_signing_key_before_the_work(tmp_path):
    (tmp_path / "key.pem").write_text("not a key")
    result = runner.invoke(app, ["export", "circles-mlp", "--random-weights", "--out", str(tmp_path / "out"),
                                 "--sign", str(tmp_path / "key.pem")])
    assert result.exit_code == 2 and "is not an unencrypted elliptic-curve private key" in one_line(result)
    assert not (tmp_path / "out" / "circles-mlp-onnx").exists()


NO_SIGNING = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("model_signing", "cryptography", "torch"):
            raise ImportError(f"{name} is blocked in this process", name=name)
sys.meta_path.insert(0, Blocked())
import zoo.runtime as rt
from zoo.errors import ZooError
rt.load(sys.argv[1]).close()
try:
    rt.load(sys.argv[1], trusted_keys=[sys.argv[2]])
except ZooError as e:
    print(type(e).__name__, e)
"""


def test_the_runtime_loads_without_model_signing_and_says_how_to_get_it(signed, keys):
    result = subprocess.run([sys.executable, "-c", NO_SIGNING, str(signed), str(keys / "alice.pub")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("ZooError signing and checking bundle signatures needs the model-signing "
                                     "package (model_signing is not installed): pip install 'zoo[sign]'")


# --- ONNX external data: every file the model reads is checked ------------------------------------------------

def _with_external_data(source: Path, folder: Path, record: bool = True) -> Path:
    """`source` with its ONNX weights moved to weights.bin beside model.onnx, made consistent as its author
    would: the checksum, and with `record` the sealed `external_data` record."""
    folder = shutil.copytree(source, folder)
    path = folder / "model.onnx"
    onnx.save_model(onnx.load(str(path)), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    if record:
        digest = sha256_file(folder / "weights.bin")
        manifest = edit_manifest(folder, lambda m: m.update(external_data={"weights.bin": digest}))
        model = onnx.load(str(path), load_external_data=False)
        next(p for p in model.metadata_props if p.key == "zoo.manifest").value = rt.seal_text(manifest)
        onnx.save(model, str(path))
    _fix_checksum(folder)
    return folder


def _predict(folder: Path, **options) -> np.ndarray:
    with rt.load(folder, **options) as session:
        return session.predict(np.full((1, 2), 0.5, np.float32))[session.output_names[0]]


def _set_first_weight(folder: Path, value: float) -> None:
    data = bytearray((folder / "weights.bin").read_bytes())
    data[:4] = struct.pack("<f", value)
    (folder / "weights.bin").write_bytes(bytes(data))


def test_external_data_is_covered_by_the_checksum(bundle, tmp_path):
    original = _predict(bundle("circles-mlp"))
    folder = _with_external_data(bundle("circles-mlp"), tmp_path / "b")
    np.testing.assert_array_equal(_predict(folder), original)
    _set_first_weight(folder, 100.0)
    with pytest.raises(rt.BundleError, match="weights.bin: sha256 .* the model's external data was changed"):
        rt.load(folder)
    assert not np.allclose(_predict(folder, verify=False), original)   # the file really feeds the model


def test_external_data_is_covered_by_the_seal(bundle, tmp_path):
    folder = _with_external_data(bundle("circles-mlp"), tmp_path / "b")
    _set_first_weight(folder, 100.0)
    edit_manifest(folder, lambda m: m["external_data"].update({"weights.bin": sha256_file(folder / "weights.bin")}))
    with pytest.raises(rt.BundleError, match="edited after export: external_data.weights.bin"):
        rt.load(folder)


@pytest.mark.parametrize("source", ["v3", "v2"])
def test_external_data_no_checksum_covers_is_refused(bundle, tmp_path, source):
    origin = bundle("circles-mlp") if source == "v3" else V2
    folder = _with_external_data(origin, tmp_path / "b", record=False)
    with pytest.raises(rt.BundleError, match="reads external data from weights.bin, which no checksum"):
        rt.load(folder)
    rt.load(folder, verify=False).close()   # the caller's choice


def _relocate(folder: Path, location: str) -> None:
    """Point the model's external data at `location` (its author's doing: checksum fixed)."""
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(folder / "model.onnx"))
    _fix_checksum(folder)


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_external_data_outside_the_bundle_is_refused_even_unverified(bundle, tmp_path, where):
    folder = _with_external_data(bundle("circles-mlp"), tmp_path / "b")
    outside = tmp_path / "outside.bin"
    shutil.move(folder / "weights.bin", outside)
    location = {"parent": "../outside.bin", "absolute": str(outside), "link": "weights.bin"}[where]
    if where == "link":
        (folder / "weights.bin").symlink_to(outside)
    else:
        _relocate(folder, location)
    for verify in (True, False):
        with pytest.raises(rt.BundleError, match="external data from"):
            rt.load(folder, verify=verify)


# --- manifests that would exhaust memory, or crash a reader --------------------------------------------------------

def test_a_deeply_nested_manifest_is_one_bundle_error(bundle, tmp_path):
    folder = shutil.copytree(bundle("circles-mlp"), tmp_path / "b")
    (folder / "manifest.json").write_text("[" * 100_000)
    with pytest.raises(rt.BundleError, match="nested too deeply") as info:
        rt.load(folder)
    assert info.value.exit_code == 1
    result = runner.invoke(app, ["predict", str(folder), _points(tmp_path)])
    assert result.exit_code == 1 and "nested too deeply" in one_line(result)


HUGE = """
import sys
import zoo.runtime as rt
try:
    rt.read_manifest(sys.argv[1])
except rt.BundleError as e:
    print(e)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024)
"""


def test_a_2_gb_manifest_is_refused_unread(bundle, tmp_path):
    folder = shutil.copytree(bundle("circles-mlp"), tmp_path / "b")
    with open(folder / "manifest.json", "wb") as f:
        f.truncate(2 * 2**30)   # sparse: 2 GB to read, no disk used
    result = subprocess.run([sys.executable, "-c", HUGE, str(folder)], capture_output=True, text=True, timeout=120)
    message, peak_mb = result.stdout.strip().splitlines()
    assert "is larger than 4 MiB" in message and "refused unread" in message
    assert int(peak_mb) < 300, peak_mb


def _declare(m: dict, input_index: int, shape: list, **preprocess) -> None:
    """A hostile author's edit: an input's preprocessing and its declared shape changed together, consistently."""
    name = m["inputs"][input_index]["name"]
    m["inputs"][input_index]["shape"] = shape
    m["preprocess"][name].update(preprocess)


def _wide(columns: int, categories: int = 0) -> dict:
    names = [f"c{i}" for i in range(columns)]
    return {"columns": names, "categories": {c: [f"v{j}" for j in range(categories)] for c in names} if categories
            else {}}


# Each edit passed every check before the bounds (the declared shape agrees with the preprocessing).
@pytest.mark.parametrize("name, edit, field", [
    ("clouds-cnn", lambda m: _declare(m, 0, ["batch", 3, 40000, 40000], size=[40000, 40000]), "inputs[0].shape"),
    ("clouds-cnn", lambda m: _declare(m, 0, ["batch", 3, 64, 40000], size=[64, 40000]), "preprocess.image.size"),
    ("clouds-cnn", lambda m: _declare(m, 0, ["batch", 3, 664, 664], pad=300), "preprocess.image.pad"),
    ("clouds-cnn", lambda m: m["outputs"][0].update(shape=["batch"] * 9 + [7]), "outputs[0].shape"),
    ("circles-mlp", lambda m: _declare(m, 0, ["batch", 5000], **_wide(5000)), "preprocess.point.columns"),
    ("circles-mlp", lambda m: _declare(m, 0, ["batch", 2000], **_wide(1, 2000)), "preprocess.point.categories"),
    ("circles-mlp", lambda m: _declare(m, 0, ["batch", 5000], **_wide(5, 1000)), "preprocess.point.columns/categories"),
    ("electricity-gru", lambda m: m["preprocess"]["series"].update(window=10**7), "preprocess.series.window"),
    ("omniglot-two-input", lambda m: _declare(m, 1, ["batch", 5000], vocabulary=[str(i) for i in range(5000)]),
     "preprocess.alphabet.vocabulary"),
])
def test_absurd_declared_sizes_are_refused_at_load(bundle, tmp_path, name, edit, field):
    folder = edited_copy(bundle(name), tmp_path / "b", edit)
    for load in (rt.read_manifest, lambda f: rt.load(f, verify=False)):
        with pytest.raises(rt.BundleError) as info:
            load(folder)
        assert f"invalid `{field}`" in str(info.value) and "\n" not in str(info.value)


def test_the_size_limits_fit_every_catalog_model_many_times_over():
    """Each limit is at least 8x the largest value a course model uses, and every spec reads back under them."""
    from zoo.contract import preprocess_from_dict

    used = dict.fromkeys(LIMITS, 0)
    for spec in registry.specs():
        for t in (*spec.inputs, *spec.outputs):
            used["tensor_rank"] = max(used["tensor_rank"], len(t.shape))
            used["tensor_values"] = max(used["tensor_values"], int(np.prod([d for d in t.shape if isinstance(d, int)])))
        for key, pre in spec.preprocess.items():
            assert preprocess_from_dict(pre.to_dict(), key) == pre
            if pre.kind == "image":
                used["image_side"] = max(used["image_side"], *pre.size)
                used["image_pad"] = max(used["image_pad"], pre.pad)
            elif pre.kind == "tabular":
                used["tabular_columns"] = max(used["tabular_columns"], len(pre.columns))
                used["categories"] = max([used["categories"], *map(len, pre.categories.values())])
                used["tabular_features"] = max(used["tabular_features"], len(pre.features))
            elif pre.kind == "onehot":
                used["vocabulary"] = max(used["vocabulary"], len(pre.vocabulary))
            else:
                used["series_window"] = max(used["series_window"], pre.window)
    assert used["tensor_rank"] < LIMITS["tensor_rank"]
    for key in set(LIMITS) - {"tensor_rank"}:
        assert LIMITS[key] >= 8 * used[key], (key, used[key])


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["weights"].update(caveat=5), "weights.caveat"),
    (lambda m: m.update(precision="fp16"), "precision"),
    (lambda m: m.update(precision={"name": 3}), "precision.name"),
    (lambda m: m.update(weights=["random"]), "weights"),
    (lambda m: m.update(parity="passed"), "parity"),
    (lambda m: m.update(external_data=["weights.bin"]), "external_data"),
])
def test_bookkeeping_fields_of_the_wrong_type_are_one_line(bundle, tmp_path, edit, field):
    folder = edited_copy(bundle("circles-mlp"), tmp_path / "b", edit)
    with pytest.raises(rt.BundleError, match=f"invalid `{field.replace('.', '[.]')}`"):
        rt.read_manifest(folder)
    result = runner.invoke(app, ["predict", str(folder), _points(tmp_path), "--no-verify"])
    assert result.exit_code == 1 and f"invalid `{field}`" in one_line(result)


@pytest.mark.parametrize("threads", [-3, 0, 1.5, True, "2"])
def test_threads_must_be_a_positive_integer(bundle, threads):
    with pytest.raises(ValueError, match=f"threads must be a positive integer .*got {threads!r}"):
        rt.load(bundle("circles-mlp"), threads=threads)
