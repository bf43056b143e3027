"""The runtime installs without torch: `pip install <project>` (no extras) in a fresh virtual environment gives
`zoo list / info / predict / bench` of ONNX bundles, and the training commands say what to install."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("runtime-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(ROOT)],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        pytest.fail(f"pip install of the project failed:\n{result.stderr[-2000:]}")
    return venv


def zoo(venv: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "zoo"), *args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={"PATH": str(venv / "bin"), "HOME": str(venv.parent), "COLUMNS": "200"})


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
