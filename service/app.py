"""The FastAPI application: thin routes over the bundle and the predictor."""
from __future__ import annotations

import asyncio
import hmac
import logging
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from . import __version__
from .bundle import REQUIRED_ROLES, Bundle, load_bundle
from .errors import ApiError, install_error_handlers
from .observability import Metrics, RequestContext
from .pipeline import audio, extract
from .pipeline.budget import Budget
from .pipeline.timing import StageTimer
from .predictor import predict_file
from .settings import Settings
from .upload import receive_upload

log = logging.getLogger("service")

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "string", "format": "binary",
                                    "description": "a video: mp4, mov, mkv, webm, avi or flv"}},
        }}},
    }
}
# Beyond the request budget, a worker that has not stopped is abandoned (it will stop at
# its next check; its ffmpeg children are already killed) and the client gets its 504.
_ABANDON_GRACE_S = 10.0


class Gate:
    """Bounded concurrency: `limit` requests in processing, `queue` more admitted (uploading
    or waiting for a worker); the rest are refused at once with 503 + Retry-After."""

    def __init__(self, limit: int, queue: int, metrics: Metrics):
        self.limiter = anyio.CapacityLimiter(limit)
        self.capacity = limit + queue
        self.admitted = 0
        self.running = 0                     # changed from worker threads: under the lock
        self._lock = threading.Lock()
        metrics.in_flight.set_function(lambda: self.running)
        metrics.queued.set_function(lambda: self.admitted - self.running)

    def admit(self) -> None:
        if self.admitted >= self.capacity:
            raise ApiError(503, "overloaded", "the service is busy; retry shortly", {"Retry-After": "2"})
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    async def run(self, job: Callable[[], Any], budget: Budget) -> Any:
        """Run `job` in a worker thread once one of `limit` slots is free."""
        def counted() -> Any:
            with self._lock:
                self.running += 1
            try:
                budget.check()  # the time spent waiting counts against the budget
                return job()
            finally:
                with self._lock:
                    self.running -= 1

        with anyio.move_on_after(budget.remaining() + _ABANDON_GRACE_S):
            return await anyio.to_thread.run_sync(counted, limiter=self.limiter, abandon_on_cancel=True)
        budget.cancel()
        raise ApiError(504, "processing_timeout", f"processing took longer than {budget.timeout_s:.0f} s")


async def _cancel_on_disconnect(request: Request, budget: Budget) -> None:
    """The body has been read; the next ASGI message is the client going away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            budget.cancel()  # the worker stops at its next check and kills its ffmpeg child
            return


def warm_up(bundle: Bundle) -> None:
    """First runs of ONNX sessions and librosa's numba kernels are slow: pay that before ready."""
    cfg = bundle.config
    audio.warm_up(cfg)
    extract.warm_up_faces(cfg, bundle.face_detector)
    bundle.encode_audio(np.zeros((4, cfg.n_mfcc), np.float32))
    bundle.encode_frames(np.zeros((2, cfg.frame_ae_size ** 2), np.float32))
    bundle.image_features(np.zeros((cfg.k_summary, cfg.image_size, cfg.image_size, 3), np.float32))
    bundle.classify(np.zeros((1, cfg.k_summary, cfg.step_dim), np.float32))


def api_key_check(settings: Settings) -> Callable:
    """A dependency accepting `X-API-Key: K` or `Authorization: Bearer K` when keys are set."""
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when the server sets API keys")
    bearer = HTTPBearer(auto_error=False)
    keys = [k.encode() for k in settings.api_keys]

    async def check(key: str | None = Depends(header),
                    token: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not keys:
            return
        given = (key or (token.credentials if token else "")).encode()
        # Compare with every key in constant time: no early exit that would leak which matched.
        if not any([hmac.compare_digest(given, k) for k in keys]):
            raise ApiError(401, "unauthorized", "a valid API key is required (X-API-Key header)",
                           {"WWW-Authenticate": "Bearer"})

    return check


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    state: dict[str, Any] = {"bundle": None, "ready": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if settings.tmp_dir:
            settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        bundle = await anyio.to_thread.run_sync(
            # Every artifact's hash is verified, but only the roles the service runs get a
            # session: the baselines are there for the report, not for serving.
            lambda: load_bundle(settings.model_dir, settings.providers, settings.ort_threads or None,
                                roles=REQUIRED_ROLES))
        await anyio.to_thread.run_sync(warm_up, bundle)
        state["bundle"], state["ready"] = bundle, True
        log.info("bundle %s %s loaded from %s", bundle.name, bundle.version, settings.model_dir)
        yield
        state["ready"] = False

    app = FastAPI(title="emotion-av", version=__version__, lifespan=lifespan)
    metrics = Metrics()
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(RequestContext, metrics=metrics)
    install_error_handlers(app)
    gate = Gate(settings.max_concurrency, settings.max_queue, metrics)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "model": state["bundle"].name}

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        if state["bundle"] is None:
            raise ApiError(503, "not_ready", "the model bundle is still loading", {"Retry-After": "5"})
        return {"models": [state["bundle"].summary()]}

    async def predict(
        request: Request,
        timeline: bool | None = Query(None, description="per-segment probabilities (default: for clips longer than the server's threshold)"),
        segment_s: float | None = Query(None, ge=1.0, le=600, description="timeline segment length in seconds"),
    ) -> dict[str, Any]:
        bundle: Bundle | None = state["bundle"]
        if bundle is None:
            raise ApiError(503, "not_ready", "the model bundle is still loading", {"Retry-After": "5"})
        gate.admit()
        budget = Budget(settings.request_timeout_s)
        workdir = Path(tempfile.mkdtemp(prefix="emotion-", dir=settings.tmp_dir))
        try:
            try:
                with anyio.fail_after(settings.upload_timeout_s):
                    upload = await receive_upload(request, workdir / "upload", settings.max_upload_bytes)
            except TimeoutError:
                raise ApiError(408, "upload_timeout",
                               f"the upload was not received within {settings.upload_timeout_s:.0f} s") from None
            timer = StageTimer()
            job = lambda: predict_file(  # noqa: E731
                bundle, upload.path, settings.media_limits(), timeline=timeline,
                timeline_after_s=settings.timeline_after_s, segment_s=segment_s or settings.segment_s,
                budget=budget, timer=timer)
            # A plain task, not a task group: errors must reach the handlers unwrapped.
            watcher = asyncio.ensure_future(_cancel_on_disconnect(request, budget))
            try:
                result = await gate.run(job, budget)
            finally:
                watcher.cancel()
            metrics.observe_stages(result["timings_ms"])
            return result
        finally:
            gate.release()
            shutil.rmtree(workdir, ignore_errors=True)

    for path in ("/predict", "/v1/predict"):
        app.add_api_route(path, predict, methods=["POST"], openapi_extra=_UPLOAD_SCHEMA,
                          dependencies=[Depends(api_key_check(settings))],
                          summary="Emotion probabilities for an uploaded video")
    return app
