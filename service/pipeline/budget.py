"""Deadline and cancellation of one piece of work, checked between pipeline stages and
enforced on the decoder worker (it is killed, not waited for)."""
from __future__ import annotations

import math
import threading
import time

from service.pipeline.errors import MediaError

# nginx's "client closed request": nobody reads it, but logs and metrics do.
CLIENT_GONE = 499


class Budget:
    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s if timeout_s else math.inf
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self._cancelled.is_set():
            raise MediaError("cancelled", "the client went away", status=CLIENT_GONE)
        if time.monotonic() > self.deadline:
            raise MediaError("processing_timeout", f"processing took longer than {self.timeout_s:.0f} s", status=504)
