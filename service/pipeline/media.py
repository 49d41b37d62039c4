"""Probe and decode untrusted media with ffprobe / ffmpeg subprocesses (design §2 step 1).

Every child is restricted to local files and pipes (`-protocol_whitelist file,pipe`) and
to the accepted demuxers (`-format_whitelist`, which nested demuxers inherit: an HLS or
concat playlist, or an AVI whose GAB2 subtitle hides one, cannot open anything else);
it never reads stdin, gets no user-controlled string except the path of our own temp
file, and is killed when its timeout expires or the request's budget is cancelled.
Output is read in blocks, so memory does not grow with the length of the clip.
"""
from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .budget import Budget
from .config import ACCEPTED_FORMATS, MediaLimits
from .errors import MediaError

__all__ = ["MediaError", "MediaInfo", "probe", "decode_audio", "stream_audio", "stream_frames", "open_audio",
           "audio_blocks", "open_frames", "frames_of"]

# Demuxers accepted from uploads, as ffprobe names them; joined by commas they are also
# ffmpeg's `-format_whitelist`. Trusted local corpora (wav, flac) are decoded with `formats=None`.
DEMUXERS: tuple[str, ...] | None = ACCEPTED_FORMATS
# Byte patterns of files that make a demuxer open other files. The whitelist already stops
# them; refusing them before ffprobe runs at all is the second wall.
_PLAYLIST_MARKERS = (b"#EXTM3U", b"ffconcat version", b"<MPD")
_GAB2 = b"GAB2\x00"
_HEAD_BYTES = 4096
_READ_BLOCK = 1 << 20
# ffmpeg and ffprobe exit with 1 on input they cannot read; 255 is ffmpeg's exit after a
# SIGTERM/SIGINT it caught, 126/127 a binary that could not run: failures of ours, not of the file.
_TOOL_FAILED = {126, 127, 255}


def decoder_failed(detail: str) -> MediaError:
    """The decoder itself failed (killed by a signal, crashed, unreadable output): a 500 of its
    own, never `undecodable`, which says the client's file is at fault."""
    return MediaError("decoder_failed", f"the media decoder failed ({detail}); retry, or report it with the request id",
                      status=500)


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


def _safe_input(formats: tuple[str, ...] | None = DEMUXERS) -> list[str]:
    args = ["-protocol_whitelist", "file,pipe"]
    return args + ["-format_whitelist", ",".join(formats)] if formats else args


def _widen_pipe(fd: int, size: int = 1 << 20) -> None:
    """Let the child run ahead of the reader by up to `size` bytes (Linux; the default 64 KiB
    is less than one 360p frame, which would make decoding and face detection take turns)."""
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass


class Child:
    """An ffmpeg/ffprobe child whose stdout is read in blocks; killed on its own timeout,
    on the request budget's deadline or cancellation, and whenever the reader stops early.
    The head of its stderr is kept (bounded) to tell refusals from decoding errors."""

    STDERR_KEEP = 16 * 1024

    def __init__(self, args: list[str], timeout_s: float, budget: Budget | None = None):
        self.budget = budget or Budget()
        self.deadline = time.monotonic() + min(timeout_s, self.budget.remaining())
        self.timeout_s = timeout_s
        self.stderr = b""
        self.name = os.path.basename(args[0])
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        _widen_pipe(self.proc.stdout.fileno())

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Kill the child if it still runs and reap it; safe to call again. Returns None."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def _check(self) -> None:
        self.budget.check()
        if time.monotonic() > self.deadline:
            raise MediaError("decode_timeout", f"decoding took longer than {self.timeout_s:.0f} s", status=504)

    def chunks(self) -> Iterator[bytes]:
        """Yield stdout as it arrives; raise MediaError if the child fails."""
        out, err = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        open_fds = {out, err}
        while out in open_fds:
            self._check()
            ready, _, _ = select.select(list(open_fds), [], [], 0.1)
            for fd in ready:
                data = os.read(fd, _READ_BLOCK if fd == out else 4096)
                if not data:
                    open_fds.discard(fd)
                elif fd == err:
                    self.stderr = (self.stderr + data)[: self.STDERR_KEEP]
                else:
                    yield data
        while self.proc.poll() is None:  # stdout closed: the child is exiting
            self._check()
            ready, _, _ = select.select([err], [], [], 0.01) if err in open_fds else ([], [], [])
            if ready and not (data := os.read(err, 4096)):
                open_fds.discard(err)
            elif ready:
                self.stderr = (self.stderr + data)[: self.STDERR_KEEP]
        rc = self.proc.returncode
        if rc < 0:  # not by us: our kills (timeout, cancellation) raise in _check first
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            raise decoder_failed(f"{self.name} was killed by {name}")
        if rc in _TOOL_FAILED:
            raise decoder_failed(f"{self.name} exited with status {rc}")
        if rc != 0:
            if b"not on whitelist" in self.stderr:
                raise MediaError("unsupported_container", "the container format is not accepted", status=415)
            raise MediaError("undecodable", "the file could not be decoded as audio/video")

    def blocks(self, size: int) -> Iterator[bytes]:
        """Yield stdout in blocks of exactly `size` bytes (the last one may be shorter)."""
        pending = bytearray()
        for data in self.chunks():
            pending += data
            while len(pending) >= size:
                yield bytes(pending[:size])
                del pending[:size]
        if pending:
            yield bytes(pending)

    def read_all(self) -> bytes:
        return b"".join(self.blocks(_READ_BLOCK))


