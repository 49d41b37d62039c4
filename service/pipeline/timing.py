"""Per-stage wall-clock timings, reported in every response (`timings_ms`)."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator


class StageTimer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._lock = threading.Lock()  # stages may run in parallel threads (audio beside frames)

    def add(self, name: str, ms: float) -> None:
        with self._lock:
            self.ms[name] = self.ms.get(name, 0.0) + ms

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, (time.perf_counter() - start) * 1000.0)

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.ms.items()}
