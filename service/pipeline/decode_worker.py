"""A decoder worker process (`python -m service.pipeline.decode_worker [THREADS]`), and the protocol it
speaks with `decoder_pool` (the service's side).

The worker imports PyAV and NumPy only, warms FFmpeg's resampler and filter graphs once,
says it is ready, then serves one file at a time, read from its stdin as JSON lines:

    {"path": ..., "limits": {...}}       -> INFO (the probe, JSON) or ERROR
    {"sample_rate": ..., "frames": ...}  -> AUDIO / FRAME messages, then DONE or ERROR
    {"stop": true}                       -> nothing (the file is closed unread)

Its messages go to what was its stdout (stdout itself is pointed at stderr, so nothing
else can write into the protocol): a kind byte and a payload length, then the payload.
A file it refuses or cannot decode is an ERROR message and the worker serves the next
one; a crash or a hang of FFmpeg is the pool's to notice (end of the stream, a deadline)
and to answer by killing the worker and starting another.
"""
from __future__ import annotations

import json
import os
import struct
import sys
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from service.run.memory import trim_heap

HEADER = struct.Struct("<cI")     # kind, payload length
FRAME_SHAPE = struct.Struct("<II")  # height, width: the head of a FRAME payload
READY, INFO, AUDIO, FRAME, DONE, ERROR = b"R", b"I", b"A", b"F", b"D", b"E"


def limits_to_json(limits) -> dict:
    data = asdict(limits)
    data["allowed_formats"] = list(limits.allowed_formats) if limits.allowed_formats is not None else None
    return data


class PoolGone(Exception):
    """The pool closed its end (it stopped reading this worker, or the service exited)."""


class Writer:
    """Messages to the pool, each flushed at once (the reader is waiting for it)."""

    def __init__(self, out: BinaryIO):
        self.out = out

    def send(self, kind: bytes, *parts: bytes | memoryview) -> None:
        try:
            self.out.write(HEADER.pack(kind, sum(len(p) for p in parts)))
            for part in parts:
                self.out.write(part)
            self.out.flush()
        except OSError as exc:
            raise PoolGone() from exc

    def error(self, exc) -> None:
        self.send(ERROR, json.dumps({"code": exc.code, "message": exc.message, "status": exc.status}).encode())


def _warm_up() -> None:
    """First uses of swr and of the fps/scale/format filter graph load and initialise code
    that a first request would otherwise wait for."""
    from fractions import Fraction

    import av
    import numpy as np

    from service.pipeline.config import MediaLimits
    from service.pipeline.streams import AudioBlocks, FrameSampler, FrameSampling

    tone = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.int16).reshape(1, -1), format="s16", layout="stereo")
    tone.sample_rate, tone.pts, tone.time_base = 44100, 0, Fraction(1, 44100)
    list(AudioBlocks(16000, 10.0).feed(tone))
    sampler = FrameSampler(FrameSampling(4.0, 2, 360), 0, MediaLimits())
    for i in range(2):
        frame = av.VideoFrame.from_ndarray(np.zeros((240, 320, 3), np.uint8), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = i, Fraction(1, 25)
        list(sampler.feed(frame))
    list(sampler.feed(None))


def serve(request: dict, commands: BinaryIO, writer: Writer, threads: int) -> None:
    """One file: its probe, then (if asked) its decode pass."""
    from service.pipeline.config import MediaLimits
    from service.pipeline.errors import MediaError
    from service.pipeline.media import FrameSampling, decoder_failed, open_media

    limits = request["limits"]
    formats = limits.pop("allowed_formats")
    limits = MediaLimits(**limits, allowed_formats=tuple(formats) if formats is not None else None)
    try:
        source = open_media(Path(request["path"]), limits, threads=threads)
    except MediaError as exc:
        writer.error(exc)
        return
    with source:
        writer.send(INFO, json.dumps(asdict(source.info)).encode())
        plan = json.loads(commands.readline() or b'{"stop": true}')
        if plan.get("stop"):
            return
        sampling = FrameSampling(*plan["frames"]) if plan.get("frames") else None
        try:
            for kind, data in source.decode(plan.get("sample_rate"), sampling, plan.get("block_s", 10.0)):
                if kind == "audio":
                    writer.send(AUDIO, memoryview(data).cast("B"))
                else:
                    writer.send(FRAME, FRAME_SHAPE.pack(*data.shape), memoryview(data).cast("B"))
        except MediaError as exc:
            writer.error(exc)
            return
        except PoolGone:
            raise
        except Exception as exc:  # noqa: BLE001 - a fault of the decoder, not of the file
            print(f"decoder worker: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            writer.error(decoder_failed(type(exc).__name__))
            return
        writer.send(DONE)


def main() -> None:
    """Serve until the pool closes stdin (or stops reading: the service exited)."""
    out = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 0  # of each video decoder, 0 = FFmpeg's choice
    _warm_up()
    writer = Writer(out)
    commands = sys.stdin.buffer
    try:
        writer.send(READY)
        while line := commands.readline():
            serve(json.loads(line), commands, writer, threads)
            trim_heap()  # a long clip's buffers back to the system before the next file
    except PoolGone:
        pass


if __name__ == "__main__":
    main()
