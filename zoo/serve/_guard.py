"""The connection guard of `zoo serve`: uvicorn's httptools protocol with the limits it lacks.

uvicorn with httptools (0.55) takes request heads of any size (llhttp buffers a header of any length, the
protocol keeps every header) and waits for a request's head and body without end: a connection that sends
nothing, or a head or body a byte at a time, is held until the client gives up. This protocol, used in its
place, answers a head (request line and headers) of more than `max_head_bytes` with 431, a head not
received within `head_timeout` seconds of the connection or of its first byte, or a body not received
within `body_timeout` seconds of its head, with 408, and closes the connection; a connection that sent
nothing is closed without an answer. The answers are JSON like the app's. Deadlines are checked by one
timer per connection, every second (or a quarter of the shorter timeout), not one per request: the guard
adds 1–2 µs of CPU to a request (benchmarks/RESULTS.md, serving limits)."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("zoo.serve")


def _json_error(message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = json.dumps({"error": message}).encode()
    return body, [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                  (b"connection", b"close")]


def _refusal(status: int, message: str):
    """An ASGI app that answers every request with `status` and closes the connection."""
    body, headers = _json_error(message)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    return app


class GuardedProtocol(HttpToolsProtocol):
    max_head_bytes = 64 * 1024
    head_timeout = 10.0
    body_timeout = 60.0
    tick = 1.0   # how often a connection's deadline is checked (one timer per connection, none per request)

    @classmethod
    def with_limits(cls, max_head_bytes: int, head_timeout: float, body_timeout: float) -> type:
        """This protocol with other limits (uvicorn makes one instance per connection from the class)."""
        return type(cls.__name__, (cls,), {"max_head_bytes": max_head_bytes, "head_timeout": head_timeout,
                                           "body_timeout": body_timeout,
                                           "tick": min(1.0, head_timeout / 4, body_timeout / 4)})

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._read = 0            # size of the read being parsed
        self._in_head = False     # between a request's first byte and the end of its headers
        self._first_read = 0      # size of the read in which the current head began
        self._head_bytes = 0      # bytes of the reads since then that fell wholly inside it
        self._boundary = False    # a head began or ended during the current read
        self._lingering = False   # refused: what the client still sends is read and dropped until the deadline
        self._part, self._deadline = "head", self.loop.time() + self.head_timeout   # what must arrive by when
        self._timer = self.loop.call_later(self.tick, self._check)

    def connection_lost(self, exc) -> None:
        self._timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._read, self._boundary = len(data), False
        super().data_received(data)
        # bounds what llhttp buffers of an unfinished head; a finished one is measured exactly below
        if self._in_head and not self._boundary:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, self._too_large(f"more than {self._head_bytes} bytes"), linger=True)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._boundary, self._in_head, self._first_read, self._head_bytes = True, True, self._read, 0
        if self._deadline is None:
            self._part, self._deadline = "head", self.loop.time() + self.head_timeout

    def on_headers_complete(self) -> None:
        self._boundary, self._in_head, self._deadline = True, False, None
        if self._first_read + self._head_bytes + self._read > self.max_head_bytes:   # it may be too large
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > self.max_head_bytes:
                message = self._too_large(f"{size} bytes")
                log.info("%s: %s", self._peer(), message)
                app, self.app = self.app, _refusal(431, message)
                try:
                    super().on_headers_complete()
                finally:
                    self.app = app
                return
        super().on_headers_complete()
        self._part, self._deadline = "body", self.loop.time() + self.body_timeout

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._boundary, self._deadline = True, None

    def send_400_response(self, msg: str) -> None:   # uvicorn's answer to what llhttp cannot parse, as JSON
        self._refuse(400, "not a valid HTTP/1.1 request: its request line or headers cannot be parsed")

    def _check(self) -> None:
        if self._deadline is not None and self.loop.time() >= self._deadline:
            self._expired(self._part)
        if not self.transport.is_closing():
            self._timer = self.loop.call_later(self.tick, self._check)

    def _expired(self, part: str) -> None:
        self._deadline = None
        if self._lingering:
            self.transport.close()
            return
        cycle = self.cycle if part == "body" else None
        if cycle is not None:   # the app's receive() now says the client went away, and its answer is dropped
            answered = cycle.response_started
            cycle.disconnected = True
            cycle.message_event.set()
            if answered:
                self.transport.close()
                return
        elif not self._in_head:   # a connection that never sent a byte
            self.transport.close()
            return
        timeout = self.head_timeout if part == "head" else self.body_timeout
        self._refuse(408, f"the request's {part} did not arrive within {timeout:g} s (this server's "
                          f"--{part}-timeout)")

    def _refuse(self, status: int, message: str, linger: bool = False) -> None:
        """Answer and close. With `linger`, the rest of what the client sends is read and dropped until the
        head's deadline (or until the client closes), so that a client still sending its head reads the
        answer rather than a reset connection."""
        log.info("%s: %s", self._peer(), message)
        if self.transport.is_closing():
            return
        body, headers = _json_error(message)
        lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        lines += [name + b": " + value + b"\r\n" for name, value in [*self.server_state.default_headers, *headers]]
        self.transport.write(b"".join(lines) + b"\r\n" + body)
        if linger and self._deadline is not None and self.transport.can_write_eof():
            self._lingering = True
            self.transport.write_eof()
            return
        self._deadline = None
        self.transport.close()

    def _too_large(self, got: str) -> str:
        return (f"request head too large: {got} of request line and headers, this server takes at most "
                f"{self.max_head_bytes} bytes (--max-header-kb)")

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"
