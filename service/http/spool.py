"""Where uploads are spooled: one directory per request under `EMOTION_TMP_DIR`, named after
the server instance that made it, so that a later instance can tell its own leftovers from
anything else in a shared temp directory.

A directory is `emotion-<pid>.<start>-<random>`: the pid of the server process and its start
time (clock ticks since boot, `/proc/<pid>/stat` field 22), which together name one process
even when pids are reused. The request removes its directory on every path it controls; a
server killed with SIGKILL (or the OOM killer) cannot, so each start removes the directories
whose instance is no longer running (`remove_stale`) and logs how many. Directories of a
live instance sharing the temp directory, other names, and other users' directories are
never touched.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from service.http.errors import ApiError

log = logging.getLogger("service")

PREFIX = "emotion-"
_OWNED = re.compile(rf"{PREFIX}(\d+)\.(\d+)-[A-Za-z0-9_]+")
# Errors of the spool volume, not of the request: the disk (or the tmpfs, or a quota) is full.
NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def spool_full() -> ApiError:
    return ApiError(507, "spool_full", "the server has no room to receive the upload right now; retry shortly",
                    {"Retry-After": "10"})


def _start_ticks(pid: int) -> int | None:
    """Start time of process `pid` in clock ticks since boot; None if there is no such process
    (0 where /proc is not available: then the pid alone identifies the instance)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        stat = ""
    if not stat:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0
    # The command name, in parentheses, may hold spaces: count fields after its ')'.
    return int(stat[stat.rindex(")") + 2:].split()[19])


def instance_tag(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{pid}.{_start_ticks(pid) or 0}"


def root(tmp_dir: Path | None) -> Path:
    return Path(tmp_dir) if tmp_dir else Path(tempfile.gettempdir())


def new_dir(tmp_dir: Path | None) -> Path:
    """A fresh spool directory for one request; a full volume is the 507 of a full spool."""
    try:
        return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{instance_tag()}-", dir=tmp_dir))
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise spool_full() from exc
        raise


def _is_stale(path: Path) -> bool:
    match = _OWNED.fullmatch(path.name)
    if not match or path.is_symlink() or not path.is_dir():
        return False
    try:
        if path.lstat().st_uid != os.geteuid():
            return False
    except OSError:
        return False
    pid, ticks = int(match[1]), int(match[2])
    live = _start_ticks(pid)
    return live is None or (live != ticks and live != 0 and ticks != 0)


def remove_stale(tmp_dir: Path | None) -> int:
    """Remove the spool directories left by server instances that are no longer running
    (killed mid-upload); return how many, and say so in the log."""
    base = root(tmp_dir)
    removed = 0
    try:
        entries = list(base.iterdir())
    except OSError:
        entries = []
    for path in entries:
        if _is_stale(path):
            shutil.rmtree(path, ignore_errors=True)
            removed += not path.exists()
    log.info("removed %d stale spool directories", removed,
             extra={"fields": {"stale_spool_dirs_removed": removed, "spool_dir": str(base)}})
    return removed
