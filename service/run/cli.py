"""`emotion-av predict PATH... [--out results.jsonl|.csv] [--timeline] [--workers N] [--resume]`

Emotion probabilities for files and folders (searched recursively by extension), in this
process (no server), with the same answers and error codes as `POST /predict`
(`service.api.Predictor`). One line per file, written and flushed as soon as the file is
done: a batch stopped by Ctrl-C (or killed) leaves a valid output, and `--resume` goes on
from it, skipping the files already in it. A file that fails gets a line with its error
code and never stops the batch. Memory does not grow with the number of files: folders are
walked lazily, a few files are in flight, and results are written, not kept.

Exit status: 0 when every file was answered, 1 when some failed (every file still has its
line), 2 for a usage error, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from service.run.blas_threads import one_blas_thread
from service.run.records import (  # noqa: F401  (AUDIO_/VIDEO_EXTENSIONS, walk: part of this module's API)
    AUDIO_EXTENSIONS, DEFAULT_EXTENSIONS, VIDEO_EXTENSIONS, UsageError, columns, flat_record, path_key as _key,
    summary_text as _summary, walk)

# -- writing the results -----------------------------------------------------------------------
def _repair_tail(path: Path) -> None:
    """Cut a last line that a kill left half-written (Ctrl-C never does: lines are whole)."""
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos, chunk = size, 65536
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            data = f.read(pos - start)
            i = data.rfind(b"\n")
            if i >= 0:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)


class JsonlWriter:
    """One JSON object per line: `{"path", "status", ...the POST /predict body}` or
    `{"path", "status", "error": {"code", "message"}}`."""

    def __init__(self, out: TextIO, classes: list[str], timeline: bool):
        self.out = out

    @staticmethod
    def done_paths(path: Path, classes: list[str], timeline: bool) -> Iterator[str]:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)["path"]
                except (ValueError, KeyError, TypeError):
                    raise UsageError(f"{path}:{n} is not a line this program writes; not resuming") from None

    def write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.out.flush()


class CsvWriter:
    """One row per file, the columns of `columns()`: an empty cell for a missing value, the
    summary frame times space-separated."""

    def __init__(self, out: TextIO, classes: list[str], timeline: bool, header: bool = True):
        self.out, self.classes, self.timeline = out, classes, timeline
        self.writer = csv.writer(out, lineterminator="\n")
        if header:
            self.writer.writerow(self.header(classes, timeline))
            out.flush()

    @staticmethod
    def header(classes: list[str], timeline: bool) -> list[str]:
        return columns(classes, timeline)

    @classmethod
    def done_paths(cls, path: Path, classes: list[str], timeline: bool) -> Iterator[str]:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head != cls.header(classes, timeline):
                raise UsageError(f"{path} has other columns than this run writes (another model, a version "
                                 f"before the adaptation column, or --timeline differs); not resuming")
            for row in reader:
                if row:
                    yield row[0]

    def write(self, record: dict[str, Any]) -> None:
        def cell(value: Any) -> Any:
            if value is None:
                return ""
            if isinstance(value, list):
                return " ".join(str(v) for v in value)
            return repr(value) if isinstance(value, float) else value

        self.writer.writerow([cell(v) for v in flat_record(record, self.classes, self.timeline).values()])
        self.out.flush()


def open_output(out: str | None, fmt: str, classes: list[str], timeline: bool, resume: bool, force: bool):
    """(writer, file to close or None, keys of the paths already done)."""
    kind = JsonlWriter if fmt == "jsonl" else CsvWriter
    done: set[bytes] = set()
    if out is None:
        return kind(sys.stdout, classes, timeline), None, done  # each line flushed
    path = Path(out)
    exists = path.is_file() and path.stat().st_size > 0
    if exists and not (resume or force):
        raise UsageError(f"{path} exists: --resume to go on from it, --force to overwrite it")
    if exists and resume:
        _repair_tail(path)
        done = {_key(p) for p in kind.done_paths(path, classes, timeline)}
    appending = exists and resume and path.stat().st_size > 0
    f = open(path, "a" if appending else "w", encoding="utf-8", newline="")
    if kind is CsvWriter:
        return CsvWriter(f, classes, timeline, header=not appending), f, done
    return JsonlWriter(f, classes, timeline), f, done


# -- the command -------------------------------------------------------------------------------
def _format_of(out: str | None, given: str | None) -> str:
    if given:
        return given
    if out and out.lower().endswith(".csv"):
        return "csv"
    return "jsonl"


def predict_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.api import Predictor, default_threads

    missing = [p for p in args.paths if not os.path.exists(p)]
    if missing:
        raise UsageError(f"not found: {', '.join(missing)}")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out")
    extensions = [e for e in args.ext.split(",") if e.strip()]
    fmt = _format_of(args.out, args.format)
    started = time.monotonic()
    predictor = Predictor(args.model_dir, threads=args.threads or default_threads(args.workers))
    adaptation = None
    if args.adapt_voice:
        # A pass over every input's audio (the answered ones too, so a resumed run adapts as the
        # first did); nothing is kept per file but the running moments.
        from service.api import AdaptationError
        print("adapting the voice to these recordings (a first pass over their audio) ...", file=sys.stderr)
        try:
            adaptation = predictor.fit_voice_adaptation(walk(args.paths, extensions), workers=args.workers,
                                                        source="the inputs of this emotion-av predict run")
        except AdaptationError as exc:
            raise UsageError(f"--adapt-voice: {exc}") from None
        print(f"voice adapted to {adaptation.n_clips} recordings with a voice", file=sys.stderr)

    writer, fh, done = open_output(args.out, fmt, predictor.classes, args.timeline, args.resume, args.force)
    ok, failures, skipped, interrupted = 0, Counter(), 0, False

    def todo() -> Iterator[str]:
        nonlocal skipped
        for path in walk(args.paths, extensions):
            key = _key(path)
            if key in done:
                skipped += 1
                continue
            done.add(key)  # a file reached twice (overlapping arguments) is done once
            yield path

    # First pass only counts (for the bar); the second is the work. Neither keeps the list.
    total = sum(1 for p in walk(args.paths, extensions) if _key(p) not in done)
    bar = tqdm(total=total, unit="file", file=sys.stderr, disable=True if args.quiet else None,
               dynamic_ncols=True, desc="predict")
    outcomes = predictor.predict_many(todo(), workers=args.workers, timeline=True if args.timeline else None,
                                      segment_s=args.segment_s, voice_adaptation=adaptation)
    try:
        for outcome in outcomes:
            writer.write(outcome.record())
            if outcome.ok:
                ok += 1
            else:
                failures[outcome.error["code"]] += 1
                bar.set_postfix(failed=sum(failures.values()), refresh=False)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True  # files in flight are dropped: --resume redoes them
    finally:
        outcomes.close()
        bar.close()
        if fh is not None:
            fh.close()
    print(_summary(ok, failures, skipped, time.monotonic() - started, interrupted, args.out), file=sys.stderr)
    if interrupted:
        return 130
    return 1 if failures else 0   # every file has its line either way; 1 tells a script that some failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emotion-av", description="Emotion recognition from videos of a speaking face.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="predict files and folders in this process",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="files, and folders searched recursively by extension")
    p.add_argument("--out", "-o", help="results file, .jsonl or .csv (default: JSON lines on stdout)")
    p.add_argument("--format", choices=("jsonl", "csv"), help="output format (default: from --out's extension)")
    p.add_argument("--timeline", action="store_true",
                   help="per-segment probabilities for every file (default: for clips longer than "
                        "EMOTION_TIMELINE_AFTER_S, as the service)")
    p.add_argument("--segment-s", type=float, help="timeline segment length (default EMOTION_SEGMENT_S)")
    p.add_argument("--workers", "-j", type=int, default=1, help="files processed at once (default 1)")
    p.add_argument("--threads", type=int, default=0,
                   help="ONNX Runtime threads per session (default EMOTION_ORT_THREADS, else the CPUs / workers)")
    p.add_argument("--resume", action="store_true", help="go on from --out, skipping the files already in it")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--ext", default=",".join(DEFAULT_EXTENSIONS),
                   help="extensions looked for in folders (default: %(default)s)")
    p.add_argument("--model-dir", help="bundle directory (default EMOTION_MODEL_DIR, else the shipped bundle)")
    p.add_argument("--adapt-voice", action="store_true",
                   help="adapt the voice's normalisation to these recordings' own statistics (one recording setup, "
                        "at least 20 voices, a mix of emotions; a first pass over their audio); each JSON answer "
                        "says so under 'adaptation'")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=predict_command)
    add_batch_parser(sub)
    from service.run.stream_cli import add_stream_parser

    add_stream_parser(sub)
    return parser


def batch_command(args: argparse.Namespace) -> int:
    try:
        from service.cluster.batch import batch_command as run
    except ImportError as exc:  # ray, pyarrow, fsspec: the optional extra
        raise UsageError(f"emotion-av batch needs the cluster extra (pip install 'emotion-av[cluster]'): {exc}") from None
    return run(args)


def add_batch_parser(sub) -> None:
    """`emotion-av batch`: the same answers on a Ray cluster, into Parquet (docs/batch.md)."""
    p = sub.add_parser("batch", help="score an archive on a Ray cluster into Parquet (the cluster extra)",
                       description="Score files, folders, globs and URIs (s3://, gs://, ...) on a Ray cluster: "
                                   "one row per input in the Parquet dataset OUT, with the answers and error codes "
                                   "of POST /predict. docs/batch.md tells the columns.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders, glob patterns, fsspec URIs")
    p.add_argument("--out", "-o", required=True, help="the Parquet dataset (a directory of part files; a URI too)")
    p.add_argument("--address", help="Ray cluster: auto, ray://HOST:10001, HOST:6379 (default: RAY_ADDRESS, "
                                     "else a local cluster)")
    p.add_argument("--actors", type=int, default=1, help="actors scoring at once, one bundle each (default 1)")
    p.add_argument("--num-cpus", type=float, default=1, help="CPUs per actor (default 1; ONNX Runtime threads)")
    p.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (default 0; the gpu extra's ORT)")
    p.add_argument("--adapt-voice", action="store_true",
                   help="adapt the voice's normalisation to these recordings first (one setup: a room, a "
                        "microphone, a language); a first pass over every input's audio; each row's "
                        "'adaptation' says so")
    p.add_argument("--batch-size", type=int, default=4, help="inputs per actor call (default 4)")
    p.add_argument("--timeline", action="store_true", help="a timeline column (JSON) for every input")
    p.add_argument("--segment-s", type=float, help="timeline segment length (default EMOTION_SEGMENT_S)")
    p.add_argument("--resume", action="store_true", help="skip the inputs already in OUT")
    p.add_argument("--force", action="store_true", help="remove OUT's part files first")
    p.add_argument("--ext", default=",".join(DEFAULT_EXTENSIONS),
                   help="extensions looked for in folders (default: %(default)s)")
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec option for URIs, e.g. endpoint_url=http://127.0.0.1:9000 (repeatable)")
    p.add_argument("--model-dir", help="bundle directory on every node (default EMOTION_MODEL_DIR, else the shipped "
                                       "bundle)")
    p.add_argument("--in-process-decode", action="store_true",
                   help="decode in the actor itself, not in a decoder worker process as the service does: less CPU, "
                        "but a file that crashes FFmpeg kills the actor (retried 3 times, then the run fails)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(func=batch_command)


def main(argv: list[str] | None = None) -> int:
    one_blas_thread()  # before numpy loads (this module imports it lazily): POST /predict's answers to the last bit
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from service.model.bundle import BundleError

    try:
        return args.func(args)
    except (UsageError, BundleError) as exc:
        print(f"emotion-av: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
