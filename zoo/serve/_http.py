"""The HTTP front end of `zoo serve`: the Open Inference Protocol (KServe v2) and Triton's extensions.

POST /v2/models/{name}[/versions/1]/infer, the hot path, is a plain ASGI handler in front of Starlette:
routing, middleware and Request/Response objects cost about a third of a small model's request in
Starlette (measured: 340 against 215 µs of server CPU per water-mlp request), so this one path does without.
Everything else is routed by Starlette:

GET /v2, /v2/health/live, /v2/health/ready; GET /v2/models/{name}[/versions/1] (metadata), .../ready,
.../config (the Triton configuration), .../stats and /v2/models/stats (Triton's statistics);
POST /v2/repository/index, /v2/repository/models/{name}/load | unload (Triton's model repository extension);
POST /v2/models/{name}/classify (an image upload, a form, a CSV body or JSON: labels with probabilities);
GET /metrics (Prometheus); GET / (a page to try the models).

Request bodies may come compressed (Content-Encoding gzip or deflate), bounded after decompression too;
answers of 1 KB or more are compressed when the client accepts it (Accept-Encoding: infer with gzip or deflate,
others with gzip). Errors are
JSON {"error": "..."} with a status naming what was wrong; bodies over the limit get 413. An infer request
whose client disconnects while it is queued is dropped before it is computed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import zlib

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from zoo.serve import _page, _raw
from zoo.serve._batching import rows_of
from zoo.serve._core import Core, Options, error_status, server_metadata
from zoo.serve._protocol import RequestError, encode_infer, parse_infer, parse_json, split_body

log = logging.getLogger("zoo.serve")
DRAINED = "the server is shutting down and this request did not finish within its drain time (--drain-seconds)"
MAX_TOP_K = 1000
DRAIN = 256 * 2**20   # a refused body is read and dropped up to this much, so the client gets the answer
ENCODINGS = ("gzip", "deflate")
COMPRESS_FROM = 1024   # bytes: smaller answers go as they are (aiohttp, for one, asks for gzip by default)


class ClientGone(Exception):
    """The client disconnected before its answer: there is no one to answer."""


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _too_large(limit: int, got: str) -> RequestError:
    return RequestError(f"request body too large: {got}, this server takes at most {limit} bytes (--max-body-mb)",
                        413)


async def _drain(receive) -> None:
    dropped = 0
    while dropped <= DRAIN:
        message = await receive()
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """A gzip or deflate (zlib) request body, decompressed to at most `limit` bytes."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ENCODINGS:
        raise RequestError(f"unsupported Content-Encoding {encoding!r}: send the body as is, gzip or deflate", 415)
    inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)   # either header: gzip or zlib
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise RequestError(f"the {encoding} body cannot be decompressed: {e}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit, f"more than {limit} bytes once decompressed")
    if not inflater.eof:
        raise RequestError(f"the {encoding} body is truncated")
    return out


async def read_body(scope, receive, limit: int) -> bytes:
    """The request body, at most `limit` bytes on the wire and after decompression; RequestError otherwise
    (a body too large is drained first, so that the client, still sending, reads the 413)."""
    headers = dict(scope["headers"])
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        await _drain(receive)
        raise _too_large(limit, f"{declared.decode()} bytes")
    chunks, seen = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            log.info("%s %s: the client went away before its request was read", scope["method"], scope["path"])
            raise ClientGone()
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            if message.get("more_body", False):
                await _drain(receive)
            raise _too_large(limit, f"more than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
    return _decompress(b"".join(chunks), encoding, limit)


def _accepted(scope) -> str | None:
    """The first of gzip and deflate the client's Accept-Encoding names (without q=0), or None."""
    for value in dict(scope["headers"]).get(b"accept-encoding", b"").decode("latin-1").lower().split(","):
        name, _, params = value.partition(";")
        if name.strip() in ENCODINGS and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return name.strip()
    return None


def _compressed(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        out = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        return out.compress(body) + out.flush()
    return zlib.compress(body, 6)


class InferEndpoint:
    """ASGI: POST /v2/models/{name}[/versions/{v}]/infer handled here, anything else passed to `app` (the
    Starlette app: its `router` is this one's, for whoever runs the lifespan)."""

    def __init__(self, core: Core, app):
        self.core, self.app = core, app
        self.router = app.router

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith("/v2/models/") \
                or not path.endswith("/infer"):
            return await self.app(scope, receive, send)
        name, _, version = path[len("/v2/models/"):-len("/infer")].partition("/versions/")
        if "/" in name or "/" in version:
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status, headers = 200, []
        try:
            content, headers = await self._infer(scope, receive, name, version or None)
        except ClientGone:
            self.core.record(name, "infer", 499, time.perf_counter() - start)   # nginx's code for it
            return
        except asyncio.CancelledError:   # uvicorn cancels what still runs when the drain time is up
            status, content = 503, json.dumps({"error": DRAINED}).encode()
            headers = [(b"content-type", b"application/json")]
        except Exception as e:  # noqa: BLE001 - every failure becomes a JSON error with its status
            known = error_status(e)
            if known is None:
                log.exception("unexpected error on POST %s", path)
                known = (500, f"internal error: {type(e).__name__}")
            status, content = known[0], json.dumps({"error": known[1]}).encode()
            headers = [(b"content-type", b"application/json")]
        encoding = _accepted(scope) if len(content) >= COMPRESS_FROM else None
        if encoding is not None:
            content = _compressed(content, encoding)
            headers.append((b"content-encoding", encoding.encode()))
        headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        self.core.record(name, "infer", status, time.perf_counter() - start)

    async def _infer(self, scope, receive, name: str, version: str | None):
        variant = self.core.models.variant(name, version)
        body = await read_body(scope, receive, self.core.options.max_body_bytes)
        length = dict(scope["headers"]).get(b"inference-header-content-length")
        header, tail = split_body(body, None if length is None else length.decode("latin-1"))
        parsed = parse_infer(header, tail, variant.session.manifest, name, variant.raw)
        task, waiting, gone = asyncio.current_task(), True, False

        def disconnected(watch):   # the client went away while its request waits: cancel it, leaving it unrun
            nonlocal gone
            if waiting and not watch.cancelled() and watch.result()["type"] == "http.disconnect":
                gone = True
                task.cancel()
        watch = asyncio.ensure_future(receive())
        watch.add_done_callback(disconnected)
        try:
            manifest, outputs = await self.core.infer(name, version, parsed)
        except asyncio.CancelledError:
            if gone:
                raise ClientGone() from None
            raise
        finally:
            waiting = False
            watch.cancel()
        content, headers = encode_infer(parsed, outputs, manifest, name)
        return content, [(k.encode(), v.encode()) for k, v in headers.items()]


class BodyGuard:
    """ASGI middleware for the Starlette routes: the body read once with the limit and decompressed
    (read_body), then handed to the app as one message."""

    def __init__(self, app, limit: int, core: Core):
        self.app, self.limit, self.core = app, limit, core

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        try:
            body = await read_body(scope, receive, self.limit)
        except RequestError as e:
            return await _error(e.status, str(e))(scope, receive, send)
        except ClientGone:
            path = scope["path"]
            if path.startswith("/v2/models/") and path.endswith("/classify"):
                self.core.record(path[len("/v2/models/"):-len("/classify")], "classify", 499, 0.0)
            return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replay, send)


def _answering(handler):
    """A route whose RequestErrors (and the runtime's ValueErrors) become JSON errors with their status."""
    async def run(self, request: Request) -> Response:
        try:
            return await handler(self, request)
        except Exception as e:  # noqa: BLE001
            known = error_status(e)
            if known is None:
                raise
            return _error(*known)
    return run


def _model(request: Request) -> tuple[str, str | None]:
    return request.path_params["model"], request.path_params.get("version")


class _Routes:
    """The handlers of the routes Starlette dispatches, over one Core."""

    def __init__(self, core: Core):
        self.core = core

    async def classify(self, request: Request) -> Response:
        start, name = time.perf_counter(), request.path_params["model"]
        try:
            response = await _classify(self.core, request)
        except HTTPException as e:   # e.g. a malformed multipart body
            response = _error(e.status_code, e.detail)
        except asyncio.CancelledError:   # uvicorn cancels what still runs when the drain time is up
            response = _error(503, DRAINED)
        except Exception as e:  # noqa: BLE001
            known = error_status(e)
            if known is None:
                raise
            response = _error(*known)
        self.core.record(name, "classify", response.status_code, time.perf_counter() - start)
        return response

    @_answering
    async def metadata(self, request: Request) -> Response:
        return JSONResponse(self.core.models.variant(*_model(request)).metadata)

    @_answering
    async def ready(self, request: Request) -> Response:
        self.core.models.variant(*_model(request))   # 404 for an unknown model, 503 for one not loaded
        return Response(status_code=200)

    @_answering
    async def config(self, request: Request) -> Response:
        variant = self.core.models.variant(*_model(request))
        if variant.config is None:
            raise RequestError(f"model {variant.name!r} is a {variant.session.manifest.format} bundle: it has no "
                               "Triton configuration (those are made from ONNX bundles)", 404)
        return JSONResponse(variant.config)

    @_answering
    async def stats(self, request: Request) -> Response:
        name, version = request.path_params.get("model"), request.path_params.get("version")
        return JSONResponse({"model_stats": self.core.statistics(name, version)})

    @_answering
    async def repository_index(self, request: Request) -> Response:
        body = await request.body()
        ready_only = False
        if body.strip():
            try:
                ready_only = json.loads(body).get("ready") is True
            except (ValueError, AttributeError):
                raise RequestError('expected a JSON object like {"ready": true}, or no body') from None
        return JSONResponse(self.core.models.index(ready_only))

    @_answering
    async def load(self, request: Request) -> Response:
        await self.core.load(request.path_params["model"])
        return Response(status_code=200)

    @_answering
    async def unload(self, request: Request) -> Response:
        await self.core.unload(request.path_params["model"])
        return Response(status_code=200)

    async def server(self, request: Request) -> Response:
        return JSONResponse(server_metadata())

    async def live(self, request: Request) -> Response:
        return Response(status_code=200)

    async def server_ready(self, request: Request) -> Response:
        return Response(status_code=200 if self.core.ready() else 503)

    async def page(self, request: Request) -> Response:
        return HTMLResponse(_page.render([_page.entry(name, e.loaded.session.manifest)
                                          for name, e in self.core.models.entries.items() if e.loaded is not None]))

    async def metrics(self, request: Request) -> Response:
        return Response(self.core.metrics.text(), media_type=self.core.metrics.content_type)

    async def unreachable(self, request: Request) -> Response:   # POST .../infer is InferEndpoint's: a GET is a 405
        raise RuntimeError("POST .../infer reached Starlette")

    async def not_found(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no such endpoint: {request.method} {request.url.path} (see GET / for the models, "
                               "/v2/models/{name} for their metadata)")
        return _error(exc.status_code, exc.detail if exc.status_code != 405 else
                      f"{request.method} is not allowed on {request.url.path}")

    async def crashed(self, request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    def table(self) -> list[Route]:
        prefix, versioned = "/v2/models/{model}", "/v2/models/{model}/versions/{version}"
        routes = [Route(f"{prefix}/classify", self.classify, methods=["POST"]), Route("/v2/models/stats", self.stats),
                  Route("/", self.page), Route("/metrics", self.metrics), Route("/v2", self.server),
                  Route("/v2/health/live", self.live), Route("/v2/health/ready", self.server_ready),
                  Route("/v2/repository/index", self.repository_index, methods=["POST"]),
                  Route("/v2/repository/models/{model}/load", self.load, methods=["POST"]),
                  Route("/v2/repository/models/{model}/unload", self.unload, methods=["POST"])]
        for base in (prefix, versioned):
            routes += [Route(f"{base}/infer", self.unreachable, methods=["POST"]), Route(base, self.metadata),
                       Route(f"{base}/ready", self.ready), Route(f"{base}/config", self.config),
                       Route(f"{base}/stats", self.stats)]
        return routes


def create_app(sessions: list, options: Options = Options(), core: Core | None = None):
    """The ASGI app serving loaded sessions (`zoo.runtime.load`), one per model name; `core` when the
    caller made it. The gRPC server, when `options.grpc_address` asks for one, runs on the same event loop
    with the same Core."""
    core = core or Core(sessions, options)
    routes = _Routes(core)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await core.start()
        grpc = None
        if options.grpc_address is not None:
            from zoo.serve._grpc import start_grpc

            grpc = await start_grpc(core, *options.grpc_address)
        try:
            yield
        finally:
            if grpc is not None:
                await grpc.stop(grace=None)
            await core.close()

    app = Starlette(routes=routes.table(), lifespan=lifespan,
                    exception_handlers={HTTPException: routes.not_found, Exception: routes.crashed})
    app.add_middleware(GZipMiddleware, minimum_size=COMPRESS_FROM)
    app.add_middleware(BodyGuard, limit=options.max_body_bytes, core=core)
    return InferEndpoint(core, app)


async def _classify(core: Core, request: Request) -> Response:
    variant = core.models.variant(request.path_params["model"])
    if variant.raw:
        raise RequestError(f"classify model {variant.name.removesuffix('-raw')!r}: /classify takes raw inputs "
                           "for any model", 404)
    session, batcher = variant.session, variant.batcher
    try:
        top_k = int(request.query_params.get("top_k", "3"))
    except ValueError:
        top_k = 0
    if not 1 <= top_k <= MAX_TOP_K:
        raise RequestError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {request.query_params.get('top_k')!r}")
    strict = request.query_params.get("strict", "false").lower() in ("1", "true", "yes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = core.options.max_body_bytes
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        fields: dict[str, list] = {}
        async with request.form(max_files=16, max_fields=1000, max_part_size=limit) as form:
            for key, value in form.multi_items():
                fields.setdefault(key, []).append(value if isinstance(value, str) else await value.read())
        raw = _raw.from_form(session, fields)
    elif kind == "application/json":
        raw = _raw.from_json(session, parse_json(await request.body(), "the request body"))
    elif kind == "text/csv":
        try:
            text = (await request.body()).decode()
        except UnicodeDecodeError:
            raise RequestError("the CSV body is not UTF-8 text") from None
        raw = _raw.from_csv(session, text)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        raw = _raw.from_upload(session, await request.body())
    else:
        raise RequestError(f"unsupported content type {kind or '(none)'!r}: send an image file (image/* or "
                           "application/octet-stream), multipart/form-data, text/csv or application/json", 415)
    arrays, notes = await core.prepare(session, raw, strict)
    step, rows = batcher.max_batch_size, rows_of(arrays)
    parts = await asyncio.gather(*(batcher.predict({n: a[i:i + step] for n, a in arrays.items()})
                                   for i in range(0, rows, step)))
    outputs = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
    return JSONResponse({"model": variant.name, "predictions": _raw.predictions(session, outputs, top_k, notes)})
