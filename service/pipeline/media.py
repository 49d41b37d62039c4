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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from service.pipeline.budget import Budget
from service.pipeline.config import ACCEPTED_FORMATS, MediaLimits
from service.pipeline.errors import MediaError

__all__ = ["MediaError", "MediaInfo", "probe", "decode_audio", "stream_audio", "stream_frames", "open_audio",
           "audio_blocks", "open_frames", "frames_of", "open_decoder", "FrameSampling", "Child", "Tap"]

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


def extra_output(i: int) -> str:
    """The name of a `Child`'s output pipe `i` (1, 2, ...; 0 is stdout, `pipe:1`) in its args."""
    return f"pipe:@{i}"


class Tap:
    """One output pipe of a `Child`, read by one reader. A child with several outputs (one
    ffmpeg decoding audio and frames) gives each reader a tap of its own, on a thread of its
    own. Closing a tap before its end stops the whole child; at its end the tap waits for the
    child and raises MediaError if it failed."""

    def __init__(self, child: "Child", fd: int, budget: Budget):
        self.child, self.fd, self.budget = child, fd, budget
        self.ended = False    # its end of file was read (see Child.output_ended)

    def __enter__(self) -> "Tap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading (the child is killed if it still writes here); safe to call again.
        Returns None."""
        self.child.release(self)

    def _check(self) -> None:
        self.budget.check()
        if time.monotonic() > self.child.deadline:
            raise MediaError("decode_timeout", f"decoding took longer than {self.child.timeout_s:.0f} s", status=504)

    def chunks(self) -> Iterator[bytes]:
        """Yield the output as it arrives; raise MediaError if the child fails."""
        child = self.child
        while True:
            self._check()
            ready, _, _ = select.select([self.fd, *child.stderr_fds()], [], [], 0.1)
            if any(fd != self.fd for fd in ready):
                child.drain_stderr()
            if self.fd in ready:
                if not (data := os.read(self.fd, _READ_BLOCK)):
                    break
                yield data
        if not child.output_ended(self):
            return  # the child still writes another output: that output's reader reports how it ended
        while child.proc.poll() is None:  # the last output ended: the child is exiting
            self._check()
            if select.select(child.stderr_fds(), [], [], 0.01)[0]:
                child.drain_stderr()
        if child.killed:  # by the reader of another output: a cancelled or expired budget is why, if it is
            self._check()
        child.raise_for_exit()

    def blocks(self, size: int) -> Iterator[bytes]:
        """Yield the output in blocks of exactly `size` bytes (the last one may be shorter)."""
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


class Child:
    """An ffmpeg/ffprobe child whose outputs are read in blocks through its `taps`: stdout
    and `outputs - 1` more pipes, named in `args` by `extra_output(i)`. It is killed on its
    own timeout, on a reader's budget deadline or cancellation, and whenever a reader stops
    early. The head of its stderr is kept (bounded) to tell refusals from decoding errors."""

    STDERR_KEEP = 16 * 1024

    def __init__(self, args: list[str], timeout_s: float, budget: Budget | None = None, outputs: int = 1):
        budget = budget or Budget()
        self.deadline = time.monotonic() + min(timeout_s, budget.remaining())
        self.timeout_s = timeout_s
        self.stderr = b""
        self.name = os.path.basename(args[0])
        self.killed = False   # by us: a reader stopped early
        self._lock = threading.Lock()
        pipes = [os.pipe() for _ in range(outputs - 1)]
        names = {extra_output(i): f"pipe:{w}" for i, (_, w) in enumerate(pipes, 1)}
        try:
            self.proc = subprocess.Popen([names.get(a, a) for a in args], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         pass_fds=[w for _, w in pipes])
        except BaseException:
            for pair in pipes:
                os.close(pair[0])
                os.close(pair[1])
            raise
        for _, w in pipes:
            os.close(w)  # only the child holds the write ends now: its exit ends our reads
        os.set_blocking(self.proc.stderr.fileno(), False)  # drained by whichever tap sees it first
        self._stderr_open = True
        self.taps = [Tap(self, fd, budget) for fd in (self.proc.stdout.fileno(), *(r for r, _ in pipes))]
        self._reading = list(self.taps)
        for tap in self.taps:
            _widen_pipe(tap.fd)

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_all(self) -> bytes:
        """All of stdout (of a child with one output)."""
        return self.taps[0].read_all()

    def close(self) -> None:
        """Kill the child if it still runs and reap it; safe to call again. Returns None."""
        for tap in self.taps:
            tap.close()

    def release(self, tap: Tap) -> None:
        """A reader is done with `tap`: kill the child if it still writes there (or, once
        every tap is done, at all), then reap it after the last one."""
        with self._lock:
            if tap not in self._reading:
                return
            self._reading.remove(tap)
            last = not self._reading
            if self.proc.poll() is None and (last or not tap.ended):
                self.killed = True
                self.proc.kill()
        if tap is self.taps[0]:
            self.proc.stdout.close()
        else:
            os.close(tap.fd)
        if last:
            self.proc.wait()
            self.proc.stderr.close()

    def output_ended(self, tap: Tap) -> bool:
        """`tap` read its end of file. True when it is the last output to end, or the child
        was killed: its reader then waits for the exit and raises if the child failed."""
        with self._lock:
            tap.ended = True
            return self.killed or all(t.ended for t in self.taps)

    def stderr_fds(self) -> list[int]:
        return [self.proc.stderr.fileno()] if self._stderr_open else []

    def drain_stderr(self) -> None:
        with self._lock:
            if not self._stderr_open:
                return
            try:
                data = os.read(self.proc.stderr.fileno(), 4096)
            except BlockingIOError:  # another tap read it first
                return
            if data:
                self.stderr = (self.stderr + data)[: self.STDERR_KEEP]
            else:
                self._stderr_open = False

    def raise_for_exit(self) -> None:
        """Raise MediaError unless the (exited) child succeeded."""
        rc = self.proc.returncode
        if rc < 0:  # our kills for a timeout or cancellation raise in Tap._check first
            if self.killed:
                raise decoder_failed(f"{self.name} was stopped: another reader of it stopped early")
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


def refuse_references(path: Path) -> bytes:
    """Refuse playlists and other files that point at other files, before any demuxer sees
    them; returns the file's first bytes (what `likely_streams` reads)."""
    with open(path, "rb") as f:
        head = f.read(_HEAD_BYTES)
        if any(m in head for m in _PLAYLIST_MARKERS):
            raise MediaError("playlist_refused", "playlists and files referencing other files are not accepted",
                             status=415)
        if not (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
            return head
        # The AVI/GAB2 trick: a "subtitle" chunk carrying a whole file for a nested demuxer.
        f.seek(0)
        tail = b""
        while block := f.read(_READ_BLOCK):
            if _GAB2 in tail + block:
                raise MediaError("playlist_refused", "AVI files with embedded GAB2 subtitle files are not accepted",
                                 status=415)
            tail = block[-(len(_GAB2) - 1):]
    return head


def likely_streams(head: bytes) -> tuple[bool, bool]:
    """(audio, video): a guess from a file's first bytes (`refuse_references` returns them)
    of which streams it holds, to start decoding before ffprobe has said. Containers made
    for sound alone (WAV, FLAC, MP3, Ogg, M4A) are guessed to hold audio only, anything else
    both. A wrong guess costs a restart of the decoder once the probe has answered, never a
    wrong answer."""
    sound_only = (head[:4] in (b"fLaC", b"OggS") or head[:3] == b"ID3"
                  or (head[:4] == b"RIFF" and head[8:12] == b"WAVE")
                  or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)       # an MPEG audio frame
                  or (head[4:8] == b"ftyp" and head[8:12] in (b"M4A ", b"M4B ")))
    return True, not sound_only


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


