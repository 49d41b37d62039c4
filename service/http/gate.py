"""Bounded concurrency for predictions, and cancelling work whose client went away."""
from __future__ import annotations

import threading
from typing import Any, Callable

import anyio
from fastapi import Request

from service.http.errors import ApiError
from service.http.observability import Metrics
from service.pipeline.budget import Budget

# Beyond the request budget, a worker that has not stopped is abandoned (it will stop at
# its next check; its decoder worker is already killed) and the client gets its 504.
ABANDON_GRACE_S = 10.0


class Gate:
    """Bounded concurrency: `limit` requests in processing, `queue` more admitted (uploading
    or waiting for a worker); the rest are refused at once with 503 + Retry-After."""

    def __init__(self, limit: int, queue: int, metrics: Metrics):
        self.limiter = anyio.CapacityLimiter(limit)
        self.capacity = limit + queue
        self.admitted = 0
        self.running = 0                     # changed from worker threads: under the lock
        self._lock = threading.Lock()
        metrics.in_flight.set_function(lambda: self.running)
        metrics.queued.set_function(lambda: self.admitted - self.running)

    def admit(self) -> None:
        if self.admitted >= self.capacity:
            raise ApiError(503, "overloaded", "the service is busy; retry shortly", {"Retry-After": "2"})
        self.admitted += 1

    def release(self) -> None:
        self.admitted -= 1

    async def run(self, job: Callable[[], Any], budget: Budget) -> Any:
        """Run `job` in a worker thread once one of `limit` slots is free."""
        def counted() -> Any:
            with self._lock:
                self.running += 1
            try:
                budget.check()  # the time spent waiting counts against the budget
                return job()
            finally:
                with self._lock:
                    self.running -= 1

        with anyio.move_on_after(budget.remaining() + ABANDON_GRACE_S):
            return await anyio.to_thread.run_sync(counted, limiter=self.limiter, abandon_on_cancel=True)
        budget.cancel()
        raise ApiError(504, "processing_timeout", f"processing took longer than {budget.timeout_s:.0f} s")


async def cancel_on_disconnect(request: Request, budget: Budget) -> None:
    """The body has been read; the next ASGI message is the client going away."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            budget.cancel()  # the request's thread stops at its next check and kills its decoder worker
            return
