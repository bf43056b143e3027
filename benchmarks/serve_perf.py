"""zoo serve against tritonserver with Triton's own load generator, perf_analyzer, over HTTP and gRPC.

For each setting and model, starts `zoo serve` and `zoo serve --engine triton` (127.0.0.1, that one model, the
same options), checks that both answer every request of a short run with in-process zoo.runtime's outputs
(serve_load.py), then runs perf_analyzer (synchronous clients, batch 1) at each concurrency and protocol, `--passes` times, alternating which engine goes first (zoo, triton, triton, zoo,
...), so that load from other processes hits both alike. Each pass is three measurement windows. Reported:
medians over the passes of throughput and p50/p99 latency, server CPU per request (the server's process
tree, from /proc, over the requests its statistics counted) and the 1-minute load average during the passes.

    python benchmarks/serve_perf.py BUNDLES_DIR --perf-analyzer DIR/perf_analyzer [--triton-env .venv-triton]
        [--passes 4] [--window-ms 2000] [--json benchmarks/serve_perf.json]
    python benchmarks/serve_perf.py --report benchmarks/serve_perf.json      # the markdown table of RESULTS.md

The inputs are 16 samples of the model's own input distribution (`--input-data` files written here):
perf_analyzer's default random data is random bytes, which in FP32 tensors include NaN and infinities that
zoo.runtime refuses (on both engines), so it only works by chance on the smallest inputs.

BUNDLES_DIR holds clouds-cnn-onnx and water-mlp-onnx; benchmarks/install_perf_analyzer.sh DIR installs
perf_analyzer 2.51 (from the tritonclient wheel) as DIR/perf_analyzer.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from importlib.metadata import version
from pathlib import Path

import numpy as np

import zoo.runtime
from serve_bench import Served, tree_cpu
from serve_load import check, make_workload, run

MODELS = ("water-mlp", "clouds-cnn")
ENGINES = ("zoo", "triton")
# the matched settings of the issue that asked for this benchmark, per model; "defaults" gives no options
SETTINGS = {"defaults": {m: [] for m in MODELS},
            "matched": {"water-mlp": ["--instances", "2", "--threads", "1", "--max-queue-delay-ms", "1"],
                        "clouds-cnn": ["--max-batch-size", "8", "--instances", "2", "--threads", "1"]}}


def served_requests(server: Served, model: str) -> int:
    """Successful inferences of `model` so far, from the server's statistics (Triton's format, either engine)."""
    with urllib.request.urlopen(f"http://{server.url}/v2/models/{model}/stats", timeout=30) as r:
        return sum(s["inference_stats"]["success"]["count"] for s in json.loads(r.read())["model_stats"])


def input_data(session, path: Path, samples: int = 16) -> Path:
    """perf_analyzer's --input-data file: `samples` inputs like the load generator's (serve_load.py)."""
    workload = make_workload(session, "binary", samples=samples, seed=1)
    (name,) = session.input_names
    data = []
    for body, headers in zip(workload.bodies, workload.headers):
        values = np.frombuffer(body[int(headers["Inference-Header-Content-Length"]):], np.float32)
        data.append({name: {"content": values.tolist(), "shape": list(session.manifest.inputs[0].shape[1:])}})
    path.write_text(json.dumps({"data": data}))
    return path


def perf_analyzer(binary: str, server: Served, model: str, protocol: str, concurrency: int, window_ms: int,
                  data: Path, work: Path) -> dict:
    """One pass: three measurement windows of perf_analyzer at one concurrency; its figures and the server's
    CPU per request."""
    report = work / "pa.csv"
    url = server.url if protocol == "http" else server.grpc_url
    command = [binary, "-m", model, "-u", url, "-i", protocol, "--concurrency-range", str(concurrency),
               "-p", str(window_ms), "-s", "1000", "-r", "3", "--input-data", str(data), "-f", str(report)]
    cpu, served = tree_cpu(server.process.pid), served_requests(server, model)
    out = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed on {server.url}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    requests = served_requests(server, model) - served
    row = next(csv.DictReader(report.open()))
    return {"throughput": float(row["Inferences/Second"]), "p50_ms": int(row["p50 latency"]) / 1000,
            "p99_ms": int(row["p99 latency"]) / 1000, "requests": requests,
            "server_cpu_us": (tree_cpu(server.process.pid) - cpu) / max(1, requests) * 1e6,
            "loadavg": os.getloadavg()[0]}


def measure(args, setting: str, model: str, work: Path) -> list[dict]:
    bundle = args.bundles / f"{model}-onnx"
    with zoo.runtime.load(bundle, threads=1) as session:
        workload = make_workload(session, "binary")
        data = input_data(session, work / f"{model}-inputs.json")
    options = SETTINGS[setting][model]
    servers = {e: Served(e, [bundle], options, None, args.triton_env, work / f"{e}-{setting}-{model}.log")
               for e in ENGINES}
    rows = []
    try:
        checked = {}
        for engine, server in servers.items():   # every answer checked against in-process zoo.runtime
            result = run(server.url, workload, 8, 400, 30)
            check(result)
            checked[engine] = result["requests"]
        for protocol in args.protocols:
            for c in args.concurrency:
                passes = {e: [] for e in ENGINES}
                for p in range(args.passes):
                    for engine in (ENGINES if p % 2 == 0 else ENGINES[::-1]):
                        passes[engine].append(perf_analyzer(args.perf_analyzer, servers[engine], model, protocol, c,
                                                            args.window_ms, data, work))
                row = {"setting": setting, "options": " ".join(options) or "(none)", "model": model,
                       "protocol": protocol, "concurrency": c, "checked_requests": checked,
                       "loadavg": [min(r["loadavg"] for rs in passes.values() for r in rs),
                                   max(r["loadavg"] for rs in passes.values() for r in rs)]}
                for engine, rs in passes.items():
                    row[engine] = {k: statistics.median(r[k] for r in rs)
                                   for k in ("throughput", "p50_ms", "p99_ms", "server_cpu_us")}
                    row[engine]["passes"] = [round(r["throughput"], 1) for r in rs]
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows


def report(path: Path) -> str:
    data = json.loads(Path(path).read_text())
    lines = [f"{data['passes']} alternating passes per row (medians), {data['window_ms']} ms windows; 1-minute load "
             f"average {data['loadavg']['start'][0]:.1f} at the start, {data['loadavg']['end'][0]:.1f} at the end; "
             f"{data['machine']['cpus']} CPUs",
             "", "| setting | model | protocol | c | zoo infer/s | Triton infer/s | zoo / Triton | p99 ms zoo / Triton | "
             "server CPU µs/req zoo / Triton | load |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in data["rows"]:
        z, t = r["zoo"], r["triton"]
        ratio = z["throughput"] / t["throughput"]
        lines.append(f"| {r['setting']} | {r['model']} | {r['protocol']} | {r['concurrency']} | {z['throughput']:.0f} | "
                     f"{t['throughput']:.0f} | **{ratio:.2f} ×** | {z['p99_ms']:.2f} / {t['p99_ms']:.2f} | "
                     f"{z['server_cpu_us']:.0f} / {t['server_cpu_us']:.0f} | {r['loadavg'][0]:.1f}–{r['loadavg'][1]:.1f} |")
    settings = {(r["setting"], r["model"]): r["options"] for r in data["rows"]}
    lines += ["", "Options on both engines: " + "; ".join(f"{s} {m}: `{o}`" for (s, m), o in settings.items()) + "."]
    return "\n".join(lines)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return print(report(Path(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path)
    parser.add_argument("--perf-analyzer", default=os.environ.get("PERF_ANALYZER", "perf_analyzer"))
    parser.add_argument("--triton-env", default=os.environ.get("ZOO_TRITON_ENV"))
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--window-ms", type=int, default=2000)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--protocols", default="http,grpc", type=lambda v: v.split(","))
    parser.add_argument("--concurrency", default="8,64", type=lambda v: [int(c) for c in v.split(",")])
    parser.add_argument("--json", dest="json_file", default="benchmarks/serve_perf.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zoo-serve-perf-"))   # the servers' logs, perf_analyzer's CSV
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "versions": {p: version(p) for p in ("onnxruntime-gpu", "numpy", "starlette", "uvicorn", "grpcio")},
              "passes": args.passes, "window_ms": args.window_ms, "loadavg": {"start": os.getloadavg()},
              "command": " ".join(sys.argv), "rows": []}
    print(f"load average at start: {os.getloadavg()}; logs in {work}", flush=True)
    for setting in args.settings.split(","):
        for model in args.models.split(","):
            result["rows"] += measure(args, setting, model, work)
    result["loadavg"]["end"] = os.getloadavg()
    Path(args.json_file).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json_file}; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
