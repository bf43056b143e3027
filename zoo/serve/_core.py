"""What the HTTP and the gRPC front ends share: the models and their control, the metrics and statistics,
and one inference step (raw inputs through the preprocessing, then the model's batcher)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import zoo.runtime
from zoo.contract import ImageTooLarge
from zoo.serve import _raw
from zoo.serve._batching import Closed, DeadlineExceeded
from zoo.serve._metrics import UNKNOWN, Metrics
from zoo.serve._models import Models
from zoo.serve._protocol import VERSION, InferRequest, RequestError
from zoo.serve._warmup import CheckFailed

# Triton's names of the protocol extensions this server implements, and only those: no sequence batching,
# shared memory, tracing or logging, and each model has the one version "1"
EXTENSIONS = ["binary_tensor_data", "classification", "model_configuration", "model_repository", "parameters",
              "statistics"]


@dataclass(frozen=True)
class Options:
    max_batch_size: int = 64          # rows per backend call (1: no batching)
    max_queue_delay_ms: float = 0.0   # how long the oldest queued request waits for more to batch with it
    instances: int = 1                # backend calls of a model that may run at once in the whole server
    workers: int = 1                  # processes the instances are spread over (threads within each)
    max_body_bytes: int = 32 * 2**20  # larger request bodies get 413 (after decompression too)
    max_image_pixels: int = 16_000_000   # larger images get 413 before they are decoded (a 12 Mpx photo passes)
    decode_workers: int = 2           # raw inputs (image decodes) prepared at once; the rest wait their turn
    max_head_bytes: int = 64 * 2**10  # a larger request line + headers gets 431 (the connection guard)
    head_timeout: float = 10.0        # seconds to receive a request's head, else 408 and the connection closes
    body_timeout: float = 60.0        # seconds to receive its body after the head, else the same
    grpc_address: tuple[str, int] | None = None   # also serve gRPC (KServe v2 GRPCInferenceService) there
    trust: dict = field(default_factory=dict)     # zoo.runtime.load's trust_code / trusted_keys, for (re)loads
    model_control: bool = False       # allow load/unload requests (else 403, as Triton's model control mode none)


def server_metadata() -> dict:
    try:
        own = version("zoo")
    except PackageNotFoundError:
        own = "unknown"
    return {"name": "zoo", "version": own, "extensions": EXTENSIONS}


def error_status(error: BaseException) -> tuple[int, str] | None:
    """(HTTP status, message) of an error a request can end with, or None for an unexpected one."""
    if isinstance(error, RequestError):
        return error.status, str(error)
    if isinstance(error, ImageTooLarge):
        return 413, f"{error} (--max-image-mpx)"
    if isinstance(error, ValueError):   # the runtime's checks: shapes, NaN, unreadable images, preprocessing
        return 400, str(error)
    if isinstance(error, (Closed, CheckFailed)):
        return 503, str(error)
    if isinstance(error, DeadlineExceeded):
        return 504, str(error)
    if isinstance(error, zoo.runtime.BackendError):
        return 500, str(error)
    return None


class Core:
    """The models of one server process and what both front ends do with them. `control` does the
    repository's load and unload: these models themselves, or in a server of several worker processes,
    a relay that makes every worker do it (see _workers.py)."""

    def __init__(self, sessions: list, options: Options = Options()):
        self.options = options
        self.metrics = Metrics(options.max_batch_size)
        self.models = Models(sessions, options, self.metrics)
        self.control = self.models
        self.started = False
        self.decoders = ThreadPoolExecutor(options.decode_workers, thread_name_prefix="zoo-decode")

    async def infer(self, name: str, version: str | None, parsed: InferRequest, deadline: float | None = None):
        """A parsed infer request to model `name` -> (its manifest, its outputs)."""
        variant = self.models.variant(name, version)
        session = variant.session
        if variant.raw:
            arrays, _ = await self.prepare(session, _raw.from_elements(session, parsed.raw), parsed.strict)
        else:
            arrays = parsed.tensors
        return session.manifest, await variant.batcher.predict(arrays, deadline)

    async def prepare(self, session, raw: dict, strict: bool):
        """Raw inputs -> (model arrays, warnings) in one of `decode_workers` threads: images are decoded a few
        at a time, and refused past `max_image_pixels` before they are."""
        return await asyncio.get_running_loop().run_in_executor(self.decoders, _raw.prepare, session, raw, strict,
                                                                self.options.max_image_pixels)

    def statistics(self, name: str | None = None, version: str | None = None) -> list[dict]:
        """Triton's `model_stats` of one model (404 if unknown) or of all."""
        if name and name not in self.models.names:
            raise RequestError(f"unknown model {name!r}; this server serves {', '.join(self.models.names)}", 404)
        if version not in (None, "", VERSION):
            raise RequestError(f"model {name!r} has only version {VERSION}, not {version!r}", 404)
        return self.metrics.statistics([name] if name else list(self.models.names))

    def ready(self) -> bool:
        """Every model that should serve is loaded, verified and checked (an unloaded one is not expected to)."""
        return all(e.loaded is not None or not e.wanted for e in self.models.entries.values())

    def record(self, name: str, endpoint: str, status: int, seconds: float) -> None:
        self.metrics.request(name if name in self.models.names else UNKNOWN, endpoint, status, seconds)

    def _check_control(self, action: str) -> None:
        if not self.options.model_control:
            raise RequestError(f"model {action} is off on this server: whoever can reach it could otherwise stop "
                               "or swap its models; start zoo serve with --model-control to allow it", 403)

    async def unload(self, name: str) -> None:
        self._check_control("unload")
        await self.control.unload(name)

    async def load(self, name: str) -> str:
        self._check_control("load")
        try:
            return await self.control.load(name)
        except CheckFailed as e:
            raise RequestError(f"model {name!r} was not loaded, the one before keeps serving: {e}") from None

    async def start(self) -> None:
        """Check and serve the models (once; uvicorn's server does it before it listens, the app's lifespan
        otherwise)."""
        if not self.started:
            self.started = True
            await self.models.start()

    async def close(self) -> None:
        await self.models.close()
        self.decoders.shutdown(wait=False, cancel_futures=True)
