"""Handing freed heap memory back to the system after each request.

glibc keeps what a request freed in its arenas for reuse; a large request (a long clip's frames
and audio) leaves the server's RSS at its high-water mark, which a long-running service sees as
RSS creeping up across requests. `malloc_trim(0)` returns the free pages of every arena
(madvise), so RSS follows what is in use. A no-op where the C library is not glibc."""
from __future__ import annotations

import ctypes
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim_heap() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
