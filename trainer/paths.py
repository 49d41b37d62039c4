"""Where a source checkout keeps what the trainer reads and writes by default: the corpora
beside it (../shared/data), its build cache (.cache/) and the committed checkpoints."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"
CACHE_DIR = REPO_ROOT / ".cache"
CHECKPOINTS_DIR = REPO_ROOT / "checkpoints"
