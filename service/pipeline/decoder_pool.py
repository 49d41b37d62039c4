"""The service's decoders: a pool of pre-started worker processes (`decode_worker`).

No process starts per request: a request takes an idle worker, which opens the uploaded
file (the probe), and, once the pipeline has chosen what to decode from the probe, decodes
it in one demux pass, streaming audio blocks and sampled frames back through a pipe while
the request's thread detects faces in the frames already decoded. The worker is what
`media.open_media` runs under FFmpeg's libraries, so a crash or a hang there costs a worker,
never the server: the worker is killed (on its own death, the decode timeout, the request's
budget, or a reader that stops early), the request gets `decoder_failed` (500) or its
timeout (504), and a fresh worker is started in the background to take its place.

`DecoderPool.open` has the signature of `media.InProcess.open` (what the trainer uses), and
both run the same `Source.decode`: the service and the trainer decode alike.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from service.pipeline.budget import Budget
from service.pipeline.config import MediaLimits
from service.pipeline.decode_worker import (
    AUDIO, DONE, ERROR, FRAME, FRAME_SHAPE, HEADER, INFO, READY, limits_to_json)
from service.pipeline.errors import MediaError
from service.pipeline.media import Event, FrameSampling, MediaInfo, decoder_failed

log = logging.getLogger("service")

WORKER_MODULE = "service.pipeline.decode_worker"
_PIPE_SIZE = 1 << 20    # the worker may run this far ahead of the reader
_START_TIMEOUT_S = 60.0
_POLL_S = 0.1           # how often a waiting reader looks at its budget


def _widen_pipe(fd: int) -> None:
    try:
        import fcntl
        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_SIZE)
    except (ImportError, OSError):
        pass


class Worker:
    """One decoder process: commands to its stdin, messages from its stdout."""

    def __init__(self, threads: int):
        package_root = str(Path(__file__).resolve().parents[2])  # the `service` this process runs
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
               "MALLOC_ARENA_MAX": "2"}  # as the server limits its own (service/__main__.py): RSS stays bounded
        self.proc = subprocess.Popen([sys.executable, "-m", WORKER_MODULE, str(threads)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True,
                                     start_new_session=True)  # a terminal's Ctrl-C is the server's to handle
        self.fd = self.proc.stdout.fileno()
        _widen_pipe(self.fd)
        self.buffer = bytearray()
        self.pid = self.proc.pid

    def send(self, command: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(command).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise self.death() from exc

    def _read(self, n: int, check) -> bytearray:
        while len(self.buffer) < n:
            check()
            if not select.select([self.fd], [], [], _POLL_S)[0]:
                continue
            data = os.read(self.fd, max(n - len(self.buffer), 1 << 16))
            if not data:
                raise self.death()
            self.buffer += data
        out = self.buffer[:n]  # a copy, writable: arrays made on it are the caller's own
        del self.buffer[:n]
        return out

    def receive(self, check) -> tuple[bytes, bytearray]:
        """The next message (kind, payload)."""
        kind, size = HEADER.unpack(self._read(HEADER.size, check))
        return kind, self._read(size, check)

    def death(self) -> MediaError:
        """What to tell the request whose worker ended its output: how it died."""
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return decoder_failed("the decoder worker stopped answering")
        if rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return decoder_failed(f"the decoder worker was killed by {name}")
        return decoder_failed(f"the decoder worker exited with status {rc}")

    def kill(self) -> None:
        """Kill and reap; safe to call again."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass


def _raise_error(payload: bytes | bytearray) -> None:
    try:
        err = json.loads(payload)
        exc = MediaError(str(err["code"]), str(err["message"]), int(err["status"]))
    except (ValueError, KeyError, TypeError) as bad:
        raise decoder_failed("the decoder worker wrote an unreadable error") from bad
    raise exc


class Decoding:
    """One file open in a worker: its `info` (the probe), then one `decode` pass. Closing it
    before the pass has ended kills the worker (it may be stuck, or still writing); a pass
    that ended, well or with the file's error, gives the worker back."""

    def __init__(self, pool: "DecoderPool", worker: Worker, info: MediaInfo, check):
        self.pool, self.worker, self.info, self.check = pool, worker, info, check
        self.started = self.done = False

    def __enter__(self) -> "Decoding":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def decode(self, sample_rate: int | None, sampling: FrameSampling | None,
               block_s: float = 10.0) -> Iterator[Event]:
        """As `media.Source.decode`, from the worker."""
        frames = [sampling.rate, sampling.max_frames, sampling.max_side] if sampling else None
        self.started = True
        self.worker.send({"sample_rate": sample_rate, "frames": frames, "block_s": block_s})
        while True:
            kind, payload = self.worker.receive(self.check)
            if kind == AUDIO:
                yield "audio", np.frombuffer(payload, "<f4")
            elif kind == FRAME:
                h, w = FRAME_SHAPE.unpack_from(payload)
                if len(payload) != FRAME_SHAPE.size + h * w:
                    raise decoder_failed("the decoder worker wrote a frame of the wrong size")
                yield "frame", np.frombuffer(payload, np.uint8, offset=FRAME_SHAPE.size).reshape(h, w)
            elif kind == DONE:
                self.done = True
                return
            elif kind == ERROR:
                self.done = True
                _raise_error(payload)
            else:
                raise decoder_failed("the decoder worker wrote something other than its protocol")

    def close(self) -> None:
        """Give the worker back, or kill it if it is mid-pass; safe to call again."""
        if self.worker is None:
            return
        worker, self.worker = self.worker, None
        if not self.started:  # the file is closed unread
            try:
                worker.send({"stop": True})
            except MediaError:
                self.pool.replace(worker)
                return
            self.pool.give_back(worker)
        elif self.done:
            self.pool.give_back(worker)
        else:
            self.pool.replace(worker)


