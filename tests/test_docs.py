"""The documentation: the site builds with no warning, README stays short, and every command of
the getting-started page runs and answers what the page shows (the shipped bundle, a real
uvicorn, real curl, a real CREMA-D clip)."""
from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import DATA_DIR, REPO_ROOT, free_port

DOCS = REPO_ROOT / "docs"
GETTING_STARTED = DOCS / "getting-started.md"
README = REPO_ROOT / "README.md"
CLIP = "../shared/data/cremad_av/1001_DFA_HAP_XX.flv"
DEFAULT_URL = "http://127.0.0.1:8000"


def fenced(path: Path) -> list[tuple[str, str]]:
    """(language, body) of each fenced block of a Markdown file, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```$", path.read_text(), flags=re.M | re.S)


def commands(path: Path) -> list[str]:
    return [line.strip() for lang, body in fenced(path) if lang == "bash"
            for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]


def after(blocks: list[tuple[str, str]], lang: str, predicate) -> str:
    """The body of the first `lang` block that follows a block matching `predicate`."""
    for i, (_, body) in enumerate(blocks):
        if predicate(body):
            return next(b for lang_, b in blocks[i + 1:] if lang_ == lang)
    raise AssertionError(f"no {lang} block after the one asked for")


# --- the site and README ----------------------------------------------------------------------

@pytest.mark.unit
def test_site_builds_strict_with_the_generated_parts(tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-3000:]
    http = (site / "http-api" / "index.html").read_text()
    openapi = json.loads((site / "openapi.json").read_text())
    for path, ops in openapi["paths"].items():  # every route of the schema is on the page
        for method in ops:
            assert f"{method.upper()} <code>{path}</code>" in http, (method, path)
    assert "upload_too_large" in http and "PredictResponse" in http
    card = (site / "model-card" / "index.html").read_text()
    report_title = (REPO_ROOT / "models" / "default" / "report.md").read_text().splitlines()[0].lstrip("# ")
    assert report_title.split(":")[0] in card  # the bundle's own report is included ...
    for png in (REPO_ROOT / "models" / "default").glob("*.png"):  # ... with its figures
        assert (site / "bundle" / png.name).is_file() and f"bundle/{png.name}" in card
    assert "--resume" in (site / "cli-python" / "index.html").read_text()  # the CLI's help
    assert "predict_many" in (site / "cli-python" / "index.html").read_text()  # the docstrings


@pytest.mark.unit
def test_readme_is_short_and_its_links_resolve():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    links = re.findall(r"\]\(((?:docs/)[^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        assert (REPO_ROOT / link).is_file(), link


@pytest.mark.unit
def test_readme_shows_the_getting_started_answers():
    """README's curl and Python examples are the getting-started page's, which the tests run."""
    for lang, predicate in (("json", lambda b: "curl " in b), ("text", lambda b: "Predictor()" in b),
                            ("python", lambda b: "curl " in b)):
        assert after(fenced(README), lang, predicate) == after(fenced(GETTING_STARTED), lang, predicate)


# --- every command of the getting-started page, run ------------------------------------------

INSTALL_AND_START = "scripts/install.sh cpu && .venv/bin/python -m service"
CURL = f"curl -s -F file=@{CLIP} {DEFAULT_URL}/predict"
FOLDER = ".venv/bin/emotion-av predict ../shared/data/cremad_av --out results.jsonl --quiet"


@pytest.mark.unit
def test_the_page_shows_exactly_the_commands_run_here():
    """A command added to the page must get a test here."""
    assert commands(GETTING_STARTED) == [INSTALL_AND_START, CURL, FOLDER]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory) -> Path:
    """A directory laid out as the repository root is for its commands (.venv, models, and the
    shared data beside it), so that what they write stays out of the checkout."""
    if not (DATA_DIR / "cremad_av").is_dir():
        pytest.skip(f"the CREMA-D clips of the shared data are not at {DATA_DIR / 'cremad_av'}")
    if not (REPO_ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("the commands run .venv/bin/...: install with scripts/install.sh first")
    top = tmp_path_factory.mktemp("user")
    (top / "shared").mkdir()
    (top / "shared" / "data").symlink_to(DATA_DIR)
    root = top / "repo"
    root.mkdir()
    for name in (".venv", "models"):
        (root / name).symlink_to(REPO_ROOT / name)
    return root


def _ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the service did not get ready")


@pytest.fixture(scope="module")
def started(user_dir):
    """The page's first command: the install script for real (in the checkout: it installs
    .venv there), then `.venv/bin/python -m service` as written, on a free port
    (EMOTION_PORT) instead of 8000."""
    install, start = (part.strip() for part in INSTALL_AND_START.split("&&"))
    proc = subprocess.run(shlex.split(install), cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    port = free_port()
    env = {**os.environ, "EMOTION_PORT": str(port), "EMOTION_LOG_LEVEL": "warning"}
    server = subprocess.Popen(shlex.split(start), cwd=user_dir, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _ready(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        server.stderr.close()


def assert_close(shown, got, where="answer"):
    """Equal, numbers within the 3 decimals the page rounds them to."""
    if isinstance(shown, float) or isinstance(got, float):
        assert math.isclose(shown, got, abs_tol=1.5e-3), (where, shown, got)
    elif isinstance(shown, dict):
        assert isinstance(got, dict) and set(shown) == set(got), (where, shown, got)
        for key in shown:
            assert_close(shown[key], got[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(got, list) and len(shown) == len(got), (where, shown, got)
        for i, (a, b) in enumerate(zip(shown, got)):
            assert_close(a, b, f"{where}[{i}]")
    else:
        assert shown == got, (where, shown, got)


@pytest.mark.integration
@pytest.mark.slow  # runs the install script (pip, ~15 s)
def test_curl_answers_what_the_page_shows(started, user_dir):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    proc = subprocess.run(shlex.split(CURL.replace(DEFAULT_URL, started)), cwd=user_dir, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    shown = json.loads(after(fenced(GETTING_STARTED), "json", lambda b: "curl " in b))
    assert set(got["timings_ms"]) == set(shown.pop("timings_ms"))  # the stages; their times vary
    got.pop("timings_ms")
    assert_close(shown, got)


@pytest.mark.integration
def test_python_example_prints_what_the_page_shows(user_dir):
    blocks = fenced(GETTING_STARTED)
    code = next(body for lang, body in blocks if lang == "python")
    shown = after(blocks, "text", lambda b: b == code)
    proc = subprocess.run([".venv/bin/python", "-c", code], cwd=user_dir, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == shown


@pytest.mark.integration
def test_folder_command_answers_every_clip(user_dir):
    proc = subprocess.run(shlex.split(FOLDER), cwd=user_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in (user_dir / "results.jsonl").read_text().splitlines()]
    clips = sorted(p.name for p in (DATA_DIR / "cremad_av").iterdir() if p.suffix == ".flv")
    assert sorted(Path(r["path"]).name for r in records) == clips
    assert all(r["status"] == 200 for r in records), records
    happy = next(r for r in records if r["path"].endswith(Path(CLIP).name))
    shown = json.loads(after(fenced(GETTING_STARTED), "json", lambda b: "curl " in b))
    assert happy["label"] == shown["label"]  # the CLI answers as POST /predict does
