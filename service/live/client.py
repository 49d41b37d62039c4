"""A Python client of `/v1/stream`: a file (decoded with PyAV through the service's own
`media` module) or a camera (OpenCV) streamed to a server, its updates handed back as they come.

`stream_file(url, path, pace="realtime")` sends the media at the pace it was recorded;
`pace="fast"` sends one update interval of media, waits for its update, and goes on (as fast
as the server answers, and nothing is dropped: every window is answered). The frames go out
as the pipeline samples them (the server's `frame_fps`), grey JPEG; the audio as PCM16 mono
16 kHz chunks of 100 ms.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from service.live import protocol as p

CHUNK_S = 0.1
JPEG_QUALITY = 90


class StreamError(RuntimeError):
    """The server closed the session with an error code, or did not answer in time."""


def ws_url(url: str) -> str:
    """http://host:port -> ws://host:port/v1/stream (a ws:// URL is kept as given)."""
    if url.startswith(("ws://", "wss://")):
        return url
    base = url.replace("https://", "wss://", 1).replace("http://", "ws://", 1).rstrip("/")
    return base + "/v1/stream"


def pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] to PCM16 LE, as FFmpeg's swr converts (x * 32768, rounded, clipped)."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2").tobytes()


def jpeg(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("OpenCV could not encode the frame")
    return data.tobytes()


def file_messages(path: Path, frame_fps: float, max_side: int) -> list[tuple[float, bytes]]:
    """Every media message of a file, (media time, message), in time order: the file decoded
    once, as the service decodes uploads (frames sampled at `frame_fps`, long side `max_side`)."""
    from service.pipeline.config import MediaLimits
    from service.pipeline.media import FrameSampling, InProcess

    messages: list[tuple[float, bytes]] = []
    with InProcess().open(Path(path), MediaLimits()) as source:
        info = source.info
        sampling = None
        if info.has_video:
            sampling = FrameSampling(frame_fps, int(frame_fps * info.duration_s) + 2, max_side)
        audio_t = 0.0
        frames = 0
        for kind, data in source.decode(p.SAMPLE_RATE if info.has_audio else None, sampling, block_s=CHUNK_S):
            if kind == "audio":
                messages.append((audio_t + len(data) / p.SAMPLE_RATE, p.media_header(p.AUDIO, audio_t * 1000)
                                 + pcm16(data)))
                audio_t += len(data) / p.SAMPLE_RATE
            else:
                t = min(frames / frame_fps, info.duration_s)
                messages.append((t, p.media_header(p.VIDEO, round(t * 1000), 1) + jpeg(data)))
                frames += 1
    messages.sort(key=lambda m: m[0])  # stable: the demuxer's order within a time
    return messages


class Session:
    """One open session: a reader thread collects what the server sends."""

    def __init__(self, url: str, api_key: str | None = None, *, modalities: tuple[str, ...] = ("audio", "face"),
                 update_interval_s: float = 0.5, window_s: float = 3.0, smoothing_s: float = 1.0,
                 open_timeout: float = 10.0):
        from websockets.sync.client import connect

        from websockets.exceptions import InvalidHandshake

        headers = {"X-API-Key": api_key} if api_key else None
        try:
            self.ws = connect(ws_url(url), additional_headers=headers, open_timeout=open_timeout,
                              max_size=None, compression=None, legacy=True)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise StreamError(f"cannot open {ws_url(url)}: {exc}") from None
        self.ws.send(json.dumps({"type": "open", "modalities": list(modalities), "window_s": window_s,
                                 "update_interval_s": update_interval_s, "smoothing_s": smoothing_s}))
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.close_code: int | None = None
        self.close_reason = ""
        first = json.loads(self._recv_first(open_timeout))
        self.ready = first
        self.interval = first["options"]["update_interval_s"]
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _recv_first(self, timeout: float) -> str:
        from websockets.exceptions import ConnectionClosed

        try:
            return self.ws.recv(timeout=timeout)
        except ConnectionClosed as exc:
            raise StreamError(f"the server closed the session: {exc.rcvd.code if exc.rcvd else '?'} "
                              f"{exc.rcvd.reason if exc.rcvd else ''}") from None

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for text in self.ws:
                self.messages.put(json.loads(text))
        except ConnectionClosed:
            pass
        finally:
            self.close_code, self.close_reason = self.ws.close_code, self.ws.close_reason or ""
            self.messages.put(None)

    def send(self, message: bytes) -> None:
        self.ws.send(message)

    def end(self) -> None:
        self.ws.send(json.dumps({"type": "end"}))

    def close(self) -> None:
        self.ws.close()
        self.reader.join(timeout=5)


def stream_file(url: str, path: Path, *, pace: str = "realtime", api_key: str | None = None,
                on_update: Callable[[dict[str, Any]], None] | None = None, timeout: float = 60.0,
                **options: Any) -> dict[str, Any]:
    """Stream a file; returns {"updates": [...], "summary": {...}} (`on_update` sees each update as it comes)."""
    session = Session(url, api_key, **options)
    try:
        limits = session.ready["limits"]
        messages = file_messages(path, limits["frame_fps"], 360)
        updates: list[dict[str, Any]] = []
        summary: dict[str, Any] | None = None

        def take(block_until_seq: int | None) -> None:
            nonlocal summary
            while True:
                try:
                    item = session.messages.get(timeout=timeout if block_until_seq is not None else 0)
                except queue.Empty:
                    if block_until_seq is None:
                        return
                    raise StreamError(f"no update within {timeout:.0f} s") from None
                if item is None:
                    if summary is None:
                        raise StreamError(f"the server closed the session: {session.close_code} "
                                          f"{session.close_reason}")
                    return
                if item["type"] == "update":
                    updates.append(item)
                    if on_update:
                        on_update(item)
                elif item["type"] == "summary":
                    summary = item
                    return
                if block_until_seq is not None and item.get("seq", 0) >= block_until_seq:
                    return

        started = time.monotonic()
        interval = session.interval
        sent_clock, boundary = 0.0, interval  # the server answers once its media clock reaches a boundary
        for t, message in messages:
            if pace == "fast" and sent_clock >= boundary - 1e-6:
                take(len(updates) + 1)  # lockstep: the update that media made due, then the next interval
                boundary = (int(sent_clock / interval + 1e-6) + 1) * interval
            elif pace == "realtime":
                delay = started + t - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                take(None)
            session.send(message)
            sent_clock = max(sent_clock, t)
        session.end()
        while summary is None:
            take(10**9)
        return {"updates": updates, "summary": summary}
    finally:
        session.close()


def open_camera(index: int):
    """An OpenCV camera, or StreamError when OpenCV cannot open it."""
    import cv2

    cap = cv2.VideoCapture(index)
    if not cap.isOpened():
        cap.release()
        raise StreamError(f"OpenCV could not open camera {index}")
    return cap


def camera_messages(cap, frame_fps: float, seconds: float | None) -> Iterator[tuple[float, bytes]]:
    """Frames of an open OpenCV camera at `frame_fps` (OpenCV reads no microphone: video only)."""
    try:
        started = time.monotonic()
        while seconds is None or time.monotonic() - started < seconds:
            ok, frame = cap.read()
            if not ok:
                raise StreamError("the camera gave no frame")
            t = time.monotonic() - started
            yield t, p.media_header(p.VIDEO, round(t * 1000), 1) + jpeg(frame)
            time.sleep(max(0.0, 1.0 / frame_fps - (time.monotonic() - started - t)))
    finally:
        cap.release()
