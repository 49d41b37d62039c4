"""Probe and decode untrusted media with ffprobe / ffmpeg subprocesses (design §2 step 1).

Every call restricts ffmpeg to local files and pipes (`-protocol_whitelist file,pipe`),
never reads stdin, passes no user-controlled string except the path of our own temp
file, and kills the child when its timeout expires.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import MediaLimits


class MediaError(Exception):
    """Input the pipeline cannot or will not decode; carries an HTTP-style status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_s: float
    has_audio: bool
    has_video: bool
    width: int = 0          # display size (rotation applied)
    height: int = 0
    fps: float = 0.0


def ffmpeg_binary(name: str = "ffmpeg") -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: install ffmpeg (see README)")
    return path


_SAFE_INPUT = ["-protocol_whitelist", "file,pipe"]


def _run(args: list[str], timeout_s: float) -> bytes:
    """Run a child process, return its stdout; kill it on timeout."""
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:  # subprocess.run kills the child before raising
        raise MediaError("decode_timeout", f"decoding took longer than {timeout_s:.0f} s", status=504) from exc
    if proc.returncode != 0:
        raise MediaError("undecodable", "the file could not be decoded as audio/video")
    return proc.stdout


def _fraction(text: str | None) -> float:
    try:
        num, _, den = (text or "0/0").partition("/")
        return float(num) / float(den or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0


def _rotation(stream: dict) -> int:
    rotate = stream.get("tags", {}).get("rotate")
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            rotate = side["rotation"]
    try:
        return int(float(rotate or 0)) % 180
    except ValueError:
        return 0


def probe(path: Path, limits: MediaLimits) -> MediaInfo:
    """ffprobe gate: container, streams, duration, resolution and frame count within limits."""
    out = _run(
        [ffmpeg_binary("ffprobe"), "-v", "error", *_SAFE_INPUT, "-show_format", "-show_streams",
         "-of", "json", str(path)],
        limits.timeout_s,
    )
    try:
        data = json.loads(out or b"{}")
    except json.JSONDecodeError as exc:
        raise MediaError("undecodable", "the file could not be probed") from exc
    fmt = data.get("format") or {}
    format_name = fmt.get("format_name", "")
    if not format_name:
        raise MediaError("undecodable", "the file is not a recognisable media container")
    if limits.allowed_formats is not None and format_name not in limits.allowed_formats:
        raise MediaError("unsupported_container", f"container '{format_name}' is not accepted", status=415)
    streams = data.get("streams") or []
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video"
             and not (s.get("disposition") or {}).get("attached_pic")]
    if not audio and not video:
        raise MediaError("no_usable_stream", "the file holds neither an audio nor a video stream")
    try:
        duration = float(fmt.get("duration") or 0.0)
    except ValueError:
        duration = 0.0
    if not math.isfinite(duration) or duration <= 0:
        raise MediaError("no_duration", "the file has no measurable duration")
    if duration > limits.max_duration_s:
        raise MediaError("too_long", f"duration {duration:.0f} s exceeds the limit of {limits.max_duration_s:.0f} s", status=413)
    width = height = 0
    fps = 0.0
    if video:
        v = video[0]
        width, height = int(v.get("width") or 0), int(v.get("height") or 0)
        if _rotation(v) == 90:
            width, height = height, width
        if width <= 0 or height <= 0:
            raise MediaError("undecodable", "the video stream has no frame size")
        if width > limits.max_width or height > limits.max_height:
            raise MediaError("resolution_too_large",
                             f"resolution {width}x{height} exceeds {limits.max_width}x{limits.max_height}", status=413)
        fps = _fraction(v.get("avg_frame_rate")) or _fraction(v.get("r_frame_rate"))
        if fps * duration > limits.max_frames:
            raise MediaError("too_many_frames", "the video has more frames than allowed", status=413)
    return MediaInfo(format_name, duration, bool(audio), bool(video), width, height, fps)


def decode_audio(path: Path, sample_rate: int, timeout_s: float) -> np.ndarray:
    """First audio stream as float32 mono at `sample_rate` (empty array if none decodes)."""
    out = _run(
        [ffmpeg_binary(), "-nostdin", "-v", "error", *_SAFE_INPUT, "-i", str(path),
         "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"],
        timeout_s,
    )
    return np.frombuffer(out, dtype="<f4").astype(np.float32, copy=True)


def frame_size(info: MediaInfo, max_side: int) -> tuple[int, int]:
    """Decoded frame size: the display size scaled so its long side is at most max_side, even."""
    scale = min(1.0, max_side / max(info.width, info.height))
    w = max(2, int(round(info.width * scale / 2)) * 2)
    h = max(2, int(round(info.height * scale / 2)) * 2)
    return w, h


def sample_frames(path: Path, info: MediaInfo, fps: float, max_frames: int, max_side: int,
                  timeout_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Grey frames sampled at `fps` (lowered for long clips so at most `max_frames` come out).

    Returns (frames uint8 [N, H, W], timestamps in seconds [N]).
    """
    if not info.has_video:
        return np.zeros((0, 0, 0), np.uint8), np.zeros(0, np.float64)
    rate = min(fps, max_frames / max(info.duration_s, 1e-3))
    w, h = frame_size(info, max_side)
    out = _run(
        [ffmpeg_binary(), "-nostdin", "-v", "error", *_SAFE_INPUT, "-i", str(path),
         "-map", "0:v:0", "-an", "-sn", "-dn",
         "-vf", f"fps={rate:.6f}:round=near,scale={w}:{h}:flags=area,format=gray",
         "-frames:v", str(max_frames), "-f", "rawvideo", "pipe:1"],
        timeout_s,
    )
    n = len(out) // (w * h)
    frames = np.frombuffer(out[: n * w * h], np.uint8).reshape(n, h, w).copy()
    # The fps filter emits output frame i at time i / rate (the input frame nearest it).
    times = np.arange(n) / rate
    return frames, np.minimum(times, info.duration_s)
