"""A server of several worker processes: each loads every bundle and has its own event loop, batchers and
sessions. One Python process parses, batches and answers on one core at a time; several do so on as many
cores.

The supervisor (the process `zoo serve` started) holds the ports, starts the workers (spawned: a fresh
interpreter each, nothing inherited from a process that already runs onnxruntime), announces the server
once every worker is ready, forwards SIGTERM and Ctrl-C to them and waits for their drain. It accepts the
HTTP connections itself and hands them to the workers in turn (over a Unix socket, SCM_RIGHTS), so that
each serves as many: sharing the port with SO_REUSEPORT instead leaves the spread to a hash of the
client's address, and a few keep-alive connections often land unevenly. The gRPC port is shared with
SO_REUSEPORT (grpcio takes no accepted sockets). A worker that
dies unexpectedly takes the server down with a one-line error (exit 1), rather than leaving it serving
with fewer workers than asked for.

Model control reaches every worker through the supervisor, in two phases: a load request arriving at one
worker goes to the supervisor, which asks every worker to prepare (read, verify, check the bundle through
its own batchers), then, when all succeeded, to commit (swap it in), else to abort (the old one keeps
serving everywhere). Metrics and statistics are summed over the workers (prometheus-client's
multiprocess mode, in a folder the supervisor creates and removes)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import replace
from multiprocessing.connection import wait

from zoo.errors import ZooError
from zoo.serve._core import Options
from zoo.serve._metrics import MULTIPROCESS
from zoo.serve._models import client_names
from zoo.serve._protocol import RequestError
from zoo.serve._server import describe, listening_socket, reserve_port, uvicorn_server
from zoo.serve._warmup import CheckFailed

log = logging.getLogger("zoo.serve")


class Relay:
    """A worker's model control: asks the supervisor, which has every worker prepare and then commit; and
    does what the supervisor asks of this worker."""

    def __init__(self, connection, core):
        self.connection, self.core, self.loop = connection, core, None   # the loop: set once it runs
        self.waiting: dict[int, asyncio.Future] = {}
        self.staged: dict[int, object] = {}
        self.ids = itertools.count()
        self.sending = threading.Lock()
        threading.Thread(target=self._read, name="zoo-control", daemon=True).start()

    def send(self, message) -> None:
        with self.sending:
            self.connection.send(message)

    async def _ask(self, kind: str, name: str) -> str:
        if name not in self.core.models.entries:
            raise RequestError(f"unknown model {name!r}: this server's models are {', '.join(self.core.models.entries)} "
                               "(a raw-input variant follows its model)", 404)
        request = next(self.ids)
        self.waiting[request] = answer = self.loop.create_future()
        self.send((kind, name, request))
        try:
            ok, text = await answer
        finally:
            del self.waiting[request]
        if not ok:
            raise CheckFailed(text)
        return text

    async def load(self, name: str) -> str:
        return await self._ask("load", name)

    async def unload(self, name: str) -> None:
        await self._ask("unload", name)

    def _read(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):   # the supervisor is gone: drain and stop, as if it had said so
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if message[0] == "result":
                _, request, ok, text = message
                answer = self.waiting.get(request)
                if answer is not None:
                    self.loop.call_soon_threadsafe(answer.set_result, (ok, text))
            else:
                asyncio.run_coroutine_threadsafe(self._do(*message), self.loop)

    async def _do(self, kind: str, name: str, op: int) -> None:
        models = self.core.models
        try:
            if kind == "prepare":
                self.staged[op] = await models.prepare(name)
            elif kind == "commit":
                await models.commit(name, self.staged.pop(op))
            elif kind == "abort":
                staged = self.staged.pop(op, None)
                if staged is not None:
                    await staged.close()
            elif kind == "unload":
                await models.unload(name)
            self.send(("done", op, True, models.entries[name].reason))
        except CheckFailed as e:
            self.send(("done", op, False, str(e)))


def _worker(index: int, specs: list, handed, grpc: tuple | None, options: Options, drain_seconds: float,
            access_log: bool, connection) -> None:
    """A worker process: load the bundles, serve until the supervisor's SIGTERM (Ctrl-C is the supervisor's)."""
    import zoo.runtime
    from zoo.serve._http import create_app

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(format=f"%(levelname)s: [worker {index}] %(message)s")
    try:
        sessions = [zoo.runtime.load(bundle, **load) for bundle, load in specs]
        app = create_app(sessions, replace(options, grpc_address=grpc))
    except Exception as e:  # noqa: BLE001 - whatever it is, the supervisor reports it in one line
        connection.send(("failed", f"{type(e).__name__}: {e}" if not isinstance(e, ZooError) else str(e)))
        return

    relay = Relay(connection, app.core)

    def started():
        relay.loop = asyncio.get_running_loop()
        app.core.control = relay
        relay.send(("ready",))
    try:
        uvicorn_server(app, options, drain_seconds, access_log, started, signals=(signal.SIGTERM,),
                       handed=handed).run(sockets=[])
    except (ZooError, CheckFailed) as e:
        relay.send(("failed", str(e)))
        raise SystemExit(1) from None


class Stopping(Exception):
    """SIGTERM or Ctrl-C arrived while the supervisor waited for the workers."""


class Supervisor:
    def __init__(self, connections: list, processes: list, stopping: threading.Event):
        self.connections, self.processes, self.stopping = connections, processes, stopping
        self.requests: list[tuple[int, tuple]] = []   # control requests of workers, in order of arrival
        self.ops = itertools.count()

    def receive(self, timeout: float | None) -> list[tuple[int, tuple]]:
        """Messages from the workers within `timeout`; a worker that died unexpectedly is a ZooError."""
        ready = wait([*self.connections, *(p.sentinel for p in self.processes)], timeout)
        messages = []
        for i, connection in enumerate(self.connections):
            if connection in ready:
                try:
                    messages.append((i, connection.recv()))
                except (EOFError, OSError):
                    pass
        for i, process in enumerate(self.processes):
            if process.sentinel in ready and not any(j == i for j, _ in messages):
                raise ZooError(f"worker {i} (pid {process.pid}) exited with code {process.exitcode}; stopping the "
                               "server (its log is above)", exit_code=1)
        return messages

    def _all(self, message) -> dict[int, tuple]:
        """Send `message` to every worker and collect their ("done", op, ok, text) answers by worker."""
        for connection in self.connections:
            connection.send(message)
        answers: dict[int, tuple] = {}
        while len(answers) < len(self.connections):
            if self.stopping.is_set():
                raise Stopping()
            for i, reply in self.receive(0.2):
                if reply[0] == "done" and reply[1] == message[2]:
                    answers[i] = reply
                elif reply[0] in ("load", "unload"):
                    self.requests.append((i, reply))
        return answers

    def control(self, origin: int, kind: str, name: str, request: int) -> None:
        """Do a worker's load or unload request on every worker; answer it."""
        try:
            result = self._control(kind, name, origin)
        except Stopping:
            result = (False, "the server is shutting down")
        self.connections[origin].send(("result", request, *result))

    def _control(self, kind: str, name: str, origin: int) -> tuple[bool, str]:
        op = next(self.ops)
        if kind == "unload":
            self._all(("unload", name, op))
            return True, ""
        answers = self._all(("prepare", name, op))
        failed = [a[3] for a in answers.values() if not a[2]]
        if failed:
            self._all(("abort", name, op))
            return False, failed[0]
        return True, self._all(("commit", name, op))[origin][3]

    def run(self) -> None:
        while not self.stopping.is_set():
            for i, message in self.receive(0.2):
                if message[0] in ("load", "unload"):
                    self.requests.append((i, message))
            while self.requests:
                origin, (kind, name, request) = self.requests.pop(0)
                self.control(origin, kind, name, request)


