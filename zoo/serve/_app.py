"""`zoo serve`: bundles behind the Open Inference Protocol on Starlette + uvicorn.

Routes: GET /v2, /v2/health/live, /v2/health/ready; GET /v2/models/{name}[/versions/1] (metadata),
.../ready, .../config (the Triton configuration the model would have); POST .../infer (JSON or binary
tensors, `<input>_raw` BYTES inputs through the preprocessing, the classification extension);
POST /v2/models/{name}/classify (an image upload, a form, a CSV body or JSON: labels with probabilities);
GET /metrics (Prometheus); GET / (a page to try the models). Errors are JSON {"error": "..."} with a 4xx
status naming what was wrong; bodies and images over the limits get 413, heads over the limit 431, requests
that arrive too slowly 408 (the connection guard, _guard.py), requests cut off by the end of the drain 503."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

import zoo.runtime
from zoo.contract import ImageTooLarge
from zoo.errors import ZooError
from zoo.serve import _page, _raw
from zoo.serve._batching import Batcher, Closed, rows_of
from zoo.serve._metrics import UNKNOWN, Metrics
from zoo.serve._protocol import (VERSION, RequestError, encode_infer, model_metadata, parse_infer, parse_json,
                                 split_body)
from zoo.serve._triton_repo import model_config

log = logging.getLogger("zoo.serve")
MAX_TOP_K = 1000


@dataclass(frozen=True)
class Options:
    max_batch_size: int = 64          # rows per backend call (1: no batching)
    max_queue_delay_ms: float = 0.0   # how long the oldest queued request waits for more to batch with it
    instances: int = 1                # backend calls that may run at once, per model (worker threads)
    max_body_bytes: int = 32 * 2**20  # larger request bodies get 413
    max_image_pixels: int = 16_000_000   # larger images get 413 before they are decoded (a 12 Mpx photo passes)
    decode_workers: int = 2           # raw inputs (image decodes) prepared at once; the rest wait their turn
    max_head_bytes: int = 64 * 2**10  # a larger request line + headers gets 431 (the connection guard)
    head_timeout: float = 10.0        # seconds to receive a request's head, else 408 and the connection closes
    body_timeout: float = 60.0        # seconds to receive its body after the head, else the same


class _Model:
    def __init__(self, session, options: Options, metrics: Metrics):
        self.name = session.manifest.model
        self.session = session
        self.batcher = Batcher(session, options.max_batch_size, options.max_queue_delay_ms / 1000,
                               options.instances, on_batch=metrics.batch_observer(self.name))
        self.metadata = model_metadata(session.manifest, self.name)
        manifest = session.manifest   # what Triton would be told to do for this model (ONNX bundles only)
        self.config = None if manifest.format != "onnx" else model_config(
            manifest, self.name, "onnxruntime", options.max_batch_size, round(options.max_queue_delay_ms * 1000),
            options.instances, "KIND_GPU" if session.device == "cuda" else "KIND_CPU", session.threads)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class _BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets 413, by its Content-Length or while it streams in. The
    rest of the body is read and dropped first (up to DRAIN bytes), so that the client, still sending,
    gets the answer rather than a reset connection."""

    DRAIN = 256 * 2**20

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > self.limit):
            await self._drain(receive)
            return await _error(413, self._message(f"{declared.decode()} bytes"))(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    if message.get("more_body", False):
                        await self._drain(receive)
                    raise RequestError(self._message(f"more than {self.limit} bytes"), 413)
            return message

        await self.app(scope, limited, send)

    async def _drain(self, receive) -> None:
        dropped = 0
        while dropped <= self.DRAIN:
            message = await receive()
            if message["type"] != "http.request":
                return
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    def _message(self, got: str) -> str:
        return f"request body too large: {got}, this server takes at most {self.limit} bytes (--max-body-mb)"


def create_app(sessions: list, options: Options = Options()) -> Starlette:
    """The ASGI app serving loaded sessions (`zoo.runtime.load`), one per model name."""
    metrics = Metrics(options.max_batch_size)
    models: dict[str, _Model] = {}
    for session in sessions:
        name = session.manifest.model
        if name in models:
            raise ValueError(f"two bundles of model {name!r} ({models[name].session.manifest.bundle} and "
                             f"{session.manifest.bundle}): serve one of them")
        models[name] = _Model(session, options, metrics)
    decoders = ThreadPoolExecutor(options.decode_workers, thread_name_prefix="zoo-decode")

    def model_of(request: Request) -> _Model:
        name = request.path_params["model"]
        version = request.path_params.get("version", VERSION)
        if name not in models:
            raise RequestError(f"unknown model {name!r}; this server serves {', '.join(models)}", 404)
        if version != VERSION:
            raise RequestError(f"model {name!r} has only version {VERSION}, not {version!r}", 404)
        return models[name]

    def counted(endpoint: str):
        """An inference endpoint: errors become JSON with their status; requests are counted and timed."""
        def wrap(handler):
            async def run(request: Request) -> Response:
                start = time.perf_counter()
                name = request.path_params["model"]
                try:
                    response = await handler(request, model_of(request))
                except RequestError as e:
                    response = _error(e.status, str(e))
                except ImageTooLarge as e:
                    response = _error(413, f"{e} (--max-image-mpx)")
                except ValueError as e:   # the runtime's checks: shapes, NaN, unreadable images, preprocessing
                    response = _error(400, str(e))
                except HTTPException as e:   # e.g. a malformed multipart body
                    response = _error(e.status_code, e.detail)
                except Closed as e:
                    response = _error(503, str(e))
                except ClientDisconnect:
                    log.info("%s %s: the client went away before its request was read", request.method,
                             request.url.path)
                    response = Response(status_code=499)   # nginx's code for it; only the metrics see it
                except asyncio.CancelledError:   # uvicorn cancels what is still running when the drain time is up
                    response = _error(503, "the server is shutting down and this request did not finish within "
                                           "its drain time (--drain-seconds)")
                except zoo.runtime.BackendError as e:
                    log.error("%s: %s", name, e)
                    response = _error(500, str(e))
                metrics.request(name if name in models else UNKNOWN, endpoint, response.status_code,
                                time.perf_counter() - start)
                return response
            return run
        return wrap

    async def prepared(session, raw: dict, strict: bool):
        """Raw inputs -> model arrays in one of `decode_workers` threads: images are decoded a few at a time."""
        return await asyncio.get_running_loop().run_in_executor(decoders, _raw.prepare, session, raw, strict,
                                                                options.max_image_pixels)

    @counted("infer")
    async def infer(request: Request, model: _Model) -> Response:
        body = await request.body()
        header, tail = split_body(body, request.headers.get("inference-header-content-length"))
        parsed = parse_infer(header, tail, model.session.manifest, model.name)
        if parsed.raw:
            if parsed.tensors:
                raise RequestError(f"give every input as a tensor or every one raw (<input>_raw), not a mix: got "
                                   f"{list(parsed.tensors)} as tensors and {list(parsed.raw)} raw")
            raw = _raw.from_elements(model.session, parsed.raw)
            arrays, _ = await prepared(model.session, raw, parsed.strict)
        else:
            arrays = parsed.tensors
        outputs = await model.batcher.predict(arrays)
        content, headers = encode_infer(parsed, outputs, model.session.manifest, model.name)
        return Response(content, headers=headers)

    @counted("classify")
    async def classify(request: Request, model: _Model) -> Response:
        session = model.session
        try:
            top_k = int(request.query_params.get("top_k", "3"))
        except ValueError:
            top_k = 0
        if not 1 <= top_k <= MAX_TOP_K:
            raise RequestError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got "
                               f"{request.query_params.get('top_k')!r}")
        strict = request.query_params.get("strict", "false").lower() in ("1", "true", "yes")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            fields: dict[str, list] = {}
            async with request.form(max_files=16, max_fields=1000, max_part_size=options.max_body_bytes) as form:
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
        arrays, notes = await prepared(session, raw, strict)
        step, rows = model.batcher.max_batch_size, rows_of(arrays)
        parts = await asyncio.gather(*(model.batcher.predict({n: a[i:i + step] for n, a in arrays.items()})
                                       for i in range(0, rows, step)))
        outputs = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
        return JSONResponse({"model": model.name, "predictions": _raw.predictions(session, outputs, top_k, notes)})

    def metadata_route(field: str | None):
        async def route(request: Request) -> Response:
            try:
                model = model_of(request)
            except RequestError as e:
                return _error(e.status, str(e))
            if field == "ready":
                return Response(status_code=200)
            if field == "config":
                if model.config is None:
                    return _error(404, f"model {model.name!r} is a {model.session.manifest.format} bundle: it has "
                                       "no Triton configuration (those are made from ONNX bundles)")
                return JSONResponse(model.config)
            return JSONResponse(model.metadata)
        return route

    async def server_metadata(request: Request) -> Response:
        from importlib.metadata import PackageNotFoundError, version
        try:
            own = version("zoo")
        except PackageNotFoundError:
            own = "unknown"
        return JSONResponse({"name": "zoo", "version": own,
                             "extensions": ["binary_tensor_data", "classification", "model_configuration"]})

    async def healthy(request: Request) -> Response:
        return Response(status_code=200)

    async def page(request: Request) -> Response:
        return HTMLResponse(_page.render([_page_entry(m) for m in models.values()]))

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.text(), media_type=metrics.content_type)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return _error(404, f"no such endpoint: {request.method} {request.url.path} (see GET / for the models, "
                               "/v2/models/{name} for their metadata)")
        return _error(exc.status_code, exc.detail if exc.status_code != 405 else
                      f"{request.method} is not allowed on {request.url.path}")

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for model in models.values():
            model.batcher.start()
        try:
            yield
        finally:
            await asyncio.gather(*(m.batcher.close() for m in models.values()))
            decoders.shutdown(wait=False, cancel_futures=True)

    prefix = "/v2/models/{model}"
    versioned = f"{prefix}/versions/{{version}}"
    # inference first: Starlette tries the routes in order, and these are the hot ones
    routes = [Route(f"{prefix}/infer", infer, methods=["POST"]), Route(f"{prefix}/classify", classify, methods=["POST"]),
              Route(f"{versioned}/infer", infer, methods=["POST"]),
              Route("/", page), Route("/metrics", metrics_route), Route("/v2", server_metadata),
              Route("/v2/health/live", healthy), Route("/v2/health/ready", healthy)]
    for base in (prefix, versioned):
        routes += [Route(base, metadata_route(None)), Route(f"{base}/ready", metadata_route("ready")),
                   Route(f"{base}/config", metadata_route("config"))]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: not_found, Exception: crashed})
    app.add_middleware(_BodyLimit, limit=options.max_body_bytes)
    app.state.models = models
    return app


