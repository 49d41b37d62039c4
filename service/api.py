"""Python API: load a bundle once, predict files, bytes or many paths in-process.

    from service.api import Predictor
    predictor = Predictor()                       # the shipped bundle, or Predictor("models/x")
    result = predictor.predict("clip.mp4")        # the body POST /predict answers
    result = predictor.predict(data, filename="clip.webm")   # bytes or a binary file object
    for outcome in predictor.predict_many(paths, workers=2): print(outcome.path, outcome.record())

One code path with the HTTP service: both call `service.model.predictor.predict_file` with the
same settings (`EMOTION_*`, see `service.settings.Settings`), so a file gets the same
answer here as from `POST /predict` on a service with the same settings. The checks that
the HTTP layer makes on an upload and that apply to a file (empty, over the size limit)
are made here too, with the same error codes. A refused file raises `MediaError` (its
`code`, `status` and `message` are those of the HTTP error body).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

import numpy as np

from service.model.bundle import SERVING_ROLES, Bundle, available_cpus, load_bundle
from service.model.predictor import predict_file, voice_utterance
from service.model.voice_adaptation import AdaptationError, RunningMoments, VoiceAdaptation
from service.pipeline.budget import Budget
from service.pipeline.errors import MediaError
from service.settings import Settings

__all__ = ["Predictor", "Outcome", "MediaError", "error_of", "VoiceAdaptation", "AdaptationError"]

_COPY_BLOCK = 1 << 20


def _too_large(limit: int) -> MediaError:
    # The code and message of the HTTP service's 413 (service/http/upload.py).
    return MediaError("upload_too_large", f"the upload exceeds the limit of {limit / 2**20:.0f} MiB", status=413)


def error_of(exc: BaseException) -> dict[str, Any]:
    """`{"code", "message", "status"}` for a failed file: the HTTP error body's code and
    message for what the service refuses; two codes of its own for what only a local file
    can do (`unreadable_file`) or a bug (`internal_error`, as the service's 500)."""
    if isinstance(exc, MediaError):
        return {"code": exc.code, "message": exc.message, "status": exc.status}
    if isinstance(exc, OSError):
        reason = exc.strerror or type(exc).__name__
        return {"code": "unreadable_file", "message": f"the file could not be read: {reason}", "status": 400}
    return {"code": "internal_error", "message": f"internal error ({type(exc).__name__})", "status": 500}


@dataclass
class Outcome:
    """One file of a batch: its answer, or the error it got."""

    path: str
    result: Any = None                           # the answer (a dict), or what a batch job returned
    error: dict[str, Any] | None = None          # {"code", "message", "status"}

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self) -> dict[str, Any]:
        """`{"path", "status", ...}` + the 200 body, or + `{"error": {...}}` as the HTTP error body."""
        if self.error is None:
            return {"path": self.path, "status": 200, **(self.result or {})}
        return {"path": self.path, "status": self.error["status"],
                "error": {"code": self.error["code"], "message": self.error["message"]}}


