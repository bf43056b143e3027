"""Which ONNX `Resize` settings come closest to Pillow's BILINEAR, the resize training and zoo.runtime use: the
choice behind the raw-input bundles' graph (zoo/export/_raw.py, RESIZE).

Real photos from ../shared/data (food10 and clouds JPEGs) and the first of them cut to odd sizes (13x29 to
640x480) are resized by Pillow and by onnxruntime's Resize on uint8 NHWC pixels (or in float32, rounded and
clipped once at the end) to 28x28, 32x32, 64x64, 100x100 and 224x224. Per setting: the share of resized values
equal to Pillow's, the largest difference in levels and the mean difference.

    python benchmarks/resize_modes.py [--data ../shared/data] [--json benchmarks/resize_modes.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper
from PIL import Image

TARGETS = ((28, 28), (32, 32), (64, 64), (100, 100), (224, 224))
ODD = ((97, 61), (13, 29), (300, 41), (640, 480), (65, 63), (31, 33))   # (width, height)


def session(mode: str, transform: str, antialias: int, exclude_outside: int, dtype: str):
    nodes, source, inits = [], "x", []
    if dtype == "float32":
        nodes.append(helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT))
        source = "xf"
    nodes.append(helper.make_node("Resize", [source, "", "", "sizes"], ["r"], mode=mode, axes=[1, 2],
                                  coordinate_transformation_mode=transform, antialias=antialias,
                                  exclude_outside=exclude_outside))
    if dtype == "float32":   # round and clip once, at the end
        inits = [helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]), helper.make_tensor("hi", TensorProto.FLOAT, [], [255.0])]
        nodes += [helper.make_node("Round", ["r"], ["rr"]), helper.make_node("Clip", ["rr", "lo", "hi"], ["rc"]),
                  helper.make_node("Cast", ["rc"], ["y"], to=TensorProto.UINT8)]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"]))
    graph = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["n", "h", "w", 3]),
                                                helper.make_tensor_value_info("sizes", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def photos(root: Path) -> list[Image.Image]:
    files = sorted(root.glob("food10/10_food_classes_10_percent/train/*/*.jpg"))[::50]
    files += sorted(root.glob("clouds/clouds_train/*/*.jpg"))[::60]
    images = [Image.open(f).convert("RGB") for f in files]
    return images + [images[0].resize(size, Image.NEAREST) for size in ODD]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    images = photos(Path(args.data))
    references = [(np.asarray(im)[None], size, np.asarray(im.resize(size[::-1], Image.BILINEAR)).astype(int))
                  for im in images for size in TARGETS]
    rows = []
    for transform, antialias, exclude, dtype in itertools.product(
            ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"), (1, 0), (1, 0), ("uint8", "float32")):
        if exclude and not antialias:   # onnxruntime takes exclude_outside with linear only when antialiasing
            continue
        run = session("linear", transform, antialias, exclude, dtype)
        equal = total = worst = 0
        summed = 0.0
        for pixels, size, pillow in references:
            diff = np.abs(run.run(None, {"x": pixels, "sizes": np.array(size, np.int64)})[0][0].astype(int) - pillow)
            equal, total = equal + int((diff == 0).sum()), total + diff.size
            worst, summed = max(worst, int(diff.max())), summed + float(diff.sum())
        rows.append({"coordinate_transformation_mode": transform, "antialias": antialias, "exclude_outside": exclude,
                     "computed_in": dtype, "equal_share": equal / total, "max_levels": worst, "mean_levels": summed / total})
        print(json.dumps(rows[-1]), flush=True)
    result = {"images": len(images), "sizes": sorted({im.size for im in images}), "targets": TARGETS,
              "onnxruntime": ort.__version__, "rows": sorted(rows, key=lambda r: -r["equal_share"])}
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
