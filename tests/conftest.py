"""Shared fixtures: where the real corpora live, and skipping cleanly when they are absent."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("EMOTION_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


def corpus_dir(name: str) -> Path:
    """Path of one corpus under ../shared/data, or skip the test with the reason."""
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.skip(f"real corpus '{name}' not found at {path} (set EMOTION_DATA_DIR to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.skip(f"shared data folder not found at {DATA_DIR} (set EMOTION_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def quick_bundle(tmp_path_factory, data_dir) -> Path:
    """A bundle built by `trainer build --profile quick` on the shared data, once per run.

    EMOTION_TEST_BUNDLE points at an existing one instead (to iterate on service tests).
    """
    given = os.environ.get("EMOTION_TEST_BUNDLE")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("bundle") / "quick"
    cmd = [sys.executable, "-m", "trainer.cli", "build", "--profile", "quick", "--data", str(data_dir),
           "--out", str(out), "--cache", str(REPO_ROOT / ".cache" / "features")]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"trainer build --profile quick failed:\n{proc.stderr[-4000:]}")
    if not (out / "face_detector.onnx").is_file():  # a build that does not export the detector yet
        from trainer.detector import add_face_detector
        add_face_detector(out)
    return out


@pytest.fixture(scope="session")
def face_detector_onnx(tmp_path_factory) -> Path:
    """BlazeFace as ONNX: the test bundle's or the shipped bundle's, else converted (cached)."""
    for bundle in (os.environ.get("EMOTION_TEST_BUNDLE"), REPO_ROOT / "models" / "default"):
        if bundle and (Path(bundle) / "face_detector.onnx").is_file():
            return Path(bundle) / "face_detector.onnx"
    from trainer.detector import DEFAULT_CACHE, export_face_detector
    return export_face_detector(tmp_path_factory.mktemp("detector"), cache_dir=DEFAULT_CACHE).path


@pytest.fixture(scope="session")
def detector(face_detector_onnx):
    from service.bundle import open_session
    from service.pipeline.face_detector import BlazeFace
    return BlazeFace(open_session(face_detector_onnx, "face_detector", ["CPUExecutionProvider"], 1).session)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m service` in a child process: a real uvicorn on 127.0.0.1."""

    def __init__(self, model_dir: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix="svc-tmp-"))
        full_env = {**os.environ, "EMOTION_TMP_DIR": str(self.tmp), **(env or {})}
        # Logs go to a file (a pipe nobody reads would block the server once full).
        self.log_path = Path(tempfile.mkstemp(prefix="svc-log-", suffix=".jsonl")[1])
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port),
             "--model-dir", str(model_dir)],
            cwd=REPO_ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, text=True)

    def logs(self) -> str:
        return self.log_path.read_text()

    def children(self) -> list[int]:
        """Pids of the server's child processes (ffmpeg, ffprobe) right now."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
            try:
                pids += [int(p) for p in (task / "children").read_text().split()]
            except OSError:
                pass
        return pids

    def peak_rss_mb(self) -> float:
        """High-water mark of the server process's resident memory (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("VmHWM not found")

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError("service did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def server(quick_bundle) -> Server:
    srv = Server(quick_bundle)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@contextlib.contextmanager
def running_server(model_dir: Path, env: dict[str, str] | None = None):
    """A `Server` with its own settings, ready, stopped afterwards."""
    srv = Server(model_dir, env)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