def probe(path: Path, limits: MediaLimits, budget: Budget | None = None, references_refused: bool = False) -> MediaInfo:
    """ffprobe gate: container, streams, duration, resolution and frame count within limits.
    `references_refused`: the caller has run `refuse_references` on this file already."""
    if not references_refused:
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


@dataclass(frozen=True)
class FrameSampling:
    """Which frames a decoder writes: `rate` per second (at most `max_frames`), the display
    size scaled so its long side is at most `max_side` (even sides). `max_pixels`: the
    decoder refuses larger coded frames (when it starts before the probe has checked them)."""

    rate: float
    max_frames: int
    max_side: int
    max_pixels: int | None = None

    def args(self) -> list[str]:
        fit = f"min(1,{self.max_side}/max(iw,ih))"
        scale = f"scale=w='max(2,round(iw*{fit}/2)*2)':h='max(2,round(ih*{fit}/2)*2)':flags=area"
        return ["-map", "0:v:0", "-an", "-sn", "-dn", "-vf", f"fps={self.rate:.6f}:round=near,{scale},format=gray",
                "-frames:v", str(self.max_frames), "-c:v", "pam", "-f", "image2pipe"]


def open_decoder(path: Path, sample_rate: int | None, frames: FrameSampling | None, timeout_s: float,
                 budget: Budget | None = None, formats: tuple[str, ...] | None = DEMUXERS,
                 audio_budget: Budget | None = None) -> tuple[Tap | None, Tap | None]:
    """Start one ffmpeg decoding the first audio stream to float32 mono at `sample_rate`
    (None: no audio) and/or grey frames as `frames` samples them (None: no frames), each to
    a pipe of its own: (audio tap, frames tap). One process for both streams reads the file
    once and pays ffmpeg's start-up (~70 ms CPU of shared libraries) once. Both streams must
    exist: ffmpeg refuses a map that matches nothing. Frames come as PAM images, each with
    its own size, so decoding can start before ffprobe has told the size (read them with
    `frames_of`, the audio with `audio_blocks`). `audio_budget` (default `budget`) stops
    the audio reader alone."""
    if sample_rate is None and frames is None:
        raise ValueError("nothing to decode")
    guard = ["-max_pixels", str(frames.max_pixels)] if frames and frames.max_pixels else []
    outputs: list[str] = []
    if sample_rate is not None:
        outputs += ["-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate), "-f", "f32le",
                    "-flush_packets", "0", "pipe:1"]
    if frames is not None:
        outputs += [*frames.args(), extra_output(1) if sample_rate is not None else "pipe:1"]
    child = Child([ffmpeg_binary(), "-nostdin", "-v", "error", *_safe_input(formats), *guard, "-i", str(path),
                   *outputs], timeout_s, budget, outputs=1 + (sample_rate is not None and frames is not None))
    sound = child.taps[0] if sample_rate is not None else None
    video = child.taps[-1] if frames is not None else None
    if sound is not None and audio_budget is not None:
        sound.budget = audio_budget
    return sound, video


def open_audio(path: Path, sample_rate: int, timeout_s: float, budget: Budget | None = None,
               formats: tuple[str, ...] | None = DEMUXERS) -> Tap:
    """Start decoding the first audio stream (read it with `audio_blocks`)."""
    return open_decoder(path, sample_rate, None, timeout_s, budget, formats)[0]


def audio_blocks(child: Tap, sample_rate: int, block_s: float = 10.0) -> Iterator[np.ndarray]:
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
                max_pixels: int | None = None) -> Tap:
    """Start decoding grey frames (see `FrameSampling`; read them with `frames_of`)."""
    return open_decoder(path, None, FrameSampling(rate, max_frames, max_side, max_pixels), timeout_s, budget, formats)[1]


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


def frames_of(child: Tap, rate: float, duration_s: float) -> Iterator[tuple[float, np.ndarray]]:
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
