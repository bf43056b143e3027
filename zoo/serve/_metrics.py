"""Prometheus metrics of one server (its own registry, so several apps in one process stay apart)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNKNOWN = "(unknown)"   # the model label of requests naming a model this server does not serve


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, max_batch_size: int):
        self.registry = CollectorRegistry()
        labels = ("model", "endpoint")
        self.requests = Counter("zoo_requests", "Inference requests (infer and classify), by model and endpoint",
                                labels, registry=self.registry)
        self.errors = Counter("zoo_request_errors", "Inference requests answered with an error, by HTTP status",
                              (*labels, "status"), registry=self.registry)
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

    def batch_observer(self, model: str):
        queue, inference, rows_ = (self.queue.labels(model), self.inference.labels(model),
                                   self.batch_rows.labels(model))

        def observe(rows: int, waits: list[float], seconds: float) -> None:
            rows_.observe(rows)
            inference.observe(seconds)
            for wait in waits:
                queue.observe(wait)
        return observe

    def request(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(model, endpoint).inc()
        self.latency.labels(model, endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(model, endpoint, str(status)).inc()

    def text(self) -> bytes:
        return generate_latest(self.registry)
