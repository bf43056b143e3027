"""Every model in fp32 / fp16 / int8-dynamic / int8-static: size, batch-1 p50, batch-64 throughput, and the
model's metric on the validation split of the real training data. One JSON, and a markdown table.

    python benchmarks/precision.py [--data-root ../shared/data] [--threads 1] [--rounds 3] [--iters 200]
                                   [--out benchmarks/precision.json] [MODEL ...]

Bundles: `zoo.export` of the shipped weights with `--data <root>/<folder>` (the dataset's real training data;
the built-in course data for circles and thermometer), every precision, the default accuracy budget. A
precision refused for its accuracy is exported again with an open budget, so that its speed can still be
measured; the table marks it. A precision refused because it does not fit the model (weights left mostly
float) has no bundle.

Timing: `zoo.bench.run` (one fresh worker process per bundle, `Session.predict` numpy in -> numpy out, batch 1
and 64, `--threads` for ONNX Runtime, session creation). The machine is shared, so each model is timed in
`--rounds` rounds with the precisions in a rotated order, and the table gives the median over rounds of each
round's p50 (batch 1) and of each round's median-based throughput (64 / p50 at batch 64). The 1-minute load
average is recorded before each round.

Why a target is missed: the int8 graphs are loaded by ONNX Runtime as a session would (all optimisations,
which fuse DequantizeLinear -> op -> QuantizeLinear into integer kernels) and the ops left computing in
float are listed; the CPU's VNNI support is read from /proc/cpuinfo.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

from zoo import bench, registry
from zoo.export import PRECISIONS, Budget, export

HERE = Path(__file__).resolve().parent
OPEN_BUDGET = Budget(min_agreement=0.0, max_drop=1.0, max_mse_increase=1e6)
# ops of an optimised int8 graph that do not compute in float: integer kernels, (de)quantisation, layout
NOT_FLOAT = {"QLinearConv", "QGemm", "QLinearMatMul", "QLinearAdd", "QLinearMul", "QLinearConcat",
             "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax",
             "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
             "NhwcMaxPool", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Reshape", "Flatten",
             "Transpose", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat", "Cast", "Identity"}
CONV = {"Conv", "FusedConv"}


def cpu_flags() -> dict:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "vnni": sorted(f for f in flags if "vnni" in f), "amx": sorted(f for f in flags if f.startswith("amx"))}


def optimised_ops(model_file: Path) -> dict:
    """Op types of the graph as an ONNX Runtime CPU session runs it, and those that still compute in float."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        ops = Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)
    return {"ops": dict(ops), "float": {op: n for op, n in ops.items() if op not in NOT_FLOAT}}


def bundles(name: str, data: Path | None, out: Path) -> dict:
    """{precision: {"bundle", "accuracy", "within_budget", "refused"}} for every precision."""
    found = {p: {"bundle": None, "accuracy": None, "within_budget": None, "refused": None} for p in PRECISIONS}
    result = export(name, "onnx", out=out, data=data, precisions=PRECISIONS, check=False)
    for path in result.bundles:
        manifest = json.loads((path / "manifest.json").read_text())
        precision = manifest["precision"]["name"]
        found[precision].update(bundle=str(path), accuracy=manifest.get("accuracy"), within_budget=True)
    retry = []
    for outcome in result.refused:
        entry = found[outcome.precision]
        entry.update(accuracy=outcome.accuracy, refused=outcome.reason, within_budget=False)
        if outcome.accuracy is not None:   # refused for its accuracy: time it all the same
            retry.append(outcome.precision)
    if retry:
        for path in export(name, "onnx", out=out, data=data, precisions=retry, budget=OPEN_BUDGET):
            precision = json.loads((path / "manifest.json").read_text())["precision"]["name"]
            found[precision]["bundle"] = str(path)
    return found


