"""What runs inside the Ray actors: one `service.api.Predictor` (one bundle load) per actor,
answering a batch of inputs with the rows of the Parquet output. A file that fails gets its
row with the error code `emotion-av predict` and POST /predict give; nothing raises."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from service.api import Outcome, Predictor, error_of
from service.cluster.inputs import is_uri
from service.model.voice_adaptation import VoiceAdaptation
from service.run.records import columns, flat_record


def schema(classes: list[str], timeline: bool) -> pa.Schema:
    """The Parquet columns (`service.run.records.columns`), typed (docs/batch.md)."""
    types = {"path": pa.string(), "status": pa.int16(), "error_code": pa.string(), "error_message": pa.string(),
             "label": pa.string(), "audio": pa.string(), "face": pa.string(), "duration_s": pa.float64(),
             "summary_frames_s": pa.list_(pa.float64()), "adaptation": pa.string(), "timeline": pa.string()}
    return pa.schema([pa.field(name, types.get(name, pa.float64())) for name in columns(classes, timeline)])


def to_table(records: list[dict[str, Any]], classes: list[str], timeline: bool) -> pa.Table:
    rows = [flat_record(r, classes, timeline) for r in records]
    return pa.Table.from_pylist(rows, schema=schema(classes, timeline))


class _Actor:
    """One `Predictor` per Ray actor, reading local paths and URIs alike."""

    def __init__(self, model_dir: str | None, threads: int, storage_options: dict[str, Any] | None,
                 isolate: bool = True):
        # isolate: decode in a worker process, as the HTTP service does: a file that crashes
        # FFmpeg gets decoder_failed and the actor goes on (in-process, it would kill the actor)
        self.predictor = Predictor(model_dir, threads=threads, decoders=1 if isolate else 0)
        self.storage_options = storage_options or {}

    def on_file(self, path: str, work: Callable[[Any], Any]) -> Any:
        """`work(source)` with `path` as a local Path, or a URI opened as a file object (the
        predictor spools it under the size limit)."""
        if not is_uri(path):
            return work(Path(path))
        import fsspec

        with fsspec.open(path, "rb", **self.storage_options) as fh:
            return work(fh)

    def __del__(self) -> None:
        self.predictor.close()


class Scorer(_Actor):
    """The callable class of `Dataset.map_batches`: Ray constructs it once per actor."""

    def __init__(self, model_dir: str | None, threads: int, timeline: bool, segment_s: float | None,
                 storage_options: dict[str, Any] | None, isolate: bool = True,
                 voice_adaptation: VoiceAdaptation | None = None):
        super().__init__(model_dir, threads, storage_options, isolate)
        self.classes = self.predictor.classes
        self.timeline, self.segment_s = timeline, segment_s
        self.voice_adaptation = voice_adaptation

    def answer(self, path: str) -> Outcome:
        timeline = bool(self.timeline)  # without the column, none is computed (long clips included)
        try:
            return Outcome(path, self.on_file(path, lambda src: self.predictor.predict(
                src, timeline=timeline, segment_s=self.segment_s, voice_adaptation=self.voice_adaptation)))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            return Outcome(path, error=error_of(exc))

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = [self.answer(p).record() for p in batch.column("path").to_pylist()]
        return to_table(records, self.classes, self.timeline)


class VoiceReader(_Actor):
    """The first pass of `--adapt-voice`: each input's voice utterance block, null where the
    file has no usable voice or fails (the second pass gives its row its error)."""

    def voice(self, path: str) -> list[float] | None:
        try:
            u = self.on_file(path, self.predictor.voice_of)
        except Exception:  # noqa: BLE001 - left out of the statistics, as `emotion-av predict` does
            return None
        return None if u is None else u.tolist()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.table({"utterance": pa.array([self.voice(p) for p in batch.column("path").to_pylist()],
                                               pa.list_(pa.float64()))})
