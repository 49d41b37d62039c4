"""CREMA-D: <actor>_<sentence>_<emotion>_<level>.(wav|flv|mp4), e.g. 1001_DFA_ANG_XX.flv,
at any depth (AudioWAV/*.wav -> "audio"; VideoFlash/*.flv, VideoMP4/*.mp4 -> "video"; or a
flat folder such as the shared cremad_av/). group = the sentence code."""
from __future__ import annotations

import re
from pathlib import Path

from trainer.data.sample import Sample, finish, iter_files

FILE_RE = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.(wav|flv|mp4)", re.I)
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


def load_cremad(root: Path) -> list[Sample]:
    """CREMA-D files under `root`, at any depth; speaker "cremad:<actor>"."""
    found = []
    for path in iter_files(root, (".wav", ".flv", ".mp4")):
        m = FILE_RE.fullmatch(path.name)
        if not m or m.group(3).upper() not in EMOTIONS:
            continue
        actor, sentence, emotion, _level, ext = m.groups()
        sample = Sample(path, EMOTIONS[emotion.upper()], f"cremad:{actor}", "cremad",
                        "audio" if ext.lower() == "wav" else "video", group=sentence.upper())
        found.append((path.stem.upper(), sample))
    return finish(found, root, "CREMA-D files named like 1001_DFA_ANG_XX.wav/.flv/.mp4 "
                  "(AudioWAV/, VideoFlash/ or one flat folder)")
