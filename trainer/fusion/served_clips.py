"""Clips like the ones users send, built with ffmpeg from a held-out split, one face per clip:
the serving-path calibration (trainer/fusion/served_calibration.py) fits on the `val`
ones, and bench/heldout_eval.py posts the `test` ones to a real server.

- `av`: a RAVDESS speech clip muxed with ONE FER2013 face still of the same emotion (upscaled
  to 240 px, centred in a 640x480 grey frame, for the speech's duration), H.264 + AAC mp4;
- `face`: the same still as a silent 3 s mp4 (no audio stream);
- `audio`: the speech alone, AAC in an .m4a (no video stream).

For the bench only (bench/heldout_eval.py), not the calibration:
- framings of the same speech (`make_framed`: trim2s, cut, pad, late; the pure parts are
  `frame_levels`, `speech_span`, `cut_window` and `reframe`, on a numpy signal and a seed);
- URDU clips (`urdu_sources`; evaluation only), posted as they are or muxed with a face (`make_av`).

No TensorFlow here: the bench imports this module.
"""
from __future__ import annotations

import os
import random
import subprocess
import uuid
import wave
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

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


def pick_clips(speech: Iterable[Item], seed: int = 0, limit: int | None = None) -> dict[str, list[Item]]:
    """Per emotion (basic7 order), the speech clips sorted by path, put in a seeded order, the
    first `limit` kept: the clips `pair_clips` pairs, for kinds that need no face."""
    by: dict[str, list[Item]] = {}
    for s in speech:
        by.setdefault(s.label, []).append(s)
    out = {}
    for emotion in BASIC7:
        sp = sorted(by.get(emotion, []), key=lambda i: str(i.path))
        if sp:
            random.Random(f"{seed}:speech:{emotion}").shuffle(sp)
            out[emotion] = sp if limit is None else sp[:limit]
    return out


def pair_clips(speech: Iterable[Item], faces: Iterable[Item], seed: int = 0,
               limit: int | None = None) -> list[Pair]:
    """Each speech clip with ONE face of the same emotion, reproducibly.

    Per emotion, the speech clips (sorted by path) are put in a seeded order and the first
    `limit` kept; the faces of that emotion get their own seeded order and the i-th clip takes
    the i-th face (faces are reused only when there are fewer faces than clips). The order of
    the input does not matter, and a smaller `limit` gives a prefix of a larger one's pairs.
    Emotions with speech but no face are left out (named on stderr by the caller)."""
    speech_by = pick_clips(speech, seed, limit)
    faces_by: dict[str, list[Item]] = {}
    for f in faces:
        faces_by.setdefault(f.label, []).append(f)
    out: list[Pair] = []
    for emotion in BASIC7:
        sp = speech_by.get(emotion, [])
        fc = sorted(faces_by.get(emotion, []), key=lambda i: str(i.path))
        if not sp or not fc:
            continue
        random.Random(f"{seed}:faces:{emotion}").shuffle(fc)
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


def urdu_sources(data: Path) -> list[Item]:
    """Every URDU clip (evaluation only: all of it is test, whatever the split), or [] where the
    corpus is absent."""
    roots = discover_corpora(data)
    return [Item(s.path, s.label) for s in load_corpus("urdu", roots["urdu"])] if "urdu" in roots else []


def rafdb_sources(data: Path, split: str) -> list[Item]:
    """RAF-DB's faces of the project's `split` (its own carve of the released train split:
    trainer.data.splits), or [] where the corpus is absent."""
    roots = discover_corpora(data)
    if "rafdb" not in roots:
        return []
    return [Item(s.path, s.label) for s in load_corpus("rafdb", roots["rafdb"]) if split_of(s) == split]


def _tmp_beside(out: Path, suffix: str | None = None) -> Path:
    return out.with_name(f".{out.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part{suffix or out.suffix}")


def _ffmpeg(args: list[str], out: Path) -> Path:
    """ffmpeg into a private temporary name beside `out`, then an atomic rename: a file in the
    cache is always whole, and processes building the same clip at once do not collide."""
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(out)
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


# ---------------------------------------------------------------- framings (bench only)
# The same held-out speech framed otherwise, as users record it: cut at the first word, a
# window of the speech, padded with silence, or late in a longer recording.

SR = 16000                # the signal is decoded to 16 kHz mono float before it is re-framed
FRAME_S = 0.010           # level frames of 10 ms
SPEECH_DB = 30.0          # a frame within this of the loudest frame counts as speech
FRAMINGS = ("trim2s", "cut", "pad", "late")
TRIM_S = 2.0
CUT_S = (1.5, 3.0)
PAD_S = (0.5, 2.0)
LATE_S, LATE_OFFSET_S = 6.0, (1.0, 3.0)
FRAMING_RECIPE = "f1"     # bump when a framing changes: part of the cache path


