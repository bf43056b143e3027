"""examples/node: the Node.js example classifies image files in the formats people have (JPEG baseline, progressive
and grayscale; PNG RGB, RGBA, palette, grayscale, 16-bit) with a raw-input bundle through onnxruntime-node, with
libjpeg-turbo in WebAssembly and pngjs as decoders, no zoo code, and answers as `zoo predict` does on the same files. Its npm packages are installed with
`npm ci` from the committed package-lock.json into a folder cached outside the repository (keyed by the lockfile's
sha256). Skipped, with the reason, where node, npm or the npm registry is missing (CI installs Node.js from Debian)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from npm_tools import npm_missing
from servers import ROOT
from zoo.export import _vectors, export

EXAMPLE = ROOT / "examples" / "node"
SKY = ROOT / "examples" / "images" / "sky.jpg"
PROJECT_FILES = ("package.json", "package-lock.json", ".npmrc")


def installed() -> Path:
    """node_modules of the example, from `npm ci`, cached by the lockfile's sha256 outside the repository."""
    lock = hashlib.sha256((EXAMPLE / "package-lock.json").read_bytes()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo-tests"
    cache = base / f"node-example-{lock}"
    if (cache / ".complete").is_file():
        return cache / "node_modules"
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=base, prefix=f".{cache.name}."))
    try:
        for name in PROJECT_FILES:
            shutil.copyfile(EXAMPLE / name, staging / name)
        # .npmrc skips onnxruntime-node's CUDA download (npm 7-11); the variable does the same for any npm
        env = dict(os.environ, ONNXRUNTIME_NODE_INSTALL="skip")
        done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=staging, capture_output=True, text=True,
                              timeout=900, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        (staging / ".complete").write_text("npm ci\n")
        shutil.rmtree(cache, ignore_errors=True)
        staging.rename(cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache / "node_modules"


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """A copy of the example beside its installed node_modules: run(bundle, *files, "--json") -> CompletedProcess."""
    reason = npm_missing(need_node=True)
    if reason:
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("node-example")
    shutil.copyfile(EXAMPLE / "classify.mjs", folder / "classify.mjs")
    shutil.copyfile(EXAMPLE / "package.json", folder / "package.json")
    (folder / "node_modules").symlink_to(installed())

    def run(*args):
        return subprocess.run(["node", str(folder / "classify.mjs"), *map(str, args)], capture_output=True, text=True,
                              timeout=300)
    return run


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Raw-input bundles of the shipped weights: an RGB model and a grayscale one."""
    out = tmp_path_factory.mktemp("node-bundles")
    return {name: export(name, ["onnx"], out=out, raw_inputs=True)[-1] for name in ("clouds-cnn", "lenet-mnist")}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Image files made from a real photo, in the formats people have."""
    folder = tmp_path_factory.mktemp("node-images")
    photo = Image.open(SKY).convert("RGB")
    rgba = photo.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    sixteen = Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257 + 100).astype(np.uint16))
    files = {"baseline.jpg": (photo, {"quality": 90}), "progressive.jpg": (photo, {"progressive": True}),
             "gray.jpg": (photo.convert("L"), {}), "rgb.png": (photo, {}), "rgba.png": (rgba, {}),
             "palette.png": (photo.quantize(64), {}), "gray.png": (photo.convert("L"), {}),
             "gray16.png": (sixteen, {}), "odd.png": (photo.resize((37, 91)), {})}
    for name, (image, options) in files.items():
        image.save(folder / name, **options)
    return [SKY, *(folder / name for name in files)]


def zoo_predict(bundle: Path, files, top_k: int) -> dict:
    command = [sys.executable, "-m", "zoo.cli", "predict", str(bundle), *map(str, files), "--top-k", str(top_k), "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, check=True)
    return {r["input"]: [(c["label"], c["probability"]) for c in r["outputs"]["logits"]] for r in json.loads(done.stdout)}


@pytest.mark.parametrize("name", ["clouds-cnn", "lenet-mnist"])
def test_the_example_answers_as_zoo_predict_on_the_same_files(example, bundles, images, name):
    """Top-1 equal on every file and every probability within the golden cases' tolerance: the example decodes JPEGs
    with libjpeg-turbo, as Pillow does, and PNGs losslessly, so the graph gets zoo's pixels."""
    files, k = images, 10   # every class
    done = example(bundles[name], *files, "--top-k", k, "--json")
    assert done.returncode == 0, done.stderr
    node = {a["file"]: [tuple(c) for c in a["outputs"]["logits"]] for a in json.loads(done.stdout)}
    python = zoo_predict(bundles[name], files, k)
    tolerance = _vectors.GOLDEN_TOLERANCE["probability"]
    for file in images:
        got, expected = node[str(file)], python[str(file)]
        assert got[0][0] == expected[0][0], (file, got, expected)
        want = dict(expected)
        assert len(got) == len(want) and all(abs(p - want[label]) <= tolerance for label, p in got), (file, got)


def test_bad_input_is_refused_in_one_line(example, bundles, tmp_path):
    """Not an image, JPEGs libjpeg-turbo refuses (corrupt, CMYK; the next file still classified right), an image
    whose header claims too many pixels (before decoding), a bundle that takes tensors, and a model file changed
    after export."""
    bundle = bundles["clouds-cnn"]
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(SKY.read_bytes()[:2] + b"\xff\xdb\x00\x04\x00\x00" + b"\x00" * 64)
    cmyk = tmp_path / "cmyk.jpg"   # Pillow reads it; the example refuses it rather than guess the colours
    Image.open(SKY).convert("CMYK").save(cmyk)
    done = example(bundle, text, broken, cmyk, SKY, "--json")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[0] == f"error: cannot read image {text}: not a JPEG or PNG file"
    assert lines[1].startswith(f"error: cannot read image {broken}: libjpeg-turbo cannot decode it (corrupt")
    assert lines[2].startswith(f"error: cannot read image {cmyk}: libjpeg-turbo") and "CMYK" in lines[2]
    (answer,) = json.loads(done.stdout)   # the other file is still classified, as zoo predict does
    assert answer["file"] == str(SKY)
    assert answer["outputs"]["logits"][0][0] == zoo_predict(bundle, [SKY], 1)[str(SKY)][0][0]
    Image.new("L", (1, 1)).save(tmp_path / "one.png")
    huge = bytearray((tmp_path / "one.png").read_bytes())
    huge[16:24] = (20_000).to_bytes(4, "big") * 2
    (tmp_path / "huge.png").write_bytes(bytes(huge))
    done = example(bundle, tmp_path / "huge.png")
    assert done.returncode == 2 and "20000x20000 pixels, over 50000000" in done.stderr
    done = example(bundle.parent / "clouds-cnn-onnx", SKY)
    assert done.returncode == 2 and "takes model tensors, not raw inputs" in done.stderr
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    model = changed / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\0")
    done = example(changed, SKY)
    assert done.returncode == 2 and "is not the file manifest.json describes" in done.stderr
