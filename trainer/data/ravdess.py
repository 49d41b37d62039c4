"""RAVDESS (Livingstone & Russo 2018): speech only.

File names are modality-channel-emotion-intensity-statement-repetition-actor, e.g.
03-01-05-02-01-02-12.flac, found at any depth (shared ravdess/Actor_NN/*.flac, Zenodo
Audio_Speech_Actors_01-24/Actor_NN/*.wav, Video_Speech_Actor_NN/Actor_NN/*.mp4, ...).
Song (vocal channel 02) is skipped: the project models speech.
Modality 02 (video-only, no sound track) is skipped too: the pipeline needs an audio track,
and such a file holds only what the 01 (audio-visual) file of the same take already holds.
The sample's modality follows the file: .mp4 -> "video", .wav/.flac -> "audio".
"""
from __future__ import annotations

import re
from pathlib import Path

from trainer.data.sample import AUDIO_EXTS, Sample, finish, iter_files

FILE_RE = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.(wav|flac|mp4)", re.I)
EMOTIONS = {"01": "neutral", "02": "neutral",  # calm -> neutral
            "03": "happy", "04": "sad", "05": "angry", "06": "fearful", "07": "disgust", "08": "surprised"}
SPEECH, VIDEO_ONLY = "01", "02"


def load_ravdess(root: Path) -> list[Sample]:
    """RAVDESS speech (no song, no video-only files) under `root`, at any depth."""
    found = []
    for path in iter_files(root, AUDIO_EXTS + (".mp4",)):
        m = FILE_RE.fullmatch(path.name)
        if not m:
            continue
        modality, channel, emotion, _intensity, statement, _rep, actor, ext = m.groups()
        if modality == VIDEO_ONLY or channel != SPEECH or emotion not in EMOTIONS:
            continue
        sample = Sample(path, EMOTIONS[emotion], f"ravdess:{actor}", "ravdess",
                        "video" if ext.lower() == "mp4" else "audio", group=statement)
        found.append((path.stem, sample))
    return finish(found, root, "RAVDESS speech files named like 03-01-05-02-01-02-12.wav/.flac/.mp4 "
                  "(song, channel 02, and video-only, modality 02, files are skipped)")