def supervise(sessions: list, host: str, port: int, options: Options, drain_seconds: float, access_log: bool,
              announce, workers: int, grpc_port: int | None) -> None:
    """Run `workers` worker processes on the shared ports until SIGTERM or Ctrl-C; see the module's text."""
    specs = [(str(s.manifest.bundle), {"device": s.device, "backend": s.backend, "threads": s.threads,
                                        **options.trust}) for s in sessions]
    for session in sessions:   # each worker loads its own
        session.close()
    listener = listening_socket(host, port)
    listener.listen(2048)
    port = listener.getsockname()[1]
    held = [listener]
    grpc = None
    if grpc_port is not None:
        held.append(reserve_port(host, grpc_port))
        grpc = (host, held[1].getsockname()[1])
    metrics = tempfile.mkdtemp(prefix="zoo-serve-metrics-")
    previous_env = os.environ.get(MULTIPROCESS)
    os.environ[MULTIPROCESS] = metrics   # the workers inherit it: prometheus-client's multiprocess mode
    context = multiprocessing.get_context("spawn")
    connections, processes, channels = [], [], []
    stopping = threading.Event()
    handlers = {s: signal.signal(s, lambda *_: stopping.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(workers):
            mine, theirs = context.Pipe()
            channel, handed = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            process = context.Process(target=_worker, name=f"zoo-serve-{i}", daemon=False,
                                      args=(i, specs, handed, grpc, options, drain_seconds, access_log, theirs))
            process.start()
            theirs.close()
            handed.close()
            connections.append(mine)
            processes.append(process)
            channels.append(channel)
        supervisor = Supervisor(connections, processes, stopping)
        _wait_ready(supervisor, stopping)
        if not stopping.is_set():
            threading.Thread(target=_hand_out, args=(listener, channels, stopping), name="zoo-accept",
                             daemon=True).start()
            names = list(client_names([s.manifest for s in sessions]))
            announce(describe(names, specs[0][1]["threads"], host, port, grpc, options, workers))
            supervisor.run()
    finally:
        listener.close()
        _stop(processes, drain_seconds)
        for channel in channels:
            channel.close()
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for sock in held:
            sock.close()
        shutil.rmtree(metrics, ignore_errors=True)
        if previous_env is None:
            os.environ.pop(MULTIPROCESS, None)
        else:
            os.environ[MULTIPROCESS] = previous_env


def _hand_out(listener: socket.socket, channels: list, stopping: threading.Event) -> None:
    """Accept the HTTP connections and hand them to the workers in turn, so that each gets as many. Measured,
    perf_analyzer's connections at concurrency 8 over two workers in five starts: 5:3, 4:4, 4:4, 5:3, 4:4
    (one of them its idle metadata connection); with SO_REUSEPORT 1:7, 5:3, 8:0, 3:5, 5:3, where the busier
    worker's one core caps the throughput."""
    listener.settimeout(0.2)
    turn = itertools.cycle(channels)
    while not stopping.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:   # closed: the server is stopping
            return
        with connection:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in channels:   # the next worker still there
                try:
                    socket.send_fds(next(turn), [b"c"], [connection.fileno()])
                    break
                except OSError:
                    continue


def _wait_ready(supervisor: Supervisor, stopping: threading.Event) -> None:
    ready = set()
    while len(ready) < len(supervisor.processes) and not stopping.is_set():
        for i, message in supervisor.receive(0.2):
            if message[0] == "failed":
                raise ZooError(f"worker {i}: {message[1]}")
            if message[0] == "ready":
                ready.add(i)


def _stop(processes: list, drain_seconds: float) -> None:
    """SIGTERM to every worker (each drains), then wait; a worker still there after the drain is killed."""
    for process in processes:
        if process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + drain_seconds + 10
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()
