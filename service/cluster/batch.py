"""`emotion-av batch INPUT... --out OUT.parquet`: score an archive on a Ray cluster.

The driver lists the inputs lazily (service/cluster/inputs.py), skips those already in OUT
(`--resume`), and streams them through a Ray Data pipeline: `map_batches` onto a pool of
actors, each holding one `service.api.Predictor` (one bundle load per actor), so a file gets
the answer `emotion-av predict` and POST /predict give it. Rows come back to the driver as
the actors finish them and are written as Parquet part files into the OUT directory (a
Parquet dataset: `pandas.read_parquet(OUT)` reads it whole), each part complete before it is
visible, so a run stopped anywhere leaves a readable OUT that `--resume` goes on from.

Nothing is lost: a file that fails gets its row with the API's error code; an actor that dies
is restarted by Ray and its batch retried (the rows of a failed attempt are never emitted),
so every input appears once. The rows are small (~1 KB), so the driver writing them is not
the bottleneck; the decoding and the models run in the actors.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from service.cluster.inputs import expand, is_uri
from service.cluster.scoring import Scorer, VoiceReader, schema
from service.model.voice_adaptation import AdaptationError, RunningMoments, VoiceAdaptation
from service.run.blas_threads import BLAS_THREAD_VARIABLES
from service.run.records import DEFAULT_EXTENSIONS, UsageError, path_key, summary_text

# Inputs handed to one Ray Data execution: the driver never holds more paths than this, and
# each window re-creates the actor pool (one bundle load per actor, seconds, per 100k files).
WINDOW = 100_000


@dataclass
class BatchSummary:
    out: str
    ok: int = 0
    failures: Counter = field(default_factory=Counter)
    skipped: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    parts: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.ok + sum(self.failures.values())

    def text(self) -> str:
        return summary_text(self.ok, self.failures, self.skipped, self.seconds, self.interrupted, self.out)


class ParquetDir:
    """OUT: a directory of `part-<run>-<n>.parquet` files on any fsspec filesystem."""

    def __init__(self, out: str, storage_options: dict[str, Any] | None):
        import fsspec

        self.fs, self.root = fsspec.core.url_to_fs(out, **(storage_options or {}))
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))
        self.run = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)
        self.n = 0

    def parts(self) -> list[str]:
        if not self.fs.isdir(self.root):
            return []
        return sorted(p for p in self.fs.ls(self.root, detail=False)
                      if os.path.basename(p).startswith("part-") and p.endswith(".parquet"))

    def done_keys(self, expected: pa.Schema) -> set[bytes]:
        keys: set[bytes] = set()
        for part in self.parts():
            with self.fs.open(part, "rb") as f:
                pf = pq.ParquetFile(f)
                if not pf.schema_arrow.equals(expected):
                    raise UsageError(f"{part} has other columns than this run writes (another model, a version "
                                     f"before the adaptation column, or --timeline differs); not resuming")
                keys.update(path_key(p) for p in pf.read(columns=["path"]).column("path").to_pylist())
        return keys

    def clear(self) -> None:
        for part in self.parts():
            self.fs.rm(part)

    def write(self, table: pa.Table) -> str:
        self.fs.makedirs(self.root, exist_ok=True)
        name = f"{self.root.rstrip('/')}/part-{self.run}-{self.n:05d}.parquet"
        self.n += 1
        if self.local:  # a kill mid-write leaves a dot file, which readers and --resume skip
            tmp = os.path.join(os.path.dirname(name), "." + os.path.basename(name) + ".tmp")
            pq.write_table(table, tmp)
            os.replace(tmp, name)
        else:  # object stores make the object visible whole, on close
            with self.fs.open(name, "wb") as f:
                pq.write_table(table, f)
        return self.fs.unstrip_protocol(name)


def _windows(items: Iterable[str], size: int) -> Iterator[list[str]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def actor_env() -> dict[str, str]:
    """The actors' environment: one BLAS thread (POST /predict's numbers to the last bit, as
    the server and the CLI run), and the driver's EMOTION_* settings (limits, providers)."""
    env = {var: os.environ.get(var, "1") for var in BLAS_THREAD_VARIABLES}
    env.update({k: v for k, v in os.environ.items() if k.startswith("EMOTION_")})
    return env


