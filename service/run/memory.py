"""The server's heap under glibc: two malloc arenas, and freed memory handed back after each request.

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


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that allocates its own malloc arena (up to 8 per core) and keeps
    what is freed there for reuse; the request threads' arenas fill in turn and the process's
    RSS creeps up for minutes under mixed traffic. Two arenas (MALLOC_ARENA_MAX=2, set before
    the threads start) keep that bounded."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-8, arenas)  # M_ARENA_MAX, from glibc's malloc.h
