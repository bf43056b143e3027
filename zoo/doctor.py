"""`zoo doctor`: what this machine can run, checked rather than assumed.

ONNX Runtime lists the providers it was built with (`get_available_providers`), not the ones that load: the
CUDA provider falls back to the CPU with a log line when the CUDA or cuDNN libraries do not match, and the
CPU-only `onnxruntime` package installed beside `onnxruntime-gpu` hides CUDA altogether. So the doctor
creates a session per provider on a tiny model and reports what it really ran on, and why not."""

from __future__ import annotations

import ctypes
import glob
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("doctor_probe.onnx")   # x (batch, 4) @ 0.5 -> y (batch, 4)
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                     "onnxruntime-training", "onnxruntime-qnn", "ort-nightly", "ort-nightly-gpu")
# CUDA runtime, cuBLAS and cuDNN: the libraries ONNX Runtime's and torch's CUDA code load, with how to ask their version
LIBRARIES = {"cudart": ("libcudart.so*", "cudaRuntimeGetVersion"), "cublas": ("libcublas.so*", None),
             "cudnn": ("libcudnn.so*", "cudnnGetVersion")}


def ort_distributions(installed=None) -> list[dict]:
    """The ONNX Runtime distributions installed in this environment (they all provide `import onnxruntime`)."""
    found = []
    for name in ORT_DISTRIBUTIONS:
        try:
            version = installed(name) if installed else importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if version:
            found.append({"name": name, "version": version})
    return found


# run in a child process: ONNX Runtime writes why a provider failed to the process's stderr, not to Python
PROBE_SCRIPT = """
import json, sys, warnings
import numpy as np
import onnxruntime as ort
import zoo.runtime
warnings.simplefilter("ignore")
zoo.runtime.preload_cuda_libraries(ort)
rows = []
for provider in ort.get_available_providers():
    try:
        session = ort.InferenceSession(sys.argv[1], providers=[provider])
        session.run(None, {"x": np.ones((2, 4), np.float32)})
        used = session.get_providers()[0]
        rows.append({"provider": provider, "loads": used == provider,
                     "error": None if used == provider else "fell back to " + used})
    except Exception as e:
        rows.append({"provider": provider, "loads": False, "error": " ".join(str(e).split())[:300]})
print(json.dumps(rows))
"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def probe_providers() -> list[dict]:
    """Each compiled-in provider: whether a session on it really runs, with ONNX Runtime's logged reason if not."""
    try:
        result = subprocess.run([sys.executable, "-c", PROBE_SCRIPT, str(PROBE)], capture_output=True, text=True,
                                timeout=120)
    except subprocess.TimeoutExpired:
        return [{"provider": "?", "loads": False, "error": "probing the providers took over 120 s (a driver hang?)"}]
    if result.returncode != 0 or not result.stdout.strip():
        return [{"provider": "?", "loads": False, "error": (result.stderr.strip().splitlines() or ["no output"])[-1]}]
    rows = json.loads(result.stdout.strip().splitlines()[-1])
    logged = [ANSI.sub("", line).strip() for line in result.stderr.splitlines() if "Failed to load library" in line]
    for row in rows:
        key = "providers_" + row["provider"].removesuffix("ExecutionProvider").lower()
        reasons = [line.split(" with error: ", 1)[-1] for line in logged if key in line]
        if not row["loads"] and reasons:
            row["error"] = f"{row['error']} (its library does not load: {'; '.join(reasons)[:300]})"
    return rows


def onnxruntime_report() -> dict:
    if importlib.util.find_spec("onnxruntime") is None:
        return {"installed": False, "version": None, "compiled": [], "providers": []}
    import onnxruntime as ort

    from zoo.runtime import cuda_problem

    providers = probe_providers()
    for row in providers:
        if row["provider"] == "CUDAExecutionProvider" and not row["loads"]:
            row["error"] = f"{row['error']}; {cuda_problem() or 'see ONNX Runtime logging'}"
    return {"installed": True, "version": ort.__version__, "file": str(Path(ort.__file__).parent),
            "compiled": ort.get_available_providers(), "providers": providers}


