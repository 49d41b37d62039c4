"""Processes under this one, read from /proc (Linux): the Ray batch bench and its tests find
their own actors by title, and never touch another program's processes."""
from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def parent_of(pid: int) -> int:
    # /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def descendants_titled(title: bytes) -> list[int]:
    """This process's descendants whose command line holds `title` (b"": all of them)."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if title not in (entry / "cmdline").read_bytes():
                continue
            pid = int(entry.name)
            while pid > 1:
                pid = parent_of(pid)
                if pid == me:
                    pids.append(int(entry.name))
                    break
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return pids
