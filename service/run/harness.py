"""`python -m service` as a child process on a free loopback port: the one harness that the
tests (tests/conftest.py) and the benchmark (bench/server.py) start servers with.
Standard library only."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def is_decoder_worker(pid: int) -> bool:
    """A live decoder worker (by its command line; a zombie has none)."""
    try:
        return b"service.pipeline.decode_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of GET url, or None when nothing answers (refused, reset, timed out)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class ServiceProcess:
    """A real uvicorn serving `model_dir` on 127.0.0.1. Logs go to a file (a pipe nobody
    reads would block the server once full); `logs()` reads them."""

    def __init__(self, model_dir: Path | None, env: dict[str, str] | None = None, python: str = sys.executable,
                 cwd: Path = REPO_ROOT, args: list[str] | None = None, wrap: list[str] | None = None):
        """`wrap`: a command prefix that execs the service (it must keep the pid: `exec`, no fork)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        fd, log = tempfile.mkstemp(prefix="service-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log)
        self._log = open(self.log_path, "w")
        cmd = [*(wrap or []), python, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)]
        if model_dir is not None:
            cmd += ["--model-dir", str(model_dir)]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd + list(args or []), cwd=cwd, env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait(self, accept: set[int] | None, timeout: float, interval: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            status = http_status(self.url + "/readyz")
            if status is not None and (accept is None or status in accept):
                return time.perf_counter() - self.started
            time.sleep(interval)
        raise TimeoutError(f"service not ready within {timeout:.0f} s:\n{self.logs()[-3000:]}")

    def wait_listening(self, timeout: float = 60.0, interval: float = 0.02) -> float:
        """Seconds from spawn until /readyz answers at all (503 while loading)."""
        return self._wait(None, timeout, interval)

    def wait_ready(self, timeout: float = 120.0, interval: float = 0.05) -> float:
        """Seconds from spawn until /readyz answers 200."""
        return self._wait({200}, timeout, interval)

    def _children(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return pids

    def decoder_workers(self) -> list[int]:
        """Pids of the server's decoder worker processes (service/pipeline/decoder_pool.py)."""
        return [pid for pid in self._children() if is_decoder_worker(pid)]

    def children(self) -> list[int]:
        """Pids of the server's other child processes right now (none is expected between
        requests: a killed worker that was not reaped, a zombie, shows here too)."""
        return [pid for pid in self._children() if not is_decoder_worker(pid)]

    def peak_rss_mb(self) -> float:
        """High-water mark of the server process's resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("VmHWM not found")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> "ServiceProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
