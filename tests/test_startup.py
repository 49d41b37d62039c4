"""Start-up as users meet it: the server listens at once and says it is loading (503 +
Retry-After) until the bundle is loaded and warmed; a non-editable `pip install .` finds the
shipped bundle from the repository root and says which setting to use anywhere else."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
from conftest import REPO_ROOT

from service.run.harness import ServiceProcess, http_status

SHIPPED = REPO_ROOT / "models" / "default"
# The installed copy must be what runs: no checkout on the path.
CLEAN = {"PYTHONPATH": ""}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.mark.slow
def test_listens_while_loading_then_turns_ready(tmp_path):
    """The loader slowed down by 4 s (a sitecustomize of this test's own) shows the loading
    phase on any machine."""
    hook = tmp_path / "sitecustomize.py"
    hook.write_text("import time, service.run.lifecycle as l\n"
                    "real = l.load_and_warm\n"
                    "def slow(settings):\n    time.sleep(4)\n    return real(settings)\n"
                    "l.load_and_warm = slow\n")
    with ServiceProcess(SHIPPED, {"PYTHONPATH": f"{tmp_path}:{REPO_ROOT}"}) as srv:
        srv.wait_listening(timeout=60)
        loading = httpx.get(srv.url + "/readyz", timeout=5)
        assert loading.status_code == 503 and loading.headers["retry-after"]
        assert loading.json()["error"]["code"] == "not_ready"
        assert httpx.get(srv.url + "/healthz", timeout=5).status_code == 200
        models = httpx.get(srv.url + "/v1/models", timeout=5)
        assert models.status_code == 503 and models.headers["retry-after"]
        srv.wait_ready(timeout=120)
        assert httpx.get(srv.url + "/readyz", timeout=5).json()["status"] == "ready"
        metrics = httpx.get(srv.url + "/metrics", timeout=5).text
        # the /v1/models call was refused; the many /readyz polls were not refusals
        assert 'emotion_rejected_total{reason="not_ready"} 1.0' in metrics


@pytest.mark.slow
def test_a_bundle_that_cannot_load_stops_the_process(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    manifest["artifacts"]["classifier"]["sha256"] = "0" * 64
    (broken / "manifest.json").write_text(json.dumps(manifest))
    for art in manifest["artifacts"].values():
        (broken / art["file"]).symlink_to(SHIPPED / art["file"])
    srv = ServiceProcess(broken)
    try:
        assert srv.proc.wait(timeout=120) == 1
        assert "sha256" in srv.logs()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def installed_python(tmp_path_factory) -> str:
    """A fresh venv with the project installed non-editable (`pip install .`); its
    dependencies come from the running venv (a .pth file), not from the network."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
                           str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    where = subprocess.run([python, "-c", "import service; print(service.__file__)"], cwd=venv, env=clean_env(),
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    return python


@pytest.mark.slow
def test_non_editable_install_serves_the_shipped_bundle_from_the_repository(installed_python):
    with ServiceProcess(None, CLEAN, python=installed_python, cwd=REPO_ROOT) as srv:
        srv.wait_ready(timeout=180)
        assert http_status(srv.url + "/readyz") == 200


@pytest.mark.slow
def test_non_editable_install_serves_its_own_bundle_from_anywhere(installed_python, tmp_path):
    """The wheel carries the shipped bundle as package data: from a folder with no models/,
    the service and the CLI answer on it (the installed copy, not the checkout's)."""
    with ServiceProcess(None, CLEAN, python=installed_python, cwd=tmp_path) as srv:
        srv.wait_ready(timeout=180)
        model = httpx.get(srv.url + "/v1/models", timeout=30).json()["models"][0]
    import hashlib

    assert model["manifest_sha256"] == hashlib.sha256((SHIPPED / "manifest.json").read_bytes()).hexdigest()
    clip = REPO_ROOT.parent / "shared" / "data" / "cremad_av" / "1001_DFA_HAP_XX.flv"
    if not clip.is_file():
        pytest.skip(f"{clip} is absent (../shared/data)")
    cli = Path(installed_python).parent / "emotion-av"
    proc = subprocess.run([str(cli), "predict", str(clip)], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (line,) = proc.stdout.splitlines()
    answer = json.loads(line)
    assert answer["status"] == 200 and answer["label"] in answer["probabilities"]


@pytest.mark.slow
def test_non_editable_install_without_a_bundle_names_the_setting(installed_python, tmp_path):
    start = time.monotonic()
    proc = subprocess.run([installed_python, "-m", "service"], cwd=tmp_path,
                          env={**clean_env(), "EMOTION_MODEL_DIR": str(tmp_path / "none")}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "EMOTION_MODEL_DIR" in proc.stdout + proc.stderr
    assert time.monotonic() - start < 30
