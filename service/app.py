"""The FastAPI application: thin routes over the bundle and the predictor."""
from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from . import __version__
from .bundle import REQUIRED_ROLES, Bundle, load_bundle
from .errors import ApiError, install_error_handlers
from .pipeline import audio
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


class Gate:
    """Bounded concurrency: `limit` requests in processing, `queue` more waiting, the
    rest refused at once with 503 + Retry-After (never unbounded growth)."""

    def __init__(self, limit: int, queue: int):
        self.limiter = anyio.CapacityLimiter(limit)
        self.capacity = limit + queue
        self.admitted = 0

    def admit(self) -> None:
        if self.admitted >= self.capacity:
            raise ApiError(503, "overloaded", "the service is busy; retry shortly", {"Retry-After": "2"})
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1


def warm_up(bundle: Bundle) -> None:
    """First runs of ONNX sessions and librosa's numba kernels are slow: pay that before ready."""
    cfg = bundle.config
    audio.warm_up(cfg)
    bundle.encode_audio(np.zeros((4, cfg.n_mfcc), np.float32))
    bundle.encode_frames(np.zeros((2, cfg.frame_ae_size ** 2), np.float32))
    bundle.image_features(np.zeros((cfg.k_summary, cfg.image_size, cfg.image_size, 3), np.float32))
    bundle.classify(np.zeros((1, cfg.k_summary, cfg.step_dim), np.float32))


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
    app.state.settings = settings
    install_error_handlers(app)
    gate = Gate(settings.max_concurrency, settings.max_queue)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not state["ready"]:
            return JSONResponse({"status": "loading"}, status_code=503)
        return {"status": "ready", "model": state["bundle"].name}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        if state["bundle"] is None:
            raise ApiError(503, "not_ready", "the model bundle is still loading", {"Retry-After": "5"})
        return {"models": [state["bundle"].summary()]}

    async def predict(
        request: Request,
        timeline: bool | None = Query(None, description="per-segment probabilities (default: for clips longer than the server's threshold)"),
        segment_s: float | None = Query(None, gt=0.5, le=600, description="timeline segment length in seconds"),
    ) -> dict[str, Any]:
        bundle: Bundle | None = state["bundle"]
        if bundle is None:
            raise ApiError(503, "not_ready", "the model bundle is still loading", {"Retry-After": "5"})
        gate.admit()
        workdir = Path(tempfile.mkdtemp(prefix="emotion-", dir=settings.tmp_dir))
        try:
            upload = await receive_upload(request, workdir / "upload", settings.max_upload_bytes)
            job = lambda: predict_file(  # noqa: E731
                bundle, upload.path, settings.media_limits(), timeline=timeline,
                timeline_after_s=settings.timeline_after_s, segment_s=segment_s or settings.segment_s)
            try:
                return await asyncio.wait_for(
                    anyio.to_thread.run_sync(job, limiter=gate.limiter), settings.request_timeout_s)
            except TimeoutError:
                raise ApiError(504, "processing_timeout",
                               f"processing took longer than {settings.request_timeout_s:.0f} s") from None
        finally:
            gate.release()
            shutil.rmtree(workdir, ignore_errors=True)

    for path in ("/predict", "/v1/predict"):
        app.add_api_route(path, predict, methods=["POST"], openapi_extra=_UPLOAD_SCHEMA,
                          summary="Emotion probabilities for an uploaded video")
    return app
