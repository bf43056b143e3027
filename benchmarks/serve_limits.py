"""What the connection limits cost: zoo serve's throughput before and after them, side by side, same client.

Starts, on the same bundles with the same flags, `zoo serve` from a source tree without the limits (`--before`,
e.g. the commit before them: `git archive 3750fbd | tar -x -C /tmp/before`), `zoo serve` from this tree (the
connection guard on httptools: head size and head/body timeouts), the same with the guard swapped for uvicorn's
plain httptools protocol (what the guard alone costs, apart from the app's changes), and this tree's app on
uvicorn's pure-Python h11 protocol with its own head limit (`h11_max_incomplete_event_size`, the alternative:
a head limit but no timeouts). Then it runs the same bounded load (serve_load.py: every answer checked) on each in turn,
rotating which goes first, for `--repeats` passes, and reports the median throughput and p50 of each. First
it times the guard alone, in this process: one keep-alive connection's requests fed to uvicorn's httptools
protocol and to the guarded one, on uvloop, with an app that answers at once (CPU µs per request, alternating).

    python benchmarks/serve_limits.py BUNDLES_DIR --before /tmp/before [--repeats 5] \
        [--json benchmarks/serve_limits.json]
    python benchmarks/serve_limits.py --report benchmarks/serve_limits.json      # the table of RESULTS.md

BUNDLES_DIR holds water-mlp-onnx and clouds-cnn-onnx (zoo export NAME --format onnx --out DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import zoo.runtime
from serve_bench import free_port, tree_cpu
from serve_load import check, make_workload, run

HERE = Path(__file__).resolve().parent.parent
CELLS = [("water-mlp", "json", 1), ("water-mlp", "json", 8), ("water-mlp", "json", 64), ("clouds-cnn", "binary", 8)]
LIMITS = {"water-mlp": (3000, 5.0), "clouds-cnn": (1500, 5.0)}   # requests, seconds per pass
H11 = """
import sys, uvicorn, zoo.runtime, zoo.serve
bundles, port = sys.argv[1:-1], int(sys.argv[-1])
app = zoo.serve.create_app([zoo.runtime.load(b, threads=1) for b in bundles])
uvicorn.run(app, host="127.0.0.1", port=port, http="h11", h11_max_incomplete_event_size=64 * 1024,
            log_level="warning", lifespan="on")
