"""The peer: the PyPI `fer` package, installed in its own venv (bench/.fer-venv) with the lightest
set that works, and run there through fer_runner.py as a subprocess.

fer declares heavy dependencies (facenet-pytorch and so torch, moviepy, opencv-contrib-python,
matplotlib, ffmpeg-python); with mtcnn=False and no audio/video output none of them is imported.
So: `pip install --no-deps fer==25.10.3`, then only what its modules import.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".fer-venv"
RUNNER = BENCH / "fer_runner.py"
FER = "fer==25.10.3"
# What `fer.fer` and `fer.classes` import, given mtcnn=False: tensorflow (TFLite interpreter and
# Keras), cv2, pandas, tqdm, requests, PIL, and pkg_resources (gone from setuptools >= 81).
DEPS = [
    "tensorflow-cpu==2.21.0",
    "opencv-python-headless==4.14.0.94",
    "pandas==3.1.1",
    "tqdm==4.70.1",
    "pillow==13.0.0",
    "requests==2.34.2",
    "setuptools<81",
]
STAMP = VENV / "bench-install.json"


def _python() -> Path:
    return VENV / "bin" / "python"


def _pip(*args: str) -> None:
    subprocess.run([str(_python()), "-m", "pip", "--disable-pip-version-check", "-q", *args], check=True)


def _check() -> dict:
    out = subprocess.run([str(_python()), str(RUNNER), "--check"], check=True, capture_output=True, text=True,
                         timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ensure_installed(log=print) -> dict:
    """Create/reuse bench/.fer-venv; returns what is installed (pip freeze --all) and a check result."""
    wanted = {"fer": FER, "deps": DEPS, "python": sys.version.split()[0]}
    if STAMP.exists() and _python().exists():
        stamp = json.loads(STAMP.read_text())
        if stamp.get("wanted") == wanted:
            try:
                stamp["check"] = _check()
                return stamp
            except (subprocess.SubprocessError, ValueError, IndexError) as exc:
                log(f"[peer] existing {VENV} does not work ({exc}); reinstalling")
    log(f"[peer] installing {FER} (--no-deps) + {' '.join(DEPS)} into {VENV} (a few minutes)")
    # Made from the base interpreter of whatever Python runs the bench (the venv module does that).
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    _pip("install", "--no-deps", FER)
    log("[peer] (pip's complaint below that fer's declared dependencies are missing is expected)")
    _pip("install", *DEPS)
    freeze = subprocess.run([str(_python()), "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
                            text=True).stdout.split()
    stamp = {"wanted": wanted, "commands": [f"python -m venv {VENV.relative_to(BENCH.parent)}",
                                            f"pip install --no-deps {FER}", "pip install " + " ".join(DEPS)],
             "freeze": freeze}
    STAMP.write_text(json.dumps(stamp, indent=1))
    stamp["check"] = _check()
    return stamp


def run(files: list[Path], repeats: int, model: str = "tflite", timeout: float = 3600) -> dict:
    """Time fer's per-frame analysis of each file (`repeats` times); see fer_runner.py."""
    proc = subprocess.run([str(_python()), str(RUNNER), "--repeats", str(repeats), "--model", model,
                           *map(str, files)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"fer runner failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
