"""The service as a child process (`python -m service`), and what the benchmark measures on it
from outside: resident memory of the process and of its process tree (its decoder workers, or
a baseline's ffmpeg/ffprobe children) sampled every ~20 ms, and user+system CPU seconds of the tree.
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from service.run.harness import ServiceProcess, is_decoder_worker  # noqa: E402

MB = 1024 * 1024


class Service(ServiceProcess):
    """The harness's `python -m service` (service/run/harness.py), with psutil's view of it."""

    def __init__(self, model_dir: Path | None, env: dict[str, str] | None = None, python: str = sys.executable,
                 cwd: Path = REPO):
        super().__init__(model_dir, env, python=python, cwd=cwd)
        self.popen = self.proc
        self.ps = psutil.Process(self.proc.pid)

    def log_tail(self, chars: int = 3000) -> str:
        return self.logs()[-chars:]


def descendants(pid: int) -> list[int]:
    """Child pids, recursively, from /proc/PID/task/*/children (cheap enough to poll at 50 Hz)."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for kid in kids:
            out += [kid, *descendants(kid)]
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _rss(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """user+system CPU of the service, of its children it has reaped (children_user/system),
    and of the descendants still alive right now."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for pid in descendants(proc.pid):
        try:
            c = psutil.Process(pid).cpu_times()
            total += c.user + c.system
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def transient_children(pid: int) -> list[int]:
    """Descendants other than the decoder workers, which live as long as the service (a
    baseline service's ffmpeg/ffprobe children)."""
    return [p for p in descendants(pid) if not is_decoder_worker(p)]


def wait_no_children(proc: psutil.Process, timeout: float = 2.0) -> None:
    """After a response, give the service a moment to reap its transient children (their CPU
    then counts; the decoder workers' CPU counts while they live)."""
    deadline = time.monotonic() + timeout
    while transient_children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _reset_hwm(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of a process: `echo 5 > /proc/PID/clear_refs`."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _hwm(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class RssMonitor:
    """Samples the service's RSS and its process tree's total RSS every `interval` s in a thread.

    The service's own peak is also read from the kernel (VmHWM, reset when the monitor starts),
    which catches spikes between samples; `service_peak_mb` is the larger of the two.

    A child still named like the service (forked, not yet exec'd into ffmpeg) is not counted:
    its RSS is the service's own pages, shared, and would double the tree for a moment. The
    decoder workers (Python processes of their own) are counted."""

    def __init__(self, proc: psutil.Process, interval: float = 0.02):
        self.proc, self.interval = proc, interval
        self.peak_service = self.peak_tree = self.peak_children = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = False
        self.comm = _comm(proc.pid)

    def _sample(self) -> None:
        own = _rss(self.proc.pid)
        kids = sum(_rss(pid) for pid in descendants(self.proc.pid) if _comm(pid) != self.comm or is_decoder_worker(pid))
        self.peak_service = max(self.peak_service, own)
        self.peak_children = max(self.peak_children, kids)
        self.peak_tree = max(self.peak_tree, own + kids)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "RssMonitor":
        self.baseline_mb = _rss(self.proc.pid) / MB
        self.hwm_reset = _reset_hwm(self.proc.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def result(self) -> dict:
        hwm = _hwm(self.proc.pid) if self.hwm_reset else None
        sampled = self.peak_service / MB
        return {
            "service_peak_mb": max(sampled, (hwm or 0) / MB),
            "service_peak_sampled_mb": sampled,
            "service_vmhwm_mb": None if hwm is None else hwm / MB,
            "tree_peak_mb": max(self.peak_tree / MB, max(sampled, (hwm or 0) / MB)),
            "children_peak_mb": self.peak_children / MB,
            "baseline_mb": self.baseline_mb,
            "samples": self.samples,
            "interval_s": self.interval,
        }
