"""The `/v1/stream` message protocol, version 1 (docs/streaming.md is its reference).

Text messages are JSON objects with a "type"; media travels in binary messages, each an
8-byte header then the payload:

    byte 0      kind: 0x41 "A" audio (PCM16 LE mono at 16 kHz) or 0x56 "V" a video frame
    byte 1      protocol version (1)
    byte 2      video: image format, 1 JPEG, 2 WebP, 3 PNG; audio: 0
    byte 3      reserved (0)
    bytes 4-7   uint32 LE: the media time in milliseconds since the session's first media
                (video: when the frame was captured; audio: informational, the server
                counts audio time by its samples)

Both a browser (ArrayBuffer + DataView) and the Python client write this without any
transcoding: the camera's frames go out as the JPEG a canvas makes, the microphone as
16-bit samples.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

VERSION = 1
HEADER = struct.Struct("<BBBBI")
AUDIO, VIDEO = 0x41, 0x56
IMAGE_FORMATS = {1: "jpeg", 2: "webp", 3: "png"}
SAMPLE_RATE = 16_000  # PCM16 mono at the pipeline's rate: the server never resamples

# Close codes (RFC 6455 §7.4.1) and when the server uses them.
NORMAL = 1000          # after "end": the summary was sent
UNSUPPORTED = 1003     # a message kind or media format this version does not take
INVALID_DATA = 1007    # malformed JSON, a truncated header, PCM with an odd byte count
POLICY = 1008          # wrong order, bad API key, bad options, session too long, idle, client not reading
TOO_BIG = 1009         # a message over the size limit
INTERNAL = 1011        # a bug: the server logged it
TRY_AGAIN = 1013       # at the session cap, or the model still loading


class ProtocolError(Exception):
    """Ends the session with `code` and a reason the client sees (at most 123 bytes)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]


class OpenOptions(BaseModel):
    """The first message: {"type": "open", ...}. Bounds beyond these come from the settings."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["open"]
    version: Literal[1] = 1
    api_key: str | None = Field(None, description="when the server sets keys and the client cannot send headers")
    modalities: list[Literal["audio", "face"]] = Field(default_factory=lambda: ["audio", "face"], min_length=1)
    update_interval_s: float = Field(0.5, gt=0, description="media time between updates")
    window_s: float = Field(3.0, gt=0, description="the rolling window each update covers")
    smoothing_s: float = Field(1.0, ge=0, le=10, description="time constant of the smoothing; 0 = none")


@dataclass(frozen=True)
class Media:
    kind: int            # AUDIO or VIDEO
    fmt: str             # "pcm_s16le" or an image format
    t_ms: int
    payload: bytes


def parse_text(text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
    except ValueError:
        raise ProtocolError(INVALID_DATA, "a text message is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError(INVALID_DATA, 'a text message must be a JSON object with a "type"')
    return message


def parse_open(message: dict[str, Any]) -> OpenOptions:
    if message.get("type") != "open":
        raise ProtocolError(POLICY, f'the first message must be "open", not {message.get("type")!r}')
    try:
        return OpenOptions.model_validate(message)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError(POLICY, f"bad open options: {where}: {first['msg']}") from None


def parse_media(data: bytes) -> Media:
    if len(data) < HEADER.size:
        raise ProtocolError(INVALID_DATA, f"a media message needs an {HEADER.size}-byte header")
    kind, version, fmt, _, t_ms = HEADER.unpack_from(data)
    if version != VERSION:
        raise ProtocolError(UNSUPPORTED, f"media header version {version}; this server speaks {VERSION}")
    payload = data[HEADER.size:]
    if kind == AUDIO:
        if fmt != 0:
            raise ProtocolError(UNSUPPORTED, f"audio format {fmt}: only 0 (PCM16 LE mono 16 kHz)")
        if len(payload) % 2:
            raise ProtocolError(INVALID_DATA, "PCM16 audio with an odd number of bytes")
        return Media(AUDIO, "pcm_s16le", t_ms, payload)
    if kind == VIDEO:
        if fmt not in IMAGE_FORMATS:
            raise ProtocolError(UNSUPPORTED, f"image format {fmt}: one of {sorted(IMAGE_FORMATS)}")
        if not payload:
            raise ProtocolError(INVALID_DATA, "an empty video frame")
        return Media(VIDEO, IMAGE_FORMATS[fmt], t_ms, payload)
    raise ProtocolError(UNSUPPORTED, f"media kind 0x{kind:02x}: 0x41 audio or 0x56 video")


def media_header(kind: int, t_ms: int, fmt: int = 0) -> bytes:
    """The header a client puts before a payload (the Python client and the tests use it)."""
    return HEADER.pack(kind, VERSION, fmt, 0, max(0, int(t_ms)) & 0xFFFFFFFF)