def refuse_references(path: Path) -> None:
    """Refuse playlists and other files that point at other files, before any demuxer sees them."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        if any(m in head for m in _PLAYLIST_MARKERS):
            raise MediaError("playlist_refused", "playlists and files referencing other files are not accepted",
                             status=415)
        if not (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
            return
        # The AVI/GAB2 trick: a "subtitle" chunk carrying a whole file for a nested demuxer.
        f.seek(0)
        tail = b""
        while block := f.read(_READ_BLOCK):
            if _GAB2 in tail + block:
                raise MediaError("playlist_refused", "AVI files with embedded GAB2 subtitle files are not accepted",
                                 status=415)
            tail = block[-(len(_GAB2) - 1):]


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


def probe(path: Path, limits: MediaLimits, budget: Budget | None = None) -> MediaInfo:
    """ffprobe gate: container, streams, duration, resolution and frame count within limits."""
    refuse_references(path)
    args = [ffmpeg_binary("ffprobe"), "-v", "error", *_safe_input(limits.allowed_formats), "-show_format", "-show_streams",
            "-of", "json", str(path)]
    with Child(args, limits.timeout_s, budget) as child:
        out = child.read_all()
    # ffprobe exited with 0: what it printed is its JSON, whatever the file held (file data
    # is escaped in it). Anything else means ffprobe misbehaved, not that the file is bad.
    if not out.strip():
        raise decoder_failed("ffprobe printed nothing")
    try:
        data = json.loads(out)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise decoder_failed("ffprobe printed something other than JSON") from exc
    try:
        fmt = data.get("format")
        if isinstance(fmt, dict) and fmt.get("format_name") and not _duration(fmt):
            # Live-written files (a browser's MediaRecorder WebM, a streamed Matroska) carry no
            # duration in their header: the end of their last packet is the duration.
            fmt["duration"] = _packets_end(path, limits, budget)
        return _probed(data, limits)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise decoder_failed("ffprobe's JSON has an unexpected shape") from exc


def _duration(fmt: dict) -> float:
    try:
        duration = float(fmt.get("duration") or 0.0)
    except ValueError:
        return 0.0
    return duration if math.isfinite(duration) and duration > 0 else 0.0


def _packets_end(path: Path, limits: MediaLimits, budget: Budget | None) -> float:
    """The latest packet end time (pts + duration) over all streams, by demuxing (no decoding)."""
    args = [ffmpeg_binary("ffprobe"), "-v", "error", *_safe_input(limits.allowed_formats),
            "-show_entries", "packet=pts_time,duration_time", "-of", "csv=p=0", str(path)]
    with Child(args, limits.timeout_s, budget) as child:
        out = child.read_all().decode("ascii", errors="replace")
    end = 0.0
    for line in out.splitlines():
        parts = line.split(",")
        try:
            end = max(end, float(parts[0]) + (float(parts[1]) if len(parts) > 1 and parts[1] else 0.0))
        except ValueError:
            continue  # N/A timestamps
    return end if math.isfinite(end) else 0.0


def _probed(data: dict, limits: MediaLimits) -> MediaInfo:
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
    duration = _duration(fmt)
    if duration <= 0:
        raise MediaError("no_duration", "the file has no measurable duration")
    if duration > limits.max_duration_s:
        raise MediaError("too_long", f"duration {duration:.0f} s exceeds the limit of {limits.max_duration_s:.0f} s",
                         status=413)
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


def open_audio(path: Path, sample_rate: int, timeout_s: float, budget: Budget | None = None,
               formats: tuple[str, ...] | None = DEMUXERS) -> Child:
    """Start decoding the first audio stream to float32 mono at `sample_rate` (read it with
    `audio_blocks`)."""
    return Child([ffmpeg_binary(), "-nostdin", "-v", "error", *_safe_input(formats), "-i", str(path),
                  "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le", "pipe:1"],
                 timeout_s, budget)


def audio_blocks(child: Child, sample_rate: int, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """An `open_audio` child's samples in blocks of `block_s` seconds; closes the child."""
    with child:
        for block in child.blocks(4 * int(block_s * sample_rate)):
            usable = len(block) - len(block) % 4
            yield np.frombuffer(block[:usable], dtype="<f4").astype(np.float32)


