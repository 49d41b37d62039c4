"""SAVEE (Surrey Audio-Visual Expressed Emotion): AudioData/<speaker>/<code><NN>.wav or the
flat "ALL" layout <speaker>_<code><NN>.wav; speakers DC, JE, JK, KL."""
from __future__ import annotations

import re
from pathlib import Path

from trainer.data.sample import Sample, finish, iter_files

SPEAKERS = ("DC", "JE", "JK", "KL")
CODES = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral", "sa": "sad", "su": "surprised"}
_CODE = r"(sa|su|a|d|f|h|n)(\d\d)"
FLAT_RE = re.compile(rf"({'|'.join(SPEAKERS)})_{_CODE}\.wav", re.I)  # ALL/DC_a01.wav
NESTED_RE = re.compile(rf"{_CODE}\.wav", re.I)  # AudioData/DC/a01.wav


def parse(path: Path) -> tuple[str, str, str] | None:
    """(speaker, code, number) of a SAVEE file, or None."""
    if m := FLAT_RE.fullmatch(path.name):
        return m.group(1).upper(), m.group(2).lower(), m.group(3)
    if (m := NESTED_RE.fullmatch(path.name)) and path.parent.name.upper() in SPEAKERS:
        return path.parent.name.upper(), m.group(1).lower(), m.group(2)
    return None


def load_savee(root: Path) -> list[Sample]:
    """SAVEE files under `root`, at any depth; speaker "savee:DC" etc."""
    found = []
    for path in iter_files(root, (".wav",)):
        if parsed := parse(path):
            speaker, code, _number = parsed
            found.append((parsed, Sample(path, CODES[code], f"savee:{speaker}", "savee", "audio")))
    return finish(found, root, "SAVEE AudioData/<DC|JE|JK|KL>/a01.wav or flat DC_a01.wav files")
