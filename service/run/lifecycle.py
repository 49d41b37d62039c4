"""Loading the bundle and starting the decoders without holding up the server.

The server accepts connections at once: `/healthz` answers 200 and `/readyz` 503 (with
Retry-After) while a background thread imports the pipeline, loads and verifies the bundle
and warms every session, and the decoder worker processes start beside it; then `/readyz`
turns 200. A bundle that cannot be loaded (or decoders that cannot start) is logged and
reported to `on_failure` (`python -m service` then exits non-zero). `close` stops the
decoder workers when the server shuts down.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Callable

from service.settings import Settings

log = logging.getLogger("service")


def warm_up(bundle) -> None:
    """First runs of the ONNX sessions, the face detectors and the audio code are slow: pay
    that before ready."""
    import numpy as np

    from service.pipeline import audio, extract, visual

    cfg = bundle.config
    audio.warm_up(cfg)
    extract.warm_up_faces(cfg, bundle.face_detector)
    # k-means of the summary selection (scikit-learn's first fit sets up its thread pools)
    visual.select_summary(np.random.default_rng(0).normal(size=(3 * cfg.k_summary, cfg.frame_code_dim)),
                          cfg.k_summary, cfg.kmeans_seed)
    bundle.encode_audio(np.zeros((4, cfg.audio_frame_dim), np.float32))
    bundle.encode_frames(np.zeros((2, cfg.frame_ae_size ** 2), np.float32))
    bundle.image_features(np.zeros((cfg.k_summary, cfg.image_size, cfg.image_size, 3), np.float32))
    bundle.classify(np.zeros((1, cfg.k_summary, cfg.step_dim), np.float32))


def _import_pipeline() -> None:
    from service.model import predictor  # noqa: F401  (OpenCV, scikit-learn, scipy: seconds on a small CPU)


def load_and_warm(settings: Settings):
    from service.model.bundle import SERVING_ROLES, load_bundle

    # The pipeline's imports (Python, holding the GIL) overlap the ONNX sessions' creation
    # (native code, releasing it).
    importer = threading.Thread(target=_import_pipeline, name="pipeline-import", daemon=True)
    importer.start()
    try:
        # Every artifact's hash is verified, but only the roles the service runs get a
        # session: the baselines are there for the report, not for serving.
        bundle = load_bundle(settings.model_dir, settings.providers, settings.ort_threads or None,
                             roles=SERVING_ROLES)
    finally:
        importer.join()
    _import_pipeline()  # re-raises here if the import failed in the thread
    warm_up(bundle)
    return bundle


def start_decoders(settings: Settings):
    """The decoder worker pool, every worker started and warm."""
    from service.pipeline.decoder_pool import DecoderPool

    return DecoderPool(settings.decode_workers or settings.max_concurrency, settings.decode_threads).start()


class ModelState:
    """The served bundle, once loaded and warmed, and the decoder pool (`app.state.model`)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.bundle = None
        self.decoders = None
        self.error: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self._done = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.bundle is not None

    async def wait(self) -> None:
        await self._done.wait()

    def start(self, loader: Callable[[Settings], object] | None = None) -> None:
        """Load in a daemon thread (a server stopped mid-load does not wait for it)."""
        loader = loader or load_and_warm
        loop = asyncio.get_running_loop()
        started = time.monotonic()

        def run() -> None:
            decoders: dict = {}

            def start_pool() -> None:
                try:
                    decoders["pool"] = start_decoders(self.settings)
                except Exception as exc:  # noqa: BLE001 - reported below
                    decoders["error"] = exc

            # The workers' start (other processes) overlaps the bundle's loading (this one).
            starter = threading.Thread(target=start_pool, name="decoder-start", daemon=True)
            starter.start()
            try:
                bundle, error = loader(self.settings), None
            except Exception as exc:  # noqa: BLE001 - reported, and the process stops
                log.exception("the model bundle could not be loaded from %s", self.settings.model_dir)
                bundle, error = None, str(exc) or type(exc).__name__
            starter.join()
            self.decoders = decoders.get("pool")
            if "error" in decoders and error is None:
                log.error("the decoder workers could not be started: %s", decoders["error"])
                bundle, error = None, f"decoder workers: {decoders['error']}"
            try:
                loop.call_soon_threadsafe(self._finish, bundle, error, time.monotonic() - started)
            except RuntimeError:  # the server stopped (and closed its loop) while loading
                pass

        threading.Thread(target=run, name="bundle-loader", daemon=True).start()

    def load_now(self) -> None:
        """Load, verify and warm the bundle and start the decoders in this thread, before any
        request: a Ray Serve replica (service/cluster/serve.py) takes traffic only once ready."""
        self.decoders = start_decoders(self.settings)
        self.bundle = load_and_warm(self.settings)
        self._done.set()

    def close(self) -> None:
        """Stop the decoder workers (at shutdown). Returns None."""
        if self.decoders is not None:
            self.decoders.close()

    def _finish(self, bundle, error: str | None, seconds: float) -> None:
        self.bundle, self.error = bundle, error
        self._done.set()
        if bundle is not None:
            log.info("bundle %s %s loaded from %s and warmed up in %.1f s", bundle.name, bundle.version,
                     self.settings.model_dir, seconds)
        elif self.on_failure is not None:
            self.on_failure(error or "load failed")