def stream_audio(path: Path, sample_rate: int, timeout_s: float, budget: Budget | None = None,
                 formats: tuple[str, ...] | None = DEMUXERS, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """First audio stream as float32 mono at `sample_rate`, in blocks of `block_s` seconds."""
    yield from audio_blocks(open_audio(path, sample_rate, timeout_s, budget, formats), sample_rate, block_s)


def decode_audio(path: Path, sample_rate: int, timeout_s: float, budget: Budget | None = None,
                 formats: tuple[str, ...] | None = DEMUXERS) -> np.ndarray:
    """The whole first audio stream (for short corpus clips; the service streams instead)."""
    parts = list(stream_audio(path, sample_rate, timeout_s, budget, formats))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def open_frames(path: Path, rate: float, max_frames: int, max_side: int, timeout_s: float,
                budget: Budget | None = None, formats: tuple[str, ...] | None = DEMUXERS,
                max_pixels: int | None = None) -> Child:
    """Start decoding grey frames sampled at `rate` frames per second (at most `max_frames`),
    the display size scaled so its long side is at most `max_side` (even sides), as PAM
    images: each carries its own size, so decoding can start before ffprobe has told it
    (read them with `frames_of`). `max_pixels`: the decoder refuses larger coded frames."""
    fit = f"min(1,{max_side}/max(iw,ih))"
    scale = f"scale=w='max(2,round(iw*{fit}/2)*2)':h='max(2,round(ih*{fit}/2)*2)':flags=area"
    guard = ["-max_pixels", str(max_pixels)] if max_pixels else []
    return Child([ffmpeg_binary(), "-nostdin", "-v", "error", *_safe_input(formats), *guard, "-i", str(path),
                  "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", f"fps={rate:.6f}:round=near,{scale},format=gray",
                  "-frames:v", str(max_frames), "-c:v", "pam", "-f", "image2pipe", "pipe:1"],
                 timeout_s, budget)


def _pam_images(chunks: Iterator[bytes]) -> Iterator[np.ndarray]:
    """Grey PAM images (`P7 ... ENDHDR`) from a byte stream, each as uint8 [H, W]."""
    pending = bytearray()
    for data in chunks:
        pending += data
        while (end := pending.find(b"ENDHDR\n", 0, 256)) >= 0:
            fields = dict(line.split(b" ", 1) for line in bytes(pending[:end]).split(b"\n") if b" " in line)
            try:
                w, h, depth = int(fields[b"WIDTH"]), int(fields[b"HEIGHT"]), int(fields[b"DEPTH"])
            except (KeyError, ValueError) as exc:
                raise decoder_failed("ffmpeg wrote an unreadable frame header") from exc
            if depth != 1:
                raise decoder_failed(f"ffmpeg wrote {depth}-channel frames, not grey")
            start = end + len(b"ENDHDR\n")
            if len(pending) < start + w * h:
                break
            yield np.frombuffer(bytes(pending[start:start + w * h]), np.uint8).reshape(h, w)
            del pending[:start + w * h]
        if len(pending) >= 256 and pending.find(b"ENDHDR\n", 0, 256) < 0:
            raise decoder_failed("ffmpeg wrote something other than PAM frames")


def frames_of(child: Child, rate: float, duration_s: float) -> Iterator[tuple[float, np.ndarray]]:
    """An `open_frames` child's frames as (timestamp in seconds, uint8 [H, W]); closes the child."""
    with child:
        for i, frame in enumerate(_pam_images(child.chunks())):
            # The fps filter emits output frame i at time i / rate (the input frame nearest it).
            yield min(i / rate, duration_s), frame


def stream_frames(path: Path, info: MediaInfo, rate: float, max_frames: int, max_side: int, timeout_s: float,
                  budget: Budget | None = None, formats: tuple[str, ...] | None = DEMUXERS) -> Iterator[tuple[float, np.ndarray]]:
    """Grey frames sampled at `rate` frames per second (at most `max_frames`), one at a time:
    yields (timestamp in seconds, uint8 [H, W])."""
    if info.has_video:
        child = open_frames(path, rate, max_frames, max_side, timeout_s, budget, formats)
        yield from frames_of(child, rate, info.duration_s)
