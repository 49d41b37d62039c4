"""Decoded audio and video frames, converted as the pipeline takes them (design §2 step 1).

Audio: float32 mono at the pipeline's sample rate, converted by FFmpeg's swr through the
filter graph `ffmpeg -ac 1 -ar R -f f32le` builds (abuffer -> aformat -> abuffersink: PyAV's
`AudioResampler`), handed on in blocks of a fixed length. Video: the filter graph
`ffmpeg -vf fps=R:round=near,scale=...:flags=area,format=gray` runs, after the turn the ffmpeg
CLI applies for a display rotation, on frames timed from the container's start as the CLI times
them; at most `max_frames` frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import av.filter
import numpy as np

from service.pipeline.config import MediaLimits
from service.pipeline.errors import MediaError


SKIP_NONREF_RATIO = 3.0


@dataclass(frozen=True)
class FrameSampling:
    """Which frames a decoder gives: `rate` per second (at most `max_frames`), the display
    size scaled so its long side is at most `max_side` (even sides)."""

    rate: float
    max_frames: int
    max_side: int

    def skips_nonref(self, stream_fps: float) -> bool:
        """Whether frames that no other frame refers to (most B-frames of H.264/HEVC) are left
        undecoded: when this sampling keeps under one frame in `SKIP_NONREF_RATIO`, the fps
        filter then takes the nearest decoded frame (a frame or two away) and a 25 fps 720p
        H.264 clip decodes 37 % faster (53 of its 100 frames). The CLI's `-skip_frame noref`."""
        return stream_fps >= SKIP_NONREF_RATIO * self.rate

    def filters(self) -> list[tuple[str, str]]:
        fit = f"min(1,{self.max_side}/max(iw,ih))"
        return [("fps", f"{self.rate:.6f}:round=near"),
                ("scale", f"w='max(2,round(iw*{fit}/2)*2)':h='max(2,round(ih*{fit}/2)*2)':flags=area"),
                ("format", "gray")]


class AudioBlocks:
    """Decoded audio frames in, float32 mono blocks of `block_s` seconds out (the last shorter)."""

    def __init__(self, sample_rate: int, block_s: float):
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self.size = int(block_s * sample_rate)
        self.parts: list[np.ndarray] = []
        self.pending = 0

    def feed(self, frame: av.AudioFrame | None) -> Iterator[np.ndarray]:
        """The blocks completed by `frame`; None: the end (every sample left)."""
        for out in self.resampler.resample(frame):
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=True)
            self.parts.append(samples)
            self.pending += len(samples)
        while self.pending >= self.size or (frame is None and self.pending):
            joined = np.concatenate(self.parts)
            block, rest = joined[:self.size], joined[self.size:]
            self.parts, self.pending = ([rest], len(rest)) if len(rest) else ([], 0)
            yield block


def display_turn(frame: av.VideoFrame) -> list[tuple[str, str | None]]:
    """The filters the ffmpeg CLI inserts for a frame's display matrix (its `autorotate`)."""
    matrix = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    if matrix is None:
        return []
    m = np.frombuffer(bytes(matrix), "<i4")
    theta = -round(frame.rotation)  # frame.rotation is av_display_rotation_get's angle, counter-clockwise
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return [("transpose", "cclock_flip" if m[3] > 0 else "clock")]
    if abs(theta - 180) < 1:
        return ([("hflip", None)] if m[0] < 0 else []) + ([("vflip", None)] if m[4] < 0 else [])
    if abs(theta - 270) < 1:
        return [("transpose", "clock_flip" if m[3] < 0 else "cclock")]
    if abs(theta) > 1:
        return [("rotate", f"{theta:f}*PI/180")]
    return []


class FrameSampler:
    """Decoded video frames in, sampled grey frames (uint8 [H, W]) out. The filter graph is
    built at the first frame (its size, pixel format and rotation) and again when those change
    mid-stream, as the ffmpeg CLI rebuilds it."""

    def __init__(self, sampling: FrameSampling, start_time: int | None, limits: MediaLimits):
        self.sampling, self.limits = sampling, limits
        self.start_us = start_time or 0       # the CLI times frames from the container's start
        self.graph: av.filter.Graph | None = None
        self.shape: tuple | None = None
        self.given = 0

    @property
    def full(self) -> bool:
        return self.given >= self.sampling.max_frames

    def _build(self, frame: av.VideoFrame) -> None:
        turn = display_turn(frame)
        width, height = (frame.height, frame.width) if any(f == "transpose" for f, _ in turn) else (frame.width, frame.height)
        if width > self.limits.max_width or height > self.limits.max_height:
            raise MediaError("resolution_too_large", f"resolution {width}x{height} exceeds "
                                                     f"{self.limits.max_width}x{self.limits.max_height}", status=413)
        graph = av.filter.Graph()
        nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                  time_base=frame.time_base or Fraction(1, 1_000_000))]
        for name, args in [*turn, *self.sampling.filters()]:
            nodes.append(graph.add(name, args))
        nodes.append(graph.add("buffersink"))
        graph.link_nodes(*nodes).configure()
        self.graph = graph

    def _pull(self) -> Iterator[np.ndarray]:
        while not self.full:
            try:
                out = self.graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self.given += 1
            yield out.to_ndarray().copy()

    def feed(self, frame: av.VideoFrame | None) -> Iterator[np.ndarray]:
        """The sampled frames `frame` completes; None: the end (the frames the graph still holds)."""
        if self.full:
            return
        if frame is None:
            if self.graph is not None:
                self.graph.vpush(None)
                yield from self._pull()
            return
        shape = (frame.width, frame.height, frame.format.name, frame.rotation)
        if shape != self.shape:
            if self.graph is not None:  # flush the old graph, as the CLI does before it rebuilds
                self.graph.vpush(None)
                yield from self._pull()
            self._build(frame)
            self.shape = shape
        pts = frame.pts if frame.pts is not None else frame.dts
        if pts is not None and self.start_us and frame.time_base:
            frame.pts = pts - round(Fraction(self.start_us, 1_000_000) / frame.time_base)
        else:
            frame.pts = pts
        self.graph.vpush(frame)
        yield from self._pull()
