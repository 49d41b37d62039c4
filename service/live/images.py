"""A live stream's video frames: one encoded image (JPEG, WebP or PNG) to the grey frame the
pipeline takes, scaled as a file's sampled frames are (`streams.FrameSampling`: the long side
at most `frame_max_side`, even sides, area filter), decoded with the same FFmpeg libraries
(PyAV). An image over the resolution limits is refused by the decoder itself (`max_pixels`)
before its pixels are allocated."""
from __future__ import annotations

import math

import av
import numpy as np

from service.pipeline.config import MediaLimits

_CODECS = {"jpeg": "mjpeg", "webp": "webp", "png": "png"}


class ImageError(ValueError):
    """The payload is not a decodable image within the limits: the frame is dropped and counted."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def _even_fit(width: int, height: int, max_side: int) -> tuple[int, int]:
    """FrameSampling.filters' scale: w='max(2,round(iw*fit/2)*2)' with fit=min(1,max_side/max(iw,ih))."""
    fit = min(1.0, max_side / max(width, height))
    return tuple(max(2, int(math.floor(side * fit / 2 + 0.5)) * 2) for side in (width, height))


def decode_image(payload: bytes, fmt: str, max_side: int, limits: MediaLimits) -> np.ndarray:
    """uint8 grey [H, W] of one encoded frame."""
    ctx = av.CodecContext.create(_CODECS[fmt], "r")
    ctx.thread_count = 1
    ctx.options = {"max_pixels": str(limits.max_width * limits.max_height)}
    try:
        frames = [*ctx.decode(av.Packet(payload)), *ctx.decode(None)]
    except (av.error.FFmpegError, ValueError) as exc:
        raise ImageError("undecodable", f"the {fmt} frame could not be decoded ({exc})") from None
    if not frames:
        raise ImageError("undecodable", f"the {fmt} frame held no image")
    frame = frames[-1]
    if frame.width > limits.max_width or frame.height > limits.max_height:
        raise ImageError("too_large", f"a {frame.width}x{frame.height} frame exceeds "
                                      f"{limits.max_width}x{limits.max_height}")
    width, height = _even_fit(frame.width, frame.height, max_side)
    return frame.reformat(width, height, format="gray", interpolation="AREA").to_ndarray().copy()
