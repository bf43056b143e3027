"""JavaScript JPEG decoders against Pillow's (libjpeg-turbo), on the same real photos: the share of pixel values equal
to Pillow's, the largest difference, and what the difference does to the answers of raw-input models (the same graph,
bare onnxruntime, fed each decoder's pixels): top-1 agreement with Pillow's pixels and the largest probability
difference. Why examples/node decodes JPEGs with `@cwasm/jpeg-turbo` (libjpeg-turbo in WebAssembly), not `jpeg-js`.

    npm install --prefix DIR jpeg-js@0.4.4 @cwasm/jpeg-turbo@0.1.3
    flock /tmp/zoo-bench.lock python benchmarks/jpeg_decoders.py --data ../shared/data --node-modules DIR/node_modules \\
        --bundles FOLDER [--models clouds-cnn,tinyvgg-pizza-steak,food10-mobilenetv2] [--per-dataset 10] [--json FILE]

Raw-input bundles missing from --bundles are exported there first (zoo export NAME --format onnx --raw-inputs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

import zoo.runtime
from zoo.export import export

sys.path.insert(0, str(Path(__file__).parent))
from raw_inputs import photos  # noqa: E402 - the same real photos as the raw-input benchmark

DECODE = """
const [modules, out, ...files] = process.argv.slice(2);
const {createRequire} = await import("node:module");
const require = createRequire(modules + "/");
const fs = require("node:fs");
const decoders = {"jpeg-js": (b) => require("jpeg-js").decode(b, {useTArray: true, formatAsRGBA: true}),
                  "@cwasm/jpeg-turbo": (b) => require("@cwasm/jpeg-turbo").decode(b)};
files.forEach((file, i) => {
  for (const [name, decode] of Object.entries(decoders)) {
    const image = decode(fs.readFileSync(file));
    fs.writeFileSync(`${out}/${i}.${name.replace("/", "_")}.rgba`, Buffer.from(image.data.buffer));
  }
});
"""
DECODERS = ("jpeg-js", "@cwasm/jpeg-turbo")


def decoded(files: list[Path], modules: Path) -> dict[str, list[np.ndarray]]:
    """Each JavaScript decoder's RGB pixels of every file, and Pillow's."""
    out = {"Pillow": [np.asarray(Image.open(f).convert("RGB")) for f in files]}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "decode.mjs").write_text(DECODE)
        subprocess.run(["node", f"{tmp}/decode.mjs", str(modules.resolve()), tmp, *map(str, files)], check=True)
        for name in DECODERS:
            out[name] = [np.frombuffer((Path(tmp) / f"{i}.{name.replace('/', '_')}.rgba").read_bytes(), np.uint8)
                         .reshape(*pillow.shape[:2], 4)[..., :3] for i, pillow in enumerate(out["Pillow"])]
    return out


def answers(bundle: Path, pixels: list[np.ndarray]) -> np.ndarray:
    manifest = zoo.runtime.read_manifest(bundle)
    pre = manifest.preprocess[manifest.network_inputs[0].name]
    session = ort.InferenceSession(str(manifest.file), providers=["CPUExecutionProvider"])
    output = next(iter(manifest.raw.probabilities.values()))
    feeds = [pre.pixels(p) for p in pixels]   # the model's mode, as an application converts
    return np.concatenate([session.run([output], {manifest.inputs[0].name: f[None]})[0] for f in feeds])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--node-modules", required=True)
    parser.add_argument("--bundles", default="bundles")
    parser.add_argument("--models", default="clouds-cnn,tinyvgg-pizza-steak,food10-mobilenetv2")
    parser.add_argument("--per-dataset", type=int, default=10)
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, image in enumerate(photos(Path(args.data), args.per_dataset)):
            if isinstance(image, Path) and image.suffix.lower() in (".jpg", ".jpeg"):
                files.append(image.resolve())
            elif not isinstance(image, Path):   # CIFAR-10's JPEGs, read from its tar
                files.append(Path(tmp) / f"{i}.jpg")
                files[-1].write_bytes(image)
        pixels = decoded(files, Path(args.node_modules))
    result = {"command": "flock /tmp/zoo-bench.lock python benchmarks/jpeg_decoders.py " + " ".join(sys.argv[1:]),
              "load_average_start": os.getloadavg(), "jpegs": len(files), "decoders": {}, "models": {}}
    for name in DECODERS:
        diff = np.concatenate([np.abs(a.astype(int) - b.astype(int)).ravel()
                               for a, b in zip(pixels[name], pixels["Pillow"])])
        result["decoders"][name] = {"values_equal_to_pillow": float(np.mean(diff == 0)), "max_levels": int(diff.max())}
    for model in args.models.split(","):
        bundle = Path(args.bundles) / f"{model}-onnx-raw"
        if not (bundle / "manifest.json").is_file():
            export(model, ["onnx"], out=args.bundles, raw_inputs=True)
        reference = answers(bundle, pixels["Pillow"])
        result["models"][model] = {}
        for name in DECODERS:
            got = answers(bundle, pixels[name])
            result["models"][model][name] = {"top1_agreement": float(np.mean(got.argmax(1) == reference.argmax(1))),
                                             "max_probability_difference": float(np.abs(got - reference).max())}
    print(json.dumps(result, indent=1))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
