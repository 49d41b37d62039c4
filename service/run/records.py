"""What a batch of files is made of and gives, for `emotion-av predict` (service/run/cli.py)
and `emotion-av batch` (service/cluster/batch.py) alike: the files found under the paths
given, the flat row of one file's answer, and the summary printed at the end."""
from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from typing import Any, Iterable, Iterator


# The containers POST /predict takes (design §5): video, and voice recordings.
VIDEO_EXTENSIONS = ("mp4", "mov", "mkv", "webm", "avi", "flv")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "m4a")
DEFAULT_EXTENSIONS = VIDEO_EXTENSIONS + AUDIO_EXTENSIONS


class UsageError(Exception):
    pass


# -- finding the files -------------------------------------------------------------------------
def path_key(path: str) -> bytes:
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


def columns(classes: list[str], timeline: bool) -> list[str]:
    """The flat columns of one file's answer, the CSV's and the Ray batch's Parquet alike
    (docs/batch.md gives their types): path, status, error, label, one probability column
    per class (fused, then audio-only and face-only when the answer has them), modalities,
    duration, summary frame times, the voice's adaptation to the batch as JSON (null unless
    --adapt-voice); the timeline as JSON in one column with --timeline."""
    cols = ["path", "status", "error_code", "error_message", "label"]
    cols += [f"p_{c}" for c in classes] + [f"p_audio_{c}" for c in classes] + [f"p_face_{c}" for c in classes]
    cols += ["audio", "face", "duration_s", "summary_frames_s", "adaptation"]
    return cols + (["timeline"] if timeline else [])


def flat_record(record: dict[str, Any], classes: list[str], timeline: bool) -> dict[str, Any]:
    """`record` (an `Outcome.record()`) as `columns(classes, timeline)`: typed values, None
    where the answer has none (an error, a modality that is absent)."""
    error = record.get("error") or {}
    by_modality = record.get("probabilities_by_modality") or {}
    mods = record.get("modalities") or {}
    row: dict[str, Any] = {"path": record["path"], "status": record["status"], "error_code": error.get("code"),
                           "error_message": error.get("message"), "label": record.get("label")}
    for prefix, probs in (("p_", record.get("probabilities")), ("p_audio_", by_modality.get("audio")),
                          ("p_face_", by_modality.get("face"))):
        for c in classes:
            row[prefix + c] = probs[c] if probs and c in probs else None
    row.update(audio=mods.get("audio"), face=mods.get("face"), duration_s=record.get("duration_s"),
               summary_frames_s=[f["t"] for f in record.get("summary_frames") or []] if "error" not in record
               else None,
               adaptation=json.dumps(record["adaptation"]) if record.get("adaptation") is not None else None)
    if timeline:
        row["timeline"] = json.dumps(record["timeline"]) if record.get("timeline") is not None else None
    return row


def _peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def summary_text(ok: int, failures: Counter, skipped: int, seconds: float, interrupted: bool, out: str | None) -> str:
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
