"""JSON errors `{"error": {"code", "message", "request_id"}}` with the right status (design §5),
their codes from the one table in `service.http.error_codes`.

Every refusal is counted in `emotion_rejected{reason=<code>}`; nothing internal (trace,
path, exception text) ever reaches the client, only the log.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.http.error_codes import codes_for
from service.http.observability import request_id
from service.http.schemas import ErrorResponse
from service.pipeline.errors import MediaError

log = logging.getLogger("service")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route: each status with the error model and its codes."""
    return {status: {"model": ErrorResponse,
                     "description": "error codes: " + ", ".join(f"`{c}`" for c in codes_for(status))}
            for status in statuses}


def error_response(request: Request, status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, count: bool = True) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None and count:
        metrics.rejected.labels(code).inc()
    if count:
        log.info("refused", extra={"fields": {"status": status, "code": code}})
    body = {"error": {"code": code, "message": message, "request_id": request_id.get()}}
    return JSONResponse(body, status_code=status, headers=headers)


def _ort_errors() -> list[type[Exception]]:
    """ONNX Runtime's exception classes (each derives from Exception directly)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        return []
    return [v for v in vars(state).values()
            if isinstance(v, type) and issubclass(v, Exception) and v.__module__ == state.__name__]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError):
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(MediaError)
    async def _media(request: Request, exc: MediaError):
        return error_response(request, exc.status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = ["/".join(str(p) for p in e.get("loc", ())) + ": " + e.get("msg", "") for e in exc.errors()]
        return error_response(request, 422, "invalid_parameters", "; ".join(parts)[:500] or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    async def _inference(request: Request, exc: Exception):
        # A session that raised (a provider failing, memory exhausted): the sessions stay
        # usable, the next request runs anew. The trace goes to the log only.
        log.error("inference failed", exc_info=exc)
        return error_response(request, 500, "inference_failed", "the model failed on this request")

    for cls in _ort_errors():
        app.add_exception_handler(cls, _inference)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")  # the trace goes to the log, never to the client
        return error_response(request, 500, "internal_error", "internal error")
