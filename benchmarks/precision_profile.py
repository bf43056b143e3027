"""Where an int8 bundle spends its time, against fp32: ONNX Runtime's own profiler, time per op type.

    python benchmarks/precision_profile.py BUNDLE [BUNDLE ...] [--batch 64] [--runs 30] [--threads 1]

Each bundle is loaded as a session would load it (all graph optimisations, so QDQ groups are already fused
into integer kernels), run `--runs` times on random inputs after a warm-up, and the profiler's per-node
kernel times are summed by op type and divided by the number of runs. The ops that run in float between a
DequantizeLinear and a QuantizeLinear (Tanh, Elu, ...) and the (de)quantisation itself show up as their own
rows: that is what an int8 graph pays on top of its integer kernels.
"""

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

import zoo.runtime


def profile(bundle: Path, batch: int, runs: int, threads: int) -> dict:
    manifest = zoo.runtime.read_manifest(bundle)
    rng = np.random.default_rng(0)
    window = {name: getattr(pre, "window", None) for name, pre in manifest.preprocess.items()}
    feeds = {t.name: rng.random(tuple(batch if d == "batch" else window[t.name] if isinstance(d, str) else d
                                      for d in t.shape), dtype=np.float32) for t in manifest.inputs}
    warmup = 5
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(manifest.file), options, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    events = [e for e in events if e["ts"] >= starts[warmup]]   # the warm-up runs left out
    per_op = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1e3 / runs   # µs -> ms per run
    return {"bundle": str(bundle), "precision": manifest.precision,
            "batch": batch, "ms_per_run_by_op": dict(sorted(per_op.items(), key=lambda kv: -kv[1])),
            "ms_per_run": sum(per_op.values())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    results = [profile(Path(b), args.batch, args.runs, args.threads) for b in args.bundles]
    for r in results:
        ops = ", ".join(f"{op} {ms:.2f}" for op, ms in r["ms_per_run_by_op"].items())
        print(f"{Path(r['bundle']).name} ({r['precision']}, batch {r['batch']}): {r['ms_per_run']:.2f} ms of kernels "
              f"per run: {ops}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
