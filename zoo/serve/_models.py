"""The models a server serves, by the names clients use, and their control (Triton's model repository
extension): load, which re-reads a model's bundle folder and swaps it in atomically, and unload.

Each bundle is served under its model's name (tensor inputs) and, when every input has preprocessing, as
`<name>-raw` (raw inputs): two `Variant`s sharing one session, each with its own batcher. A load reads the
bundle (checksum and sealed manifest verified), starts its batchers and runs the check of _warmup.py
through them; only then does it replace the old one, whose queued requests finish on it. If any step fails,
the old one keeps serving and the load says why. `ready` means exactly that: loaded, verified, checked."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import zoo.runtime
from zoo.errors import ZooError
from zoo.serve._batching import Batcher
from zoo.serve._protocol import RAW_MODEL_SUFFIX, VERSION, RequestError, model_metadata, takes_raw
from zoo.serve._triton_repo import model_config
from zoo.serve._warmup import CheckFailed, check_model

log = logging.getLogger("zoo.serve")
READY, UNAVAILABLE = "READY", "UNAVAILABLE"


@dataclass
class Variant:
    """One model name clients address: its batcher, metadata and Triton configuration."""
    name: str
    raw: bool
    session: object
    batcher: Batcher
    metadata: dict
    config: dict | None


@dataclass
class Loaded:
    """One loaded bundle and the variants serving it."""
    session: object
    variants: dict[str, Variant]
    checked: str = ""
    owned: bool = True            # loaded here (a reload), not given by the caller, who closes its own

    async def close(self) -> None:
        await asyncio.gather(*(v.batcher.close() for v in self.variants.values()))
        if self.owned:
            self.session.close()


@dataclass
class Entry:
    """A model of this server: where its bundle is, how to load it, what is serving now."""
    bundle: Path
    load_options: dict
    loaded: Loaded | None = None
    state: str = UNAVAILABLE
    reason: str = "not loaded yet"
    wanted: bool = True           # False once unloaded by a request, until loaded again
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def client_names(manifests) -> dict[str, str]:
    """The names clients address -> the model serving each: the model's own, and `<name>-raw` for raw inputs."""
    names = {}
    for manifest in manifests:
        names[manifest.model] = manifest.model
        if takes_raw(manifest):
            names[manifest.model + RAW_MODEL_SUFFIX] = manifest.model
    return names


