"""Serving benchmarks: zoo serve and tritonserver side by side, against in-process Session.predict.

Starts `zoo serve` and `zoo serve --engine triton` (both on 127.0.0.1, the same bundles, the same thread budget:
one instance with `--threads` intra-op threads per model), then for each batching setting runs the same bounded
load (benchmarks/serve_load.py) on clouds-cnn and water-mlp at concurrency 1, 8 and 64. Each repeat of a cell
measures the in-process baseline first (this process, a session with the same intra-op threads: Session.predict
p50 at batch 1 on the same inputs for concurrency 1, its best throughput over batch sizes 1, 8 and 64 otherwise),
then each engine, so that load from other processes hits all three alike; medians over `--repeats` are
reported. Every run checks that no request was lost and none got another caller's rows. Also recorded once:
what decoding a JSON infer request costs against a binary one, and the model's CPU time per row.

    python benchmarks/serve_bench.py BUNDLES_DIR [--triton-env .venv-triton] [--threads 1] [--repeats 3]
        [--settings "batching,no batching"] [--json benchmarks/serve.json]
    python benchmarks/serve_bench.py --report benchmarks/serve.json      # the markdown table of RESULTS.md

BUNDLES_DIR holds clouds-cnn-onnx and water-mlp-onnx (zoo export clouds-cnn --format onnx --out DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import numpy as np

import zoo.runtime
from serve_load import check, make_workload, run
from zoo.serve import parse_infer, split_body

MODELS = ("clouds-cnn", "water-mlp")
# (model, encoding, concurrencies): JSON and raw JPEG uploads of images at concurrency 1, with batching only
CELLS = [("water-mlp", "json", (1, 8, 64)), ("clouds-cnn", "binary", (1, 8, 64)), ("clouds-cnn", "json", (1,)),
         ("clouds-cnn", "jpeg", (1,))]
SETTINGS = {"batching": ["--max-batch-size", "64"], "no batching": ["--max-batch-size", "1"],
            "batching max 8": ["--max-batch-size", "8"],
            "batching 2 ms delay": ["--max-batch-size", "64", "--max-queue-delay-ms", "2"]}
LIMITS = {"water-mlp": (3000, 10.0), "clouds-cnn": (1500, 10.0)}   # requests, seconds per run
ENGINES = ("zoo", "triton")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """`zoo serve` of either engine on free ports (HTTP `url`, gRPC `grpc_url`), once it answers ready."""

    def __init__(self, engine: str, bundles: list[Path], args: list[str], threads: int | None,
                 triton_env: str | None, log: Path):
        self.port, self.grpc_port = free_port(), free_port()
        command = [sys.executable, "-m", "zoo.cli", "serve", *map(str, bundles), "--engine", engine,
                   "--port", str(self.port), "--grpc-port", str(self.grpc_port), *args]
        command += ["--threads", str(threads)] if threads else []
        if engine == "triton":
            command += ["--metrics-port", str(free_port())]
            command += ["--triton-env", triton_env] if triton_env else []
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log = open(log, "w")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{engine} did not start; see {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.log.close()


def tree_cpu(pid: int) -> float:
    """CPU seconds used so far by a process and its descendants (tritonserver's Python-backend stubs)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += (int(stats[p][11]) + int(stats[p][12])) / os.sysconf("SC_CLK_TCK")
        todo += children.get(p, [])
    return total


class InProcess:
    """The baseline: Session.predict in this process, on the load's own inputs, with the servers' intra-op threads."""

    def __init__(self, bundles: dict, threads: int, workloads: dict):
        self.sessions = {m: zoo.runtime.load(b, threads=threads) for m, b in bundles.items()}
        self.rows = {}      # model -> the one-row arrays the binary workload sends
        for model, session in self.sessions.items():
            w = workloads[model, "binary"]
            shape = session.manifest.inputs[0].shape
            self.rows[model] = [np.frombuffer(b[int(h["Inference-Header-Content-Length"]):], np.float32).reshape(
                1, *shape[1:]) for b, h in zip(w.bodies, w.headers)]
        jpeg = workloads.get(("clouds-cnn", "jpeg"))
        self.jpegs = [b[int(h["Inference-Header-Content-Length"]) + 4:] for b, h in zip(jpeg.bodies, jpeg.headers)]

    def latency_ms(self, model: str, encoding: str, seconds: float = 1.5) -> float:
        """p50 of one call at batch 1: predict (what a binary or JSON request runs), or prepare + predict from
        the JPEG file (what a raw upload runs)."""
        session, rows = self.sessions[model], self.rows[model]
        if encoding == "jpeg":
            def call(i):
                session.predict(session.prepare([self.jpegs[i % len(self.jpegs)]]))
        else:
            def call(i):
                session.predict(rows[i % len(rows)])
        for i in range(20):
            call(i)
        times, start, i = [], time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            t = time.perf_counter()
            call(i)
            times.append(time.perf_counter() - t)
            i += 1
        return statistics.median(times) * 1000

    def throughput(self, model: str, seconds: float = 1.5) -> dict[int, float]:
        """Rows per second of predict at batch 1, 8 and 64."""
        session, rows = self.sessions[model], self.rows[model]
        rates = {}
        for batch in (1, 8, 64):
            x = np.concatenate([rows[i % len(rows)] for i in range(batch)])
            session.predict(x)
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:
                session.predict(x)
                n += batch
            rates[batch] = n / (time.perf_counter() - start)
        return rates

    def once(self, workloads: dict) -> dict:
        """The model's CPU time per row by batch size, and JSON against binary request decoding (clouds-cnn)."""
        out = {"cpu_us_per_row": {}, "request_decoding": {}}
        for model, session in self.sessions.items():
            cpus = {}
            for batch in (1, 8, 64):
                x = np.concatenate([self.rows[model][i % 64] for i in range(batch)])
                cpu, n = time.process_time(), 0
                while time.process_time() - cpu < 1.0:
                    session.predict(x)
                    n += batch
                cpus[batch] = round((time.process_time() - cpu) / n * 1e6, 1)
            out["cpu_us_per_row"][model] = cpus
        manifest = self.sessions["clouds-cnn"].manifest
        for encoding in ("json", "binary"):
            w = workloads["clouds-cnn", encoding]
            times = []
            for _ in range(200):
                start = time.perf_counter()
                header, tail = split_body(w.bodies[0], w.headers[0].get("Inference-Header-Content-Length"))
                parse_infer(header, tail, manifest, "clouds-cnn")
                times.append(time.perf_counter() - start)
            out["request_decoding"][encoding] = {"body_bytes": len(w.bodies[0]),
                                                 "decode_us": round(statistics.median(times) * 1e6, 1)}
        return out


def report(path: Path) -> str:
    """The markdown table of a results file: in-process, zoo serve and tritonserver side by side, per cell."""
    data = json.loads(Path(path).read_text())
    rows = data["rows"]
    lines = [f"intra-op threads per model: {data['threads']}; runs per cell: {data['repeats']} (medians); 1-minute "
             f"load average {data['loadavg']['start'][0]:.1f} at the start, {data['loadavg']['end'][0]:.1f} at the end",
             "", "| setting | model | encoding | c | in-process | zoo p50 / p99 ms | zoo req/s | triton p50 / p99 ms | "
             "triton req/s | zoo vs in-process | triton vs in-process | server CPU µs/req zoo / triton | load |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        z, t = r["zoo"], r["triton"]
        if r["concurrency"] == 1:
            base = f"{r['inprocess_p50_ms']:.3f} ms"
            vs = [f"+{e['p50_ms'] - r['inprocess_p50_ms']:.2f} ms" for e in (z, t)]
        else:
            base = f"{r['inprocess_best_per_s']:.0f}/s (batch {r['inprocess_best_batch']})"
            vs = [f"{e['throughput_per_s'] / r['inprocess_best_per_s']:.2g} ×" for e in (z, t)]
        lines.append(f"| {r['setting']} | {r['model']} | {r['encoding']} | {r['concurrency']} | {base} | "
                     f"{z['p50_ms']:.2f} / {z['p99_ms']:.2f} | {z['throughput_per_s']:.0f} | "
                     f"{t['p50_ms']:.2f} / {t['p99_ms']:.2f} | {t['throughput_per_s']:.0f} | {vs[0]} | {vs[1]} | "
                     f"{z['server_cpu_us_per_request']} / {t['server_cpu_us_per_request']} | "
                     f"{r['loadavg_1min'][0]:.1f}–{r['loadavg_1min'][1]:.1f} |")
    checked = sum(r[e]["requests"] for r in rows for e in ENGINES)
    lost = sum(r[e]["failed"] + r[e]["mismatched"] for r in rows for e in ENGINES)
    lines += ["", f"requests checked: {checked}; failed, unanswered or answered with other rows: {lost}"]
    return "\n".join(lines)


def measure_cell(servers: dict, baseline: InProcess, workload, model: str, encoding: str, c: int,
                 repeats: int) -> dict:
    runs = {e: [] for e in servers}
    base, loads = [], []
    requests, seconds = LIMITS[model]
    for _ in range(repeats):
        base.append(baseline.latency_ms(model, encoding) if c == 1 else baseline.throughput(model))
        for engine, server in servers.items():
            run(server.url, workload, c, 4 * c, seconds, warmup=0)   # warm up the connections and the server
            cpu = tree_cpu(server.process.pid)
            r = run(server.url, workload, c, requests, seconds, warmup=0)
            r["server_cpu_us"] = (tree_cpu(server.process.pid) - cpu) / r["requests"] * 1e6
            check(r)
            runs[engine].append(r)
            loads.append(os.getloadavg()[0])
    row = {"model": model, "encoding": encoding, "concurrency": c, "loadavg_1min": [min(loads), max(loads)]}
    if c == 1:
        row["inprocess_p50_ms"] = statistics.median(base)
    else:
        medians = {b: statistics.median(rates[b] for rates in base) for b in base[0]}
        row["inprocess_best_batch"] = max(medians, key=medians.get)
        row["inprocess_best_per_s"] = medians[row["inprocess_best_batch"]]
        row["inprocess_per_s"] = medians
    for engine, rs in runs.items():
        row[engine] = {"runs": len(rs), "requests": sum(r["requests"] for r in rs),
                       "failed": sum(r["failed"] for r in rs), "mismatched": sum(r["mismatched"] for r in rs),
                       "p50_ms": statistics.median(r["p50_ms"] for r in rs),
                       "p99_ms": statistics.median(r["p99_ms"] for r in rs),
                       "throughput_per_s": statistics.median(r["throughput_per_s"] for r in rs),
                       "server_cpu_us_per_request": round(statistics.median(r["server_cpu_us"] for r in rs)),
                       "client_cpu_us_per_request": round(statistics.median(r["client_cpu_us"] for r in rs))}
    return row


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return print(report(Path(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path)
    parser.add_argument("--triton-env", default=os.environ.get("ZOO_TRITON_ENV"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--json", dest="json_file", default="benchmarks/serve.json")
    args = parser.parse_args()
    bundles = {m: args.bundles / f"{m}-onnx" for m in MODELS}
    logs = Path(tempfile.mkdtemp(prefix="zoo-serve-bench-"))   # the servers' own output, for when one fails
    workloads = {}
    for model, bundle in bundles.items():
        with zoo.runtime.load(bundle, threads=1) as session:
            for encoding in {e for m, e, _ in CELLS if m == model} | {"binary"}:
                workloads[model, encoding] = make_workload(session, encoding)
    baseline = InProcess(bundles, args.threads, workloads)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "versions": {p: version(p) for p in ("onnxruntime-gpu", "numpy", "starlette", "uvicorn", "aiohttp")},
              "threads": args.threads, "repeats": args.repeats, "loadavg": {"start": os.getloadavg()}}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    result["in_process"] = baseline.once(workloads)
    print(json.dumps(result["in_process"]), flush=True)
    rows = []
    for setting in args.settings.split(","):
        servers = {e: Served(e, list(bundles.values()), SETTINGS[setting], args.threads, args.triton_env,
                             logs / f"{e}-{setting.replace(' ', '_')}.log") for e in ENGINES}
        try:
            for model, encoding, concurrencies in CELLS:
                if setting != "batching" and len(concurrencies) == 1:
                    continue
                for c in concurrencies:
                    row = {"setting": setting, **measure_cell(servers, baseline, workloads[model, encoding], model,
                                                              encoding, c, args.repeats)}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            for server in servers.values():
                server.stop()
    result["rows"] = rows
    result["loadavg"]["end"] = os.getloadavg()
    Path(args.json_file).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json_file}; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
