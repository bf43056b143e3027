"""Running the app: uvicorn (httptools, uvloop) on a socket bound here, in this process or in several
worker processes (_workers.py), with the gRPC server on the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import signal
import socket
import threading
from dataclasses import replace

from zoo.errors import ZooError
from zoo.serve._core import Options


def listening_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port (0: a free port); with `reuse_port`, one of several processes' sockets
    sharing the port (SO_REUSEPORT: the kernel spreads new connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)   # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ZooError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold host:port for the worker processes (bound with SO_REUSEPORT, not listening, so that it takes no
    connections), after checking that no other program holds it: SO_REUSEPORT would otherwise let a second
    server share the port silently."""
    probe = listening_socket(host, port)   # fails if anything else is bound there
    port = probe.getsockname()[1]
    probe.close()
    return listening_socket(host, port, reuse_port=True)


class _Coalesced:
    """A transport whose writes within one step of the event loop leave as one send: uvicorn writes a response's
    head and its body separately, two sends that on loopback cost the server a syscall and the client a wake-up
    each (measured: the head's send was the largest single cost of a small model's request)."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport, loop):
        self._transport, self._loop, self._pending = transport, loop, []

    def write(self, data) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(bytes(data))

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def writelines(self, data) -> None:
        self.write(b"".join(data))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


def coalescing(protocol_class: type) -> type:
    """uvicorn's HTTP protocol class `protocol_class`, writing through _Coalesced."""
    class Coalescing(protocol_class):
        def connection_made(self, transport) -> None:
            super().connection_made(_Coalesced(transport, self.loop))
    return Coalescing


def shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def uvicorn_server(app, options: Options, drain_seconds: float, access_log: bool, on_started, signals=None,
                   handed=None):
    """uvicorn's server for `app` that checks the models (app.core.start) before it listens, announces itself
    once it does, handles `signals` (default SIGINT and SIGTERM: drain, then exit 0). With `handed` (a Unix
    socket), it also serves the connections another process accepted and passes over it (SCM_RIGHTS)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from zoo.serve._guard import GuardedProtocol

    level = "info" if access_log else "warning"
    logs = copy.deepcopy(LOGGING_CONFIG)   # zoo.serve's lines (one per disconnect or refused connection) as uvicorn's
    logs["loggers"]["zoo.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    guard = GuardedProtocol.with_limits(options.max_head_bytes, options.head_timeout, options.body_timeout)
    config = uvicorn.Config(app, http=coalescing(guard), log_config=logs, log_level=level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=drain_seconds)
    handled = signals or (signal.SIGINT, signal.SIGTERM)

    class Server(uvicorn.Server):
        """uvicorn's server whose drained shutdown after a signal ends the process normally (exit 0): uvicorn
        would raise the signal again once done, ending the process by it."""

        async def startup(self, sockets=None):
            await app.core.start()   # a model failing its check stops the server before it listens
            await super().startup(sockets)
            if handed is not None:
                asyncio.get_running_loop().add_reader(handed.fileno(), self.take_connection)
            if not self.should_exit:
                on_started()

        def take_connection(self) -> None:
            """A connection the supervisor accepted: served as if this process had accepted it (uvicorn's
            protocol, counted in its connections, so that the drain waits for it)."""
            loop = asyncio.get_running_loop()
            try:
                _, fds, _, _ = socket.recv_fds(handed, 1, 8)
            except OSError:
                fds = []
            if not fds:   # the supervisor is gone
                loop.remove_reader(handed.fileno())
                return
            protocol = functools.partial(config.http_protocol_class, config=config, server_state=self.server_state,
                                         app_state=self.lifespan.state)
            for fd in fds:
                loop.create_task(loop.connect_accepted_socket(protocol, socket.socket(fileno=fd)))

        async def shutdown(self, sockets=None):
            if handed is not None:
                asyncio.get_running_loop().remove_reader(handed.fileno())
            await super().shutdown(sockets)

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {s: signal.signal(s, self.handle_exit) for s in handled}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
    return Server(config)


def serve(sessions: list, host: str = "127.0.0.1", port: int = 8000, options: Options = Options(),
          drain_seconds: float = 30, access_log: bool = False, announce=print, workers: int = 1,
          grpc_port: int | None = None) -> None:
    """Serve on host:port (HTTP) and grpc_port (gRPC, unless None) until SIGTERM or Ctrl-C, which stop
    taking connections, let in-flight requests finish (at most `drain_seconds`; those still running then
    get 503), then return. With
    `workers` > 1, that many processes each serve every model (their own event loop, batchers and
    sessions, loaded from the same bundles) on the shared ports. `announce` gets the line saying where
    it listens."""
    if workers > 1:
        from zoo.serve._workers import supervise

        return supervise(sessions, host, port, options, drain_seconds, access_log, announce, workers, grpc_port)
    from zoo.serve._http import create_app

    sock = listening_socket(host, port)
    bound = sock.getsockname()[1]
    grpc = None
    if grpc_port is not None:
        held = reserve_port(host, grpc_port)
        grpc = (host, held.getsockname()[1])
    options = replace(options, grpc_address=grpc)
    app = create_app(sessions, options)
    line = describe(list(app.core.models.names), sessions[0].threads, host, bound, grpc, options, 1)
    try:
        uvicorn_server(app, options, drain_seconds, access_log, lambda: announce(line)).run(sockets=[sock])
    finally:
        if grpc_port is not None:
            held.close()


def describe(names: list[str], threads: int, host: str, port: int, grpc: tuple | None, options: Options,
             workers: int) -> str:
    """The line saying what the server serves where, and how."""
    where = f"http://{shown(host)}:{port}/" + (f" and gRPC {shown(host)}:{grpc[1]}" if grpc else "")
    return (f"serving {', '.join(names)} on {where} (Open Inference Protocol v2 at /v2, metrics at "
            f"/metrics; max batch {options.max_batch_size}, max queue delay {options.max_queue_delay_ms:g} ms, "
            f"{options.instances} instance(s) x {threads} thread(s) per model in {workers} process(es))")
