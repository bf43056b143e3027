"""Raw-input bundles (preprocessing in the ONNX graph) against zoo.runtime (Pillow + numpy preprocessing feeding
the fp32 network), on real data: agreement and speed.

Agreement, every model with shipped weights: image models on real photos of several sizes and aspect ratios
from the shared datasets (food10 and pizza_steak photos of many aspect ratios, clouds 256x256, omniglot 105x105,
mnist 28x28, CIFAR-10 32x32), every image fed to every image model: top-1 agreement and the largest class
probability difference; tabular and series models on rows / windows of their real CSV (the built-in sample for
the datasets that only exist built in): the largest output difference.

Speed, per image at batch 1 and one thread, on the same photos: the raw-input model in bare onnxruntime, fed
the pixels Pillow decodes (decode + run), against `zoo.runtime`'s `predict_raw` on the fp32 bundle (decode,
resize, normalise, run), and the raw-input model alone on pixels decoded beforehand. The paths alternate in
rounds (each round: every photo through one path, then through the next), so load from other processes hits
them alike; medians per image are compared.

    flock /tmp/zoo-bench.lock python benchmarks/raw_inputs.py --data ../shared/data --bundles bundles \\
        [--per-dataset 20] [--rounds 5] [--json benchmarks/raw_inputs.json]

Bundles missing from --bundles are exported there first (zoo export NAME --format onnx --raw-inputs).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

import zoo.runtime
from zoo import registry
from zoo.data.raw import raw_samples
from zoo.weights import resolve

PHOTO_SETS = {"food10": "food10/10_food_classes_10_percent/train/*/*.jpg", "pizza_steak": "pizza_steak/train/*/*.jpg",
              "clouds": "clouds/clouds_train/*/*.jpg", "omniglot": "omniglot/omniglot_train/*/*/*.png",
              "mnist_sample": "mnist_sample/train/*/*.png"}


def photos(root: Path, per_dataset: int) -> list[Path | bytes]:
    """Real photos of several sizes: spread over each folder dataset, plus CIFAR-10's JPEGs from its tar."""
    out = []
    for pattern in PHOTO_SETS.values():
        files = sorted(root.glob(pattern))
        out += [files[int(i)] for i in np.linspace(0, len(files) - 1, per_dataset)]
    cifar, _ = raw_samples(registry.get("cifar10-net"), root / "cifar10", per_dataset)
    out += [s.inputs["image"] for s in cifar if "resized to" not in s.label]
    return out


def bundles_for(name: str, folder: Path) -> tuple[Path, Path]:
    fp32, raw = folder / f"{name}-onnx", folder / f"{name}-onnx-raw"
    if not (fp32 / "manifest.json").is_file() or not (raw / "manifest.json").is_file():
        from zoo.export import export

        export(name, ["onnx"], out=folder, raw_inputs=True)
    return fp32, raw


def agreement_images(reference, session, images, spec) -> dict:
    inputs = {spec.inputs[0].name: images}
    if "alphabet" in session.manifest.preprocess:
        inputs["alphabet"] = ["Latin"] * len(images)
    ref, got = reference.predict_raw(inputs), session.predict_raw(inputs)
    p, q = reference.probabilities(ref), session.probabilities(got)
    agree = [float(np.mean(p[k].argmax(1) == q[k].argmax(1))) for k in p]
    return {"samples": len(images), "top1_agreement": min(agree),
            "max_probability_difference": max(float(np.abs(p[k] - q[k]).max()) for k in p),
            "max_abs": max(float(np.abs(ref[t.name] - got[t.name]).max()) for t in spec.outputs)}


