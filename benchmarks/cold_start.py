"""Cold start: wall and CPU time of a fresh process that imports zoo.runtime, loads the clouds-cnn ONNX bundle
and classifies one image (benchmarks/cold_start_app.py). Target: median wall <= 0.5 s.

    python benchmarks/cold_start.py [--runs 20] [--model clouds-cnn] [--json FILE]

Also runs hyperfine on the same command when it is installed. The bundle is exported with the shipped
weights if there are any, else random weights (the timing does not depend on them).
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def timed_run(command: list[str]) -> tuple[float, float]:
    """(wall seconds, user+sys CPU seconds) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--model", default="clouds-cnn")
    parser.add_argument("--json", dest="json_file")
    args = parser.parse_args()

    from PIL import Image

    from zoo import registry
    from zoo.export import export
    from zoo.weights import resolve

    with tempfile.TemporaryDirectory(prefix="zoo-cold-") as tmp:
        trained = resolve(registry.get(args.model), None)
        (bundle,) = export(args.model, formats=("onnx",), out=tmp, random_weights=trained is None)
        image = Path(tmp) / "image.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
        command = [sys.executable, str(HERE / "cold_start_app.py"), str(bundle), str(image)]
        for _ in range(3):  # warm the page cache
            timed_run(command)
        walls, cpus = zip(*(timed_run(command) for _ in range(args.runs)))
        result = {"model": args.model, "weights": "trained" if trained else "random", "runs": args.runs,
                  "command": "python benchmarks/cold_start_app.py BUNDLE IMAGE",
                  "wall_median_s": round(statistics.median(walls), 4), "wall_min_s": round(min(walls), 4),
                  "wall_max_s": round(max(walls), 4), "cpu_median_s": round(statistics.median(cpus), 4),
                  "load_average_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count()}
        if shutil.which("hyperfine"):
            out = Path(tmp) / "hyperfine.json"
            subprocess.run(["hyperfine", "--warmup", "3", "--runs", str(args.runs), "--export-json", str(out),
                            "--style", "none", " ".join(command)], check=True, stdout=subprocess.DEVNULL)
            run = json.loads(out.read_text())["results"][0]
            result["hyperfine"] = {"median_s": round(run["median"], 4), "mean_s": round(run["mean"], 4),
                                   "stddev_s": round(run["stddev"], 4), "user_s": round(run["user"], 4),
                                   "system_s": round(run["system"], 4)}
    print(json.dumps(result, indent=2))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
