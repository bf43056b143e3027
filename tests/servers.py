"""`zoo serve` (either engine) as a subprocess on free 127.0.0.1 ports, as users start it, for the serving tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def triton_env() -> str | None:
    """The environment holding tritonserver: $ZOO_TRITON_ENV (CI sets it), else the checkout's .venv-triton."""
    local = ROOT / ".venv-triton"
    return os.environ.get("ZOO_TRITON_ENV") or (str(local) if local.is_dir() else None)


def triton_missing() -> str | None:
    """Why the Triton engine cannot run here (the skip reason), or None."""
    from zoo.serve import TritonUnavailable, find_triton

    try:
        find_triton(triton_env())
    except TritonUnavailable as e:
        return f"tritonserver is not installed: {e}"
    return None


class Server:
    """`zoo serve BUNDLE... --engine ENGINE --port P --grpc-port G ARGS`; `url` and `grpc_url` are host:port
    (what tritonclient takes)."""

    def __init__(self, bundles, engine: str = "zoo", args=(), log: Path | None = None, timeout: float = 120):
        self.port, self.grpc_port = free_port(), free_port()
        command = [sys.executable, "-m", "zoo.cli", "serve", *map(str, bundles), "--engine", engine,
                   "--port", str(self.port), "--grpc-port", str(self.grpc_port), *args]
        if engine == "triton":
            command += ["--metrics-port", str(free_port())]
            if triton_env():
                command += ["--triton-env", triton_env()]
        self.log = log
        self.output = open(log, "w") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=self.output, stderr=subprocess.STDOUT, cwd=ROOT)
        self.url = f"127.0.0.1:{self.port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.http = f"http://{self.url}"
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"zoo serve --engine {engine} did not get ready:\n{self.log_tail()}")
            time.sleep(0.2)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text().splitlines()[-lines:]) if self.log and self.log.exists() else ""

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.output is not subprocess.DEVNULL:
            self.output.close()
        return self.process.returncode


# a model whose name and labels are markup, registered and exported in a process of its own (not the tests' registry)
HOSTILE = "evil<!--<script>"
HOSTILE_LABELS = ("</script><script>window.hacked = 1</script>", '<img src=x onerror="window.hacked = 2">')
EXPORT_HOSTILE = f"""
import sys
from zoo.registry import ModelSpec, TabularPreprocess, TensorSpec, register
from zoo.export import export
register(ModelSpec(name={HOSTILE!r}, course="test", task="binary", build="zoo.models.fundamentals:circles_mlp",
                   inputs=(TensorSpec("point", ("batch", 2)),), outputs=(TensorSpec("probability", ("batch", 1)),),
                   output_kind="probability", preprocess={{"point": TabularPreprocess(columns=("x1", "x2"))}},
                   labels={{"probability": {HOSTILE_LABELS!r}}}, dataset="circles"))
print(export({HOSTILE!r}, ["onnx"], random_weights=True, out=sys.argv[1], web=sys.argv[2] == "web")[-1])
"""


def export_hostile(out: Path, web: bool = False) -> Path:
    """The hostile model exported with random weights into `out`: its ONNX bundle, or with `web` its web folder."""
    done = subprocess.run([sys.executable, "-c", EXPORT_HOSTILE, str(out), "web" if web else "onnx"],
                          capture_output=True, text=True, check=True, cwd=ROOT)
    return Path(done.stdout.strip().splitlines()[-1])
