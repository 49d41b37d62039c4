"""Speaker-independent splits (design §3): no speaker, actor, subject or TESS word is
in two of train / val / test. Deterministic: the same data gives the same split."""
from __future__ import annotations

import hashlib

from trainer.data import EVALUATION_ONLY, Sample

# RAVDESS: a fixed held-out group of 4 of the 20 shared actors (2 male, 2 female), 2 for validation.
RAVDESS_TEST = {"17", "18", "19", "20"}
RAVDESS_VAL = {"15", "16"}
# SAVEE's four speakers: one held out, one for validation.
SAVEE_TEST, SAVEE_VAL = {"KL"}, {"JK"}
# CREMA-D actors 1001-1018 (20 %) are test, 1019-1027 validation.
CREMAD_TEST, CREMAD_VAL = range(1001, 1019), range(1019, 1028)
# Corpora split by something other than the speaker (TESS: two voices, split by word): their
# speakers are on every side, so fitting anything to "unseen speakers" must leave them out.
SHARED_SPEAKER_CORPORA = frozenset({"tess"})


def _bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100


def _by_bucket(key: str, test_pct: int = 20, val_pct: int = 10) -> str:
    b = _bucket(key)
    return "test" if b < test_pct else "val" if b < test_pct + val_pct else "train"


def split_of(s: Sample) -> str:
    ident = s.speaker.split(":", 1)[-1]
    if s.corpus in EVALUATION_ONLY:  # URDU: never trained on, every clip is test
        return "test"
    if s.corpus == "ravdess":
        return "test" if ident in RAVDESS_TEST else "val" if ident in RAVDESS_VAL else "train"
    if s.corpus == "tess":  # two speakers only: hold out words instead (group = word)
        return _by_bucket(f"tess:{s.group}")
    if s.corpus == "savee":
        return "test" if ident in SAVEE_TEST else "val" if ident in SAVEE_VAL else "train"
    if s.corpus == "cremad":
        actor = int(ident) if ident.isdigit() else 0
        return "test" if actor in CREMAD_TEST else "val" if actor in CREMAD_VAL else "train"
    if s.corpus == "fer2013":  # FER2013's own splits; 10 % of train held for validation
        if s.split != "train":
            return "test"
        return "val" if _bucket(str(s.path.name)) < 10 else "train"
    if s.corpus == "rafdb":  # RAF-DB's own test split; 10 % + 10 % of its train carved for val / test
        return "test" if s.split == "test" else _by_bucket(s.speaker, test_pct=10, val_pct=10)
    return _by_bucket(s.speaker)  # CK+ and anything else: by subject
