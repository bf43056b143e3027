"""How far other onnxruntime configurations land from the test vectors every ONNX bundle carries: the basis of
the tolerances in the manifest's `test_data.tolerance` (zoo/export/_vectors.py).

Each bundle's vectors are run with bare onnxruntime under: 1 intra-op thread, the default threads, graph
optimisation disabled (a QDQ int8 graph then runs DequantizeLinear -> float op -> QuantizeLinear instead of the
fused integer kernels: another backend's rounding), and the CUDA provider where it loads. Reported per bundle and
configuration: the largest absolute difference and the largest share of the tolerance used,
max |got - expected| / (atol + rtol * |expected|) (<= 1 passes). With --onnxruntime-web DIR (a folder where
`npm install onnxruntime-web` was run), the vectors also run in Node.js with onnxruntime-web's wasm backend
(one thread), the browser's engine.

    python benchmarks/test_vectors.py BUNDLES_FOLDER [--onnxruntime-web DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def configurations() -> dict:
    def options(threads=0, level=ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        o = ort.SessionOptions()
        o.intra_op_num_threads, o.graph_optimization_level, o.log_severity_level = threads, level, 3
        return o
    out = {"cpu, 1 thread": (options(1), ["CPUExecutionProvider"]),
           "cpu, default threads": (options(), ["CPUExecutionProvider"]),
           "cpu, no graph optimisation": (options(level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL),
                                          ["CPUExecutionProvider"])}
    if "CUDAExecutionProvider" in ort.get_available_providers():
        import zoo.runtime

        if not zoo.runtime.cuda_problem():
            out["cuda"] = (options(), ["CUDAExecutionProvider", "CPUExecutionProvider"])
    return out


def read(folder: str, kind: str) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in map(onnx.load_tensor, glob.glob(f"{folder}/{kind}_*.pb"))}


def measure(bundle: Path, configs: dict) -> dict:
    record = json.loads((bundle / "manifest.json").read_text())["test_data"]
    rtol, atol = record["tolerance"]["rtol"], record["tolerance"]["atol"]
    out = {}
    for label, (options, providers) in configs.items():
        session = ort.InferenceSession(str(bundle / "model.onnx"), options, providers=providers)
        if label == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            continue
        names = [o.name for o in session.get_outputs()]
        worst_abs = worst_share = 0.0
        for folder in sorted(glob.glob(f"{bundle}/test_data_set_*")):
            got = dict(zip(names, session.run(None, read(folder, "input"))))
            for name, expected in read(folder, "output").items():
                diff = np.abs(got[name].astype(np.float64) - expected.astype(np.float64))
                worst_abs = max(worst_abs, float(diff.max()))
                worst_share = max(worst_share, float((diff / (atol + rtol * np.abs(expected))).max()))
        out[label] = {"max_abs": worst_abs, "share_of_tolerance": worst_share}
    return out


WASM = """
import * as ort from '%s/onnxruntime-web/dist/ort.node.min.mjs';
import fs from 'fs';
ort.env.wasm.numThreads = 1;
const cases = JSON.parse(fs.readFileSync(process.argv[2] + '/cases.json'));
const sessions = {};
for (const c of cases) {
  sessions[c.model] ??= await ort.InferenceSession.create(fs.readFileSync(c.model), {executionProviders: ['wasm']});
  const feeds = {};
  for (const [name, f] of Object.entries(c.feeds)) {
    if (f.type === 'string') { feeds[name] = new ort.Tensor('string', f.data, f.dims); continue; }
    const b = fs.readFileSync(f.file), T = {float32: Float32Array, float64: Float64Array, uint8: Uint8Array}[f.type];
    feeds[name] = new ort.Tensor(f.type, new T(b.buffer, b.byteOffset, b.byteLength / T.BYTES_PER_ELEMENT), f.dims);
  }
  const out = await sessions[c.model].run(feeds);
  for (const [name, t] of Object.entries(out)) fs.writeFileSync(c.out + '.' + name, Buffer.from(new Float32Array(t.data).buffer));
}
console.log(JSON.stringify(ort.env.versions));
"""


def measure_wasm(bundles: list[Path], modules: Path) -> dict:
    """Every vector set through onnxruntime-web (wasm, in Node.js): inputs as raw bytes, outputs back as float32."""
    with tempfile.TemporaryDirectory(prefix="zoo-wasm-") as tmp:
        cases = []
        for bundle in bundles:
            for k, folder in enumerate(sorted(glob.glob(f"{bundle}/test_data_set_*"))):
                feeds = {}
                for i, (name, array) in enumerate(read(folder, "input").items()):
                    if array.dtype == object:
                        feeds[name] = {"type": "string", "dims": list(array.shape), "data": [str(v) for v in array.flat]}
                        continue
                    path = f"{tmp}/{bundle.name}.{k}.in{i}"
                    Path(path).write_bytes(np.ascontiguousarray(array).tobytes())
                    feeds[name] = {"type": str(array.dtype), "dims": list(array.shape), "file": path}
                cases.append({"model": str(bundle / "model.onnx"), "feeds": feeds, "out": f"{tmp}/{bundle.name}.{k}.out",
                              "bundle": bundle, "folder": folder})
        Path(tmp, "cases.json").write_text(json.dumps([{k: v for k, v in c.items() if k not in ("bundle", "folder")}
                                                       for c in cases]))
        Path(tmp, "run.mjs").write_text(WASM % modules.resolve())
        versions = subprocess.run(["node", f"{tmp}/run.mjs", tmp], capture_output=True, text=True, check=True).stdout
        out = {}
        for c in cases:
            record = json.loads((c["bundle"] / "manifest.json").read_text())["test_data"]["tolerance"]
            row = out.setdefault(c["bundle"].name, {"max_abs": 0.0, "share_of_tolerance": 0.0})
            for name, expected in read(c["folder"], "output").items():
                got = np.frombuffer(Path(f"{c['out']}.{name}").read_bytes(), np.float32).reshape(expected.shape)
                diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
                row["max_abs"] = max(row["max_abs"], float(diff.max()))
                row["share_of_tolerance"] = max(row["share_of_tolerance"], float(
                    (diff / (record["atol"] + record["rtol"] * np.abs(expected))).max()))
        return {"versions": json.loads(versions.strip().splitlines()[-1]), "bundles": out}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles")
    parser.add_argument("--onnxruntime-web", dest="web", help="node_modules folder holding onnxruntime-web")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()
    configs = configurations()
    result = {"onnxruntime": ort.__version__, "configurations": list(configs), "load_average": os.getloadavg(),
              "bundles": {}}
    bundles = [b for b in sorted(Path(args.bundles).glob("*-onnx*")) if (b / "manifest.json").is_file()
               and "test_data" in json.loads((b / "manifest.json").read_text())]
    for bundle in bundles:
        result["bundles"][bundle.name] = measure(bundle, configs)
        print(bundle.name, json.dumps(result["bundles"][bundle.name]), flush=True)
    if args.web:
        result["onnxruntime-web (wasm, node)"] = measure_wasm(bundles, Path(args.web))
        for name, row in result["onnxruntime-web (wasm, node)"]["bundles"].items():
            print(name, "onnxruntime-web", json.dumps(row), flush=True)
    worst = {}
    for rows in result["bundles"].values():
        for label, row in rows.items():
            worst[label] = max(worst.get(label, 0.0), row["share_of_tolerance"])
    if args.web:
        worst["onnxruntime-web"] = max(r["share_of_tolerance"] for r in result["onnxruntime-web (wasm, node)"]["bundles"]
                                       .values())
    result["largest_share_of_tolerance"] = worst
    print("largest share of the tolerance used:", json.dumps(worst))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
