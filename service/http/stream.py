"""`/v1/stream`: the live WebSocket (protocol in service/live/protocol.py, docs/streaming.md).

One connection runs three tasks in one task group, so none outlives it: the receiver files
media into the session (cheap, on the event loop), the worker computes one update at a time
in a thread bounded by the hub's limiter (shared by every session), and the sender writes the
latest update. Nothing queues without bound: a window that falls due while the previous one is
computed waits as "the latest", update times it passed are counted (`updates_skipped`); an
update the client has not read yet is replaced by the next (counted, "unread"); a client that
reads nothing for `stream_send_timeout_s` is dropped.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable

import anyio
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from service.http.observability import Metrics
from service.http.routes import key_accepted
from service.live import protocol as p
from service.run.memory import trim_heap
from service.settings import Settings

log = logging.getLogger("service.stream")
router = APIRouter()
CLOSE_TIMEOUT_S = 2.0


class ClientGone(Exception):
    """The client closed or vanished: nothing is sent back."""


class ClientStalled(Exception):
    """The client stopped reading: its socket is dropped without a close handshake (which it
    would not read either)."""


class StreamHub:
    """What the live sessions share (`app.state.stream`): the session cap and the update threads."""

    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings, self.metrics = settings, metrics
        self.limiter = anyio.CapacityLimiter(settings.stream_workers)
        self.open = 0
        metrics.stream_sessions.set_function(lambda: self.open)


def _header_key(ws: WebSocket) -> str | None:
    key = ws.headers.get("x-api-key")
    auth = ws.headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key


class Connection:
    def __init__(self, ws: WebSocket, hub: StreamHub, bundle: Any):
        self.ws, self.hub, self.bundle = ws, hub, bundle
        self.settings, self.metrics = hub.settings, hub.metrics
        self.session = None
        self.outcome: tuple[int | None, str] | None = None   # (close code or None: send none, reason)
        self.scope: anyio.CancelScope | None = None
        self.wake = anyio.Event()
        self.mail: dict[str, Any] | None = None
        self.mail_ready = anyio.Event()
        self.sending = False
        self.ending = False
        self.worker_done = anyio.Event()
        self.counted: dict[str, int] = {}
        self.skipped_counted = 0

    # --- outcome ---------------------------------------------------------------------------
    def finish(self, code: int | None, reason: str) -> None:
        if self.outcome is None:
            self.outcome = (code, reason)
        if self.scope is not None:
            self.scope.cancel()

    async def guard(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except p.ProtocolError as exc:
            self.finish(exc.code, exc.reason)
        except (ClientGone, WebSocketDisconnect):
            self.finish(None, "client_gone")
        except ClientStalled:
            self.finish(None, "client_not_reading")
        except Exception:
            log.exception("live session failed")
            self.finish(p.INTERNAL, "internal error (logged)")

    # --- the session ---------------------------------------------------------------------
    async def run(self) -> tuple[int | None, str]:
        await self.guard(self.open)
        if self.outcome is None:
            async with anyio.create_task_group() as tg:
                self.scope = tg.cancel_scope
                tg.start_soon(self.guard, self.sender)
                tg.start_soon(self.guard, self.worker)
                await self.guard(self.receiver)
                if self.outcome is None:  # "end": the last window, its update, then the summary
                    await self.guard(self.drain)
                tg.cancel_scope.cancel()
        self.count_drops()
        code, reason = self.outcome or (p.NORMAL, "end")
        if code is not None:
            with anyio.move_on_after(CLOSE_TIMEOUT_S):
                try:
                    await self.ws.close(code, reason)
                except Exception:  # the client went away meanwhile
                    pass
        return code, reason

    async def receive(self, timeout_s: float) -> dict[str, Any]:
        with anyio.move_on_after(timeout_s):
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                raise ClientGone()
            data = message.get("bytes")
            size = len(data) if data is not None else len((message.get("text") or "").encode())
            if size > self.settings.stream_max_message_kb * 1024:
                raise p.ProtocolError(p.TOO_BIG, f"a message of {size} bytes; the limit is "
                                                 f"{self.settings.stream_max_message_kb} KiB")
            return message
        if time.monotonic() >= self.deadline:
            raise p.ProtocolError(p.POLICY, f"session length limit ({self.settings.stream_max_session_s:.0f} s)")
        raise p.ProtocolError(p.POLICY, f"idle: no message for {self.settings.stream_idle_timeout_s:.0f} s")

    async def open(self) -> None:
        from service.live.session import LiveSession, SessionLimits

        s = self.settings
        self.deadline = time.monotonic() + s.stream_max_session_s
        message = await self.receive(s.stream_idle_timeout_s)
        if message.get("text") is None:
            raise p.ProtocolError(p.POLICY, 'the first message must be the JSON "open" message')
        options = p.parse_open(p.parse_text(message["text"]))
        if not key_accepted(s, _header_key(self.ws) or options.api_key):
            self.metrics.stream_refused.labels("unauthorized").inc()
            raise p.ProtocolError(p.POLICY, "unauthorized: a valid API key is required")
        if not s.stream_min_update_interval_s <= options.update_interval_s <= 5.0:
            raise p.ProtocolError(p.POLICY, f"update_interval_s must be within [{s.stream_min_update_interval_s}, 5]")
        if not max(1.0, options.update_interval_s) <= options.window_s <= s.stream_max_window_s:
            raise p.ProtocolError(p.POLICY, f"window_s must be within [max(1, update_interval_s), "
                                            f"{s.stream_max_window_s}]")
        limits = SessionLimits(s.stream_max_fps, s.stream_max_pending_frames, s.media_limits())
        self.session = LiveSession(self.bundle, options, limits)
        cfg = self.bundle.config
        await self.ws.send_text(json.dumps({
            "type": "ready", "version": p.VERSION, "session": uuid.uuid4().hex,
            "classes": self.bundle.classes, "model": {"name": self.bundle.name, "version": self.bundle.version},
            "options": options.model_dump(exclude={"api_key", "type"}),
            "limits": {"max_message_bytes": s.stream_max_message_kb * 1024, "max_fps": s.stream_max_fps,
                       "frame_fps": cfg.frame_fps, "sample_rate": p.SAMPLE_RATE,
                       "max_session_s": s.stream_max_session_s, "idle_timeout_s": s.stream_idle_timeout_s,
                       "max_width": s.max_width, "max_height": s.max_height},
        }))

    async def receiver(self) -> None:
        session = self.session
        while True:
            timeout = min(self.settings.stream_idle_timeout_s, max(0.0, self.deadline - time.monotonic()))
            message = await self.receive(timeout)
            received = time.monotonic()
            if message.get("text") is not None:
                kind = p.parse_text(message["text"])["type"]
                if kind == "end":
                    self.ending = True
                    self.wake.set()
                    return
                if kind == "open":
                    raise p.ProtocolError(p.POLICY, "the session is open already")
                raise p.ProtocolError(p.UNSUPPORTED, f"unknown message type {kind!r}")
            media = p.parse_media(message["bytes"])
            if media.kind == p.AUDIO:
                if not session.wants_audio:
                    raise p.ProtocolError(p.POLICY, "audio sent, but the session was opened without it")
                session.add_audio(media, received)
            else:
                if not session.wants_face:
                    raise p.ProtocolError(p.POLICY, "video sent, but the session was opened without face")
                session.add_frame(media, received)
            if session.due():
                self.wake.set()

    async def worker(self) -> None:
        session = self.session
        while True:
            if session.due():
                await self.answer(session.take_window())
                continue
            if self.ending:
                if session.has_new_media():
                    await self.answer(session.take_window(final=True))
                self.worker_done.set()
                return
            await self.wake.wait()
            self.wake = anyio.Event()

    async def answer(self, window) -> None:
        update = await anyio.to_thread.run_sync(self.session.compute, window, limiter=self.hub.limiter)
        update["_last_media_at"] = window.last_media_at
        self.count_drops()
        if self.mail is not None:
            self.metrics.stream_skipped_updates.labels("unread").inc()
        self.mail = update
        self.mail_ready.set()

    async def sender(self) -> None:
        while True:
            await self.mail_ready.wait()
            self.mail_ready = anyio.Event()
            update, self.mail = self.mail, None
            if update is None:
                continue
            latency = time.monotonic() - update.pop("_last_media_at")
            update["latency_ms"] = round(latency * 1000.0, 1)
            self.sending = True
            with anyio.move_on_after(self.settings.stream_send_timeout_s) as scope:
                await self.ws.send_text(json.dumps(update))
            self.sending = False
            if scope.cancelled_caught:
                raise ClientStalled()
            self.metrics.stream_updates.inc()
            self.metrics.stream_latency.observe(latency)

    async def drain(self) -> None:
        await self.worker_done.wait()
        with anyio.fail_after(self.settings.stream_send_timeout_s):
            while self.mail is not None or self.sending:
                await anyio.sleep(0.005)
            await self.ws.send_text(json.dumps(self.session.summary()))

    def count_drops(self) -> None:
        """Carry the session's drop counters into /metrics (by their increase since last time)."""
        if self.session is None:
            return
        for reason, n in self.session.drop_counts().items():
            if n > self.counted.get(reason, 0):
                self.metrics.stream_dropped_frames.labels(reason).inc(n - self.counted.get(reason, 0))
                self.counted[reason] = n
        skipped = self.session.updates_skipped
        if skipped > self.skipped_counted:
            self.metrics.stream_skipped_updates.labels("busy").inc(skipped - self.skipped_counted)
            self.skipped_counted = skipped


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    hub: StreamHub = ws.app.state.stream
    model = ws.app.state.model
    await ws.accept()  # a refusal is a close code and a reason, which a browser can read; an HTTP status it cannot
    if hub.open >= hub.settings.stream_max_sessions:
        hub.metrics.stream_refused.labels("server_full").inc()
        await ws.close(p.TRY_AGAIN, f"server_full: {hub.open} live sessions (the limit); retry later")
        return
    if not model.ready:
        hub.metrics.stream_refused.labels("not_ready").inc()
        await ws.close(p.TRY_AGAIN, "not_ready: the model bundle is still loading")
        return
    hub.open += 1
    code: int | None = p.INTERNAL
    try:
        code, reason = await Connection(ws, hub, model.bundle).run()
        log.info("live session ended", extra={"fields": {"close_code": code, "reason": reason}})
    finally:
        hub.open -= 1
        hub.metrics.stream_closed.labels(str(code) if code is not None else "none").inc()
        trim_heap()  # the session's buffers back to the system
