"""The benchmark's clips: the real CREMA-D clips, and 1280x720 H.264/AAC mp4s of a real face
(one CREMA-D clip scaled to 720p, encoded once, then looped: re-encoded to exactly 4 s, by stream
copy to 60 s and 10 min). Without the corpus the 720p clips fall back to a test pattern with a tone (no face,
so face detection does less work: the table says so). Generated once into a cache folder.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"  # ../shared/data from the repo
FACE_SOURCE = "1001_DFA_HAP_XX.flv"  # the clip the tests loop too
# Bump when the recipe changes: cached files with an older tag are not reused.
RECIPE = "v3"
# ~0.8 Mbit/s: the 10-minute clip stays well under the service's default 100 MB upload limit.
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-g", "48", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "128k", "-ar", "48000"]
# The loop unit: 48 frames at 25 fps = 90 AAC frames of 1024 samples at 48 kHz, so audio and video
# end together and a stream-copied loop has no timestamp collisions at the seams.
LOOP_S = 1.92

# name -> duration in seconds of the generated 720p clips
GENERATED = {"720p-4s": 4.0, "720p-60s": 60.0, "720p-10min": 600.0}
# A tone over a test pattern (no face anywhere), and the same audio stream without the video.
PATTERN = "pattern-4s"
ALL_CLIPS = ["cremad", *GENERATED, PATTERN]


@dataclass
class Clip:
    name: str
    files: list[Path]            # requests cycle over these (one file except for "cremad")
    duration_s: float            # per file (median for a set)
    description: str
    real_face: bool
    size_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def is_long(self) -> bool:
        return self.duration_s >= 30.0


def _ffmpeg(args: list[str], out: Path) -> Path:
    """Run ffmpeg into a temporary name next to `out`, then rename (no half-written cache)."""
    tmp = out.with_name(out.stem + ".part" + out.suffix)
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, str(tmp)], check=True)
    os.replace(tmp, out)
    return out


def probe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         check=True, capture_output=True, text=True).stdout.strip()
    return float(out)


def cremad_files(data: Path) -> list[Path]:
    d = data / "cremad_av"
    return sorted(d.glob("*.flv")) if d.is_dir() else []


def _base_clip(cache: Path, data: Path) -> tuple[Path, bool]:
    """One loopable 1280x720 25 fps clip: a real CREMA-D face if available, else testsrc2 + sine."""
    files = cremad_files(data)
    if files:
        src = next((f for f in files if f.name == FACE_SOURCE), files[0])
        out = cache / f"base-face-{RECIPE}.mp4"
        if not out.exists():
            _ffmpeg(["-i", str(src), "-vf", "scale=1280:720,fps=25,tpad=stop=-1:stop_mode=clone", "-af", "apad",
                     "-t", f"{LOOP_S}", *X264, *AAC], out)
        return out, True
    out = cache / f"base-pattern-{RECIPE}.mp4"
    if not out.exists():
        _ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-f", "lavfi", "-i",
                 "sine=frequency=330:sample_rate=48000", "-t", f"{LOOP_S}", *X264, *AAC], out)
    return out, False


def _looped(base: Path, seconds: float, out: Path) -> Path:
    """`base` looped to `seconds`: re-encoded when short (an exact length), else stream-copied (fast)."""
    if not out.exists():
        codecs = [*X264, *AAC] if seconds < 10 else ["-c", "copy"]
        _ffmpeg(["-stream_loop", "-1", "-i", str(base), "-t", f"{seconds:g}", *codecs, "-movflags", "+faststart"], out)
    return out


def pattern_clips(cache: Path) -> tuple[Path, Path]:
    """(1280x720 testsrc2 + 330 Hz sine, 4 s; its audio stream alone, stream-copied into an mp4)."""
    video = cache / f"pattern-4s-{RECIPE}.mp4"
    if not video.exists():
        _ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-f", "lavfi", "-i",
                 "sine=frequency=330:sample_rate=48000", "-t", "4", *X264, *AAC, "-movflags", "+faststart"], video)
    audio = cache / f"pattern-4s-audio-{RECIPE}.mp4"
    if not audio.exists():
        _ffmpeg(["-i", str(video), "-map", "0:a:0", "-c", "copy", "-movflags", "+faststart"], audio)
    return video, audio


def prepare(names: list[str], cache: Path, data: Path = DEFAULT_DATA, log=print) -> list[Clip]:
    """The clips asked for, generating what is missing; a clip that cannot be had is skipped with a message."""
    cache.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    for name in names:
        if name == "cremad":
            files = cremad_files(data)
            if not files:
                log(f"[clips] skipping 'cremad': no *.flv in {data / 'cremad_av'}")
                continue
            durs = sorted(probe_duration(f) for f in files)
            clips.append(Clip("cremad", files, durs[len(durs) // 2],
                              f"{len(files)} real CREMA-D clips (480x360 VP6 flv, {durs[0]:.1f}-{durs[-1]:.1f} s)",
                              real_face=True, size_mb=sum(f.stat().st_size for f in files) / len(files) / 1e6))
            continue
        if name == PATTERN:
            video, audio = pattern_clips(cache)
            clips.append(Clip(PATTERN, [video], probe_duration(video),
                              "1280x720 25 fps H.264/AAC mp4: a 330 Hz tone over testsrc2 (no face anywhere)",
                              real_face=False, size_mb=video.stat().st_size / 1e6,
                              notes=[f"audio-only twin: {audio.name}"]))
            continue
        seconds = GENERATED[name]
        base, real = _base_clip(cache, data)
        kind = "face" if real else "pattern"
        path = _looped(base, seconds, cache / f"{name}-{kind}-{RECIPE}.mp4")
        what = "a real CREMA-D face looped" if real else "testsrc2 + sine (no CREMA-D corpus: no real face)"
        clip = Clip(name, [path], probe_duration(path), f"1280x720 25 fps H.264/AAC mp4, {what}",
                    real_face=real, size_mb=path.stat().st_size / 1e6)
        if clip.size_mb > 100:
            clip.notes.append("larger than the service's default 100 MB upload limit")
        clips.append(clip)
    return clips
