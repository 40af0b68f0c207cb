"""Observability of ``sst2 serve``: Prometheus metrics (``GET /metrics``), an access log line per request on
the ``sst2.serve.access`` logger (INFO, so shown with ``--log-level info``), and request ids.

Each app has its own ``CollectorRegistry``, so several apps in one process (tests) never clash.
Imported by ``sst2.serve`` only when it builds an app (prometheus_client is in the ``serve`` extra).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.datastructures import Headers, MutableHeaders

access_log = logging.getLogger("sst2.serve.access")

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def configure_logging(level: str) -> None:
    """Send the ``sst2.serve`` loggers (errors, and the access log at INFO) to stderr at ``level``."""
    logger = logging.getLogger("sst2.serve")
    logger.setLevel(level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def request_id(incoming: str | None) -> str:
    """The client's ``X-Request-ID`` when it is short and plain enough to log as is, else a new one."""
    if incoming and _SAFE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class Metrics:
    """The counters and histograms of one app, in their own registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("sst2_requests", "HTTP requests by route and status", ["path", "status"], registry=r)
        self.request_seconds = Histogram("sst2_request_seconds", "HTTP request latency in seconds by route",
                                         ["path"], buckets=SECONDS_BUCKETS, registry=r)
        self.texts = Counter("sst2_texts", "texts classified", registry=r)
        self.errors = Counter("sst2_errors", "errors: client = 4xx responses, server = 5xx responses, "
                                             "model = model calls that raised", ["kind"], registry=r)
        for kind in ("client", "server", "model"):
            self.errors.labels(kind)  # exported as 0 from the start
        self.batch_size = Histogram("sst2_batch_size_texts", "texts per model call", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.model_seconds = Histogram("sst2_model_seconds", "seconds per model call", buckets=SECONDS_BUCKETS,
                                       registry=r)

    def model_call(self, texts: int, seconds: float) -> None:
        self.texts.inc(texts)
        self.batch_size.observe(texts)
        self.model_seconds.observe(seconds)

    def model_error(self) -> None:
        self.errors.labels("model").inc()

    def malformed_request(self) -> None:
        """A request the HTTP parser refused (uvicorn's own 400, before any app sees it): counted and logged."""
        self.requests.labels("other", "400").inc()
        self.errors.labels("client").inc()
        access_log.info("- - 400 texts=0 latency_ms=0.0 request_id=- (not a valid HTTP request)",
                        extra={"method": "-", "path": "-", "status": 400, "texts": 0, "latency_ms": 0.0,
                               "request_id": "-"})

    def render(self) -> bytes:
        return generate_latest(self.registry)


class AccessMiddleware:
    """Pure ASGI middleware (cheaper than ``BaseHTTPMiddleware``): gives each request an id (the client's
    ``X-Request-ID`` or a new one, returned in the response's ``X-Request-ID``), counts and times it,
    and logs one line: method, path, status, texts, latency in ms, request id. The handler reports its
    number of texts in ``request.state.texts``."""

    def __init__(self, app, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        rid = request_id(Headers(scope=scope).get("x-request-id"))
        status = 500  # if the app raises before responding, the server answers 500

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-ID", rid)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - t0, rid)

    def _record(self, scope, status: int, seconds: float, rid: str) -> None:
        route = scope.get("route")
        label = getattr(route, "path", None) or "other"  # route templates only: bounded label values
        self.metrics.requests.labels(label, str(status)).inc()
        self.metrics.request_seconds.labels(label).observe(seconds)
        if status >= 400:
            self.metrics.errors.labels("server" if status >= 500 else "client").inc()
        if access_log.isEnabledFor(logging.INFO):
            path = scope["path"][:200]
            if not path.isprintable():
                path = ascii(path)  # no control characters (a forged log line) from a client's path
            texts = scope.get("state", {}).get("texts", 0)
            access_log.info("%s %s %d texts=%d latency_ms=%.1f request_id=%s", scope["method"], path, status,
                            texts, seconds * 1000, rid,
                            extra={"method": scope["method"], "path": path, "status": status, "texts": texts,
                                   "latency_ms": round(seconds * 1000, 2), "request_id": rid})
