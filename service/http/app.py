"""The FastAPI application: settings, state and middleware around the routes (service/http/routes.py)."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from service import __version__
from service.http import spool
from service.http.demo import mount_demo
from service.http.errors import install_error_handlers
from service.http.gate import Gate
from service.http.observability import Metrics, RequestContext
from service.http.routes import router
from service.http.stream import StreamHub
from service.http.stream import router as stream_router
from service.run.lifecycle import ModelState
from service.settings import Settings


def create_app(settings: Settings | None = None, *, load: bool = True) -> FastAPI:
    """The app, reading everything from `app.state`: settings, metrics, gate and the model
    (loaded in the background once the server starts; `load=False` leaves it unloaded)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.tmp_dir:
            settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        spool.remove_stale(settings.tmp_dir)  # left by an instance killed mid-upload
        if load:
            app.state.model.start()
        try:
            yield
        finally:
            app.state.model.close()  # the decoder workers

    app = FastAPI(title="emotion-av", version=__version__, lifespan=lifespan,
                  description="Emotion recognition from a video of a speaking face, or from a voice recording.")
    metrics = Metrics()
    app.state.settings, app.state.metrics = settings, metrics
    app.state.gate = Gate(settings.max_concurrency, settings.max_queue, metrics)
    app.state.model = ModelState(settings)
    app.state.stream = StreamHub(settings, metrics)
    app.add_middleware(RequestContext, metrics=metrics)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(stream_router)  # /v1/stream, the live WebSocket
    mount_demo(app)  # the demo page at / (service/http/static)
    return app