class DecoderPool:
    """`size` decoder workers, started by `start` and stopped by `close`; `threads`: of each
    worker's video decoder (0 = FFmpeg's choice, one per core)."""

    def __init__(self, size: int, threads: int = 1):
        self.size, self.threads = size, threads
        self.idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self.workers: set[Worker] = set()
        self._lock = threading.Lock()
        self.closed = False

    # --------------------------------------------------------------- life cycle

    def start(self) -> "DecoderPool":
        """Start every worker and wait until each is ready (raises RuntimeError if one is not)."""
        workers = [self._spawn() for _ in range(self.size)]
        for worker in workers:
            self._await_ready(worker)
            self.idle.put(worker)
        return self

    def _spawn(self) -> Worker:
        worker = Worker(self.threads)
        with self._lock:
            self.workers.add(worker)
        return worker

    def _await_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S

        def check() -> None:
            if time.monotonic() > deadline or self.closed:
                raise RuntimeError("a decoder worker did not start")
        try:
            kind, _ = worker.receive(check)
            if kind != READY:
                raise RuntimeError("a decoder worker did not start")
        except (MediaError, RuntimeError) as exc:
            self._discard(worker)
            raise RuntimeError(f"a decoder worker did not start: {exc}") from exc

    def _discard(self, worker: Worker) -> None:
        worker.kill()
        with self._lock:
            self.workers.discard(worker)

    def close(self) -> None:
        """Stop every worker (busy ones too: their requests fail); safe to call again."""
        self.closed = True
        with self._lock:
            workers = list(self.workers)
        for worker in workers:
            self._discard(worker)

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(w.pid for w in self.workers)

    # --------------------------------------------------------------- workers in and out

    def give_back(self, worker: Worker) -> None:
        if self.closed:
            self._discard(worker)
        else:
            self.idle.put(worker)

    def replace(self, worker: Worker) -> None:
        """Kill `worker` and start another in its place, in the background."""
        self._discard(worker)
        if not self.closed:
            threading.Thread(target=self._respawn, name="decoder-respawn", daemon=True).start()

    def _respawn(self) -> None:
        while not self.closed:
            try:
                worker = self._spawn()
                self._await_ready(worker)
            except (OSError, RuntimeError) as exc:
                log.error("could not start a decoder worker (%s); retrying in 1 s", exc)
                time.sleep(1.0)
                continue
            self.give_back(worker)
            return

    def _take(self, check) -> Worker:
        while True:
            check()
            if self.closed:
                raise decoder_failed("the decoder pool is closed")
            try:
                worker = self.idle.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if worker.proc.poll() is None:
                return worker
            self.replace(worker)  # died while idle

    # --------------------------------------------------------------- a request

    def open(self, path: Path, limits: MediaLimits, budget: Budget | None = None) -> Decoding:
        """Open `path` in a worker and check it against `limits` (MediaError if refused); the
        request's `budget` and the decode timeout (`limits.timeout_s`, from now) bound the wait
        for every message, and a worker that misses them is killed."""
        budget = budget or Budget()
        deadline = time.monotonic() + limits.timeout_s

        def check() -> None:
            budget.check()
            if time.monotonic() > deadline:
                raise MediaError("decode_timeout", f"decoding took longer than {limits.timeout_s:.0f} s", status=504)

        worker = self._take(budget.check)
        try:
            worker.send({"path": str(Path(path).resolve()), "limits": limits_to_json(limits)})
            kind, payload = worker.receive(check)
        except BaseException:
            self.replace(worker)
            raise
        if kind == INFO:
            try:
                info = MediaInfo(**json.loads(payload))
            except (ValueError, TypeError) as exc:
                self.replace(worker)
                raise decoder_failed("the decoder worker wrote an unreadable probe") from exc
            return Decoding(self, worker, info, check)
        if kind == ERROR:
            self.give_back(worker)
            _raise_error(payload)
        self.replace(worker)
        raise decoder_failed("the decoder worker wrote something other than its protocol")
