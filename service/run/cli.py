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
import hashlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from service.run.blas_threads import one_blas_thread

# The containers POST /predict takes (design §5): video, and voice recordings.
VIDEO_EXTENSIONS = ("mp4", "mov", "mkv", "webm", "avi", "flv")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "m4a")
DEFAULT_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS


class UsageError(Exception):
    pass


# -- finding the files -------------------------------------------------------------------------
def _key(path: str) -> bytes:
    """8 bytes per file for the set of those done: memory stays small for millions of files."""
    return hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()


def walk(paths: Iterable[str], extensions: Iterable[str]) -> Iterator[str]:
    """Absolute paths: each file given, and the files under each folder given whose extension
    is in `extensions`, in sorted order, lazily (no list of the whole tree is kept)."""
    exts = {"." + e.lower().lstrip(".") for e in extensions}
    for given in paths:
        path = os.path.abspath(given)
        if not os.path.isdir(path):
            yield path
            continue
        for root, dirs, files in os.walk(path, onerror=None, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                if os.path.splitext(name)[1].lower() in exts:
                    yield os.path.join(root, name)


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
    """One row per file: path, status, error, label, one probability column per class (fused,
    then audio-only and face-only when the answer has them), modalities, duration, summary
    frame times; the timeline as JSON in one column with --timeline."""

    def __init__(self, out: TextIO, classes: list[str], timeline: bool, header: bool = True):
        self.out, self.classes, self.timeline = out, classes, timeline
        self.writer = csv.writer(out, lineterminator="\n")
        if header:
            self.writer.writerow(self.header(classes, timeline))
            out.flush()

    @staticmethod
    def header(classes: list[str], timeline: bool) -> list[str]:
        cols = ["path", "status", "error_code", "error_message", "label"]
        cols += [f"p_{c}" for c in classes] + [f"p_audio_{c}" for c in classes] + [f"p_face_{c}" for c in classes]
        cols += ["audio", "face", "duration_s", "summary_frames_s"]
        return cols + (["timeline"] if timeline else [])

    @classmethod
    def done_paths(cls, path: Path, classes: list[str], timeline: bool) -> Iterator[str]:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head != cls.header(classes, timeline):
                raise UsageError(f"{path} has other columns than this run writes (another model, or "
                                 f"--timeline differs); not resuming")
            for row in reader:
                if row:
                    yield row[0]

    def write(self, record: dict[str, Any]) -> None:
        error = record.get("error") or {}
        by_modality = record.get("probabilities_by_modality") or {}

        def probs(p: dict[str, float] | None) -> list[Any]:
            return [repr(p[c]) if p and c in p else "" for c in self.classes]

        mods = record.get("modalities") or {}
        row = [record["path"], record["status"], error.get("code", ""), error.get("message", ""),
               record.get("label", "")]
        row += probs(record.get("probabilities")) + probs(by_modality.get("audio")) + probs(by_modality.get("face"))
        row += [mods.get("audio", ""), mods.get("face", ""), record.get("duration_s", ""),
                " ".join(str(f["t"]) for f in record.get("summary_frames") or [])]
        if self.timeline:
            row.append(json.dumps(record["timeline"]) if "timeline" in record else "")
        self.writer.writerow(row)
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


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _summary(ok: int, failures: Counter, skipped: int, seconds: float, interrupted: bool, out: str | None) -> str:
    done = ok + sum(failures.values())
    rate = f", {done / seconds:.2f} files/s" if seconds > 0 and done else ""
    rate += f", peak RSS {_peak_rss_mb():.0f} MB" if _peak_rss_mb() else ""
    lines = [f"{'interrupted: ' if interrupted else ''}{done} files in {seconds:.1f} s{rate}: "
             f"{ok} answered, {sum(failures.values())} failed"
             + (f", {skipped} skipped (already in {out})" if skipped else "")]
    for code, n in failures.most_common():
        lines.append(f"  {code}: {n}")
    if interrupted and out:
        lines.append(f"  {out} holds every finished file; --resume goes on from it")
    return "\n".join(lines)


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
    outcomes = predictor.predict_many(todo(), workers=args.workers,
                                      timeline=True if args.timeline else None, segment_s=args.segment_s)
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
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=predict_command)
    from service.run.stream_cli import add_stream_parser

    add_stream_parser(sub)
    return parser


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