def timings(found: dict, threads: int, rounds: int, iters: int) -> dict:
    """`zoo bench` of every precision side by side (one fresh worker process per bundle), `rounds` times with
    the precisions in a rotated order; per precision the median over rounds of the batch-1 p50, the batch-64
    throughput (from the p50: robust to other processes' interruptions), session creation and p99."""
    available = [p for p in PRECISIONS if found[p]["bundle"]]
    cells = {p: {"p50_1": [], "p99_1": [], "tput_64": [], "create": [], "rss": []} for p in available}
    loads = []
    for r in range(rounds):
        order = available[r % len(available):] + available[:r % len(available)]
        loads.append(round(os.getloadavg()[0], 2))
        result = bench.run(found["fp32"]["bundle"], backends=("onnxruntime",), devices=("cpu",), batches=(1, 64),
                           iters=iters, warmup=max(5, iters // 10), threads=threads, precisions=order)
        for row in result["rows"]:
            cell = cells[row["precision"]]
            if row["batch"] == 1:
                cell["p50_1"].append(row["p50_ms"])
                cell["p99_1"].append(row["p99_ms"])
                cell["create"].append(row["session_ms"])
            else:
                cell["tput_64"].append(64 / row["p50_ms"] * 1e3)
            cell["rss"].append(row["peak_rss_mb"])
    loads.append(round(os.getloadavg()[0], 2))
    median = statistics.median
    return {"cells": {p: {"ms_batch1": median(c["p50_1"]), "p99_ms_batch1": median(c["p99_1"]),
                          "throughput_batch64": median(c["tput_64"]), "session_ms": median(c["create"]),
                          "peak_rss_mb": max(c["rss"]), "rounds": {"ms_batch1": c["p50_1"], "throughput_batch64": c["tput_64"]}}
                      for p, c in cells.items()},
            "load_avg_1min": loads}


def measure(name: str, data_root: Path, out: Path, threads: int, rounds: int, iters: int) -> dict:
    spec = registry.get(name)
    folder = registry.dataset(spec.dataset).folder
    data = data_root / folder if folder else None
    found = bundles(name, data, out)
    result = {"model": name, "params": spec.params,
              "data": f"<data-root>/{folder}" if folder else "built-in (the course's data)",
              "monitor": spec.monitor if spec.is_classifier else "mse", "precisions": found}   # what the budget judges
    result.update(timings(found, threads, rounds, iters))
    for precision, entry in found.items():
        if entry["bundle"]:
            file = Path(entry["bundle"]) / "model.onnx"
            entry["size_bytes"] = file.stat().st_size
            if precision.startswith("int8"):
                entry["graph"] = optimised_ops(file)
    return result


def _metric(entry: dict, monitor: str, side: str) -> str:
    report = entry["accuracy"]
    return "-" if report is None else f"{report['metrics'][side][monitor]:.4f}"


def table(results: list[dict]) -> str:
    lines = ["| model | params | precision | size KB | × fp32 | batch-1 p50 µs | × fp32 | batch-64 samples/s | × fp32 "
             "| create ms | metric (val) | top-1 agree | budget |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        cells, found = r["cells"], r["precisions"]
        base = cells["fp32"]
        fp32_metric = next((_metric(e, r["monitor"], "fp32") for e in found.values() if e["accuracy"]), "-")
        for precision in PRECISIONS:
            entry = found[precision]
            if not entry["bundle"]:
                lines.append(f"| {r['model']} | {r['params']:,} | {precision} | – | – | – | – | – | – | – | – | – | "
                             f"refused: {entry['refused'].split(': ', 1)[1].split(';')[0]} |")
                continue
            c = cells[precision]
            size = entry["size_bytes"] / 1024
            metric = fp32_metric if precision == "fp32" else _metric(entry, r["monitor"], "bundle")
            agree = "-"
            if entry["accuracy"] and r["monitor"] != "mse":
                agree = f"{min(o['top1_agreement'] for o in entry['accuracy']['outputs'].values()):.2%}"
            verdict = ("" if precision == "fp32" else "ok" if entry["within_budget"] else
                       "**missed**: " + "; ".join(x["check"] for x in entry["accuracy"]["checks"] if not x["passed"]))
            lines.append(
                f"| {r['model']} | {r['params']:,} | {precision} | {size:,.0f} | "
                f"{size * 1024 / found['fp32']['size_bytes']:.2f} | {c['ms_batch1'] * 1e3:,.1f} | "
                f"{c['ms_batch1'] / base['ms_batch1']:.2f} | {c['throughput_batch64']:,.0f} | "
                f"{c['throughput_batch64'] / base['throughput_batch64']:.2f} | {c['session_ms']:.1f} | "
                f"{metric} ({r['monitor']}) | {agree} | {verdict} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="zoo bench rounds, precisions in rotated order")
    parser.add_argument("--iters", type=int, default=200, help="zoo bench iterations per batch size")
    parser.add_argument("--out", default=str(HERE / "precision.json"))
    parser.add_argument("--bundles", default=None, help="keep the bundles in this folder (default: a temporary one)")
    parser.add_argument("models", nargs="*", default=registry.names())
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="zoo-precision-") as scratch:
        out = Path(args.bundles or scratch)
        for name in args.models:
            print(f"{name} ...", file=sys.stderr, flush=True)
            results.append(measure(name, Path(args.data_root), out, args.threads, args.rounds, args.iters))
            Path(args.out).write_text(json.dumps({"machine": bench.machine(), "cpu_flags": cpu_flags(),
                                                  "threads": args.threads, "rounds": args.rounds,
                                                  "results": results}, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
