"""ONNX Runtime on CPU against eager PyTorch, batch 1, every model: `zoo bench` per model, one JSON.

    python benchmarks/ort_vs_eager.py [--threads 1] [--iters 300] [--batch 1] [--out benchmarks/ort_vs_eager.json]

Bundles come from `zoo.export` (the shipped weights where a model has them, else random weights — latency
does not depend on the values). Prints a markdown table: p50 latencies and the ratio ORT / eager
(target <= 0.5).
"""

import argparse
import json
import sys
from pathlib import Path

from zoo import registry
from zoo import bench


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "ort_vs_eager.json"))
    parser.add_argument("models", nargs="*", default=registry.names())
    args = parser.parse_args()

    results = []
    for name in args.models:
        print(f"{name} ...", file=sys.stderr, flush=True)
        results.append(bench.run(name, backends=("onnxruntime", "eager"), devices=("cpu",), batches=(args.batch,),
                                 iters=args.iters, warmup=args.warmup, threads=args.threads))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("| model | weights | ORT p50 ms | eager p50 ms | ORT / eager | ORT CV | eager CV | ORT RSS MB | eager RSS MB |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        rows = {row["backend"]: row for row in r["rows"]}
        ort, eager = rows.get("onnxruntime"), rows.get("eager")
        if not ort or not eager:
            print(f"| {r['model']} | {r['weights']} | skipped: {r['skipped']} |")
            continue
        ratio = ort["p50_ms"] / eager["p50_ms"]
        mark = "" if ratio <= 0.5 else " (missed)"
        print(f"| {r['model']} | {r['weights']} | {ort['p50_ms']:.4f} | {eager['p50_ms']:.4f} | {ratio:.2f}{mark} | "
              f"{ort['cv']:.2f} | {eager['cv']:.2f} | {ort['peak_rss_mb']:.0f} | {eager['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
