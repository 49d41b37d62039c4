"""Generated media for I/O tests (ffmpeg lavfi): synthetic, never a substitute for the real corpora."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def need_ffmpeg() -> None:
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed (see README)")


def make_video(path: Path, *, seconds: float = 2.0, size: str = "320x240", audio: bool = True, video: bool = True,
               vcodec: str = "libx264", acodec: str = "aac", extra: list[str] | None = None) -> Path:
    """A test-pattern video with a tone, encoded by ffmpeg."""
    need_ffmpeg()
    args = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=44100:duration={seconds}"]
    if video:
        args += ["-c:v", vcodec, "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", acodec]
    args += (extra or []) + [str(path)]
    subprocess.run(args, check=True)
    return path
