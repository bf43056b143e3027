"""The runtime installs without torch: `pip install <project>` (no extras) in a fresh virtual environment gives
`zoo list / info / predict / bench` of ONNX bundles, and the training commands say what to install. Every
non-editable install (and the wheel) carries the shipped weights and cards: `zoo list` shows them, `zoo info`
shows the card, and with the training extra `zoo.create_model(..., pretrained=True)` and `zoo export` use them."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow   # new virtual environments and pip installs: CI runs them

ROOT = Path(__file__).resolve().parent.parent
# pip in a fresh environment must not see the checkout (PYTHONPATH, or a build's zoo.egg-info in the current
# folder) and take zoo for installed already
CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("runtime-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                            capture_output=True, text=True, timeout=900, cwd=venv.parent, env=CLEAN_ENV)
    if result.returncode != 0:
        pytest.fail(f"pip install of the project failed:\n{result.stderr[-2000:]}")
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check",
                             "-w", str(folder), str(ROOT)], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"building the wheel failed:\n{result.stderr[-2000:]}")
    (path,) = folder.glob("zoo-*.whl")
    return path


@pytest.fixture(scope="module")
def train_venv(wheel, tmp_path_factory) -> Path:
    """A fresh environment with the wheel installed (not editable), whose training extra is the test
    environment's own packages (a .pth file after its own site-packages: no torch download)."""
    venv = tmp_path_factory.mktemp("with-train-extra") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, timeout=900, cwd=venv.parent, env=CLEAN_ENV)
    # after installing: pip would take the test environment's editable zoo for this one
    (Path(site) / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def zoo(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "zoo"), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={"PATH": str(venv / "bin"), "HOME": str(venv.parent), "COLUMNS": "200"})


def test_the_installed_package_lists_every_models_shipped_weights_and_card(runtime_venv, tmp_path):
    """Outside the checkout (no weights/ folder beside the installed package) every model still has its weights."""
    from zoo import registry
    from zoo.weights import read_card

    rows = json.loads(zoo(runtime_venv, "list", "--json", cwd=tmp_path).stdout)
    assert {r["name"] for r in rows} == set(registry.names())
    assert all(r["weights"] not in (None, "none") for r in rows), [r["name"] for r in rows if not r["weights"]]
    info = zoo(runtime_venv, "info", "clouds-cnn", cwd=tmp_path).stdout
    assert "weights: sha256" in info and read_card("clouds-cnn")["sha256"] in info and "none shipped yet" not in info


def test_the_wheel_carries_each_models_weights_and_card(wheel):
    from zoo import registry

    names = set(zipfile.ZipFile(wheel).namelist())
    for name in registry.names():
        for suffix in (".safetensors", ".json"):
            assert f"zoo/shipped_weights/{name}{suffix}" in names, name
    assert not any(n.endswith(".history.json") or n.endswith(".png") for n in names)


def test_with_the_training_extra_an_installed_zoo_loads_and_exports_the_shipped_weights(train_venv, tmp_path):
    """zoo.create_model(pretrained=True) from the package's own copy of the weights, and `zoo export NAME` of them,
    give the same top-1 on real-format images."""
    from zoo.data import builtin

    images = sorted(str(p) for p in builtin.materialize("clouds", "test").rglob("*.jpg"))[::7]
    images.append(str(ROOT / "examples" / "images" / "sky.jpg"))
    result = zoo(train_venv, "export", "clouds-cnn", "--out", str(tmp_path / "bundles"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    script = ("import json, sys, torch, zoo, zoo.runtime\n"
              "model = zoo.create_model('clouds-cnn', pretrained=True)\n"
              "with torch.no_grad(): eager = model(model.info.transform(sys.argv[2:])).argmax(1).tolist()\n"
              "with zoo.runtime.load(sys.argv[1]) as s:\n"
              "    onnx = s.predict_raw(sys.argv[2:])['logits'].argmax(1).tolist()\n"
              "print(json.dumps({'weights': str(model.info.weights), 'zoo': zoo.__file__, 'eager': eager,\n"
              "                  'onnx': onnx}))")
    bundle = tmp_path / "bundles" / "clouds-cnn-onnx"
    out = subprocess.run([str(train_venv / "bin" / "python"), "-c", script, str(bundle), *images], capture_output=True,
                         text=True, cwd=tmp_path, timeout=300, env=CLEAN_ENV)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout)
    assert answer["zoo"].startswith(str(train_venv)), "the installed package, not the checkout"
    assert answer["weights"].endswith("zoo/shipped_weights/clouds-cnn.safetensors")
    assert answer["eager"] == answer["onnx"] and len(answer["eager"]) == len(images)


def test_the_runtime_only_install_has_no_torch_and_predicts(runtime_venv, tmp_path):
    from zoo.export import export

    check = subprocess.run([str(runtime_venv / "bin" / "python"), "-c",
                            "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           capture_output=True, text=True)
    assert check.stdout.strip() == "True", "torch must not come with the runtime install"
    (bundle,) = export("clouds-cnn", "onnx", out=tmp_path, random_weights=True)
    result = zoo(runtime_venv, "predict", str(bundle), str(ROOT / "examples" / "images" / "sky.jpg"), "--json")
    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert len(answer["outputs"]["logits"]) == 3
    assert zoo(runtime_venv, "list").returncode == 0
    assert "stretched to 64x64" in " ".join(zoo(runtime_venv, "info", "clouds-cnn").stdout.split())
    bench = zoo(runtime_venv, "bench", str(bundle), "--batch", "1", "--iters", "3", "--device", "cpu")
    assert bench.returncode == 0, bench.stderr
    assert "skipped eager on cpu: pip install 'zoo[train]'" in " ".join(bench.stdout.split())


@pytest.mark.parametrize("args", [["train", "circles-mlp"], ["export", "circles-mlp", "--random-weights"]])
def test_training_commands_say_what_to_install(runtime_venv, tmp_path, args):
    result = zoo(runtime_venv, *args, "--out", str(tmp_path))
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "needs the training extra" in text and "pip install 'zoo[train]'" in text
    assert "Traceback" not in text


def test_serving_says_what_to_install(runtime_venv, bundle, tmp_path):
    """zoo serve needs the serve extra; without it, one line saying so. A name with no bundle says which export
    to run, since the training extra is missing too."""
    result = zoo(runtime_venv, "serve", str(bundle("water-mlp")), "--port", "0")
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "needs the serving extra" in text and "pip install 'zoo[serve]'" in text
    assert "Traceback" not in text
    result = zoo(runtime_venv, "serve", "circles-mlp", cwd=tmp_path)   # no bundles/ there
    text = " ".join(result.stderr.split())
    assert result.returncode == 2 and "export one with `zoo export circles-mlp --format onnx`" in text
