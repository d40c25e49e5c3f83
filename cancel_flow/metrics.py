"""Prometheus metrics; with several workers each writes to PROMETHEUS_MULTIPROC_DIR and /metrics adds them up."""

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

REQUESTS = Counter("cancel_flow_http_requests_total", "HTTP requests by route template, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("cancel_flow_http_request_duration_seconds", "HTTP request duration by route template", ["route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DECISIONS = Counter("cancel_flow_decisions_total", "Subscriber decisions by outcome", ["outcome"])
STRIPE_CALLS = Counter("cancel_flow_stripe_calls_total", "Stripe API calls by operation and error ('none' when it worked)",
                       ["operation", "error"])


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
