"""Open and decode untrusted media with FFmpeg's libraries through PyAV (design §2 step 1).

A file is opened once (`open_media`): the container and its streams are checked against
the limits (the probe), and the same open container is then demuxed once, decoding the
first audio stream and sampled frames of the first video stream side by side
(`Source.decode`, converted as `streams` says). Only the `file` protocol and the accepted
demuxers may be used (`format_whitelist`, which nested demuxers inherit: an HLS or concat
playlist, or an AVI whose GAB2 subtitle hides one, cannot open anything else), and files
that point at other files are refused before any demuxer sees them.

The service runs this in its decoder worker processes (`decoder_pool`), where a crash or a
hang of FFmpeg costs a worker, not the server; the trainer and the Python API run it in
process, on their own files.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np

from service.pipeline.budget import Budget
from service.pipeline.config import ACCEPTED_FORMATS, MediaLimits
from service.pipeline.errors import MediaError
from service.pipeline.streams import AudioBlocks, FrameSampler, FrameSampling

__all__ = ["MediaError", "MediaInfo", "Source", "InProcess", "open_media", "probe", "decode_audio", "stream_audio",
           "stream_frames", "refuse_references", "FrameSampling", "decoder_failed", "Event"]

# Demuxers accepted from uploads, as FFmpeg names them (`ffprobe -show_format`); joined by
# commas they are the `format_whitelist`. Trusted local corpora (wav, flac) are decoded with `formats=None`.
DEMUXERS: tuple[str, ...] | None = ACCEPTED_FORMATS
# Byte patterns of files that make a demuxer open other files. The whitelist already stops
# them; refusing them before a demuxer runs at all is the second wall.
_PLAYLIST_MARKERS = (b"#EXTM3U", b"ffconcat version", b"<MPD")
_GAB2 = b"GAB2\x00"
_HEAD_BYTES = 4096
_READ_BLOCK = 1 << 20
# Like the ffmpeg CLI (`-max_error_rate`, default 2/3): a pass in which more than this share
# of the packets failed to decode says the file is undecodable; fewer are damage it survives.
MAX_ERROR_RATE = 2 / 3

# What `Source.decode` yields: ("audio", float32 [n] samples) or ("frame", uint8 [H, W]).
Event = tuple[str, np.ndarray]


def decoder_failed(detail: str) -> MediaError:
    """The decoder itself failed (its worker crashed, was killed, or wrote something that is
    not its protocol): a 500 of its own, never `undecodable`, which says the client's file is at fault."""
    return MediaError("decoder_failed", f"the media decoder failed ({detail}); retry, or report it with the request id",
                      status=500)


@dataclass(frozen=True)
class MediaInfo:
    format_name: str
    duration_s: float
    has_audio: bool
    has_video: bool
    width: int = 0          # coded frame size (a display rotation turns it once decoded)
    height: int = 0
    fps: float = 0.0


