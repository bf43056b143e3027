"""Prometheus metrics of one server, and the same counts as Triton's statistics (/v2/models/stats).

A server of one process keeps its own registry (so several apps in one process stay apart). A server of
several worker processes runs prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the
supervisor before the workers start): each worker writes its values to files there, and whichever worker
answers /metrics or /stats sums them all."""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from zoo.serve._batching import Batch

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNKNOWN = "(unknown)"   # the model label of requests naming a model this server does not serve
MULTIPROCESS = "PROMETHEUS_MULTIPROC_DIR"
PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def _duration(count: float, seconds: float) -> dict:
    return {"count": int(round(count)), "ns": int(round(seconds * 1e9))}


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int):
        self.registry = CollectorRegistry()
        labels = ("model", "endpoint")

        def counter(name, text, labelnames):
            return Counter(name, text, labelnames, registry=self.registry)

        self.requests = counter("zoo_requests", "Inference requests (infer and classify), by model and endpoint", labels)
        self.errors = counter("zoo_request_errors", "Inference requests answered with an error, by HTTP status",
                              (*labels, "status"))
        self.latency = Histogram("zoo_request_seconds", "Time from receiving a request to its answer",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue = Histogram("zoo_queue_seconds", "Time a request waited in its model's batching queue",
                               ("model",), buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inference = Histogram("zoo_inference_seconds", "Time of one backend call (one batch)",
                                   ("model",), buckets=LATENCY_BUCKETS, registry=self.registry)
        sizes, b = [], 1
        while b < max_batch_size:
            sizes.append(b)
            b *= 2
        self.batch_rows = Histogram("zoo_batch_rows", "Rows per backend call", ("model",),
                                    buckets=(*sizes, max_batch_size), registry=self.registry)
        # the counts of Triton's statistics extension (its successes: zoo_request_seconds less these)
        self.failed = counter("zoo_stat_failed_requests", "Inference requests that failed", ("model",))
        self.failed_seconds = counter("zoo_stat_failed_request_seconds", "Total seconds of inference requests that "
                                      "failed", ("model",))
        self.computed = counter("zoo_stat_computed_requests", "Requests computed (their queue and compute times "
                                "are in zoo_stat_phase_seconds)", ("model",))
        self.phase_seconds = counter("zoo_stat_phase_seconds", "Total seconds of computed requests by phase: queue, "
                                     "compute_input, compute_infer, compute_output", ("model", "phase"))
        self.executions = counter("zoo_stat_executions", "Backend calls by batch size (rows)", ("model", "batch_size"))
        self.execution_seconds = counter("zoo_stat_execution_seconds", "Total seconds of backend calls by batch size "
                                         "and phase", ("model", "batch_size", "phase"))
        self._series: dict[tuple, tuple] = {}
        self.last = Gauge("zoo_stat_last_inference_seconds", "Unix time of the model's last backend call",
                          ("model",), registry=self.registry, multiprocess_mode="max")

    def batch_observer(self, model: str):
        queue, inference, rows_ = (self.queue.labels(model), self.inference.labels(model),
                                   self.batch_rows.labels(model))
        computed, last = self.computed.labels(model), self.last.labels(model)
        phase = {p: self.phase_seconds.labels(model, p) for p in PHASES}

        def observe(batch: Batch) -> None:
            p = batch.phases
            rows_.observe(batch.rows)
            inference.observe(p.input + p.infer + p.output)
            for wait in batch.waits:
                queue.observe(wait)
            n = len(batch.waits)
            computed.inc(n)
            phase["queue"].inc(sum(batch.waits))
            for name, seconds in (("compute_input", p.input), ("compute_infer", p.infer), ("compute_output", p.output)):
                phase[name].inc(seconds * n)
                self.execution_seconds.labels(model, str(batch.rows), name).inc(seconds)
            self.executions.labels(model, str(batch.rows)).inc()
            last.set(time.time())
        return observe

    def request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        series = self._series.get((model, endpoint))
        if series is None:   # labels() looks the series up under a lock: once per model and endpoint
            series = self._series[model, endpoint] = (self.requests.labels(model, endpoint),
                                                      self.latency.labels(model, endpoint))
        series[0].inc()
        series[1].observe(seconds)
        if status >= 400:
            self.errors.labels(model, endpoint, str(status)).inc()
            if model != UNKNOWN:
                self.failed.labels(model).inc()
                self.failed_seconds.labels(model).inc(seconds)

    def _exposed(self) -> CollectorRegistry:
        if MULTIPROCESS not in os.environ:
            return self.registry
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def text(self) -> bytes:
        return generate_latest(self._exposed())

    def statistics(self, models: list[str]) -> list[dict]:
        """Triton's model statistics (the `model_stats` list of /v2/models/stats) of `models`, in its field
        names: counts and cumulative nanoseconds, over every worker of the server."""
        values: dict[tuple, float] = {}
        for family in self._exposed().collect():
            for sample in family.samples:
                if sample.name.startswith(("zoo_stat_", "zoo_request_seconds_")) and not sample.name.endswith("_created"):
                    key = (sample.name, *sorted((k, v) for k, v in sample.labels.items() if k != "endpoint"))
                    values[key] = values.get(key, 0.0) + sample.value   # summed over the endpoints

        def get(name, **labels):
            return values.get((name, *sorted(labels.items())), 0.0)

        sizes: dict[str, set] = {m: set() for m in models}
        for key in values:
            labels = dict(key[1:])
            if key[0] == "zoo_stat_executions_total" and labels.get("model") in sizes:
                sizes[labels["model"]].add(int(labels["batch_size"]))
        out = []
        for model in models:
            computed = get("zoo_stat_computed_requests_total", model=model)
            failed = (get("zoo_stat_failed_requests_total", model=model),
                      get("zoo_stat_failed_request_seconds_total", model=model))
            stats = {"success": _duration(get("zoo_request_seconds_count", model=model) - failed[0],
                                          get("zoo_request_seconds_sum", model=model) - failed[1]),
                     "fail": _duration(*failed)}
            stats.update({p: _duration(computed, get("zoo_stat_phase_seconds_total", model=model, phase=p))
                          for p in PHASES})
            stats.update(cache_hit=_duration(0, 0), cache_miss=_duration(0, 0))
            batches = []
            for size in sorted(sizes[model]):
                n = get("zoo_stat_executions_total", model=model, batch_size=str(size))
                batches.append({"batch_size": size, **{p: _duration(n, get("zoo_stat_execution_seconds_total",
                                                                          model=model, batch_size=str(size), phase=p))
                                                       for p in PHASES[1:]}})
            out.append({"name": model, "version": "1",
                        "last_inference": int(get("zoo_stat_last_inference_seconds", model=model) * 1000),
                        "inference_count": sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches),
                        "execution_count": sum(b["compute_infer"]["count"] for b in batches),
                        "inference_stats": stats, "batch_stats": batches, "memory_usage": []})
        return out
