"""A bounded load generator for Open Inference Protocol servers (zoo serve and tritonserver alike), 127.0.0.1 only.

`concurrency` clients (asyncio + aiohttp, keep-alive connections) send prebuilt infer requests, each carrying one
of `samples` distinct inputs, until `requests` were sent or `seconds` passed. Every answer is checked after the
run against in-process zoo.runtime on that same input: a request that failed, went unanswered or came back
with another caller's rows is counted, and `check` fails the run if there is any.

    python benchmarks/serve_load.py 127.0.0.1:8000 BUNDLE [--encoding binary|json|jpeg] [--concurrency 1,8,64]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import statistics
import struct
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

import zoo.runtime

ENCODINGS = ("binary", "json", "jpeg")


@dataclass
class Workload:
    model: str
    encoding: str
    output: str
    bodies: list[bytes]
    headers: list[dict]
    expected: list[np.ndarray]   # per sample: the output row in-process zoo.runtime gives


def _jpeg(rng, size) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_workload(session, encoding: str, samples: int = 256, seed: int = 0) -> Workload:
    """`samples` distinct one-row requests for the session's model, with the outputs to expect."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}")
    rng = np.random.default_rng(seed)
    (name,) = session.input_names
    output = session.output_names[0]
    pre = session.manifest.preprocess[name]
    bodies, headers, expected = [], [], []
    for _ in range(samples):
        if encoding == "jpeg":
            image = _jpeg(rng, (pre.size[0] + 7, pre.size[1] + 5))
            arrays = session.prepare([image])
            blob = struct.pack("<I", len(image)) + image
            entry = {"name": f"{name}_raw", "shape": [1, 1], "datatype": "BYTES"}
        else:
            if pre.kind == "image":
                h, w = pre.size
                arrays = {name: pre.apply(rng.integers(0, 256, (1, pre.channels, h, w), dtype=np.uint8))}
            else:
                arrays = {name: rng.random((1, len(pre.features))).astype(np.float32)}
            blob = arrays[name].tobytes()
            entry = {"name": name, "shape": list(arrays[name].shape), "datatype": "FP32"}
        binary = encoding != "json"
        if binary:
            entry["parameters"] = {"binary_data_size": len(blob)}
        else:
            entry["data"] = arrays[name].ravel().tolist()
        header = json.dumps({"inputs": [entry], "outputs": [{"name": output, "parameters": {"binary_data": binary}}]})
        bodies.append(header.encode() + (blob if binary else b""))
        headers.append({"Content-Type": "application/octet-stream" if binary else "application/json",
                        **({"Inference-Header-Content-Length": str(len(header))} if binary else {})})
        expected.append(session.predict(arrays)[output][0])
    return Workload(session.manifest.model, encoding, output, bodies, headers, expected)


def _decode(body: bytes, header_length: str | None, output: str) -> np.ndarray:
    n = int(header_length) if header_length else len(body)
    answer = json.loads(body[:n])
    entry = next(o for o in answer["outputs"] if o["name"] == output)
    size = (entry.get("parameters") or {}).get("binary_data_size")
    if size is None:
        return np.asarray(entry["data"], np.float32).reshape(entry["shape"])
    offset = n   # one binary output: it starts right after the JSON header
    return np.frombuffer(body[offset:offset + size], np.float32).reshape(entry["shape"])


async def _load(url: str, workload: Workload, concurrency: int, requests: int, seconds: float, warmup: int):
    import aiohttp

    target = f"http://{url}/v2/models/{workload.model}/infer"
    if urlsplit(target).hostname not in ("127.0.0.1", "localhost"):
        raise ValueError("this load generator only targets 127.0.0.1")
    records: list = []
    counter = itertools.count()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async def send(k: int):
            async with http.post(target, data=workload.bodies[k], headers=workload.headers[k]) as r:
                return r.status, r.headers.get("Inference-Header-Content-Length"), await r.read()

        await asyncio.gather(*(send(k % len(workload.bodies)) for k in range(warmup)))
        deadline = time.perf_counter() + seconds

        async def worker():
            while (i := next(counter)) < requests and time.perf_counter() < deadline:
                k = i % len(workload.bodies)
                start = time.perf_counter()
                try:
                    result = await send(k)
                except Exception as e:  # noqa: BLE001 - a lost request is counted, not fatal
                    result = (None, None, repr(e).encode())
                records.append((k, time.perf_counter() - start, *result))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return records, elapsed


def run(url: str, workload: Workload, concurrency: int, requests: int = 2000, seconds: float = 15.0,
        warmup: int | None = None) -> dict:
    """One bounded run: latency percentiles, throughput, and how many answers were lost or not the caller's."""
    cpu = time.process_time()
    records, elapsed = asyncio.run(_load(url, workload, concurrency, requests, seconds,
                                         2 * concurrency if warmup is None else warmup))
    client_cpu = time.process_time() - cpu   # this process: the load generator itself (checks come after)
    failed = mismatched = 0
    first_problem = None
    for k, _, status, header_length, body in records:
        if status != 200:
            failed += 1
            first_problem = first_problem or f"status {status}: {body[:200]!r}"
            continue
        got = _decode(body, header_length, workload.output)
        if got.shape != (1, *workload.expected[k].shape) or not np.allclose(got[0], workload.expected[k],
                                                                              rtol=1e-4, atol=1e-5):
            mismatched += 1
            first_problem = first_problem or f"sample {k}: got {got.ravel()[:4]}, expected {workload.expected[k][:4]}"
    latencies = sorted(r[1] * 1000 for r in records)

    def pct(q):
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
    return {"model": workload.model, "encoding": workload.encoding, "concurrency": concurrency,
            "requests": len(records), "seconds": round(elapsed, 3),
            "throughput_per_s": round(len(records) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(statistics.median(latencies), 3) if latencies else None, "p90_ms": round(pct(0.9), 3),
            "p99_ms": round(pct(0.99), 3), "failed": failed, "mismatched": mismatched, "first_problem": first_problem,
            "client_cpu_us": round(client_cpu / max(1, len(records)) * 1e6, 1)}


def check(result: dict) -> None:
    """No request lost, none answered with another caller's rows."""
    assert result["requests"] > 0, result
    assert result["failed"] == 0 and result["mismatched"] == 0, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="host:port of the server (127.0.0.1 only)")
    parser.add_argument("bundle", help="the bundle the server serves, for the expected answers")
    parser.add_argument("--encoding", default="binary", choices=ENCODINGS)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    with zoo.runtime.load(args.bundle, threads=1) as session:
        workload = make_workload(session, args.encoding)
    for c in (int(v) for v in args.concurrency.split(",")):
        result = run(args.url, workload, c, args.requests, args.seconds)
        print(json.dumps(result))
        check(result)


if __name__ == "__main__":
    main()
