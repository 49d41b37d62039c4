"""Shared fixtures: where the real corpora live, and skipping cleanly when they are absent."""
from __future__ import annotations

import os
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
