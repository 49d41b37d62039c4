"""On-disk cache of extracted features (npz files keyed by content + parameters), so a
rebuild with the same data and preprocessing skips decoding."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np


def file_key(path: Path) -> dict[str, Any]:
    """What identifies a corpus file's content: its name, size and BLAKE2b digest. Not its
    path or modification time, which change when the same data is mounted or copied anew
    (that once cost a full recomputation of every audio feature)."""
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "blake2b": _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)}


@functools.lru_cache(maxsize=1 << 16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """The file's digest, read once per process for as long as its size and mtime hold."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, lambda: hashlib.blake2b(digest_size=16)).hexdigest()


class FeatureCache:
    def __init__(self, root: Path | None):
        self.root = root
        self.hits = self.misses = 0

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()

    def get(self, namespace: str, key: str, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if self.root is None:
            return compute()
        file = self.root / namespace / key[:2] / f"{key}.npz"
        if file.is_file():
            try:
                with np.load(file) as data:
                    self.hits += 1
                    return {k: data[k] for k in data.files}
            except (OSError, ValueError):
                pass  # a torn write from an interrupted build: recompute
        self.misses += 1
        value = compute()
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **value)
        os.replace(tmp, file)
        return value
