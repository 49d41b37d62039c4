"""What runs inside the Ray actors: one `service.api.Predictor` (one bundle load) per actor,
answering a batch of inputs with the rows of the Parquet output. A file that fails gets its
row with the error code `emotion-av predict` and POST /predict give; nothing raises."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from service.api import Outcome, Predictor, error_of
from service.cluster.inputs import is_uri
from service.run.records import columns, flat_record


def schema(classes: list[str], timeline: bool) -> pa.Schema:
    """The Parquet columns (`service.run.records.columns`), typed (docs/batch.md)."""
    types = {"path": pa.string(), "status": pa.int16(), "error_code": pa.string(), "error_message": pa.string(),
             "label": pa.string(), "audio": pa.string(), "face": pa.string(), "duration_s": pa.float64(),
             "summary_frames_s": pa.list_(pa.float64()), "timeline": pa.string()}
    return pa.schema([pa.field(name, types.get(name, pa.float64())) for name in columns(classes, timeline)])


def to_table(records: list[dict[str, Any]], classes: list[str], timeline: bool) -> pa.Table:
    rows = [flat_record(r, classes, timeline) for r in records]
    return pa.Table.from_pylist(rows, schema=schema(classes, timeline))


class Scorer:
    """The callable class of `Dataset.map_batches`: Ray constructs it once per actor."""

    def __init__(self, model_dir: str | None, threads: int, timeline: bool, segment_s: float | None,
                 storage_options: dict[str, Any] | None, isolate: bool = True):
        # isolate: decode in a worker process, as the HTTP service does: a file that crashes
        # FFmpeg gets decoder_failed and the actor goes on (in-process, it would kill the actor)
        self.predictor = Predictor(model_dir, threads=threads, decoders=1 if isolate else 0)
        self.classes = self.predictor.classes
        self.timeline, self.segment_s = timeline, segment_s
        self.storage_options = storage_options or {}

    def answer(self, path: str) -> Outcome:
        timeline = bool(self.timeline)  # without the column, none is computed (long clips included)
        try:
            if is_uri(path):
                import fsspec

                with fsspec.open(path, "rb", **self.storage_options) as fh:  # spooled under the size limit
                    result = self.predictor.predict(fh, timeline=timeline, segment_s=self.segment_s)
            else:
                result = self.predictor.predict(Path(path), timeline=timeline, segment_s=self.segment_s)
            return Outcome(path, result)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a row
            return Outcome(path, error=error_of(exc))

    def __del__(self) -> None:
        self.predictor.close()

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = [self.answer(p).record() for p in batch.column("path").to_pylist()]
        return to_table(records, self.classes, self.timeline)