def manifest_of(model_dir: str | None):
    """The manifest of the bundle the actors will load, read here before any actor starts."""
    from service.model.manifest import Manifest
    from service.settings import Settings

    try:  # EMOTION_* as the actors will read them (a ValueError when one is invalid)
        bundle = Settings().model_dir if model_dir is None else Path(model_dir)
    except ValueError as exc:
        raise UsageError(f"invalid setting: {exc}") from None
    try:
        return Manifest.read(bundle)[0]
    except (OSError, ValueError) as exc:
        raise UsageError(f"no readable model bundle at {bundle}: {exc}") from None


def classes_of(model_dir: str | None) -> list[str]:
    """The bundle's classes: the probability columns."""
    return list(manifest_of(model_dir).classes)


class _Sink:
    """Counts the rows by status and writes them as part files: every `part_rows` rows or
    `part_seconds` seconds, so a stop loses little and the parts stay few."""

    def __init__(self, dest: ParquetDir, expected: pa.Schema, summary: BatchSummary, part_rows: int,
                 part_seconds: float):
        self.dest, self.expected, self.summary = dest, expected, summary
        self.part_rows, self.part_seconds = part_rows, part_seconds
        self.pending: list[pa.Table] = []
        self.rows, self.last = 0, time.monotonic()

    def add(self, table: pa.Table) -> None:
        table = table.select(self.expected.names).cast(self.expected)
        for status, code in zip(table.column("status").to_pylist(), table.column("error_code").to_pylist()):
            if status == 200:
                self.summary.ok += 1
            else:
                self.summary.failures[code] += 1
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= self.part_rows or time.monotonic() - self.last >= self.part_seconds:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.summary.parts.append(self.dest.write(pa.concat_tables(self.pending)))
        self.pending, self.rows, self.last = [], 0, time.monotonic()


