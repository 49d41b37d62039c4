"""Pseudo-pairs (design §3): with no audio-visual corpus at hand, each audio clip is paired
with ONE face image of the same emotion from the same split's face pool, shown as K
video-like variants of it (trainer/face/variants.py), and the pair goes through the serving
code's fusion step. Modality dropout copies teach the classifier to answer when a video has
no face or no sound."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from service.pipeline.config import PipelineConfig
from service.pipeline.extract import Encoders, assemble, audio_codes
from service.pipeline.fusion import step_times
from trainer.voice import whisper
from trainer.voice.features import AudioFrames


@dataclass
class FacePool:
    """Image features of a split's faces: [n, V, D], V video-like variants per face (variant
    0 the image itself), or [n, D] (one variant: the image repeated)."""

    features: np.ndarray
    labels: np.ndarray        # [n] class index

    def draw(self, label: int, k: int, rng: np.random.Generator) -> np.ndarray | None:
        """K summary-frame features of ONE face of class `label` (its variants in random order)."""
        idx = np.flatnonzero(self.labels == label)
        if len(idx) == 0:
            return None
        face = self.features[rng.choice(idx)]
        if face.ndim == 1:
            return np.repeat(face[None], k, axis=0)
        return face[rng.choice(len(face), size=k, replace=len(face) < k)]


@dataclass
class ClipCodes:
    """One audio clip as the fusion step needs it: codes, their times, the speech gate."""

    codes: np.ndarray
    times: np.ndarray
    active: np.ndarray
    frames: np.ndarray
    duration: float
    voice: np.ndarray | None = None   # the speech encoder's pooled states of the build's layers


def clip_codes(clip: AudioFrames, cfg: PipelineConfig, encoders: Encoders) -> ClipCodes:
    voice = whisper.select_layers(clip.voice, cfg) if cfg.voice_encoder else None
    return ClipCodes(audio_codes(clip.features, cfg, encoders), clip.times, clip.active(cfg), clip.features,
                     clip.duration, voice)


def pair_sequence(cfg: PipelineConfig, clip: ClipCodes | None, duration: float,
                  face_feats: np.ndarray | None) -> np.ndarray:
    """One fusion sequence: a clip's audio (None: no sound) + K faces' features (None: no video)."""
    detected = np.ones(cfg.k_summary, bool) if face_feats is not None else np.zeros(cfg.k_summary, bool)
    times = step_times(duration, cfg.k_summary)
    if clip is None:
        empty = np.zeros((0, cfg.audio_code_dim), np.float32)
        return assemble(cfg, empty, np.zeros(0), face_feats, detected, times)
    return assemble(cfg, clip.codes, clip.times, face_feats, detected, times, clip.active, clip.frames, clip.voice)


def modality_view(cfg: PipelineConfig, clip: ClipCodes, face_feats: np.ndarray, kind: str) -> np.ndarray:
    """The pair as fused, audio-only (video removed) or face-only (sound removed)."""
    if kind == "audio":
        return pair_sequence(cfg, clip, clip.duration, None)
    if kind == "face":
        return pair_sequence(cfg, None, clip.duration, face_feats)
    return pair_sequence(cfg, clip, clip.duration, face_feats)


def build_pairs(cfg: PipelineConfig, encoders: Encoders, clips: Sequence[AudioFrames], labels: np.ndarray,
                groups: list[str], pool: FacePool, *, draws: int, rng: np.random.Generator,
                views: tuple[str, ...] = ("fused",), dropout: float = 0.0) -> dict[str, np.ndarray]:
    """Sequences for audio clips paired with faces, one per (clip, draw, view).

    `views` are "fused", "audio" (video removed) and "face" (sound removed); evaluation
    asks for all three on the same draws. With `dropout` > 0 (training), each fused
    draw is replaced, with that probability per modality, by its audio-only or
    face-only view. Returns X [n, K, D], y [n], view [n], group [n].
    """
    xs, ys, vs, gs = [], [], [], []
    for clip, y, g in zip(clips, labels, groups):
        coded = clip_codes(clip, cfg, encoders)
        for _ in range(draws):
            faces = pool.draw(int(y), cfg.k_summary, rng)
            if faces is None:
                continue
            for view in views:
                if view == "fused" and dropout > 0:
                    r = rng.random()
                    view = "audio" if r < dropout else "face" if r < 2 * dropout else "fused"
                xs.append(modality_view(cfg, coded, faces, view))
                ys.append(int(y))
                vs.append(view)
                gs.append(g)
    if not xs:
        return {"X": np.zeros((0, cfg.k_summary, cfg.step_dim), np.float32), "y": np.zeros(0, int),
                "view": np.zeros(0, str), "group": np.zeros(0, str)}
    return {"X": np.stack(xs), "y": np.asarray(ys), "view": np.asarray(vs), "group": np.asarray(gs)}
