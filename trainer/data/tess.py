"""Toronto Emotional Speech Set: OAF_<emotion>/ and YAF_<emotion>/ folders holding
<speaker>_<word>_<emotion>.(wav|flac). The published spellings vary ("OAF_Fear",
"YAF_pleasant_surprised", file suffix "ps"): names are matched case-insensitively and the
label is taken from the file name's emotion suffix. The speaker comes from the folder where
that is OAF_*/YAF_* (the published set has a stray "OAF_neutral/OA_bite_neutral.wav"), else
from the file name. group = the (lower-case) word."""
from __future__ import annotations

import re
from pathlib import Path

from trainer.data.labels import EMOTION_WORDS
from trainer.data.sample import AUDIO_EXTS, Sample, finish, iter_files

FILE_RE = re.compile(r"(OAF|YAF)_(.+)", re.I)  # also the speaker folders: OAF_angry
_STEM_RE = re.compile(r"[A-Z]+_(.+)", re.I)  # the prefix may be misspelt
_SUFFIXES = sorted(EMOTION_WORDS, key=len, reverse=True)  # "pleasant_surprise" before "surprise"


def parse(path: Path) -> tuple[str, str, str] | None:
    """(speaker, word, basic7 label) of a TESS file, or None."""
    speaker = FILE_RE.fullmatch(path.parent.name) or FILE_RE.fullmatch(path.stem)
    stem = _STEM_RE.fullmatch(path.stem)  # <speaker>_<word>_<emotion>
    if not (speaker and stem):
        return None
    rest = stem.group(1).lower()
    for suffix in _SUFFIXES:
        if rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1:
            return speaker.group(1).upper(), rest[: -len(suffix) - 1], EMOTION_WORDS[suffix]
    return None


def load_tess(root: Path) -> list[Sample]:
    """TESS files under `root`, at any depth; speaker "tess:OAF" / "tess:YAF"."""
    found = []
    for path in iter_files(root, AUDIO_EXTS):
        parsed = parse(path)
        if parsed:
            speaker, word, label = parsed
            found.append(((speaker, word, label),
                          Sample(path, label, f"tess:{speaker}", "tess", "audio", group=word)))
    return finish(found, root, "TESS files named like OAF_back_angry.wav / YAF_bar_ps.flac")