def agreement_values(reference, session, spec, data: Path | None) -> dict:
    samples, about = raw_samples(spec, data, 400)
    if spec.is_sequence:
        pairs = [(reference.predict_raw(s.inputs["series"]), session.predict_raw(s.inputs["series"])) for s in samples]
    else:
        rows = [s.inputs[spec.inputs[0].name] for s in samples]
        pairs = [(reference.predict_raw(rows), session.predict_raw(rows))]
    out = {"samples": len(samples), "data": about["source"],
           "max_abs": max(float(np.abs(a[t.name] - b[t.name]).max()) for a, b in pairs for t in spec.outputs)}
    if spec.is_classifier:
        p = [(reference.probabilities(a), session.probabilities(b)) for a, b in pairs]
        out["max_probability_difference"] = max(float(np.abs(x[k] - y[k]).max()) for x, y in p for k in x)
        out["top1_agreement"] = float(np.mean([x[k].argmax(1) == y[k].argmax(1) for x, y in p for k in x]))
    return out


def speed(reference, session, images: list, rounds: int) -> dict:
    """Median ms per image: the raw-input model fed Pillow's pixels (decode + run) vs predict_raw (all)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    bare = ort.InferenceSession(str(session.manifest.file), options, providers=["CPUExecutionProvider"])
    name = session.input_names[0]
    pre = session.manifest.preprocess[session.manifest.network_inputs[0].name]
    extra = {"alphabet": np.array(["Latin"], object)} if "alphabet" in session.input_names else {}
    fixed = {"alphabet": ["Latin"]} if extra else {}

    def graph(image):
        pixels = pre.pixels(image)   # Pillow's decode and mode conversion, as an application's decoder does
        return bare.run(None, {name: pixels[None], **extra})

    def runtime(image):
        return reference.predict_raw({name: [image], **fixed} if fixed else [image])

    decoded = {id(image): pre.pixels(image)[None] for image in images}

    def run_only(image):   # the graph alone, on pixels decoded beforehand
        return bare.run(None, {name: decoded[id(image)], **extra})

    paths = (("raw-input model", graph), ("zoo.runtime", runtime), ("raw-input model, run only", run_only))
    times = {label: [] for label, _ in paths}
    for image in images[:5]:   # warm-up
        for _, call in paths:
            call(image)
    for _ in range(rounds):
        for label, call in paths:
            for image in images:
                t0 = time.perf_counter()
                call(image)
                times[label].append(time.perf_counter() - t0)
    medians = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"ms_per_image": medians, "ratio_runtime_over_raw": medians["zoo.runtime"] / medians["raw-input model"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--bundles", default="bundles")
    parser.add_argument("--per-dataset", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="all", help="comma-separated names, or all (with shipped weights)")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    root, folder = Path(args.data), Path(args.bundles)
    names = [s.name for s in registry.specs() if resolve(s, None)] if args.models == "all" else args.models.split(",")
    images = photos(root, args.per_dataset)
    sizes = sorted({Image.open(i if isinstance(i, Path) else io.BytesIO(i)).size for i in images})
    flags = {"json_file": "json", "per_dataset": "per-dataset"}
    result = {"command": "flock /tmp/zoo-bench.lock python benchmarks/raw_inputs.py " + " ".join(
                  f"--{flags.get(k, k)} {v}" for k, v in vars(args).items() if v is not None),
              "photos": len(images), "sizes": [list(s) for s in sizes], "threads": 1,
              "load_average_start": os.getloadavg(), "models": {}}
    print(f"{len(images)} photos, {len(sizes)} sizes; load average {os.getloadavg()}", flush=True)
    for name in names:
        spec = registry.get(name)
        fp32, raw = bundles_for(name, folder)
        with zoo.runtime.load(fp32, threads=1) as reference, zoo.runtime.load(raw, threads=1) as session:
            kind = spec.preprocess[spec.inputs[0].name].kind
            if kind == "image":
                row = agreement_images(reference, session, [str(i) if isinstance(i, Path) else i for i in images], spec)
                row.update(speed(reference, session, [str(i) if isinstance(i, Path) else i for i in images],
                                 args.rounds))
            else:
                folder_name = registry.dataset(spec.dataset).folder   # None: the dataset exists built in only
                data = root / folder_name if folder_name and (root / folder_name).exists() else None
                row = agreement_values(reference, session, spec, data)
        row["kind"] = kind
        result["models"][name] = row
        print(name, json.dumps(row), flush=True)
    result["load_average_end"] = os.getloadavg()
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
