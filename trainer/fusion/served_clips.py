"""Clips like the ones users send, built with ffmpeg from a held-out split, one face per clip:
the serving-path calibration (trainer/fusion/served_calibration.py) fits on the `val`
ones, and bench/heldout_eval.py posts the `test` ones to a real server.

- `av`: a RAVDESS speech clip muxed with ONE FER2013 face still of the same emotion (upscaled
  to 240 px, centred in a 640x480 grey frame, for the speech's duration), H.264 + AAC mp4;
- `face`: the same still as a silent 3 s mp4 (no audio stream);
- `audio`: the speech alone, AAC in an .m4a (no video stream).

No TensorFlow here: the bench imports this module.
"""
from __future__ import annotations

import os
import random
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from trainer.data import BASIC7, discover_corpora, load_corpus
from trainer.data.splits import split_of

SPLITS = ("val", "test")
# Bump when a clip recipe changes: the cache folder is per recipe, so old files are not reused.
RECIPE = "v1"
FRAME_W, FRAME_H, FACE_PX, FPS = 640, 480, 240, 25
BACKGROUND = "0x777777"
FACE_ONLY_S = 3.0
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "128k", "-ar", "48000", "-ac", "1"]


# The kinds of clip, as the report names them.
KINDS = ("av", "face", "audio")
KIND_NAMES = {"av": "speech + one face still (H.264/AAC mp4)", "face": "a face still, silent mp4",
              "audio": "speech alone (AAC m4a)"}


@dataclass(frozen=True)
class Item:
    """One source file and its basic7 label."""
    path: Path
    label: str


@dataclass(frozen=True)
class Pair:
    speech: Item
    face: Item

    @property
    def label(self) -> str:
        return self.speech.label


def pair_clips(speech: Iterable[Item], faces: Iterable[Item], seed: int = 0,
               limit: int | None = None) -> list[Pair]:
    """Each speech clip with ONE face of the same emotion, reproducibly.

    Per emotion, the speech clips (sorted by path) are put in a seeded order and the first
    `limit` kept; the faces of that emotion get their own seeded order and the i-th clip takes
    the i-th face (faces are reused only when there are fewer faces than clips). The order of
    the input does not matter, and a smaller `limit` gives a prefix of a larger one's pairs.
    Emotions with speech but no face are left out (named on stderr by the caller)."""
    speech_by: dict[str, list[Item]] = {}
    faces_by: dict[str, list[Item]] = {}
    for s in speech:
        speech_by.setdefault(s.label, []).append(s)
    for f in faces:
        faces_by.setdefault(f.label, []).append(f)
    out: list[Pair] = []
    for emotion in BASIC7:
        sp = sorted(speech_by.get(emotion, []), key=lambda i: str(i.path))
        fc = sorted(faces_by.get(emotion, []), key=lambda i: str(i.path))
        if not sp or not fc:
            continue
        random.Random(f"{seed}:speech:{emotion}").shuffle(sp)
        random.Random(f"{seed}:faces:{emotion}").shuffle(fc)
        if limit is not None:
            sp = sp[:limit]
        out += [Pair(s, fc[i % len(fc)]) for i, s in enumerate(sp)]
    return out


def heldout_sources(data: Path, split: str) -> tuple[list[Item], list[Item], list[Item]]:
    """(RAVDESS speech, FER2013 faces, CREMA-D clips) of the project's `split` (trainer.data.splits).
    The CREMA-D clips are returned whatever the split (all six are actor 1001: test)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    roots = discover_corpora(data)
    missing = [c for c in ("ravdess", "fer2013") if c not in roots]
    if missing:
        raise FileNotFoundError(f"corpora not found under {data}: {', '.join(missing)}")
    speech = [Item(s.path, s.label) for s in load_corpus("ravdess", roots["ravdess"]) if split_of(s) == split]
    faces = [Item(s.path, s.label) for s in load_corpus("fer2013", roots["fer2013"]) if split_of(s) == split]
    cremad = [Item(s.path, s.label) for s in load_corpus("cremad", roots["cremad"])] if "cremad" in roots else []
    return speech, faces, cremad


def _ffmpeg(args: list[str], out: Path) -> Path:
    """ffmpeg into a private temporary name beside `out`, then an atomic rename: a file in the
    cache is always whole, and processes building the same clip at once do not collide."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part{out.suffix}")
    try:
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(tmp)], check=True,
                       capture_output=True, text=True)
        os.replace(tmp, out)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ffmpeg failed for {out.name}: {exc.stderr.strip()[-2000:]}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return out


def probe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout.strip()
    return float(out)


def _still_video() -> list[str]:
    """Filter graph: input 0 the background colour, input 1 the looped face still."""
    return ["-filter_complex",
            f"[1:v]scale={FACE_PX}:{FACE_PX}:flags=bicubic,format=yuv420p[f];"
            f"[0:v][f]overlay=(W-w)/2:(H-h)/2,format=yuv420p[v]", "-map", "[v]"]


def _background_and_face(face: Path) -> list[str]:
    return ["-f", "lavfi", "-i", f"color=c={BACKGROUND}:s={FRAME_W}x{FRAME_H}:r={FPS}",
            "-loop", "1", "-framerate", str(FPS), "-i", str(face)]


def make_av(pair: Pair, cache: Path) -> Path:
    out = cache / RECIPE / "av" / f"{pair.speech.path.stem}__{pair.face.path.stem}.mp4"
    if out.exists():
        return out
    dur = probe_duration(pair.speech.path)
    return _ffmpeg([*_background_and_face(pair.face.path), "-i", str(pair.speech.path), *_still_video(),
                    "-map", "2:a", "-t", f"{dur:.3f}", *X264, *AAC, "-movflags", "+faststart"], out)


def make_face(face: Item, cache: Path) -> Path:
    out = cache / RECIPE / "face" / f"{face.path.stem}.mp4"
    return _ffmpeg([*_background_and_face(face.path), *_still_video(), "-t", f"{FACE_ONLY_S}", "-an",
                    *X264, "-movflags", "+faststart"], out)


def make_audio(speech: Item, cache: Path) -> Path:
    out = cache / RECIPE / "audio" / f"{speech.path.stem}.m4a"
    return _ffmpeg(["-i", str(speech.path), "-vn", *AAC, "-movflags", "+faststart"], out)