class Models:
    """name -> Entry for every bundle given at start; `variant(name)` finds what serves a request."""

    def __init__(self, sessions: list, options, metrics):
        self.options, self.metrics = options, metrics
        self.entries: dict[str, Entry] = {}
        self._initial = {}
        for session in sessions:
            name = session.manifest.model
            if name in self.entries:
                raise ValueError(f"two bundles of model {name!r} ({self.entries[name].bundle} and "
                                 f"{session.manifest.bundle}): serve one of them")
            self.entries[name] = Entry(Path(session.manifest.bundle), {
                "device": session.device, "backend": session.backend, "threads": session.threads, **options.trust})
            self._initial[name] = session
        self.names = client_names(s.manifest for s in sessions)

    # --- lookup -------------------------------------------------------------------------------------

    def variant(self, name: str, version: str | None = None) -> Variant:
        """What serves requests to `name` now; a RequestError (404: unknown, 503: not loaded) otherwise."""
        if name not in self.names:
            raise RequestError(f"unknown model {name!r}; this server serves {', '.join(self.names)}", 404)
        if version not in (None, "", VERSION):
            raise RequestError(f"model {name!r} has only version {VERSION}, not {version!r}", 404)
        entry = self.entries[self.names[name]]
        if entry.loaded is None:
            raise RequestError(f"model {name!r} is not loaded ({entry.reason}); load it with POST "
                               f"/v2/repository/models/{self.names[name]}/load", 503)
        return entry.loaded.variants[name]

    def ready(self, name: str) -> bool:
        return name in self.names and self.entries[self.names[name]].state == READY

    def index(self, ready_only: bool = False) -> list[dict]:
        """Triton's repository index: every model name with its state and the reason for it."""
        rows = []
        for name, model in self.names.items():
            entry = self.entries[model]
            if not ready_only or entry.state == READY:
                rows.append({"name": name, "version": VERSION, "state": entry.state, "reason": entry.reason})
        return rows

    # --- control ------------------------------------------------------------------------------------

    def _variants(self, session) -> dict[str, Variant]:
        o, manifest = self.options, session.manifest
        name = manifest.model
        out = {}
        for raw in (False, True) if takes_raw(manifest) else (False,):
            client_name = name + RAW_MODEL_SUFFIX if raw else name
            # the check's calls do not wait for company: the queue delay is set when it takes traffic (commit)
            batcher = Batcher(session, o.max_batch_size, 0.0, max(1, o.instances // o.workers))
            if raw or manifest.format == "onnx":
                config = model_config(manifest, client_name, "python" if raw else "onnxruntime", o.max_batch_size,
                                      round(o.max_queue_delay_ms * 1000), o.instances,
                                      "KIND_GPU" if session.device == "cuda" else "KIND_CPU", session.threads, raw=raw)
            else:
                config = None   # Triton configurations are made from ONNX bundles
            out[client_name] = Variant(client_name, raw, session, batcher, model_metadata(manifest, client_name, raw),
                                       config)
        return out

    async def prepare(self, name: str, session=None) -> Loaded:
        """Read `name`'s bundle (or take `session`), start its batchers and check it through them. The
        result serves nothing until `commit`; a ZooError or CheckFailed says which step failed."""
        entry = self.entries[name]
        owned = session is None
        if session is None:
            try:
                session = await asyncio.to_thread(zoo.runtime.load, entry.bundle, **entry.load_options)
            except (ZooError, ValueError, OSError) as e:
                raise CheckFailed(f"cannot load {entry.bundle}: {e}") from None
            if session.manifest.model != name:
                session.close()
                raise CheckFailed(f"{entry.bundle} now holds model {session.manifest.model!r}, not {name!r}")
        loaded = Loaded(session, self._variants(session), owned=owned)
        for variant in loaded.variants.values():
            variant.batcher.start()
        try:
            loaded.checked = await check_model(loaded.variants[name].batcher, session.manifest, entry.bundle)
        except (CheckFailed, ZooError) as e:
            await loaded.close()
            raise CheckFailed(f"{entry.bundle}: {e}") from None
        return loaded

    async def commit(self, name: str, loaded: Loaded) -> None:
        """Serve `loaded` from now on; the old one finishes what it has queued, then closes."""
        entry = self.entries[name]
        for variant in loaded.variants.values():   # counted from now on: the check is not traffic
            variant.batcher.on_batch = self.metrics.batch_observer(variant.name)
            variant.batcher.max_queue_delay = self.options.max_queue_delay_ms / 1000
        old, entry.loaded, entry.wanted = entry.loaded, loaded, True
        entry.state, entry.reason = READY, f"loaded from {entry.bundle}; {loaded.checked}"
        if old is not None:
            await old.close()

    async def load(self, name: str) -> str:
        """Re-read and swap in `name`'s bundle; CheckFailed (the old one still serving) says why not."""
        if name not in self.entries:
            raise RequestError(f"unknown model {name!r}: this server's models are {', '.join(self.entries)} "
                               "(a raw-input variant follows its model)", 404)
        async with self.entries[name].lock:
            loaded = await self.prepare(name)
            await self.commit(name, loaded)
            return self.entries[name].reason

    async def unload(self, name: str) -> None:
        if name not in self.entries:
            raise RequestError(f"unknown model {name!r}: this server's models are {', '.join(self.entries)}", 404)
        entry = self.entries[name]
        async with entry.lock:
            old, entry.loaded, entry.wanted = entry.loaded, None, False
            entry.state, entry.reason = UNAVAILABLE, "unloaded by a repository request"
            if old is not None:
                await old.close()

    async def start(self) -> None:
        """Check and serve the sessions given at start; a model failing its check stops the server."""
        for name, session in self._initial.items():
            loaded = await self.prepare(name, session)
            await self.commit(name, loaded)
        self._initial = {}

    async def close(self) -> None:
        await asyncio.gather(*(e.loaded.close() for e in self.entries.values() if e.loaded is not None))
