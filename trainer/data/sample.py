"""The `Sample` record every loader returns, and the helpers the loaders share."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Hashable, Iterable, Iterator

from trainer.data.labels import BASIC7, map_label

MODALITIES = ("audio", "video", "image")
AUDIO_EXTS = (".wav", ".flac")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Sample:
    """One labelled file. `speaker` is corpus-prefixed ("ravdess:01"); `group` is a further
    key that must not straddle train and test (TESS word, RAVDESS statement, CREMA-D sentence)."""

    path: Path
    label: str  # always a basic7 name
    speaker: str
    corpus: str
    modality: str  # "audio" | "video" (audio-visual file) | "image"
    split: str | None = None  # a corpus-defined split (FER2013), else None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.label not in BASIC7:
            raise ValueError(f"{self.path}: label {self.label!r} is not basic7")
        if self.modality not in MODALITIES:
            raise ValueError(f"{self.path}: modality {self.modality!r} not one of {MODALITIES}")


def filter_label_set(samples: Iterable[Sample], label_set: str) -> list[Sample]:
    """The samples whose label is in `label_set` (labels stay basic7 names)."""
    return [s for s in samples if map_label(s.label, label_set) is not None]


def iter_files(root: Path, exts: tuple[str, ...]) -> Iterator[Path]:
    """Files under `root` (any depth, symlinks followed) with one of `exts`, case-insensitive.
    Hidden files and folders (macOS "._x.wav", "__MACOSX") are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"corpus root {root} is not a directory")
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__MACOSX"))]
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(exts):
                yield Path(dirpath) / name


def finish(found: Iterable[tuple[Hashable, Sample]], root: Path, expected: str) -> list[Sample]:
    """Samples sorted by path, keeping the first of those sharing a (key, modality): the same
    recording twice (a .wav and a .flac, an .flv and an .mp4, a corpus unpacked twice) counts once.
    Raises ValueError naming the `expected` layout when nothing was recognised."""
    seen: set[tuple[Hashable, str]] = set()
    out = []
    for key, sample in sorted(found, key=lambda ks: ks[1].path):
        if (key, sample.modality) not in seen:
            seen.add((key, sample.modality))
            out.append(sample)
    if not out:
        raise ValueError(f"nothing recognisable under {root}: expected {expected}")
    return out
