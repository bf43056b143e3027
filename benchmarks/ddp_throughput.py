"""Data-parallel training throughput: one process against `--nproc 2` (torchrun, gloo) for a conv model, the same
global batch and epochs, each process with one thread; and, for the same two cores, one process with two threads.
Samples/s = training samples seen / the card's training time.

    python benchmarks/ddp_throughput.py [--data ../shared/data/clouds] [--epochs 4] [--json FILE]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(model: str, data: str | None, epochs: int, nproc: int | None, out: Path, threads: int = 1) -> dict:
    command = [sys.executable, "-m", "zoo.cli", "train", model, "--out", str(out), "--epochs", str(epochs)]
    command += ["--data", data] if data else []
    command += ["--nproc", str(nproc)] if nproc else []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.monotonic()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.monotonic() - started
    card = json.loads((out / f"{model}.json").read_text())
    history = json.loads((out / f"{model}.history.json").read_text())
    seen = card["dataset"]["samples"]["train"] * len(history)
    return {"processes": nproc or 1, "threads_per_process": threads, "epochs": len(history), "train_seconds": card["train_seconds"],
            "wall_seconds": round(wall, 1), "samples_per_s": round(seen / card["train_seconds"], 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clouds-cnn")
    parser.add_argument("--data")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run(args.model, args.data, args.epochs, nproc, Path(scratch) / f"{nproc}-{threads}", threads)
                for nproc, threads in ((None, 1), (2, 1), (None, 2))]
    result = {"model": args.model, "data": args.data or "built-in", "load_average": os.getloadavg(), "rows": rows,
              "speedup_2_processes_vs_1": round(rows[1]["samples_per_s"] / rows[0]["samples_per_s"], 2),
              "speedup_2_processes_vs_1_process_2_threads": round(rows[1]["samples_per_s"] / rows[2]["samples_per_s"], 2)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