def _page_entry(model: _Model) -> dict:
    """What the page needs to build a model's form."""
    return _page.entry(model.name, model.session.manifest)


def serve(sessions: list, host: str = "127.0.0.1", port: int = 8000, options: Options = Options(),
          drain_seconds: float = 30, access_log: bool = False, announce=print) -> None:
    """Serve on host:port until SIGTERM or Ctrl-C, which stop taking connections, let in-flight requests
    finish (at most `drain_seconds`; those still running then get 503), then return. `announce` gets the
    line saying where it listens."""
    import copy
    import socket

    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from zoo.serve._guard import GuardedProtocol

    app = create_app(sessions, options)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)   # asyncio sets TCP_NODELAY only then
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ZooError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    level = "info" if access_log else "warning"
    logs = copy.deepcopy(LOGGING_CONFIG)   # zoo.serve's lines (one per disconnect or refused connection) as uvicorn's
    logs["loggers"]["zoo.serve"] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    guard = GuardedProtocol.with_limits(options.max_head_bytes, options.head_timeout, options.body_timeout)
    config = uvicorn.Config(app, http=guard, log_config=logs, log_level=level, access_log=access_log,
                            lifespan="on", timeout_graceful_shutdown=drain_seconds)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    line = (f"serving {', '.join(app.state.models)} on http://{shown}:{bound}/ (Open Inference Protocol v2 at /v2, "
            f"metrics at /metrics; max batch {options.max_batch_size}, max queue delay "
            f"{options.max_queue_delay_ms:g} ms, {options.instances} instance(s) x {sessions[0].threads} thread(s) "
            "per model)")
    _server_class()(config, lambda: announce(line)).run(sockets=[sock])


def _server_class():
    import signal
    import threading

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server that announces itself once it listens (and handles SIGTERM), and whose drained
        shutdown after SIGTERM or Ctrl-C ends the process normally (exit 0): uvicorn would raise the signal
        again once done, ending the process by it."""

        def __init__(self, config, on_started):
            super().__init__(config)
            self.on_started = on_started

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.should_exit:
                self.on_started()

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
    return Server
