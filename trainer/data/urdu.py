"""URDU (Latif et al. 2018): natural Urdu speech cut from TV talk shows, {Angry,Happy,Neutral,Sad}/
folders holding <speaker>_<file>_<emotion code><number>.(wav|flac), e.g. Angry/SM1_F10_A010.flac.
The speaker is the first field (SM1 = male speaker 1, SF1 = female speaker 1); the label comes
from the emotion folder, else from the code letter (A, H, N, S). **Evaluation only**: never
trained on (trainer.data.EVALUATION_ONLY)."""
from __future__ import annotations

import re
from pathlib import Path

from trainer.data.labels import label_from_word
from trainer.data.sample import AUDIO_EXTS, Sample, finish, iter_files

FILE_RE = re.compile(r"(S[MF]\d+)_(F\d+)_([AHNS])(\d+)\.(?:wav|flac)", re.I)  # SM1_F10_A010.flac
CODES = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}


def parse(path: Path) -> tuple[str, str] | None:
    """(speaker, basic7 label) of an URDU file, or None."""
    m = FILE_RE.fullmatch(path.name)
    if not m:
        return None
    label = label_from_word(path.parent.name) or CODES[m.group(3).upper()]
    return m.group(1).upper(), label


def load_urdu(root: Path) -> list[Sample]:
    """URDU files under `root`, at any depth; speaker "urdu:SM1"."""
    found = []
    for path in iter_files(root, AUDIO_EXTS):
        parsed = parse(path)
        if parsed:
            speaker, label = parsed
            found.append(((path.parent.name.lower(), path.stem.upper()),
                          Sample(path, label, f"urdu:{speaker}", "urdu", "audio")))
    return finish(found, root, "URDU folders Angry/, Happy/, Neutral/, Sad/ holding files named like "
                  "SM1_F10_A010.wav / SF1_F10_H010.flac")