def _mapped(actor: type, actor_kwargs: dict[str, Any], paths: list[str], actors: int, num_cpus: float,
            num_gpus: float, batch_size: int):
    """The lazy Ray Data pipeline of one window of inputs through `actor` (Scorer: their rows;
    VoiceReader: their voices), in completion order."""
    import warnings

    import ray
    from ray.data import ActorPoolStrategy

    # blocks of about batch_size inputs, at least one per actor: every actor gets work
    blocks = min(len(paths), max(actors, -(-len(paths) // batch_size)), 10_000)
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=blocks)
    with warnings.catch_warnings():
        # max_task_retries has no named parameter in Ray 2.60 (pinned) but is honoured
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ds.map_batches(
            actor, fn_constructor_kwargs=actor_kwargs, batch_size=batch_size, batch_format="pyarrow",
            compute=ActorPoolStrategy(size=actors), num_cpus=num_cpus, num_gpus=num_gpus or None,
            runtime_env={"env_vars": actor_env()},
            # A batch whose actor died (OOM, a kill, a lost node) is retried on the restarted
            # actor, a few times: something that kills every actor (with --in-process-decode, a
            # file that crashes FFmpeg) then fails the run instead of looping for ever.
            max_task_retries=3)


def _check_local(inputs: Iterable[str]) -> None:
    """A missing local input is a usage error before any cluster starts (as `predict`)."""
    missing = [p for p in inputs if not is_uri(p) and not any(c in p for c in "*?[")
               and not os.path.exists(p.removeprefix("file://"))]
    if missing:
        raise UsageError(f"not found: {', '.join(missing)}")


def run_batch(inputs: list[str], out: str, *, address: str | None = None, actors: int = 1, num_cpus: float = 1,
              num_gpus: float = 0, timeline: bool = False, segment_s: float | None = None, resume: bool = False,
              force: bool = False, model_dir: str | None = None, batch_size: int = 4,
              extensions: Iterable[str] = DEFAULT_EXTENSIONS, storage_options: dict[str, Any] | None = None,
              part_rows: int = 5000, part_seconds: float = 30.0, window: int = WINDOW,
              isolate_decoders: bool = True, progress: bool = True, adapt_voice: bool = False) -> BatchSummary:
    """Score `inputs` into the Parquet dataset `out` and return the summary. Connects to
    the Ray cluster at `address` ("auto", "ray://host:10001"; None: the one this process is
    connected to, else RAY_ADDRESS, else a new local one) unless already connected.
    `adapt_voice`: a first pass over every input's voice adapts the voice's normalisation to
    them (`service.model.voice_adaptation`); each row's `adaptation` says so."""
    import ray

    if resume and force:
        raise UsageError("--resume and --force exclude each other")
    _check_local(inputs)
    expected = schema(classes_of(model_dir), timeline)
    dest = ParquetDir(out, storage_options)
    done: set[bytes] = set()
    if dest.parts():
        if not (resume or force):
            raise UsageError(f"{out} holds results: --resume to go on from it, --force to overwrite it")
        if resume:
            done = dest.done_keys(expected)
        else:
            dest.clear()
    summary = BatchSummary(out=out)

    def todo() -> Iterator[str]:
        for path in expand(inputs, extensions, storage_options):
            key = path_key(path)
            if key in done:
                summary.skipped += 1
                continue
            done.add(key)  # an input reached twice (overlapping arguments) is done once
            yield path

    started_ray = not ray.is_initialized()
    if started_ray:
        try:
            ray.init(address=address, runtime_env={"env_vars": actor_env()}, log_to_driver=progress)
        except ConnectionError as exc:
            raise UsageError(f"no Ray cluster at {address}: {exc}") from None
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = progress
    actor_kwargs = {"model_dir": model_dir, "threads": max(1, int(num_cpus)), "storage_options": storage_options,
                    "isolate": isolate_decoders}
    pool = {"actors": actors, "num_cpus": num_cpus, "num_gpus": num_gpus, "batch_size": batch_size}
    scorer_kwargs = {**actor_kwargs, "timeline": timeline, "segment_s": segment_s}
    sink = _Sink(dest, expected, summary, part_rows, part_seconds)
    started = time.monotonic()
    try:
        if adapt_voice:
            inputs_once = _once(expand(inputs, extensions, storage_options))
            scorer_kwargs["voice_adaptation"] = _fit_voice_adaptation(inputs_once, model_dir, actor_kwargs, pool,
                                                                      window)
        for paths in _windows(todo(), window):
            for table in _mapped(Scorer, scorer_kwargs, paths, **pool).iter_batches(
                    batch_format="pyarrow", batch_size=None):
                sink.add(table)
    except KeyboardInterrupt:
        summary.interrupted = True  # batches in flight are dropped: --resume redoes them
    finally:
        sink.flush()
        summary.seconds = time.monotonic() - started
        if started_ray:
            ray.shutdown()
    return summary


def _once(paths: Iterable[str]) -> Iterator[str]:
    """Each input once (overlapping arguments reach some twice)."""
    seen: set[bytes] = set()
    for path in paths:
        key = path_key(path)
        if key not in seen:
            seen.add(key)
            yield path


def _fit_voice_adaptation(paths: Iterable[str], model_dir: str | None, actor_kwargs: dict[str, Any],
                          pool: dict[str, Any], window: int) -> VoiceAdaptation:
    """`--adapt-voice`'s first pass: every input's voice read by the actors (the answered ones
    too, so a resumed run adapts as the first did), their running moments kept on the driver,
    nothing per file."""
    moments = RunningMoments()
    for chunk in _windows(paths, window):
        for table in _mapped(VoiceReader, actor_kwargs, chunk, **pool).iter_batches(batch_format="pyarrow",
                                                                                      batch_size=None):
            for u in table.column("utterance").to_pylist():
                if u is not None:
                    moments.add(np.asarray(u))
    try:
        return VoiceAdaptation.fit(moments, manifest_of(model_dir).audio_domain,
                                   source="the inputs of this emotion-av batch run")
    except AdaptationError as exc:
        raise UsageError(f"--adapt-voice: {exc}") from None


def batch_command(args) -> int:
    """The `emotion-av batch` subcommand (service/run/cli.py declares its options)."""
    storage_options = dict(_option(o) for o in args.storage_option or [])
    if args.actors < 1:
        raise UsageError("--actors must be at least 1")
    summary = run_batch(args.inputs, args.out, address=args.address, actors=args.actors, num_cpus=args.num_cpus,
                        num_gpus=args.num_gpus, timeline=args.timeline, segment_s=args.segment_s,
                        resume=args.resume, force=args.force, model_dir=args.model_dir, batch_size=args.batch_size,
                        extensions=[e for e in args.ext.split(",") if e.strip()], storage_options=storage_options,
                        isolate_decoders=not args.in_process_decode, progress=not args.quiet,
                        adapt_voice=args.adapt_voice)
    print(summary.text(), file=sys.stderr)
    if summary.interrupted:
        return 130
    return 1 if summary.failures else 0


def _option(text: str) -> tuple[str, Any]:
    """`KEY=VALUE` of --storage-option; VALUE as JSON when it parses (numbers, true, {...})."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UsageError(f"--storage-option takes KEY=VALUE, not {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


__all__ = ["run_batch", "BatchSummary", "batch_command"]
