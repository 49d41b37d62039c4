"""From an uploaded file to the response body: pipeline -> mask -> classifier (design §5)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .bundle import Bundle
from .pipeline.config import MediaLimits
from .pipeline.extract import ClipFeatures, DecodedClip, clip_features, decode_clip
from .pipeline.timing import StageTimer


def _probabilities(classes: list[str], probs: np.ndarray) -> dict[str, float]:
    p = np.clip(probs.astype(np.float64), 0.0, None)
    p = p / p.sum()  # float32 softmax output re-normalised so the JSON sums to 1
    return {c: float(v) for c, v in zip(classes, p)}


def _modalities(feats: ClipFeatures, clip: DecodedClip) -> dict[str, str]:
    if feats.audio_used:
        audio = "used"
    else:
        audio = "silent" if clip.info.has_audio else "missing"
    if not feats.video_used:
        face = "missing"
    else:
        face = "detected" if feats.face_detected.any() else "not_found"
    return {"audio": audio, "face": face}


def segment(clip: DecodedClip, start: float, end: float, sample_rate: int) -> DecodedClip:
    """The part of a decoded clip within [start, end), with its own clock starting at 0."""
    a, b = int(start * sample_rate), int(end * sample_rate)
    keep = (clip.frame_times >= start) & (clip.frame_times < end)
    info = replace(clip.info, duration_s=end - start)
    return DecodedClip(info, clip.audio[a:b], clip.frames[keep], clip.frame_times[keep] - start)


def predict_file(bundle: Bundle, path: Path, limits: MediaLimits, *, timeline: bool | None = None,
                 timeline_after_s: float = 30.0, segment_s: float = 10.0) -> dict[str, Any]:
    timer = StageTimer()
    cfg = bundle.config
    clip = decode_clip(path, cfg, limits, timer)
    feats = clip_features(clip, cfg, bundle, timer)
    with timer.stage("classify"):
        probs = bundle.classify(feats.sequence[None])[0]
    result: dict[str, Any] = {
        "label": bundle.classes[int(np.argmax(probs))],
        "probabilities": _probabilities(bundle.classes, probs),
        "modalities": _modalities(feats, clip),
        "summary_frames": [
            {"t": round(float(t), 3), "face_detected": bool(d)}
            for t, d in zip(feats.summary_times, feats.face_detected)
        ] if feats.video_used else [],
        "duration_s": round(clip.info.duration_s, 3),
        "model": {"name": bundle.name, "version": bundle.version},
    }
    if timeline if timeline is not None else clip.info.duration_s > timeline_after_s:
        with timer.stage("timeline"):
            result["timeline"] = _timeline(bundle, clip, segment_s)
    result["timings_ms"] = timer.rounded()
    return result


def _timeline(bundle: Bundle, clip: DecodedClip, segment_s: float) -> list[dict[str, Any]]:
    """Per-segment probabilities: each segment runs the same pipeline on its own slice."""
    duration = clip.info.duration_s
    bounds = np.arange(0.0, duration, segment_s)
    entries = []
    for start in bounds:
        end = min(duration, start + segment_s)
        if end - start < 0.25 and entries:  # a sliver at the end joins nothing useful
            break
        part = segment(clip, float(start), float(end), bundle.config.sample_rate)
        if part.audio.size == 0 and len(part.frames) == 0:
            continue
        feats = clip_features(part, bundle.config, bundle, StageTimer())
        probs = bundle.classify(feats.sequence[None])[0]
        entries.append({
            "start_s": round(float(start), 3), "end_s": round(float(end), 3),
            "label": bundle.classes[int(np.argmax(probs))],
            "probabilities": _probabilities(bundle.classes, probs),
        })
    return entries
