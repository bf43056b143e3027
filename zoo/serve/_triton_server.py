"""The real Triton Inference Server, as the `nvidia-pytriton` wheel ships it (tritonserver 2.51 with the
Python backend, no ONNX Runtime backend), started on a model repository.

The wheel pins numpy<2 (its Python-backend stub is built against numpy 1.x), so it may live in its own
virtual environment (`--triton-env DIR`, or ZOO_TRITON_ENV): that environment's Python runs the stub and
must have zoo installed (`DIR/bin/pip install -e '.[triton]'`). Without one, the current environment is
used. The stub starts Python with its environment ignored (no PYTHONPATH), finding the interpreter as
`python3` on PATH; it links the interpreter's libpython, found through LD_LIBRARY_PATH with the wheel's
own libraries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from zoo.errors import ZooError

ENV_VARIABLE = "ZOO_TRITON_ENV"
WHEEL = "nvidia-pytriton==0.7.0"
INSTALL_HINT = ("python3 -m venv .venv-triton && .venv-triton/bin/pip install -e '.[triton]' (a checkout; the wheel "
                f"{WHEEL} pins numpy<2, hence its own environment), then --triton-env .venv-triton or "
                f"{ENV_VARIABLE}=.venv-triton")

_PROBE = """
import importlib.util, json, sys, sysconfig
spec = importlib.util.find_spec("pytriton")
zoo = importlib.util.find_spec("zoo.serve")
print(json.dumps({"pytriton": None if spec is None else spec.submodule_search_locations[0],
                  "zoo": zoo is not None, "version": "%d.%d" % sys.version_info[:2],
                  "libdir": sysconfig.get_config_var("LIBDIR"), "ldlibrary": sysconfig.get_config_var("LDLIBRARY")}))
"""


class TritonUnavailable(ZooError):
    """No usable tritonserver: the message says what is missing and what to install."""


@dataclass(frozen=True)
class TritonInstall:
    python: Path          # the interpreter that runs the Python-backend stub
    server: Path          # tritonserver
    libraries: list[Path]  # for LD_LIBRARY_PATH: the wheel's libraries and the interpreter's libpython
    backend_files: dict[str, Path]   # what the python backend folder must hold (name -> file in the wheel)


def find_triton(env: str | Path | None = None) -> TritonInstall:
    """The tritonserver of the nvidia-pytriton wheel in virtual environment `env` (default: ZOO_TRITON_ENV,
    else the running interpreter's environment), checked: the server binary, the Python-backend stub for
    that Python version, libpython, and zoo importable there. TritonUnavailable says what is missing."""
    env = env or os.environ.get(ENV_VARIABLE) or None
    python = Path(env) / "bin" / "python" if env else Path(sys.executable)
    where = f"the environment {env}" if env else f"this Python environment ({sys.prefix})"
    if not python.exists():
        raise TritonUnavailable(f"{env} is not a virtual environment (no bin/python); create it: {INSTALL_HINT}")
    try:
        probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True)
        info = json.loads(probe.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        raise TritonUnavailable(f"cannot run {python} to look for tritonserver: {e}") from None
    if info["pytriton"] is None:
        raise TritonUnavailable(f"tritonserver is not installed in {where}: {INSTALL_HINT}")
    root = Path(info["pytriton"]) / "tritonserver"
    server = root / "bin" / "tritonserver"
    stub = root / "python_backend_stubs" / info["version"] / "triton_python_backend_stub"
    backend = root / "backends" / "python"
    if not server.is_file():
        raise TritonUnavailable(f"{server} is missing: reinstall {WHEEL} in {where}")
    if not stub.is_file():
        raise TritonUnavailable(f"{WHEEL} has no Python-backend stub for Python {info['version']} ({stub}); "
                                "use Python 3.8 to 3.13 for the Triton environment")
    libpython = Path(info["libdir"] or "/nonexistent") / (info["ldlibrary"] or "")
    if not (info["ldlibrary"] or "").endswith(".so") or not libpython.exists():
        raise TritonUnavailable(f"the Python-backend stub links libpython{info['version']}.so, which {python} does "
                                "not provide (a Python built without --enable-shared); use one that does, or "
                                f"install the system's libpython{info['version']}")
    if not info["zoo"]:
        raise TritonUnavailable(f"zoo is not installed in {where}, whose Python runs the Triton models: "
                                f"{python.parent / 'pip'} install -e '.[triton]' from the checkout")
    libraries = [Path(info["pytriton"]).parent / "nvidia_pytriton.libs", libpython.parent]
    files = {"libtriton_python.so": backend / "libtriton_python.so",
             "triton_python_backend_utils.py": backend / "triton_python_backend_utils.py",
             "triton_python_backend_stub": stub}
    return TritonInstall(python=python, server=server, libraries=libraries, backend_files=files)


def triton_command(install: TritonInstall, repository: Path, workdir: Path, host: str, http_port: int,
                   grpc_port: int, metrics_port: int, models: list[str] | None = None,
                   exit_timeout: int = 30) -> tuple[list[str], dict]:
    """(argv, environment) for tritonserver on `repository`, listening on `host` only. `workdir` gets the
    backend folder the wheel lacks (its Python backend with the stub beside it, as symbolic links)."""
    backends = workdir / "backends"
    (backends / "python").mkdir(parents=True, exist_ok=True)
    for name, target in install.backend_files.items():
        link = backends / "python" / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    env = dict(os.environ)
    env["PATH"] = f"{install.python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, install.libraries),
                                              *filter(None, [env.get("LD_LIBRARY_PATH")])])
    argv = [str(install.server), f"--model-repository={repository}", f"--backend-directory={backends}",
            f"--cache-directory={workdir / 'cache'}",
            f"--http-address={host}", f"--http-port={http_port}", f"--grpc-address={host}", f"--grpc-port={grpc_port}",
            f"--metrics-address={host}", f"--metrics-port={metrics_port}", "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0", "--disable-auto-complete-config", f"--exit-timeout-secs={exit_timeout}"]
    if models is not None:
        argv += ["--model-control-mode=explicit", *(f"--load-model={m}" for m in models)]
    return argv, env


def run_foreground(argv: list[str], env: dict) -> int:
    """Run tritonserver until it exits; SIGTERM and SIGINT are passed on to it (it drains in-flight requests)."""
    process = subprocess.Popen(argv, env=env)

    def forward(signum, _frame):
        process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