def ffmpeg_binary(name: str = "ffmpeg") -> str:
    """The ffmpeg command-line tool, for the tools that encode (the trainer's lossy codec copies):
    decoding needs none."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: install ffmpeg (see README)")
    return path


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


def _open_container(path: Path, formats: tuple[str, ...] | None) -> av.container.InputContainer:
    options = {"protocol_whitelist": "file"}
    if formats:
        options["format_whitelist"] = ",".join(formats)
    try:
        return av.open(str(path), "r", container_options=options)
    except av.error.ArgumentError as exc:  # EINVAL at open: the demuxer (or a protocol) is not on a whitelist
        raise MediaError("unsupported_container", "the container format is not accepted", status=415) from exc
    except av.error.FFmpegError as exc:
        raise MediaError("undecodable", "the file could not be decoded as audio/video") from exc


def _seconds(value: int | None, time_base) -> float:
    return float(value * time_base) if value is not None and time_base else 0.0


def _packets_end(path: Path, formats: tuple[str, ...] | None) -> float:
    """The latest packet end (pts + duration) over all streams, by demuxing without decoding:
    the duration of a live-written file (a browser's MediaRecorder WebM) whose header has none."""
    end = 0.0
    with _open_container(path, formats) as container:
        try:
            for packet in container.demux():
                if packet.pts is not None:
                    end = max(end, _seconds(packet.pts + (packet.duration or 0), packet.time_base))
        except av.error.FFmpegError:
            pass  # a damaged tail: the packets read so far
    return end if math.isfinite(end) else 0.0


def _first(streams, kind: str):
    usable = [s for s in streams if s.type == kind and not (kind == "video" and s.disposition & 0x400)]  # attached_pic
    return usable[0] if usable else None


class Source:
    """An open media file whose streams passed the limits: `info`, then one `decode` pass.
    Close it (or use it as a context manager) when done. `check` is called between packets
    (a deadline or a cancellation raises there); `threads`: of the video decoder, 0 = FFmpeg's choice."""

    def __init__(self, path: Path, limits: MediaLimits, check: Callable[[], None] | None = None, threads: int = 0):
        self.limits, self.check, self.threads = limits, check, threads
        self.container = _open_container(path, limits.allowed_formats)
        try:
            self.info = self._probe(path)
        except BaseException:
            self.container.close()
            raise

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    def _probe(self, path: Path) -> MediaInfo:
        container, limits = self.container, self.limits
        format_name = container.format.name or ""
        if not format_name:
            raise MediaError("undecodable", "the file is not a recognisable media container")
        if limits.allowed_formats is not None and format_name not in limits.allowed_formats:
            raise MediaError("unsupported_container", f"container '{format_name}' is not accepted", status=415)
        self.audio = _first(container.streams, "audio")
        self.video = _first(container.streams, "video")
        if self.audio is None and self.video is None:
            raise MediaError("no_usable_stream", "the file holds neither an audio nor a video stream")
        duration = container.duration / av.time_base if container.duration and container.duration > 0 else 0.0
        if not (math.isfinite(duration) and duration > 0):
            duration = _packets_end(path, limits.allowed_formats)
        if duration <= 0:
            raise MediaError("no_duration", "the file has no measurable duration")
        if duration > limits.max_duration_s:
            raise MediaError("too_long", f"duration {duration:.0f} s exceeds the limit of {limits.max_duration_s:.0f} s",
                             status=413)
        width = height = 0
        fps = 0.0
        if self.video is not None:
            ctx = self.video.codec_context
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width <= 0 or height <= 0:
                raise MediaError("undecodable", "the video stream has no frame size")
            # The display rotation is known once a frame is decoded (FrameSampler checks the
            # turned size then): here the frame must fit one way or the other.
            if not (fits(width, height, limits) or fits(height, width, limits)):
                raise resolution_too_large(width, height, limits)
            rate = self.video.average_rate or self.video.base_rate
            fps = float(rate) if rate else 0.0
            if fps * duration > limits.max_frames:
                raise MediaError("too_many_frames", "the video has more frames than allowed", status=413)
        return MediaInfo(format_name, duration, self.audio is not None, self.video is not None, width, height, fps)

    def decode(self, sample_rate: int | None, sampling: FrameSampling | None,
               block_s: float = 10.0) -> Iterator[Event]:
        """One demux pass: ("audio", block) events, float32 mono at `sample_rate` in blocks of
        `block_s` seconds (None: no audio), and ("frame", image) events, grey frames sampled as
        `sampling` says (None: no frames), in the order they are decoded."""
        check = self.check
        audio = self.audio if sample_rate is not None else None
        video = self.video if sampling is not None else None
        sound = AudioBlocks(sample_rate, block_s) if audio is not None else None
        frames = FrameSampler(sampling, self.container.start_time, self.limits) if video is not None else None
        if video is not None:
            video.codec_context.thread_type = "AUTO"
            video.codec_context.thread_count = self.threads
            if sampling.skips_nonref(self.info.fps):
                video.codec_context.skip_frame = "NONREF"
            video.codec_context.options = {"max_pixels": str(self.limits.max_width * self.limits.max_height)}
        wanted = [s for s in (audio, video) if s is not None]
        decoded = failed = 0
        packets = self.container.demux(*wanted)
        while wanted:
            if check is not None:
                check()
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.error.FFmpegError:
                break  # a read error ends the input, as it ends the ffmpeg CLI's
            stream = packet.stream
            if stream not in wanted:
                continue
            try:
                decoded_frames = packet.decode()
                decoded += 1
            except av.error.FFmpegError:
                failed += 1
                continue
            for frame in decoded_frames:
                if stream is audio:
                    yield from (("audio", block) for block in sound.feed(frame))
                else:
                    yield from (("frame", image) for image in frames.feed(frame))
                    if frames.full:
                        wanted.remove(video)  # every frame it may give is out: stop decoding video
                        break
        if failed > MAX_ERROR_RATE * (decoded + failed):
            raise MediaError("undecodable", "the file could not be decoded as audio/video")
        for stream, done in ((audio, sound), (video, frames)):
            if stream is not None and not (done is frames and frames.full):
                yield from self._flush(stream, done)

    @staticmethod
    def _flush(stream, convert) -> Iterator[Event]:
        kind = "audio" if isinstance(convert, AudioBlocks) else "frame"
        try:
            tail = stream.decode(None)  # frames the decoder still holds
        except av.error.FFmpegError:
            tail = []
        for frame in tail:
            yield from ((kind, out) for out in convert.feed(frame))
        yield from ((kind, out) for out in convert.feed(None))


def fits(width: int, height: int, limits: MediaLimits) -> bool:
    return width <= limits.max_width and height <= limits.max_height


def resolution_too_large(width: int, height: int, limits: MediaLimits) -> MediaError:
    return MediaError("resolution_too_large", f"resolution {width}x{height} exceeds {limits.max_width}x{limits.max_height}",
                      status=413)


def open_media(path: Path, limits: MediaLimits, check: Callable[[], None] | None = None, threads: int = 0) -> Source:
    """Open `path` and check it against `limits` (raises MediaError when it is refused)."""
    refuse_references(path)
    return Source(path, limits, check, threads)


class InProcess:
    """The decoder of the trainer and the Python API: `open_media` in the calling thread, the
    request's budget and the decode timeout checked between packets. No isolation: the
    service decodes uploads in its worker processes instead (`decoder_pool.DecoderPool`,
    which has the same `open`)."""

    def __init__(self, threads: int = 0):
        self.threads = threads

    def open(self, path: Path, limits: MediaLimits, budget: Budget | None = None) -> Source:
        return open_media(path, limits, deadline_check(limits.timeout_s, budget), self.threads)


def probe(path: Path, limits: MediaLimits) -> MediaInfo:
    """What `open_media` says of a file, the file closed again."""
    with open_media(path, limits) as source:
        return source.info


def deadline_check(timeout_s: float, budget: Budget | None) -> Callable[[], None]:
    """A check that raises once the budget is spent or cancelled, or `timeout_s` have passed."""
    deadline = time.monotonic() + timeout_s

    def check() -> None:
        if budget is not None:
            budget.check()
        if time.monotonic() > deadline:
            raise MediaError("decode_timeout", f"decoding took longer than {timeout_s:.0f} s", status=504)
    return check


def stream_audio(path: Path, sample_rate: int, timeout_s: float, budget: Budget | None = None,
                 formats: tuple[str, ...] | None = DEMUXERS, block_s: float = 10.0) -> Iterator[np.ndarray]:
    """First audio stream as float32 mono at `sample_rate`, in blocks of `block_s` seconds, in process."""
    limits = MediaLimits(allowed_formats=formats, timeout_s=timeout_s)
    with InProcess().open(path, limits, budget) as source:
        if source.info.has_audio:
            for _, block in source.decode(sample_rate, None, block_s):
                yield block


def decode_audio(path: Path, sample_rate: int, timeout_s: float, budget: Budget | None = None,
                 formats: tuple[str, ...] | None = DEMUXERS) -> np.ndarray:
    """The whole first audio stream (for short corpus clips; the service streams instead)."""
    parts = list(stream_audio(path, sample_rate, timeout_s, budget, formats))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def stream_frames(path: Path, rate: float, max_frames: int, max_side: int, timeout_s: float,
                  formats: tuple[str, ...] | None = DEMUXERS) -> Iterator[tuple[float, np.ndarray]]:
    """Grey frames sampled at `rate` frames per second (at most `max_frames`, the long side at
    most `max_side`), one at a time, in process: yields (timestamp in seconds, uint8 [H, W])."""
    limits = MediaLimits(allowed_formats=formats, timeout_s=timeout_s)
    with InProcess().open(path, limits) as source:
        if source.info.has_video:
            frames = source.decode(None, FrameSampling(rate, max_frames, max_side))
            for i, (_, frame) in enumerate(frames):
                yield min(i / rate, source.info.duration_s), frame
