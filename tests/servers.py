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
