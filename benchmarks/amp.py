"""Mixed precision on CPU (`zoo train --amp`: bfloat16 autocast) against float32: seconds per epoch of training steps
and the final validation metric, on the real datasets, in one process with the two settings alternating.

    OMP_NUM_THREADS=1 flock /tmp/zoo-bench.lock python benchmarks/amp.py --data-root ../shared/data \\
        --json benchmarks/amp.json

With ONEDNN_MAX_CPU_ISA=AVX2 and ATEN_CPU_CAPABILITY=avx2 in the environment, neither oneDNN nor ATen's own kernels
use the CPU's AVX-512 and bfloat16 instructions (avx512_bf16), as on a CPU without them.

Each pass is a whole `zoo.train` run (fresh model, the recipe's seed, the recipe's schedule stretched over the short
run's epochs) into a temporary folder; passes go float32, amp, float32, amp, ... so that the machine's load falls on
both alike. The epoch time is the training steps' wall time (the history's `seconds`; validation runs in float32 either
way); the CPU time is the whole pass's (data loading and validation included, the same in both settings), which
other processes' load on a shared machine stretches far less than wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

import zoo
from zoo import registry

# model -> the short run's settings (epochs; transfer learning: head epochs, then fine-tuning epochs)
RUNS = {"clouds-cnn": {"epochs": 8}, "cifar2-netresdeep": {"epochs": 2},
        "food10-mobilenetv2": {"epochs": 2, "finetune_epochs": 1}}


def one_pass(name: str, data: str, amp: bool, settings: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="zoo-amp-") as out:
        started, cpu = time.monotonic(), _cpu_seconds()
        card = zoo.train(name, data, out=out, amp=amp, console=Console(quiet=True), **settings)
        wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu
        history = json.loads((Path(out) / f"{name}.history.json").read_text())
    spec = registry.get(name)
    return {"amp": amp, "epoch_seconds": [h["seconds"] for h in history],
            "median_epoch_seconds": statistics.median(h["seconds"] for h in history),
            "val_metric": card["metrics"]["val"][spec.monitor], "monitor": spec.monitor,
            "best_epoch": card["best_epoch"], "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1)}


def _cpu_seconds() -> float:
    """This process's CPU time (user + system): unlike wall time, hardly stretched by other processes' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--passes", type=int, default=2, help="passes of each setting, alternating")
    parser.add_argument("--models", default=",".join(RUNS))
    parser.add_argument("--json")
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
               # both AVX2: neither oneDNN nor ATen's kernels use the CPU's bfloat16 instructions (a CPU without them)
               "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
               "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
               "torch": torch.__version__, "cpu_bf16_flags": sorted(
                   {"avx512_bf16", "amx_bf16"} & set(Path("/proc/cpuinfo").read_text().split())),
               "loadavg_before": Path("/proc/loadavg").read_text().split()[:3], "models": {}}
    for name in args.models.split(","):
        data = str(Path(args.data_root) / registry.dataset(registry.get(name).dataset).folder)
        passes = []
        for k in range(args.passes):
            for amp in (False, True):
                passes.append(one_pass(name, data, amp, RUNS[name]))
                p = passes[-1]
                print(f"{name} pass {k + 1} amp={amp}: {p['median_epoch_seconds']:.1f} s/epoch, "
                      f"val {p['monitor']} {p['val_metric']:.4f}", flush=True)
        off = [p for p in passes if not p["amp"]]
        on = [p for p in passes if p["amp"]]
        results["models"][name] = {
            "settings": RUNS[name], "passes": passes,
            "epoch_seconds_fp32": statistics.median(p["median_epoch_seconds"] for p in off),
            "epoch_seconds_amp": statistics.median(p["median_epoch_seconds"] for p in on),
            "cpu_seconds_fp32": statistics.median(p["cpu_seconds"] for p in off),
            "cpu_seconds_amp": statistics.median(p["cpu_seconds"] for p in on),
            "val_fp32": statistics.mean(p["val_metric"] for p in off),
            "val_amp": statistics.mean(p["val_metric"] for p in on)}
        r = results["models"][name]
        r["speedup"] = round(r["epoch_seconds_fp32"] / r["epoch_seconds_amp"], 3)
        r["cpu_speedup"] = round(r["cpu_seconds_fp32"] / r["cpu_seconds_amp"], 3)
        print(f"{name}: fp32 {r['epoch_seconds_fp32']:.1f} s/epoch, amp {r['epoch_seconds_amp']:.1f} s/epoch "
              f"({r['speedup']:.2f}x; whole runs' CPU time {r['cpu_speedup']:.2f}x); val {r['val_fp32']:.4f} vs "
              f"{r['val_amp']:.4f}", flush=True)
    results["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