"""
UNGUARDED = """
import sys
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
import zoo.serve._guard
zoo.serve._guard.GuardedProtocol.with_limits = classmethod(lambda cls, *limits: HttpToolsProtocol)
from zoo.cli import main
sys.argv[0] = "zoo"
main()
"""


REQUEST = (b"POST /v2/models/water-mlp/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: Python/3.11 "
           b"aiohttp/3.14.5\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\n\r\n{}")


def protocol_us_per_request(protocol: type, requests: int = 20000) -> float:
    """uvicorn's per-connection protocol alone: `requests` requests on one connection, each answered at once
    (CPU µs per request)."""
    import uvicorn
    import uvloop
    from uvicorn.server import ServerState

    class Transport(asyncio.Transport):
        def get_extra_info(self, name, default=None):
            return {"peername": ("127.0.0.1", 1), "sockname": ("127.0.0.1", 80)}.get(name, default)

        def is_closing(self):
            return False

        def write(self, data):
            pass

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

    async def app(scope, receive, send):
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    config = uvicorn.Config(app, http=protocol, log_level="warning", lifespan="off")
    config.load()
    state, loop = ServerState(), uvloop.new_event_loop()
    connection = protocol(config=config, server_state=state, app_state={}, _loop=loop)
    connection.connection_made(Transport())

    async def feed():
        start = time.process_time()   # CPU time: steadier than the wall clock on a shared machine
        for _ in range(requests):
            connection.data_received(REQUEST)
            while state.tasks:
                await asyncio.sleep(0)
        return (time.process_time() - start) / requests * 1e6
    try:
        return loop.run_until_complete(feed())
    finally:
        loop.close()


def protocol_cost(repeats: int) -> dict:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from zoo.serve._guard import GuardedProtocol

    times = {"httptools": [], "guarded": []}
    for _ in range(repeats):
        times["httptools"].append(protocol_us_per_request(HttpToolsProtocol))
        times["guarded"].append(protocol_us_per_request(GuardedProtocol))
    return {name: {"median_us": round(statistics.median(t), 2), "runs_us": [round(x, 1) for x in t]}
            for name, t in times.items()}


class Variant:
    def __init__(self, name: str, command: list[str], source: Path, log: Path):
        self.name, self.port = name, free_port()
        env = {**os.environ, "PYTHONPATH": str(source)}
        self.log = open(log, "w")
        self.process = subprocess.Popen([*command, str(self.port)] if name == "h11" else
                                        [*command, "--port", str(self.port)], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.url = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://{self.url}/v2/health/ready", timeout=2):
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {log}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(60)
        self.log.close()


def report(path: Path) -> str:
    data = json.loads(Path(path).read_text())
    names = data["variants"]
    cost = data["protocol_us_per_request"]
    lines = [f"the protocol alone, CPU µs per request (median of {len(cost['httptools']['runs_us'])} alternating runs "
             f"of 20,000): httptools {cost['httptools']['median_us']}, guarded {cost['guarded']['median_us']}", "",
             f"passes per cell: {data['repeats']} (medians), each variant once per pass in rotating order; 1-minute "
             f"load average {data['loadavg']['start'][0]:.1f} at the start, {data['loadavg']['end'][0]:.1f} at the "
             "end", "",
             "| model | encoding | c | " + " | ".join(f"{n} req/s (p50 ms)" for n in names) + " | "
             + " | ".join(f"{n} / {names[0]}" for n in names[1:]) + " | server CPU µs/req " + " / ".join(names)
             + " | load |", "| --- | --- | ---: |" + " ---: |" * (2 * len(names) - 1) + " ---: | --- |"]
    for row in data["rows"]:
        v = row["variants"]
        lines.append(f"| {row['model']} | {row['encoding']} | {row['concurrency']} | "
                     + " | ".join(f"{v[n]['throughput_per_s']:.0f} ({v[n]['p50_ms']:.2f})" for n in names) + " | "
                     + " | ".join(f"{v[n]['throughput_per_s'] / v[names[0]]['throughput_per_s']:.2f} ×"
                                  for n in names[1:]) + " | "
                     + " / ".join(str(v[n]["server_cpu_us_per_request"]) for n in names)
                     + f" | {row['loadavg_1min'][0]:.1f}–{row['loadavg_1min'][1]:.1f} |")
    checked = sum(v["requests"] for row in data["rows"] for v in row["variants"].values())
    lost = sum(v["failed"] + v["mismatched"] for row in data["rows"] for v in row["variants"].values())
    return "\n".join(lines + ["", f"requests checked: {checked}; failed or answered wrongly: {lost}"])


def measure(variants: list[Variant], workload, model: str, concurrency: int, repeats: int) -> dict:
    runs = {v.name: [] for v in variants}
    loads = []
    requests, seconds = LIMITS[model]
    for i in range(repeats):
        for v in variants[i % len(variants):] + variants[:i % len(variants)]:
            run(v.url, workload, concurrency, 4 * concurrency, seconds, warmup=0)
            cpu = tree_cpu(v.process.pid)
            r = run(v.url, workload, concurrency, requests, seconds, warmup=0)
            r["server_cpu_us"] = (tree_cpu(v.process.pid) - cpu) / r["requests"] * 1e6
            check(r)
            runs[v.name].append(r)
            loads.append(os.getloadavg()[0])
    return {"loadavg_1min": [min(loads), max(loads)], "variants": {
        name: {"requests": sum(r["requests"] for r in rs), "failed": sum(r["failed"] for r in rs),
               "mismatched": sum(r["mismatched"] for r in rs),
               "throughput_per_s": statistics.median(r["throughput_per_s"] for r in rs),
               "passes_per_s": [r["throughput_per_s"] for r in rs],
               "p50_ms": statistics.median(r["p50_ms"] for r in rs),
               "server_cpu_us_per_request": round(statistics.median(r["server_cpu_us"] for r in rs))}
        for name, rs in runs.items()}}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        return print(report(Path(sys.argv[2])))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundles", type=Path)
    parser.add_argument("--before", type=Path, required=True, help="a source tree of zoo without the limits")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", dest="json_file", default="benchmarks/serve_limits.json")
    args = parser.parse_args()
    bundles = [args.bundles / f"{m}-onnx" for m in ("water-mlp", "clouds-cnn")]
    serve = ["serve", *map(str, bundles), "--threads", "1"]
    logs = Path(tempfile.mkdtemp(prefix="zoo-serve-limits-"))
    result = {"variants": ["before", "after", "unguarded", "h11"], "repeats": args.repeats,
              "loadavg": {"start": os.getloadavg()}}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    result["protocol_us_per_request"] = protocol_cost(2 * args.repeats + 1)
    print(json.dumps(result["protocol_us_per_request"]), flush=True)
    zoo_cli = [sys.executable, "-m", "zoo.cli", *serve]
    variants = [Variant("before", zoo_cli, args.before.resolve(), logs / "before.log"),
                Variant("after", zoo_cli, HERE, logs / "after.log"),
                Variant("unguarded", [sys.executable, "-c", UNGUARDED, *serve], HERE, logs / "unguarded.log"),
                Variant("h11", [sys.executable, "-c", H11, *map(str, bundles)], HERE, logs / "h11.log")]
    rows = []
    try:
        for model, encoding, c in CELLS:
            with zoo.runtime.load(args.bundles / f"{model}-onnx", threads=1) as session:
                workload = make_workload(session, encoding)
            row = {"model": model, "encoding": encoding, "concurrency": c,
                   **measure(variants, workload, model, c, args.repeats)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        for v in variants:
            v.stop()
    result["rows"], result["loadavg"]["end"] = rows, os.getloadavg()
    Path(args.json_file).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json_file}; load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
