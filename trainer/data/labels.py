"""Label spaces (design §3): every corpus maps onto basic7; paper3 is the paper's subset."""
from __future__ import annotations

BASIC7 = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")  # output order
PAPER3 = ("happy", "sad", "surprised")
LABEL_SETS = {"basic7": BASIC7, "paper3": PAPER3}

# Emotion words used in the corpora's folder and file names (lower-case) -> basic7.
# "contempt" (CK+) is deliberately absent: it has no basic7 class and is dropped.
EMOTION_WORDS = {
    "neutral": "neutral",
    "happy": "happy", "happiness": "happy",
    "sad": "sad", "sadness": "sad",
    "angry": "angry", "anger": "angry",
    "fear": "fearful", "fearful": "fearful",
    "disgust": "disgust", "disgusted": "disgust",
    "surprise": "surprised", "surprised": "surprised",
    "pleasant_surprise": "surprised", "pleasant_surprised": "surprised", "ps": "surprised",  # TESS
}


def label_from_word(word: str) -> str | None:
    """basic7 label of an emotion word ("Fear", "sadness", "Pleasant_surprise"), or None."""
    return EMOTION_WORDS.get(word.strip().lower().replace(" ", "_").replace("-", "_"))


def map_label(basic7_label: str, label_set: str) -> str | None:
    """The label in `label_set`, or None where that set has no such class."""
    if label_set not in LABEL_SETS:
        raise ValueError(f"unknown label set {label_set!r}; known: {', '.join(LABEL_SETS)}")
    if basic7_label not in BASIC7:
        raise ValueError(f"{basic7_label!r} is not a basic7 label ({', '.join(BASIC7)})")
    return basic7_label if basic7_label in LABEL_SETS[label_set] else None
