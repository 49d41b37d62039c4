"""Shared fixtures: where the real corpora live, and skipping cleanly when they are absent."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from service.run.harness import REPO_ROOT, ServiceProcess, free_port  # noqa: F401  (tests import them from here)

# modalities.audio of a clip with a voice: "out_of_domain" when it is unlike the training voices
VOICED = ("used", "out_of_domain")
DATA_DIR = Path(os.environ.get("EMOTION_DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


# The kind of each test file's tests (pyproject.toml registers the markers); unit otherwise.
KINDS = {
    "test_service": "integration", "test_service_ops": "integration", "test_hostile": "integration",
    "test_contract": "integration", "test_startup": "integration", "test_stream": "integration",
    "test_deployment": "deployment",
    "test_cluster_batch": "integration", "test_cluster_serve": "integration", "test_kuberay": "deployment",
}
_KIND_MARKS = ("unit", "integration", "deployment")
# Slow beyond the files and tests marked so in place: node ids starting with these (each
# took over 10 s on the busy 2-core machine: TensorFlow training/export, IZOA/ZOA searches).
SLOW = ("test_models_export.py::", "test_feature_selection.py::test_selection_keeps_informative_drops_noise")


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if not any(item.get_closest_marker(k) for k in _KIND_MARKS):
            item.add_marker(KINDS.get(Path(str(item.fspath)).stem, "unit"))
        if item.nodeid.split("/")[-1].startswith(SLOW) and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


def corpus_dir(name: str) -> Path:
    """Path of one corpus under ../shared/data, or skip the test with the reason."""
    path = DATA_DIR / name
    if not path.is_dir():
        pytest.skip(f"real corpus '{name}' not found at {path} (set EMOTION_DATA_DIR to the shared data folder)")
    return path


def turned_face_clip(tmp_path: Path) -> Path:
    """A silent clip of a real FER2013 face turned well away from the camera (yaw ~0.6 eye
    distances: the face-quality gate flags it), made as the held-out face clips are."""
    from trainer.fusion.served_clips import Item, make_face
    still = corpus_dir("fer2013") / "public_test" / "neutral" / "PublicTest_22752690.jpg"
    if not still.exists():
        pytest.skip(f"{still} is not in the shared data")
    return make_face(Item(still, "neutral"), tmp_path)


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
    return out


@pytest.fixture(scope="session")
def face_detector_onnx(tmp_path_factory) -> Path:
    """BlazeFace as ONNX: the test bundle's or the shipped bundle's, else converted (cached)."""
    for bundle in (os.environ.get("EMOTION_TEST_BUNDLE"), REPO_ROOT / "models" / "default"):
        if bundle and (Path(bundle) / "face_detector.onnx").is_file():
            return Path(bundle) / "face_detector.onnx"
    from trainer.face.detector import DEFAULT_CACHE, export_face_detector
    return export_face_detector(tmp_path_factory.mktemp("detector"), cache_dir=DEFAULT_CACHE).path


@pytest.fixture(scope="session")
def detector(face_detector_onnx):
    from service.model.bundle import open_session
    from service.pipeline.face_detector import BlazeFace
    return BlazeFace(open_session(face_detector_onnx, "face_detector", ["CPUExecutionProvider"], 1).session)


class Server(ServiceProcess):
    """`python -m service` in a child process (service/run/harness.py) with its own spool
    directory (`tmp`), so tests can check that nothing is left in it."""

    def __init__(self, model_dir: Path, env: dict[str, str] | None = None, wrap: list[str] | None = None):
        self.tmp = Path(tempfile.mkdtemp(prefix="svc-tmp-"))
        full_env = {"EMOTION_TMP_DIR": str(self.tmp), **(env or {})}
        self.spool_dir = Path(full_env["EMOTION_TMP_DIR"])
        super().__init__(model_dir, full_env, wrap=wrap)

    def spool(self) -> Path:
        """The spool directory as the server sees it (through its mount namespace, if it has
        one of its own), from its EMOTION_TMP_DIR."""
        return Path(f"/proc/{self.proc.pid}/root") / str(self.spool_dir).lstrip("/")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def server(quick_bundle) -> Server:
    srv = Server(quick_bundle)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@contextlib.contextmanager
def running_server(model_dir: Path, env: dict[str, str] | None = None, wrap: list[str] | None = None):
    """A `Server` with its own settings, ready, stopped afterwards."""
    srv = Server(model_dir, env, wrap)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()