def torch_report() -> dict:
    if importlib.util.find_spec("torch") is None:
        return {"installed": False, "hint": "pip install 'zoo[train]' for train, export and the torch backends"}
    import torch

    report = {"installed": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads(), "devices": []}
    if report["cuda_available"]:
        report["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return report


def _library_paths(pattern: str) -> list[str]:
    """Where `pattern` (e.g. libcudnn.so*) is found: the nvidia-* wheels, LD_LIBRARY_PATH, the loader's cache."""
    roots = [Path(p) for p in sys.path if p and "site-packages" in p]
    candidates = [f for root in roots for f in glob.glob(str(root / "nvidia" / "*" / "lib" / pattern))]
    for folder in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        if folder:
            candidates += glob.glob(os.path.join(folder, pattern))
    try:
        cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
        candidates += [line.split("=>")[-1].strip() for line in cache.splitlines() if pattern.rstrip("*") in line]
    except (OSError, subprocess.SubprocessError):
        pass
    return sorted(set(candidates))


def cuda_libraries() -> dict:
    out = {}
    for name, (pattern, version_call) in LIBRARIES.items():
        paths = _library_paths(pattern)
        entry = {"found": paths[:4], "version": None, "error": None}
        if paths and version_call:
            try:
                library = ctypes.CDLL(paths[0])
                if version_call == "cudnnGetVersion":
                    library.cudnnGetVersion.restype = ctypes.c_size_t
                    entry["version"] = int(library.cudnnGetVersion())
                else:
                    value = ctypes.c_int(0)
                    getattr(library, version_call)(ctypes.byref(value))
                    entry["version"] = value.value
            except (OSError, AttributeError) as e:
                entry["error"] = str(e)
        out[name] = entry
    return out


def gpus() -> dict:
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return {"nvidia_smi": False, "devices": [], "error": "nvidia-smi not found (no NVIDIA driver installed)"}
    except subprocess.SubprocessError as e:
        return {"nvidia_smi": True, "devices": [], "error": str(e)}
    if result.returncode != 0:
        return {"nvidia_smi": True, "devices": [], "error": (result.stderr or result.stdout).strip()[:300]}
    return {"nvidia_smi": True, "devices": [line.strip() for line in result.stdout.splitlines() if line.strip()],
            "error": None}


def threads() -> dict:
    from zoo.runtime import default_threads

    return {"cpu_count": os.cpu_count(), "usable_cores": default_threads(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            **{var: os.environ.get(var) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}


def diagnose(device: str | None = None, installed=None, progress=None) -> dict:
    """Everything above, plus `problems` (each with its fix); `ok` is False when `device` cannot be used or the
    installation is broken. `installed` replaces importlib.metadata.version (for tests); `progress(step)` is
    told each probe before it runs (the slow ones take seconds: starting ONNX Runtime's providers, importing
    torch)."""
    def step(message: str, probe):
        if progress:
            progress(message)
        return probe()

    report = {"python": sys.version.split()[0], "platform": platform.platform(),
              "onnxruntime_distributions": ort_distributions(installed),
              "onnxruntime": step("starting a session on each ONNX Runtime provider", onnxruntime_report),
              "torch": step("importing torch", torch_report),
              "cuda_libraries": step("looking for the CUDA and cuDNN libraries", cuda_libraries),
              "gpus": step("asking nvidia-smi for GPUs", gpus), "threads": threads(), "problems": []}
    problems = report["problems"]
    names = [d["name"] for d in report["onnxruntime_distributions"]]
    if len(names) > 1:
        keep = "onnxruntime-gpu" if "onnxruntime-gpu" in names else names[0]
        problems.append({"problem": f"{' and '.join(names)} are installed side by side: they share the `onnxruntime` "
                                    "module, so the last one installed wins (the CPU-only onnxruntime hides CUDA)",
                         "fix": f"pip uninstall -y {' '.join(names)} && pip install {keep}"})
    if not report["onnxruntime"]["installed"]:
        problems.append({"problem": "onnxruntime is not installed", "fix": "pip install onnxruntime-gpu"})
    if device == "cuda":
        ort_cuda = next((p for p in report["onnxruntime"].get("providers", [])
                         if p["provider"] == "CUDAExecutionProvider"), None)
        if ort_cuda is None or not ort_cuda["loads"]:
            from zoo.runtime import cuda_problem

            why = ort_cuda["error"] if ort_cuda else (cuda_problem() if report["onnxruntime"]["installed"] else
                                                       "onnxruntime is not installed")
            problems.append({"problem": f"--device cuda: ONNX Runtime cannot run on CUDA here ({why})",
                             "fix": "a machine with an NVIDIA GPU and driver, onnxruntime-gpu alone, and the CUDA "
                                    "runtime, cuBLAS and cuDNN 9 of its CUDA version (the nvidia-* wheels)"})
        torch_info = report["torch"]
        if torch_info["installed"] and not torch_info["cuda_available"]:
            problems.append({"problem": f"--device cuda: torch {torch_info['version']} sees no GPU "
                                        f"(built for CUDA {torch_info['cuda_build']})",
                             "fix": "a GPU machine, or a torch build for its CUDA version"})
    report["ok"] = not problems
    return report
