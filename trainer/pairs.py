"""Pseudo-pairs (design §3): with no audio-visual corpus at hand, each audio clip is
paired with K face images of the same emotion from the same split's face pool, and the
pair goes through the serving code's fusion step. Modality dropout copies teach the
classifier to answer when a video has no face or no sound."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.pipeline.config import PipelineConfig
from service.pipeline.extract import Encoders, assemble, audio_codes
from service.pipeline.fusion import step_times


@dataclass
class FacePool:
    features: np.ndarray      # [n, 2048] ResNet-50 features
    labels: np.ndarray        # [n] class index

    def draw(self, label: int, k: int, rng: np.random.Generator) -> np.ndarray | None:
        idx = np.flatnonzero(self.labels == label)
        if len(idx) == 0:
            return None
        return rng.choice(idx, size=k, replace=len(idx) < k)


def pair_sequence(cfg: PipelineConfig, codes: np.ndarray, code_times: np.ndarray, duration: float,
                  face_feats: np.ndarray | None) -> np.ndarray:
    """One fusion sequence: audio codes (may be empty) + K faces' features (None: no video)."""
    detected = np.ones(cfg.k_summary, bool) if face_feats is not None else np.zeros(cfg.k_summary, bool)
    return assemble(cfg, codes, code_times, face_feats, detected, step_times(duration, cfg.k_summary))


def build_pairs(cfg: PipelineConfig, encoders: Encoders, mfccs: list[dict], labels: np.ndarray,
                groups: list[str], pool: FacePool, *, draws: int, rng: np.random.Generator,
                views: tuple[str, ...] = ("fused",), dropout: float = 0.0) -> dict[str, np.ndarray]:
    """Sequences for audio clips paired with faces, one per (clip, draw, view).

    `views` are "fused", "audio" (video removed) and "face" (sound removed); evaluation
    asks for all three on the same draws. With `dropout` > 0 (training), each fused
    draw is replaced, with that probability per modality, by its audio-only or
    face-only view. Returns X [n, K, D], y [n], view [n], group [n].
    """
    xs, ys, vs, gs = [], [], [], []
    for m, y, g in zip(mfccs, labels, groups):
        codes = audio_codes(m["mfcc"], cfg, encoders)
        for _ in range(draws):
            faces = pool.draw(int(y), cfg.k_summary, rng)
            if faces is None:
                continue
            for view in views:
                if view == "fused" and dropout > 0:
                    r = rng.random()
                    view = "audio" if r < dropout else "face" if r < 2 * dropout else "fused"
                xs.append(modality_view(cfg, codes, m["times"], float(m["duration"]), pool.features[faces], view))
                ys.append(int(y))
                vs.append(view)
                gs.append(g)
    if not xs:
        return {"X": np.zeros((0, cfg.k_summary, cfg.step_dim), np.float32), "y": np.zeros(0, int),
                "view": np.zeros(0, str), "group": np.zeros(0, str)}
    return {"X": np.stack(xs), "y": np.asarray(ys), "view": np.asarray(vs), "group": np.asarray(gs)}


def modality_view(cfg: PipelineConfig, codes: np.ndarray, code_times: np.ndarray, duration: float,
                  face_feats: np.ndarray, kind: str) -> np.ndarray:
    """The pair as fused, audio-only (video removed) or face-only (sound removed)."""
    if kind == "audio":
        return pair_sequence(cfg, codes, code_times, duration, None)
    if kind == "face":
        return pair_sequence(cfg, codes[:0], code_times[:0], duration, face_feats)
    return pair_sequence(cfg, codes, code_times, duration, face_feats)
