"""Dynamic batching: concurrent requests to one model grouped into one backend call.

Each model has its own `Batcher` (models are never mixed). A request's rows, already validated, wait in the
model's queue; a collector takes the oldest request and every queued one after it that has the same
non-batch shapes, up to `max_batch_size` rows, waiting at most `max_queue_delay` seconds after the oldest
arrived for more to come (0: take only what is already queued, so an idle server adds no delay and a busy
one batches what piled up during the previous call). A request whose caller has gone (its future was
cancelled: the client disconnected) or whose deadline has passed is dropped before it is computed.

A batch runs on the event loop when it is expected to cost less CPU than `inline_below` seconds, else in a
worker thread (`instances` of them, each with the session's intra-op threads), keeping the loop free to
read and answer other requests meanwhile. With one instance (zoo serve's worker processes each have one)
the default bound is 1 ms: a hand-off to a thread and back costs about 50 µs of CPU, more than a water-mlp
call (about 20 µs), so small models run on the loop; a clouds-cnn call (1.4 ms a row) goes to the thread.
Measured with perf_analyzer on two workers, clouds-cnn at concurrency 8, alternating: on the loop 619,
596, 604, 680 against 790, 935, 792, 566 requests/s in a thread at load 4-6 (an earlier quieter pair of
runs had the loop at par or 10 % ahead). With several instances in one process, only calls under 0.2 ms
run on the loop. The expected cost is the batch's rows times the least CPU time per row of the first
calls, which run on the event loop to measure it (the check a model passes before it takes traffic,
_warmup.py). Each caller gets exactly its own rows back. `run_batch` is the same join-run-split step for
any caller (the Triton model)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

import zoo.runtime

log = logging.getLogger("zoo.serve")
INLINE_BELOW = {True: 0.001, False: 0.0002}   # seconds of CPU per call run on the event loop, by "one instance"
MEASURED_CALLS = 2      # calls run on the event loop to measure their cost


def fit_cores(instances: int | None, threads: int | None, device: str = "cpu") -> tuple[int, int]:
    """(instances, intra-op threads per instance) for what was not given, so that instances x threads does not
    exceed the cores this process may use: by default one thread per instance and, on CPU, an instance per
    core (on CUDA one: the GPU runs them). Measured: 2 threads per call on 2 cores doubled clouds-cnn's CPU
    time per request (onnxruntime's threads spin while they wait), for no more throughput."""
    cores = zoo.runtime.default_threads()
    if threads is None:
        threads = 1 if instances is None else max(1, cores // instances)
    if instances is None:
        instances = 1 if device == "cuda" else max(1, cores // threads)
    return instances, threads


def rows_of(arrays: dict[str, np.ndarray]) -> int:
    return len(next(iter(arrays.values())))


@dataclass
class Phases:
    """Seconds spent joining the callers' inputs, in the backend, and splitting the outputs."""
    input: float = 0.0
    infer: float = 0.0
    output: float = 0.0


def run_batch(session, requests: list[dict[str, np.ndarray]], phases: Phases | None = None) -> list[dict[str, np.ndarray]]:
    """Validated model arrays of several callers -> one backend call per set of equal non-batch shapes
    (usually one) -> each caller's own rows, in order. `phases`, when given, gets the time of each step."""
    phases = phases or Phases()
    groups: dict[tuple, list[int]] = {}
    for i, arrays in enumerate(requests):
        groups.setdefault(tuple(a.shape[1:] for a in arrays.values()), []).append(i)
    if len(groups) > 1:
        results: list = [None] * len(requests)
        for members in groups.values():
            for i, result in zip(members, run_batch(session, [requests[i] for i in members], phases)):
                results[i] = result
        return results
    clock = time.perf_counter()
    if len(requests) == 1:
        outputs = session.predict(requests[0])
        phases.infer += time.perf_counter() - clock
        return [outputs]
    joined = {name: np.concatenate([r[name] for r in requests]) for name in session.input_names}
    start = time.perf_counter()
    outputs = session.predict(joined)
    end = time.perf_counter()
    bounds = np.cumsum([rows_of(r) for r in requests])[:-1]
    parts = {name: np.split(values, bounds) for name, values in outputs.items()}
    results = [{name: parts[name][i] for name in outputs} for i in range(len(requests))]
    phases.input, phases.infer = phases.input + start - clock, phases.infer + end - start
    phases.output += time.perf_counter() - end
    return results


@dataclass
class _Item:
    arrays: dict
    rows: int
    key: tuple                    # the non-batch shapes: only requests with equal keys share a batch
    future: asyncio.Future
    queued: float                 # time.perf_counter() when it was queued
    deadline: float | None        # time.perf_counter() after which the caller no longer wants the answer


@dataclass
class Batch:
    """What `on_batch` is told of each backend call."""
    rows: int
    waits: list[float]            # per request: seconds from queued to computed
    phases: Phases = field(default_factory=Phases)


class Closed(RuntimeError):
    """The server is shutting down and takes no new requests."""


class DeadlineExceeded(RuntimeError):
    """The request's deadline passed while it waited in the queue."""


class Batcher:
    """One model's queue and workers. `await predict(arrays)` -> that request's outputs."""

    def __init__(self, session, max_batch_size: int = 64, max_queue_delay: float = 0.0, instances: int = 1,
                 on_batch: Callable[[Batch], None] | None = None, inline_below: float | None = None):
        if max_batch_size < 1 or instances < 1 or max_queue_delay < 0:
            raise ValueError("max_batch_size and instances must be >= 1 and max_queue_delay >= 0")
        self.session, self.max_batch_size, self.max_queue_delay = session, max_batch_size, max_queue_delay
        self.instances, self.on_batch = instances, on_batch
        self.inline_below = INLINE_BELOW[instances == 1] if inline_below is None else inline_below
        self.dropped = 0              # requests dropped unanswered: caller gone or deadline passed
        self._row_cost: float | None = None   # the least CPU seconds per row of the calls measured
        self._measured = 0
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

    async def predict(self, arrays: dict[str, np.ndarray], deadline: float | None = None) -> dict[str, np.ndarray]:
        """Check one caller's arrays (a ValueError names what is wrong), queue them, await their outputs.
        `deadline`: the time.perf_counter() after which the request is dropped unanswered (DeadlineExceeded) if it
        has not been computed yet. A caller cancelled while it waits leaves its request dropped."""
        arrays = self.session.validate(arrays)   # a bad request must not fail the batch it would join
        rows = rows_of(arrays)
        if rows > self.max_batch_size:
            raise ValueError(f"{rows} rows in one request; this server takes at most {self.max_batch_size} "
                             "per request (its max batch size)")
        if self._closed:
            raise Closed("the server is shutting down")
        loop = asyncio.get_running_loop()
        key = tuple((name, a.shape[1:]) for name, a in arrays.items())
        item = _Item(arrays, rows, key, loop.create_future(), time.perf_counter(), deadline)
        async with self._changed:
            self._pending.append(item)
            self._changed.notify()
        return await item.future

    def _drop_abandoned(self, now: float) -> None:
        """Take out of the queue the requests nobody waits for any more."""
        kept = collections.deque()
        for item in self._pending:
            if item.future.done():            # cancelled: the caller went away
                self.dropped += 1
            elif item.deadline is not None and now >= item.deadline:
                item.future.set_exception(DeadlineExceeded("the request's deadline passed while it was queued"))
                self.dropped += 1
            else:
                kept.append(item)
        self._pending = kept

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
        async with self._changed:
            while True:
                await self._changed.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return None   # closed and drained
                deadline = self._pending[0].queued + self.max_queue_delay
                while not self._fit()[2] and not self._closed:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            await self._changed.wait()
                    except TimeoutError:
                        break
                self._drop_abandoned(time.perf_counter())
                if self._pending:
                    count = self._fit()[0]
                    return [self._pending.popleft() for _ in range(count)]

    def _measure(self, arrays: list, phases: Phases) -> list:
        """run_batch on the event loop, measuring its CPU time."""
        cpu = time.thread_time()
        results = run_batch(self.session, arrays, phases)
        took = (time.thread_time() - cpu) / sum(rows_of(a) for a in arrays)
        self._row_cost = took if self._row_cost is None else min(self._row_cost, took)
        self._measured += 1
        return results

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while (batch := await self._collect()) is not None:
            started = time.perf_counter()
            phases = Phases()
            arrays = [i.arrays for i in batch]
            try:
                if self._measured < MEASURED_CALLS:
                    results = self._measure(arrays, phases)
                elif self._row_cost * sum(i.rows for i in batch) < self.inline_below:
                    results = run_batch(self.session, arrays, phases)
                else:
                    results = await loop.run_in_executor(self._pool, run_batch, self.session, arrays, phases)
            except Exception as e:  # noqa: BLE001 - the backend's failure goes to every caller of the batch
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(e)
                continue
            for item, result in zip(batch, results):
                if not item.future.done():   # a caller that went away leaves a cancelled future
                    item.future.set_result(result)
            if self.on_batch is not None:
                try:
                    self.on_batch(Batch(sum(i.rows for i in batch), [started - i.queued for i in batch], phases))
                except Exception:  # noqa: BLE001 - counting must never stop the serving
                    log.exception("recording a batch of %s failed", self.session.manifest.model)
            # after a call on the event loop, let it answer these callers and read new requests before the
            # next batch (taking a queued batch does not wait, so a backlog would otherwise run back to back)
            await asyncio.sleep(0)
