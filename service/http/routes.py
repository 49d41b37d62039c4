"""The HTTP routes: thin functions over injected dependencies (settings, bundle, gate,
metrics, all read from `app.state`); the work is in predictor / the pipeline."""
from __future__ import annotations

import asyncio
import hmac
import shutil
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.http import spool
from service.http.errors import ApiError, error_response, error_responses
from service.http.gate import Gate, cancel_on_disconnect
from service.http.observability import Metrics
from service.http.schemas import (
    ErrorResponse,
    HealthResponse,
    ModelReport,
    ModelsResponse,
    PredictResponse,
    ReadyResponse,
)
from service.http.upload import receive_upload
from service.pipeline.budget import Budget
from service.pipeline.config import AUDIO_FORMATS, VIDEO_FORMATS
from service.pipeline.timing import StageTimer
from service.run.memory import trim_heap
from service.settings import Settings

_NOT_READY = ("not_ready", "the model bundle is still loading")
_RETRY_AFTER = {"Retry-After": "2"}


def _extensions(formats: dict[str, tuple[str, ...]]) -> str:
    return ", ".join(ext for exts in formats.values() for ext in exts)


_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "string", "format": "binary", "description":
                            f"a video ({_extensions(VIDEO_FORMATS)}) or a voice recording "
                            f"({_extensions(AUDIO_FORMATS)}: answered from audio, face \"missing\")"}},
}}}}}


# --- dependencies -------------------------------------------------------------------------

def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_gate(request: Request) -> Gate:
    return request.app.state.gate


def get_bundle(request: Request):
    """The loaded bundle, or 503 not_ready while it loads."""
    model = request.app.state.model
    if not model.ready:
        raise ApiError(503, *_NOT_READY, _RETRY_AFTER)
    return model.bundle


_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when the server sets API keys")
_bearer = HTTPBearer(auto_error=False)


def key_accepted(settings: Settings, given: str | None) -> bool:
    """Whether `given` is one of the server's keys (always, when it sets none): /predict's
    headers and /v1/stream's handshake or "open" message are checked alike."""
    if not settings.api_keys:
        return True
    given_bytes = (given or "").encode()
    # Compare with every key in constant time: no early exit that would leak which matched.
    return any([hmac.compare_digest(given_bytes, k.encode()) for k in settings.api_keys])


async def require_api_key(settings: Annotated[Settings, Depends(get_settings)],
                          key: Annotated[str | None, Depends(_api_key_header)],
                          token: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """`X-API-Key: K` or `Authorization: Bearer K` when the server sets keys (EMOTION_API_KEYS)."""
    if not key_accepted(settings, key or (token.credentials if token else "")):
        raise ApiError(401, "unauthorized", "a valid API key is required (X-API-Key header)",
                       {"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
BundleDep = Annotated[Any, Depends(get_bundle)]

router = APIRouter()


# --- operations ---------------------------------------------------------------------------

@router.get("/healthz", response_model=HealthResponse, summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, summary="Bundle loaded and warmed up",
            responses={503: {"model": ErrorResponse, "description": "error codes: `not_ready` (with Retry-After)"}})
async def readyz(request: Request):
    model = request.app.state.model
    if not model.ready:
        # A readiness poll is not a refused request: not counted in emotion_rejected.
        return error_response(request, 503, *_NOT_READY, _RETRY_AFTER, count=False)
    return {"status": "ready", "model": model.bundle.name}


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}})
async def metrics_endpoint(metrics: Annotated[Metrics, Depends(get_metrics)]) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/v1/models", response_model=ModelsResponse, responses=error_responses(503),
            summary="The served bundle: classes, artifact hashes, providers, headline metrics")
async def models(bundle: BundleDep) -> dict[str, Any]:
    return {"models": [bundle.summary()]}


@router.get("/v1/models/{name}/report", response_model=ModelReport, responses=error_responses(404, 422, 503),
            summary="The bundle's whole evaluation report")
async def model_report(name: str, bundle: BundleDep) -> dict[str, Any]:
    if name != bundle.name:
        raise ApiError(404, "not_found", f"no model named {name!r} is served")
    return bundle.report()


async def predict(
    request: Request, bundle: BundleDep, settings: SettingsDep,
    gate: Annotated[Gate, Depends(get_gate)], metrics: Annotated[Metrics, Depends(get_metrics)],
    timeline: bool | None = Query(None, description="per-segment probabilities (default: for clips longer than the server's threshold)"),
    segment_s: float | None = Query(None, ge=1.0, le=600, description="timeline segment length in seconds"),
) -> dict[str, Any]:
    from service.model.predictor import predict_file  # the pipeline's imports are paid by the loader, not at start

    gate.admit()
    budget = Budget(settings.request_timeout_s)
    try:
        workdir = spool.new_dir(settings.tmp_dir)  # named for this instance: stale ones are removed at start
    except BaseException:
        gate.release()
        raise
    try:
        try:
            with anyio.fail_after(settings.upload_timeout_s):
                upload = await receive_upload(request, workdir / "upload", settings.max_upload_bytes)
        except TimeoutError:
            raise ApiError(408, "upload_timeout",
                           f"the upload was not received within {settings.upload_timeout_s:.0f} s") from None

        def job() -> dict[str, Any]:
            try:
                return predict_file(
                    bundle, upload.path, settings.media_limits(), timeline=timeline,
                    timeline_after_s=settings.timeline_after_s, segment_s=segment_s or settings.segment_s,
                    budget=budget, timer=StageTimer(), decoder=request.app.state.model.decoders)
            finally:
                trim_heap()  # the request's buffers back to the system, not kept at the high-water mark

        # A plain task, not a task group: errors must reach the handlers unwrapped.
        watcher = asyncio.ensure_future(cancel_on_disconnect(request, budget))
        try:
            result = await gate.run(job, budget)
        finally:
            watcher.cancel()
        metrics.observe_stages(result["timings_ms"])
        return result
    finally:
        gate.release()
        shutil.rmtree(workdir, ignore_errors=True)


PREDICT_ERRORS = error_responses(400, 401, 405, 408, 413, 415, 422, 500, 503, 504, 507)

for _path in ("/predict", "/v1/predict"):
    router.add_api_route(
        _path, predict, methods=["POST"], response_model=PredictResponse, responses=PREDICT_ERRORS,
        openapi_extra=_UPLOAD_SCHEMA, dependencies=[Depends(require_api_key)],
        summary="Emotion probabilities for an uploaded video or voice recording")
