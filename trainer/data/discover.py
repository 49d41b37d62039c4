"""Which corpora are present under a data root, found by folder names and layouts."""
from __future__ import annotations

import os
import re
from itertools import islice
from pathlib import Path
from typing import Callable

from trainer.data import cremad, ravdess, savee, tess, urdu
from trainer.data.images import CKPLUS_RE, RAFDB_RE, fer_split, load_ckplus, load_fer2013, load_rafdb
from trainer.data.labels import label_from_word
from trainer.data.sample import Sample

LOADERS: dict[str, Callable[[Path], list[Sample]]] = {
    "ravdess": ravdess.load_ravdess, "tess": tess.load_tess, "cremad": cremad.load_cremad,
    "savee": savee.load_savee, "fer2013": load_fer2013, "ckplus": load_ckplus, "rafdb": load_rafdb,
    "urdu": urdu.load_urdu,  # evaluation only (trainer.data.EVALUATION_ONLY)
}

# Folder names (lower-case) of a corpus root: ours (../shared/data) and the published ones.
_NAMES = {
    "ravdess": r"ravdess.*|audio_speech_actors_01-24|video_speech_actor_\d\d",
    "tess": r"tess|tess toronto emotional speech set data|toronto emotional speech set",
    "cremad": r"crema-?_?d(_av)?",
    "savee": r"savee|audiodata",
    "fer2013": r"fer-?_?2013",
    "ckplus": r"ck(\+|plus)(48)?",
    "rafdb": r"raf-?_?db.*",
    "urdu": r"urdu([-_ ]?dataset)?([-_ ]?master)?",
}
_MAX_DEPTH = 3  # data_root, its children, ... down to great-grandchildren


def _subdirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    except OSError:
        return []


def _names(d: Path, limit: int = 50) -> list[str]:
    """Up to `limit` file names in d (a peek, not a listing)."""
    try:
        with os.scandir(d) as it:
            return [e.name for e in islice((e for e in it if e.is_file()), limit)]
    except OSError:
        return []


def _any(d: Path, pattern: re.Pattern) -> bool:
    return any(pattern.fullmatch(n) for n in _names(d))


def _layout(d: Path) -> set[str]:
    """Corpora whose root layout `d` has (without looking at its own name)."""
    subs = _subdirs(d)
    names = {s.name.lower() for s in subs}
    found = set()
    if any(re.fullmatch(r"actor_\d\d", s.name, re.I) and _any(s, ravdess.FILE_RE) for s in subs):
        found.add("ravdess")
    if any(tess.FILE_RE.fullmatch(s.name) for s in subs):
        found.add("tess")
    if names & {"audiowav", "videoflash", "videomp4"} or _any(d, cremad.FILE_RE):
        found.add("cremad")
    if _any(d, savee.FLAT_RE) or any(
            s.name.upper() in savee.SPEAKERS and _any(s, savee.NESTED_RE) for s in subs):
        found.add("savee")
    emotion_dirs = [e for s in subs if fer_split(s.name) for e in _subdirs(s) if label_from_word(e.name)]
    # RAF-DB's folder release has FER2013's layout: its file names tell them apart.
    if any(_any(e, RAFDB_RE) for e in emotion_dirs) or (names & {"emolabel"} and names & {"image"}):
        found.add("rafdb")
    elif emotion_dirs:
        found.add("fer2013")
    if any(label_from_word(s.name) and _any(s, CKPLUS_RE) for s in subs):
        found.add("ckplus")
    if any(label_from_word(s.name) and _any(s, urdu.FILE_RE) for s in subs):
        found.add("urdu")
    return found


def discover_corpora(data_root: Path) -> dict[str, Path]:
    """Corpus name -> root folder for each corpus found under `data_root` (itself included,
    down to depth 3). A folder that matches is not searched further; where a corpus matches
    several folders (e.g. Zenodo's Video_Speech_Actor_NN side by side), its root is their
    common parent (the loaders search recursively)."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise ValueError(f"data root {data_root} is not a directory")
    hits: dict[str, list[Path]] = {}
    level = [data_root]
    for _depth in range(_MAX_DEPTH + 1):
        deeper = []
        for d in level:
            matched = {c for c, rx in _NAMES.items() if re.fullmatch(rx, d.name.lower())} | _layout(d)
            for corpus in matched:
                hits.setdefault(corpus, []).append(d)
            if not matched:
                deeper.extend(_subdirs(d))
        level = deeper
    return {c: Path(os.path.commonpath(hits[c])) for c in LOADERS if c in hits}


def load_corpus(name: str, root: Path) -> list[Sample]:
    """Samples of corpus `name` (a key of LOADERS) under `root`."""
    if name not in LOADERS:
        raise ValueError(f"unknown corpus {name!r}; known: {', '.join(LOADERS)}")
    return LOADERS[name](Path(root))
