"""`zoo bench`: latency, throughput and memory per backend x device x batch, with eager PyTorch as baseline.

Each backend x device runs in its own fresh process, so session creation is a cold measurement, peak RSS
belongs to that backend alone (an onnxruntime process never imports torch), and thread settings cannot
leak between backends. Every backend gets the same thread budget: onnxruntime's intra_op_num_threads and
torch.set_num_threads are both set to `threads`.

Timed calls go numpy in -> numpy out, as an application pays them (on CUDA that includes the host<->device
copies, and torch timings synchronise the device); the `onnxruntime+iobinding` rows keep inputs and outputs
on the GPU and time the model alone. This module imports torch only inside the eager/torch workers; it is
not part of zoo.runtime, which it uses through its public API only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from zoo.errors import ZooError

__all__ = ["BACKENDS", "DEVICES", "run", "UNSTABLE_CV"]

BACKENDS = ("onnxruntime", "torchscript", "pt2", "eager")
DEVICES = ("cpu", "cuda")
FORMATS = {"onnxruntime": "onnx", "torchscript": "torchscript", "pt2": "pt2"}
NEEDS_TORCH = "pip install 'zoo[train]' (torch is not installed)"
UNSTABLE_CV = 0.15          # coefficient of variation above which a row is flagged unstable
MAX_SECONDS_PER_CELL = 10.0  # stop timing a batch size after this long (with at least 5 iterations)


# --- the parent: resolve bundles, start one worker per backend x device, collect rows ----------------------

def _bundles_for(target: str, fmt: str, precisions, scratch: Path,
                 trust_code: bool = False) -> dict[str, tuple[Path | None, str]]:
    """{precision: (bundle folder, "") or (None, why not)} for `target` (a model name or a bundle folder) in
    `fmt`: the bundle itself or its siblings beside it (`<model>-<fmt>[-<precision>]`), else exported now
    (the shipped weights, or random ones; reduced precisions are measured on the built-in sample). A
    TorchScript or pt2 bundle found there is used only with `trust_code` (loading one can run its code)."""
    from zoo.export import bundle_name
    from zoo.runtime import CODE_BACKENDS, read_manifest

    path = Path(target)
    found: dict[str, tuple[Path | None, str]] = {}
    if (path / "manifest.json").is_file():
        manifest = read_manifest(path)
        if manifest.format == fmt:
            found[manifest.precision] = (path, "")
        for precision in precisions:
            sibling = path.parent / bundle_name(manifest.model, fmt, precision)
            if precision not in found and (sibling / "manifest.json").is_file():
                found[precision] = _same_source(sibling, manifest)
        if fmt in CODE_BACKENDS and not trust_code:   # the user's files: their code runs only when trusted
            found = {p: (None, why or f"{folder} is a {fmt} bundle, and loading one runs code from its file: pass "
                                      "--trust-code if you trust whoever made it") for p, (folder, why) in found.items()}
        target = manifest.model
    missing = [p for p in precisions if p not in found]
    if not missing:
        return {p: found[p] for p in precisions}
    if importlib.util.find_spec("torch") is None:
        why = f"no such {fmt} bundle beside {path}, and exporting one needs torch: {NEEDS_TORCH}"
        return {p: found.get(p, (None, why)) for p in precisions}
    from zoo import registry
    from zoo.errors import ParityError, PrecisionRefused
    from zoo.export import export
    from zoo.weights import resolve

    spec = registry.get(target)
    try:
        folders = export(spec.name, formats=(fmt,), out=scratch, random_weights=resolve(spec, None) is None,
                         precisions=missing)
    except (ParityError, PrecisionRefused) as e:   # the precisions that passed were written
        folders = e.bundles
        for report in e.reports:
            found[report["precision"]] = (None, report.get("reason") or f"parity failed for {fmt}")
    except ZooError as e:
        return {p: found.get(p, (None, f"export to {fmt} failed: {e}")) for p in precisions}
    for folder in folders:
        found[read_manifest(folder).precision] = (Path(folder), "")
    return {p: found[p] for p in precisions}


def _same_source(sibling: Path, manifest) -> tuple[Path | None, str]:
    """(sibling, "") when the bundle beside the benchmarked one was exported from the same weights, else
    (None, why it is left out): rows of different weights side by side would compare models, not formats."""
    from zoo.export import same_weights, weights_text
    from zoo.runtime import read_manifest

    theirs, ours = read_manifest(sibling).data.get("weights") or {}, manifest.data.get("weights") or {}
    if same_weights(theirs, ours):
        return sibling, ""
    return None, (f"{sibling} was exported from other weights ({weights_text(theirs)}) than {manifest.bundle} "
                  f"({weights_text(ours)}): re-export it from the same weights to compare them")


def _eager_weights(model: str, record: dict | None) -> tuple[str | None, str]:
    """(weights file for the eager baseline or None for the build seed's random weights, a truthful label).

    With bundles, the baseline runs the bundle's own source weights: the file whose sha256 is the manifest's
    (`zoo.export.find_weights`: the shipped weights and runs/), or the same seed-0 random weights for a
    --random-weights bundle. When the source weights cannot be found, the baseline still times the
    architecture, and the label says it is latency only."""
    from zoo import registry
    from zoo.export import find_weights
    from zoo.weights import resolve

    spec = registry.get(model)
    if record is not None and record.get("random"):
        return None, "random (seed 0), as the bundle"
    if record is not None and record.get("sha256"):
        path = find_weights(model, record["sha256"], record.get("source"))
        if path is not None:
            return str(path), f"{path.name} (the bundle's source weights)"
    shipped = resolve(spec, None)
    if record is None:
        return (str(shipped), f"{shipped.name} (shipped)") if shipped else (None, "random (no shipped weights)")
    what = "shipped" if shipped else "random"
    return (str(shipped) if shipped else None), (f"eager: {what} weights, not the bundle's source weights "
                                                 "(latency only)")


def _model_name(target: str) -> str:
    """The model a target names: a bundle folder's, or a registered name. Anything that looks like a path
    (it exists, or has a folder separator) is read as a bundle, so a mistyped path is not 'unknown model'."""
    from zoo.runtime import read_manifest

    path = Path(target)
    if path.exists() or "/" in target or os.sep in target:
        return read_manifest(path).model
    from zoo import registry
    return registry.get(target).name


def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores_usable": None, "python": platform.python_version()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from zoo.runtime import default_threads
    info["cores_usable"] = default_threads()
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["gpu"] = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["gpu"] = None
    return info


def run(target: str, backends=BACKENDS, devices=("cpu",), batches=(1, 8, 64, 256), iters: int = 100,
        warmup: int = 10, threads: int | None = None, progress=None, timeout: float = 900,
        precisions=("fp32",), trust_code: bool = False) -> dict:
    """Benchmark a model name or a bundle folder. Returns {"model", "rows", "skipped", ...} (JSON-ready).
    `precisions`: the ONNX bundles to compare side by side (fp32, fp16, int8-dynamic, int8-static); the
    other backends run fp32. `trust_code`: TorchScript and pt2 bundles found beside the target may be loaded
    (their files can run code); those exported here are always loaded.

    `progress(message)` is called before each worker starts."""
    from zoo.export import PRECISIONS
    from zoo.runtime import default_threads

    unknown = [b for b in backends if b not in BACKENDS] + [d for d in devices if d not in DEVICES]
    if unknown:
        raise ZooError(f"unknown backend/device {unknown}; backends are {', '.join(BACKENDS)}, devices cpu, cuda")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ZooError(f"unknown precision {bad[0] if bad else '(none)'}; precisions are {', '.join(PRECISIONS)}")
    if not batches or any(b < 1 for b in batches) or iters < 1 or warmup < 0:
        raise ZooError(f"batches and iters must be positive and warmup >= 0, got batches={list(batches)}, "
                       f"iters={iters}, warmup={warmup}")
    threads = threads or default_threads()
    name = _model_name(target)
    result = {"model": name, "target": str(target), "threads": threads, "iters": iters, "warmup": warmup,
              "batches": list(batches), "machine": machine(), "rows": [], "skipped": [], "weights": None,
              "speedup": "eager p50 / backend p50, same device and batch",
              "timing": "numpy in -> numpy out per call (host<->device copies included on CUDA), except "
                        "onnxruntime+iobinding: inputs and outputs stay on the GPU"}
    with tempfile.TemporaryDirectory(prefix="zoo-bench-") as scratch:
        bundles: dict[tuple[str, str], Path] = {}   # (backend, precision) -> bundle folder
        for backend in backends:
            if backend == "eager":
                continue
            wanted = list(precisions) if backend == "onnxruntime" else ["fp32"]
            choices = _bundles_for(str(target), FORMATS[backend], wanted, Path(scratch), trust_code)
            for precision, (folder, why) in choices.items():
                if folder is None:
                    result["skipped"].extend({"backend": backend, "precision": precision, "device": d, "reason": why}
                                             for d in devices)
                else:
                    bundles[backend, precision] = folder
        if bundles:
            from zoo.runtime import read_manifest
            weights = read_manifest(next(iter(bundles.values()))).data.get("weights") or {}
            result["weights"] = "random" if weights.get("random") else "trained"
        eager_path, result["eager_weights"] = _eager_weights(name, weights if bundles else None)
        if "eager" not in backends or importlib.util.find_spec("torch") is None:
            result["eager_weights"] = "not measured"
        jobs = []
        has_torch = importlib.util.find_spec("torch") is not None
        for device in devices:
            for backend in backends:
                if backend != "onnxruntime" and not has_torch:
                    result["skipped"].append({"backend": backend, "precision": "fp32", "device": device,
                                              "reason": NEEDS_TORCH})
                    continue
                variants = ["plain", "iobinding"] if (backend, device) == ("onnxruntime", "cuda") else ["plain"]
                for precision in precisions if backend == "onnxruntime" else ["fp32"]:
                    if backend == "eager" or (backend, precision) in bundles:
                        jobs.extend((backend, precision, device, v) for v in variants)
        for backend, precision, device, variant in jobs:
            label = backend + ("+iobinding" if variant == "iobinding" else "")
            if progress:
                progress(f"{label} {precision} on {device}")
            bundle = bundles.get((backend, precision))
            job = {"backend": backend, "device": device, "iobinding": variant == "iobinding",
                   "bundle": str(bundle or ""), "model": name, "batches": list(batches),
                   "iters": iters, "warmup": warmup, "threads": threads,
                   "weights_path": eager_path, "trust_code": True}   # untrusted bundles were skipped above
            outcome = _start_worker(job, timeout)
            if "skipped" in outcome:
                result["skipped"].append({"backend": label, "precision": precision, "device": device,
                                          "reason": outcome["skipped"]})
            size = round(_model_file(bundle).stat().st_size / 2**20, 3) if bundle else None
            for row in outcome.get("rows", []):
                result["rows"].append({"backend": label, "precision": precision, "device": device,
                                       "size_mb": size, **row})
    _add_speedups(result)
    return result


def _model_file(bundle: Path) -> Path:
    from zoo.runtime import read_manifest

    return read_manifest(bundle).file


def _start_worker(job: dict, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo.bench", json.dumps(job)], capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"skipped": f"timed out after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"skipped": f"worker failed (exit {proc.returncode}): {tail}"}
    return json.loads(lines[-1])


def _add_speedups(result: dict) -> None:
    """Speed-up over eager PyTorch, and over the same backend's fp32 bundle, on the same device and batch,
    from the medians (p50): on a shared machine the means carry other processes' interruptions."""
    eager = {(r["device"], r["batch"]): r["p50_ms"] for r in result["rows"] if r["backend"] == "eager"}
    fp32 = {(r["backend"], r["device"], r["batch"]): r["p50_ms"] for r in result["rows"] if r["precision"] == "fp32"}
    for row in result["rows"]:
        base = eager.get((row["device"], row["batch"]))
        row["speedup_vs_eager"] = round(base / row["p50_ms"], 3) if base and row["p50_ms"] else None
        base = fp32.get((row["backend"], row["device"], row["batch"]))
        row["speedup_vs_fp32"] = round(base / row["p50_ms"], 3) if base and row["p50_ms"] else None


# --- the worker: one backend on one device, every batch size ------------------------------------------------

def _rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: the latter survives exec, so a worker started by a
    parent that imported torch would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _ort_gpu_memory_mb() -> float | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        pid, _, used = line.partition(",")
        if pid.strip() == str(os.getpid()):
            return float(used)
    return None


def _stats(times_s: list[float], batch: int) -> dict:
    ms = np.asarray(times_s) * 1e3
    mean = float(ms.mean())
    cv = float(ms.std() / mean) if mean else 0.0
    return {"iters": len(ms), "mean_ms": round(mean, 4), "p50_ms": round(float(np.percentile(ms, 50)), 4),
            "p90_ms": round(float(np.percentile(ms, 90)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "cv": round(cv, 3), "unstable": cv > UNSTABLE_CV,
            "throughput_per_s": round(batch / (mean / 1e3), 1) if mean else None}


def _inputs(tensors, preprocess: dict, batch: int, rng) -> dict[str, np.ndarray]:
    arrays = {}
    for t in tensors:
        window = getattr(preprocess.get(t.name), "window", 96)
        shape = tuple(batch if d == "batch" else window if isinstance(d, str) else d for d in t.shape)
        arrays[t.name] = rng.random(shape, dtype=np.float32)
    return arrays


def _time(call, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    started = time.perf_counter()
    for _ in range(iters):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        if len(times) >= 5 and time.perf_counter() - started > MAX_SECONDS_PER_CELL:
            break
    return times


def _worker(job: dict) -> dict:
    backend, device, threads = job["backend"], job["device"], job["threads"]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if backend == "eager":
        import torch
        imported = time.perf_counter()
        torch.set_num_threads(threads)
        from zoo import registry
        from zoo.weights import load_model

        spec = registry.get(job["model"])
        if device == "cuda" and not torch.cuda.is_available():
            return {"skipped": f"torch {torch.__version__} sees no usable GPU (torch.cuda.is_available() is False)"}
        model = load_model(spec, job["weights_path"]) if job["weights_path"] else registry.build(spec, seed=0)
        model = model.eval().to(device)
        inputs_spec, preprocess = spec.inputs, spec.preprocess

        def make_call(arrays):
            def call():
                with torch.inference_mode():
                    out = model(*(torch.from_numpy(a).to(device) for a in arrays.values()))
                    outs = out if isinstance(out, tuple) else (out,)
                    return [o.cpu().numpy() for o in outs]  # .cpu() synchronises on CUDA
            return call
    else:
        import zoo.runtime as rt
        if backend == "onnxruntime":
            import onnxruntime  # noqa: F401  (timed as the import, not as session creation)
        else:
            import torch  # noqa: F401
        imported = time.perf_counter()
        try:
            session = rt.load(job["bundle"], device=device, backend=backend, threads=threads,
                              trust_code=job["trust_code"])
        except rt.DeviceUnavailable as e:
            return {"skipped": str(e)}
        inputs_spec, preprocess = session.manifest.inputs, session.manifest.preprocess
        torch = sys.modules.get("torch")

        if job["iobinding"]:
            make_call = session.iobinding
        else:
            def make_call(arrays):
                return lambda: session.predict(arrays)
    created = time.perf_counter()
    result = {"import_s": round(imported - t0, 4), "session_s": round(created - imported, 4), "rows": []}
    for batch in job["batches"]:
        call = make_call(_inputs(inputs_spec, preprocess, batch, rng))
        if torch is not None and device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t1 = time.perf_counter()
        call()
        first = time.perf_counter() - t1
        row = {"batch": batch, "session_ms": round(result["session_s"] * 1e3, 2),
               "import_ms": round(result["import_s"] * 1e3, 2), "first_ms": round(first * 1e3, 3),
               **_stats(_time(call, job["warmup"], job["iters"]), batch), "peak_rss_mb": round(_rss_mb(), 1),
               "gpu_mb": None}
        if device == "cuda":
            if torch is not None and backend != "onnxruntime":
                row["gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            else:
                row["gpu_mb"] = _ort_gpu_memory_mb()
        result["rows"].append(row)
    return result


if __name__ == "__main__":
    try:
        print(json.dumps(_worker(json.loads(sys.argv[1]))))
    except ZooError as e:
        print(json.dumps({"skipped": str(e)}))
