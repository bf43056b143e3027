"""Overhead of zoo.runtime's Session.predict over a bare onnxruntime InferenceSession.run, batch 1.

The bare InferenceSession is created on the same model file with the settings the Session reports (threads,
CPU arena, graph optimisation level), so only the runtime's Python work differs: input validation (names,
rank, shape, dtype, NaN/inf), the contiguous copy, and naming the outputs. The two calls alternate in blocks
so that load from other processes hits both alike; medians are compared.

    python benchmarks/predict_overhead.py BUNDLE [--rounds 40] [--block 50] [--threads 1] [--json FILE]
"""

import argparse
import json
import statistics
import time

import numpy as np

import zoo.runtime


def bare_session(session):
    """A plain onnxruntime InferenceSession with the settings `session` runs with."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = session.settings["threads"]
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = session.settings["cpu_arena"]
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(session.manifest.file), options, providers=["CPUExecutionProvider"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()

    session = zoo.runtime.load(args.bundle, threads=args.threads)
    bare = bare_session(session)
    spec = session.manifest.inputs[0]
    x = np.random.default_rng(0).random(tuple(1 if isinstance(d, str) else d for d in spec.shape), dtype=np.float32)
    feeds, outputs = {spec.name: x}, session.output_names
    calls = {"bare InferenceSession.run": lambda: bare.run(outputs, feeds), "Session.predict": lambda: session.predict(x)}
    np.testing.assert_array_equal(calls["bare InferenceSession.run"]()[0], calls["Session.predict"]()[outputs[0]])
    times = {name: [] for name in calls}
    for _ in range(5 * args.block):  # warm-up
        for call in calls.values():
            call()
    for _ in range(args.rounds):
        for name, call in calls.items():
            for _ in range(args.block):
                t0 = time.perf_counter_ns()
                call()
                times[name].append(time.perf_counter_ns() - t0)
    medians = {name: statistics.median(t) / 1e3 for name, t in times.items()}
    bare_us, predict_us = medians["bare InferenceSession.run"], medians["Session.predict"]
    result = {"model": session.manifest.model, "threads": args.threads, "calls_each": len(times["Session.predict"]),
              "bare_run_median_us": round(bare_us, 2), "predict_median_us": round(predict_us, 2),
              "overhead_us": round(predict_us - bare_us, 2), "overhead_pct": round(100 * (predict_us / bare_us - 1), 2)}
    print(json.dumps(result, indent=2))
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