class Predictor:
    """A loaded, verified bundle and the service's settings; thread-safe (the service runs
    one on several threads at once)."""

    def __init__(self, model_dir: str | Path | None = None, *, settings: Settings | None = None,
                 threads: int | None = None, decoders: int = 0):
        """`model_dir`: a bundle directory (default: `EMOTION_MODEL_DIR`, else the shipped one).
        `threads`: ONNX Runtime intra-op threads per session (default: `EMOTION_ORT_THREADS`,
        else every CPU). `decoders`: decode in that many pre-started worker processes, as the
        service does (a decoder that crashes or hangs on a file costs a worker, and the file
        gets `decoder_failed` / `decode_timeout`, not this process); 0: in the calling thread.
        `close()` stops them."""
        settings = settings or Settings()
        if model_dir is not None:
            settings = settings.model_copy(update={"model_dir": Path(model_dir)})
        self.settings = settings
        threads = threads or settings.ort_threads or None
        self.bundle: Bundle = load_bundle(settings.model_dir, settings.providers, threads, roles=SERVING_ROLES)
        self.decoders = None
        if decoders > 0:
            from service.pipeline.decoder_pool import DecoderPool

            self.decoders = DecoderPool(decoders, settings.decode_threads).start()

    def close(self) -> None:
        """Stop the decoder workers, if any (safe to call again)."""
        if self.decoders is not None:
            self.decoders.close()

    @property
    def classes(self) -> list[str]:
        return list(self.bundle.classes)

    def summary(self) -> dict[str, Any]:
        """What `GET /v1/models` says about the bundle."""
        return self.bundle.summary()

    # -- one file ---------------------------------------------------------------------------
    def predict(self, source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO, *,
                filename: str | None = None, timeline: bool | None = None, segment_s: float | None = None,
                budget: Budget | None = None, voice_adaptation: VoiceAdaptation | None = None) -> dict[str, Any]:
        """The answer of `POST /predict` for a path, bytes, or a binary file object.

        `timeline`: True/False, or None for the service's default (clips longer than
        `EMOTION_TIMELINE_AFTER_S`); `segment_s` as the route's query parameter. Raises
        `MediaError` for a file the service would refuse (same code and status).
        `voice_adaptation`: from `fit_voice_adaptation` (the answer says so)."""
        if isinstance(source, (str, os.PathLike)):
            return self._predict_path(Path(source), timeline, segment_s, budget, voice_adaptation)
        with self._spooled(source) as dest:
            return self._predict_path(dest, timeline, segment_s, budget, voice_adaptation)

    @contextmanager
    def _spooled(self, source: bytes | bytearray | memoryview | BinaryIO) -> Iterator[Path]:
        """`source` written to a temporary file under the upload limit, removed afterwards."""
        workdir = Path(tempfile.mkdtemp(prefix="emotion-", dir=self.settings.tmp_dir))
        try:
            dest = workdir / "upload"  # as the service spools it: the name plays no part
            self._spool(source, dest)
            yield dest
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _spool(self, source: bytes | bytearray | memoryview | BinaryIO, dest: Path) -> None:
        limit = self.settings.max_upload_bytes
        with open(dest, "wb") as out:
            if isinstance(source, (bytes, bytearray, memoryview)):
                if len(source) > limit:
                    raise _too_large(limit)
                out.write(source)
                return
            size = 0
            while block := source.read(_COPY_BLOCK):
                size += len(block)
                if size > limit:
                    raise _too_large(limit)
                out.write(block)

    def _checked(self, path: Path) -> Path:
        """The HTTP layer's checks on an upload, for a local file."""
        size = path.stat().st_size  # OSError (missing, unreadable) for the caller
        if not path.is_file():
            raise IsADirectoryError(21, "not a regular file", str(path))
        if size == 0:
            raise MediaError("empty_file", "the uploaded file is empty")
        if size > self.settings.max_upload_bytes:
            raise _too_large(self.settings.max_upload_bytes)
        return path

    def _predict_path(self, path: Path, timeline: bool | None, segment_s: float | None,
                      budget: Budget | None, voice_adaptation: VoiceAdaptation | None = None) -> dict[str, Any]:
        s = self.settings
        return predict_file(self.bundle, self._checked(path), s.media_limits(), timeline=timeline,
                            timeline_after_s=s.timeline_after_s, segment_s=segment_s or s.segment_s,
                            budget=budget or Budget(s.request_timeout_s), decoder=self.decoders,
                            voice_adaptation=voice_adaptation)

    # -- many files -------------------------------------------------------------------------
    def predict_many(self, paths: Iterable[str | os.PathLike], *, workers: int = 1,
                     timeline: bool | None = None, segment_s: float | None = None,
                     voice_adaptation: VoiceAdaptation | None = None) -> Iterator[Outcome]:
        """Outcomes in completion order, one per path; a failure never stops the batch.

        `paths` is consumed lazily and at most `2 * workers` files are in flight, so memory
        does not grow with their number. Closing the iterator early (or an exception in the
        consumer, e.g. KeyboardInterrupt) cancels the files in flight and waits for their
        workers to stop (each stops its decode at its next check). `voice_adaptation`: from
        `fit_voice_adaptation` over the same files (each answer says so)."""
        def job(path: str, budget: Budget) -> dict[str, Any]:
            return self._predict_path(Path(path), timeline, segment_s, budget, voice_adaptation)
        return self._map_files(paths, workers, job)

    def voice_of(self, source: str | os.PathLike | BinaryIO, budget: Budget | None = None) -> np.ndarray | None:
        """The utterance block of a file's voice (a path, or a binary file object spooled as an
        upload), as `predict` computes it; None when it has no usable voice. What a batch's
        voice statistics are gathered from (`fit_voice_adaptation`, `emotion-av batch --adapt-voice`)."""
        limits = self.settings.media_limits()
        if isinstance(source, (str, os.PathLike)):
            return voice_utterance(self.bundle, self._checked(Path(source)), limits, budget)
        with self._spooled(source) as dest:
            return voice_utterance(self.bundle, dest, limits, budget)

    def fit_voice_adaptation(self, paths: Iterable[str | os.PathLike], *, workers: int = 1,
                             source: str = "batch") -> VoiceAdaptation:
        """The voice's normalisation adapted to these recordings (one setup: a folder, an archive),
        from their voices alone, unlabelled (`service.model.voice_adaptation`): a first pass over
        their audio. Files that fail or have no voice are left out; raises `AdaptationError` when
        fewer than `MIN_CLIPS` voices remain or the bundle cannot be adapted."""
        moments = RunningMoments()

        for outcome in self._map_files(paths, workers, self.voice_of):
            if outcome.ok and outcome.result is not None:
                moments.add(outcome.result)
        return VoiceAdaptation.fit(moments, self.bundle.manifest.audio_domain, source)

    def _map_files(self, paths: Iterable[str | os.PathLike], workers: int,
                   work: Callable[[str, Budget], Any]) -> Iterator[Outcome]:
        """`Outcome(path, work(path, budget))` for each path (or the error it raised), in
        completion order, `workers` at a time, at most `2 * workers` in flight."""
        workers = max(1, int(workers))
        budgets: dict[Future, Budget] = {}
        lock = threading.Lock()

        def job(path: str, budget: Budget) -> Outcome:
            try:
                return Outcome(path, work(path, budget))
            except Exception as exc:  # noqa: BLE001 - every failure becomes a record
                return Outcome(path, error=error_of(exc))

        pool = ThreadPoolExecutor(workers, thread_name_prefix="predict")
        source = iter(paths)
        pending: set[Future] = set()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < 2 * workers:
                    try:
                        path = os.fspath(next(source))
                    except StopIteration:
                        exhausted = True
                        break
                    budget = Budget(self.settings.request_timeout_s)
                    fut = pool.submit(job, path, budget)
                    with lock:
                        budgets[fut] = budget
                    pending.add(fut)
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    with lock:
                        budgets.pop(fut, None)
                    yield fut.result()
        finally:
            with lock:
                for budget in budgets.values():
                    budget.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def default_threads(workers: int) -> int:
    """ONNX Runtime threads per session when `workers` files run at once: the CPUs shared."""
    return max(1, available_cpus() // max(1, workers))
