"""Dynamic batching: concurrent requests to one model grouped into one backend call.

Each model has its own `Batcher` (models are never mixed). A request's rows, already validated, wait in the
model's queue; a collector takes the oldest request and every queued one after it that has the same
non-batch shapes, up to `max_batch_size` rows, waiting at most `max_queue_delay` seconds after the oldest
arrived for more to come (0: take only what is already queued, so an idle server adds no delay and a busy
one batches what piled up during the previous call). The batch runs in a worker thread (`instances` of
them, each with the session's intra-op threads), so the event loop stays free, and each caller gets
exactly its own rows back. `run_batch` is the same join-run-split step for any caller (the Triton model)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


def rows_of(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


def run_batch(session, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Validated model arrays of several callers -> one backend call -> each caller's own rows, in order."""
    if len(requests) == 1:
        return [session.predict(requests[0])]
    joined = {name: np.concatenate([r[name] for r in requests]) for name in session.input_names}
    outputs = session.predict(joined)
    bounds = np.cumsum([rows_of(r) for r in requests])[:-1]
    parts = {name: np.split(values, bounds) for name, values in outputs.items()}
    return [{name: parts[name][i] for name in outputs} for i in range(len(requests))]


@dataclass
class _Item:
    arrays: dict
    rows: int
    key: tuple                    # the non-batch shapes: only requests with equal keys share a batch
    future: asyncio.Future
    queued: float                 # loop time when it was queued


class Closed(RuntimeError):
    """The server is shutting down and takes no new requests."""


class Batcher:
    """One model's queue and workers. `await predict(arrays)` -> that request's outputs."""

    def __init__(self, session, max_batch_size: int = 64, max_queue_delay: float = 0.0, instances: int = 1,
                 on_batch: Callable[[int, list[float], float], None] | None = None):
        if max_batch_size < 1 or instances < 1 or max_queue_delay < 0:
            raise ValueError("max_batch_size and instances must be >= 1 and max_queue_delay >= 0")
        self.session, self.max_batch_size, self.max_queue_delay = session, max_batch_size, max_queue_delay
        self.instances, self.on_batch = instances, on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._changed = asyncio.Condition()
        self._closed = False
        self._pool: ThreadPoolExecutor | None = None
        self._workers: list[asyncio.Task] = []

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.instances, thread_name_prefix=f"zoo-{self.session.manifest.model}")
        self._workers = [asyncio.create_task(self._work()) for _ in range(self.instances)]

    async def close(self) -> None:
        """Take no new requests, finish the queued ones, stop the workers."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()
        await asyncio.gather(*self._workers)
        if self._pool is not None:
            self._pool.shutdown()

    async def predict(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check one caller's arrays (a ValueError names what is wrong), queue them, await their outputs."""
        arrays = self.session.validate(arrays)   # a bad request must not fail the batch it would join
        rows = rows_of(arrays)
        if rows > self.max_batch_size:
            raise ValueError(f"{rows} rows in one request; this server takes at most {self.max_batch_size} "
                             "per request (its max batch size)")
        if self._closed:
            raise Closed("the server is shutting down")
        loop = asyncio.get_running_loop()
        key = tuple((name, a.shape[1:]) for name, a in arrays.items())
        item = _Item(arrays, rows, key, loop.create_future(), loop.time())
        async with self._changed:
            self._pending.append(item)
            self._changed.notify()
        return await item.future

    def _fit(self) -> tuple[int, int, bool]:
        """(requests, rows) that the next batch takes from the front of the queue, and whether the request
        after them cannot join it (too many rows or other shapes), so waiting for more is pointless."""
        first = self._pending[0]
        count = rows = 0
        for item in self._pending:
            if item.key != first.key or rows + item.rows > self.max_batch_size:
                return count, rows, True
            count, rows = count + 1, rows + item.rows
        return count, rows, rows >= self.max_batch_size

    async def _collect(self) -> list[_Item] | None:
        loop = asyncio.get_running_loop()
        async with self._changed:
            await self._changed.wait_for(lambda: self._pending or self._closed)
            if not self._pending:
                return None   # closed and drained
            deadline = self._pending[0].queued + self.max_queue_delay
            while not self._fit()[2] and not self._closed:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    async with asyncio.timeout(remaining):
                        await self._changed.wait()
                except TimeoutError:
                    break
            count = self._fit()[0]
            return [self._pending.popleft() for _ in range(count)]

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._collect()) is not None:
            batch = [i for i in batch if not i.future.done()]   # callers cancelled (at the end of a drain) are not run
            if not batch:
                continue
            started = loop.time()
            clock = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._pool, run_batch, self.session, [i.arrays for i in batch])
            except Exception as e:  # noqa: BLE001 - the backend's failure goes to every caller of the batch
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            if self.on_batch is not None:
                self.on_batch(sum(i.rows for i in batch), [started - i.queued for i in batch],
                              time.perf_counter() - clock)
            for item, result in zip(batch, results):
                if not item.future.done():   # a caller that went away leaves a cancelled future
                    item.future.set_result(result)
