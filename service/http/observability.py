"""Request ids, structured (JSON) logs and Prometheus metrics.

Every HTTP request gets an id (the caller's `X-Request-ID` if it is a sane token, else a
new one), returned in the `X-Request-ID` header and attached to every log line written
while it is served, worker threads included (context variables follow anyio's threads).
"""
from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
log = logging.getLogger("service.access")

# Buckets from 10 ms to 10 min: a 4 s clip takes ~0.5 s, a 10-minute one ~30 s.
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The service's metrics in a registry of its own (one per app, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("emotion_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("emotion_request_duration_seconds", "HTTP request latency by route", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.stages = Histogram("emotion_stage_duration_seconds", "pipeline stage time per successful prediction",
                                ["stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rejected = Counter("emotion_rejected", "requests refused, by reason (the error code)", ["reason"],
                                registry=r)
        self.in_flight = Gauge("emotion_requests_in_flight", "predictions being processed", registry=r)
        self.queued = Gauge("emotion_requests_queued", "predictions admitted and waiting (upload or a worker)",
                            registry=r)
        # /v1/stream (service/http/stream.py)
        self.stream_sessions = Gauge("emotion_stream_sessions", "live sessions open", registry=r)
        self.stream_refused = Counter("emotion_stream_refused", "live sessions refused, by reason", ["reason"],
                                      registry=r)
        self.stream_closed = Counter("emotion_stream_closed", "live sessions ended, by close code", ["code"],
                                     registry=r)
        self.stream_updates = Counter("emotion_stream_updates", "live updates sent", registry=r)
        self.stream_dropped_frames = Counter("emotion_stream_dropped_frames", "live video frames dropped, by reason",
                                             ["reason"], registry=r)
        self.stream_skipped_updates = Counter("emotion_stream_skipped_updates",
                                              "live update times passed while the previous update was computed "
                                              "or not yet read by the client", ["why"], registry=r)
        self.stream_latency = Histogram("emotion_stream_update_latency_seconds",
                                        "from the last media message of a window to its update being sent",
                                        buckets=_LATENCY_BUCKETS, registry=r)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self.stages.labels(stage).observe(ms / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestContext:
    """Pure ASGI middleware: request id, one access-log line and the request metrics."""

    def __init__(self, app: Callable, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        # Never reset: each request runs in a task of its own, and error handlers that run
        # after this middleware returns still log with the id.
        request_id.set(rid)
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # A bug, not bad input: the trace goes to the log, the client gets a bare 500.
            logging.getLogger("service").exception("unhandled error")
            self.metrics.rejected.labels("internal_error").inc()
            if not started:
                body = json.dumps({"error": {"code": "internal_error", "message": "internal error",
                                             "request_id": rid}}).encode()
                await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - start
            route = _route_label(scope)
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            log.info("request", extra={"fields": {
                "method": scope.get("method"), "route": route, "status": status,
                "duration_ms": round(elapsed * 1000, 1)}})


def _route_label(scope: dict) -> str:
    """The route template, never the raw path: unknown paths must not create label values.
    FastAPI's own routes set scope["route"]; Starlette routes (/docs, /openapi.json) do not,
    so the app's routes are matched again for them."""
    route = scope.get("route")
    if route is None:
        from starlette.routing import Match

        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            if candidate.matches(scope)[0] == Match.FULL:
                route = candidate
                break
    return getattr(route, "path", "unmatched")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": request_id.get(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