def frame_levels(x: np.ndarray, sr: int = SR, frame_s: float = FRAME_S) -> np.ndarray:
    """RMS level in dB (re full scale 1.0) of each whole `frame_s` frame of `x` (a signal shorter
    than one frame is one frame); digital silence is -200 dB."""
    x = np.asarray(x, np.float64).ravel()
    hop = max(1, int(round(frame_s * sr)))
    n = max(1, len(x) // hop)
    frames = x[: n * hop].reshape(n, -1) if len(x) >= hop else x.reshape(1, -1)
    rms = np.sqrt((frames ** 2).mean(axis=1)) if frames.size else np.zeros(1)
    return 20 * np.log10(np.maximum(rms, 1e-10))


def speech_span(x: np.ndarray, sr: int = SR, db: float = SPEECH_DB, frame_s: float = FRAME_S) -> tuple[int, int]:
    """[start, stop) in samples from the first word to the end of the last: from the first to the
    last 10 ms frame whose level is within `db` of the loudest frame (all of `x` when silent)."""
    levels = frame_levels(x, sr, frame_s)
    hop = max(1, int(round(frame_s * sr)))
    on = np.flatnonzero(levels >= levels.max() - db)
    return int(on[0] * hop), int(min(len(x), (on[-1] + 1) * hop))


def framing_seed(seed: int, name: str, framing: str) -> int:
    """The seed of one clip's framing: the run's seed, the source file name and the framing."""
    return zlib.crc32(f"{seed}:{framing}:{Path(name).name}".encode())


def cut_window(start: int, stop: int, sr: int, seed: int, span_s: tuple[float, float] = CUT_S) -> tuple[int, int]:
    """A seeded window of span_s[0]..span_s[1] seconds lying inside [start, stop) (all of it when
    it is shorter than the drawn length)."""
    rng = np.random.default_rng(seed)
    length = int(round(rng.uniform(*span_s) * sr))
    if stop - start <= length:
        return start, stop
    a = start + int(rng.integers(0, stop - start - length + 1))
    return a, a + length


def reframe(x: np.ndarray, framing: str, seed: int, sr: int = SR) -> np.ndarray:
    """`x` (mono float) re-framed, float32:
    - `trim2s`: 2.0 s from the first word (padded with silence if the recording ends sooner);
    - `cut`: a seeded 1.5-3.0 s window inside the speech (first to last word);
    - `pad`: the speech with seeded 0.5-2.0 s of digital silence before and 0.5-2.0 s after;
    - `late`: the speech at a seeded 1.0-3.0 s offset in 6 s of silence (longer when the speech
      does not fit, so none of it is lost)."""
    x = np.asarray(x, np.float32).ravel()
    a, b = speech_span(x, sr)
    rng = np.random.default_rng(seed)
    if framing == "trim2s":
        n = int(round(TRIM_S * sr))
        out = x[a:a + n]
        return np.concatenate([out, np.zeros(n - len(out), np.float32)])
    if framing == "cut":
        c, d = cut_window(a, b, sr, seed)
        return x[c:d].copy()
    if framing == "pad":
        before, after = (int(round(rng.uniform(*PAD_S) * sr)) for _ in range(2))
        return np.concatenate([np.zeros(before, np.float32), x[a:b], np.zeros(after, np.float32)])
    if framing == "late":
        offset = int(round(rng.uniform(*LATE_OFFSET_S) * sr))
        out = np.zeros(max(int(round(LATE_S * sr)), offset + b - a), np.float32)
        out[offset:offset + b - a] = x[a:b]
        return out
    raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")


def decode_mono(path: Path, sr: int = SR) -> np.ndarray:
    """The file's audio as mono float32 at `sr` Hz (ffmpeg)."""
    try:
        raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sr),
                              "-f", "f32le", "-"], check=True, capture_output=True).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"ffmpeg could not decode {path}: {exc.stderr.decode(errors='replace')[-2000:]}") from None
    return np.frombuffer(raw, np.float32).copy()


def write_wav(path: Path, x: np.ndarray, sr: int = SR) -> Path:
    """16-bit PCM mono WAV (silence stays digital silence)."""
    pcm = np.clip(np.round(np.asarray(x, np.float64) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    return path


def framed_path(speech: Item, framing: str, seed: int, cache: Path) -> Path:
    return cache / RECIPE / "framing" / f"{FRAMING_RECIPE}-{framing}-seed{seed}" / f"{speech.path.stem}.m4a"


def make_framed(speech: Item, framing: str, seed: int, cache: Path) -> Path:
    """The speech decoded to 16 kHz mono, re-framed (`reframe`, seeded by `framing_seed`), written
    as a WAV and encoded like `make_audio` (AAC .m4a); cached per framing recipe, framing and seed."""
    out = framed_path(speech, framing, seed, cache)
    if out.exists():
        return out
    if framing not in FRAMINGS:
        raise ValueError(f"unknown framing {framing!r}; known: {', '.join(FRAMINGS)}")
    y = reframe(decode_mono(speech.path), framing, framing_seed(seed, speech.path.name, framing))
    out.parent.mkdir(parents=True, exist_ok=True)
    wav = write_wav(_tmp_beside(out, ".wav"), y)
    try:
        return _ffmpeg(["-i", str(wav), "-vn", *AAC, "-movflags", "+faststart"], out)
    finally:
        wav.unlink(missing_ok=True)
