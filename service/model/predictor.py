"""From an uploaded file to the response body: pipeline -> classifier (design §5)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from service.model.bundle import Bundle
from service.model.calibration import served_view
from service.model.voice_adaptation import VoiceAdaptation
from service.pipeline.budget import Budget
from service.pipeline.config import MediaLimits
from service.pipeline.errors import MediaError
from service.pipeline.extract import (
    ClipFeatures, CropFeatures, DecodedClip, Decoder, ImageFeatures, clip_features, decode_clip)
from service.pipeline.fusion import utterance_of
from service.pipeline.media import MediaInfo
from service.pipeline.timing import StageTimer


def _probabilities(classes: list[str], probs: np.ndarray) -> dict[str, float]:
    p = np.clip(probs.astype(np.float64), 0.0, None)
    p = p / p.sum()  # float32 softmax output re-normalised so the JSON sums to 1
    return {c: float(v) for c, v in zip(classes, p)}


def _modalities(feats: ClipFeatures, clip: DecodedClip, audio_trust: float) -> dict[str, str]:
    if feats.audio_used:
        audio = "used" if audio_trust >= 1.0 else "out_of_domain"
    else:
        audio = "silent" if clip.info.has_audio else "missing"
    if feats.video_used:
        face = "low_quality" if feats.face_low_quality else "detected"
    else:  # a video in which no frame showed a usable face is answered from audio alone
        face = "not_found" if clip.info.has_video else "missing"
    return {"audio": audio, "face": face}


def _present(feats: ClipFeatures) -> dict[str, bool]:
    return {"audio": feats.audio_used, "face": feats.video_used and bool(feats.face_detected.any())}


def _classify(bundle: Bundle, feats: ClipFeatures) -> tuple[np.ndarray, dict[str, Any]]:
    """Served probabilities of a clip's sequence, for the view its modalities make, and each
    present modality's own calibrated probabilities (the audio head, or the classifier with the
    other modality removed), so a user sees which signal drove the answer. With both present,
    each expert runs once and serves both; with one, its answer is the served one itself."""
    present = _present(feats)
    both = all(present.values())
    experts = {m: bundle.expert(feats.sequence, m) for m in present} if both else {}
    probs = bundle.answer(feats.sequence, served_view(**{f"{m}_present": v for m, v in present.items()}), experts)
    by_modality: dict[str, Any] = {m: None for m in present}
    for m, here in present.items():
        if here:
            by_modality[m] = _probabilities(bundle.classes, bundle.calibrated(experts[m], m) if both else probs)
    return probs, by_modality


def predict_file(bundle: Bundle, path: Path, limits: MediaLimits, *, timeline: bool | None = None,
                 timeline_after_s: float = 30.0, segment_s: float = 10.0, budget: Budget | None = None,
                 timer: StageTimer | None = None, decoder: Decoder | None = None,
                 voice_adaptation: VoiceAdaptation | None = None) -> dict[str, Any]:
    """`timeline`: True/False, or None for "only for clips longer than `timeline_after_s`".
    `decoder`: where the file is decoded (the service's worker pool; in this thread by default).
    `voice_adaptation`: the voice's statistics mapped from a batch's onto the training ones
    (`service.model.voice_adaptation`); the answer's `adaptation` says so."""
    timer = timer or StageTimer()
    budget = budget or Budget()

    def timeline_segment(info: MediaInfo) -> float | None:
        wanted = timeline if timeline is not None else info.duration_s > timeline_after_s
        return segment_s if wanted else None

    clip = decode_clip(path, bundle.config, limits, timer, budget, segment_s=timeline_segment,
                       detector=bundle.face_detector, decoder=decoder)
    budget.check()
    return predict_clip(bundle, clip, timer=timer, segment_s=timeline_segment(clip.info), budget=budget,
                        voice_adaptation=voice_adaptation)


def predict_clip(bundle: Bundle, clip: DecodedClip, *, timer: StageTimer | None = None,
                 segment_s: float | None = None, budget: Budget | None = None,
                 shared: CropFeatures | None = None, voice_adaptation: VoiceAdaptation | None = None) -> dict[str, Any]:
    """The answer for decoded audio and faces (`DecodedClip`): what `predict_file` answers for a
    file, and what the live stream (service/live) answers for each rolling window of decoded
    samples and frames. `segment_s`: add a timeline of segments that long (None: no timeline);
    `shared`: image features of faces seen by earlier windows; `voice_adaptation`: as
    `predict_file`'s."""
    timer = timer or StageTimer()
    budget = budget or Budget()
    images = ImageFeatures(clip.faces, bundle.config, bundle, shared=shared)
    feats = _adapted(clip_features(clip, bundle.config, bundle, timer, images), bundle, voice_adaptation)
    if not any(_present(feats).values()):
        # A silent video without a face: any answer would be the classifier's prior dressed as a result.
        raise MediaError("no_usable_stream", "neither a voice nor a face was found in the file: there is nothing to "
                                             "recognise emotion from")
    with timer.stage("classify"):
        probs, by_modality = _classify(bundle, feats)
        trust = bundle.audio_reliability(feats.sequence) if feats.audio_used else 1.0
    result: dict[str, Any] = {
        "label": bundle.classes[int(np.argmax(probs))],
        "probabilities": _probabilities(bundle.classes, probs),
        "probabilities_by_modality": by_modality,
        "modalities": _modalities(feats, clip, trust),
        "reliability": {"audio": round(trust, 3) if feats.audio_used else None},
        "summary_frames": [
            {"t": round(float(t), 3), "face_detected": bool(d)}
            for t, d in zip(feats.summary_times, feats.face_detected)
        ] if feats.video_used else [],
        "duration_s": round(clip.info.duration_s, 3),
        "model": {"name": bundle.name, "version": bundle.version},
    }
    result["timeline"] = None  # the same keys as the HTTP body (PredictResponse), from every caller
    if segment_s is not None:
        with timer.stage("timeline"):
            result["timeline"] = _timeline(bundle, clip, segment_s, images, budget, voice_adaptation)
    result["adaptation"] = {"voice": voice_adaptation.describe()} if voice_adaptation is not None else None
    result["timings_ms"] = timer.rounded()
    return result


def _adapted(feats: ClipFeatures, bundle: Bundle, adaptation: VoiceAdaptation | None) -> ClipFeatures:
    if adaptation is not None and feats.audio_used:
        feats.sequence = adaptation.apply(feats.sequence, bundle.config)
    return feats


def voice_utterance(bundle: Bundle, path: Path, limits: MediaLimits, budget: Budget | None = None) -> np.ndarray | None:
    """The utterance block of a file's voice as `predict_file` computes it (None: no usable voice),
    from its audio alone: what a batch's voice statistics are gathered from."""
    clip = decode_clip(path, bundle.config, limits, budget=budget, video=False)
    feats = clip_features(clip, bundle.config, bundle)
    return utterance_of(feats.sequence, bundle.config) if feats.audio_used else None


def _timeline(bundle: Bundle, clip: DecodedClip, segment_s: float, images: ImageFeatures,
              budget: Budget, voice_adaptation: VoiceAdaptation | None = None) -> list[dict[str, Any]]:
    """Per-segment probabilities: each segment goes through the same steps as a clip (its
    own audio peak, its own summary frames), reusing the clip's decoded crops and features."""
    cfg = bundle.config
    duration = clip.info.duration_s
    entries = []
    for start in np.arange(0.0, duration, segment_s):
        end = min(duration, start + segment_s)
        if end - start < 0.25 and entries:  # a sliver at the end joins nothing useful
            break
        budget.check()
        part = clip.segment(float(start), float(end), cfg)
        if (part.audio is None or len(part.audio.mel) == 0) and len(part.faces) == 0:
            continue
        feats = _adapted(clip_features(part, cfg, bundle, StageTimer(), images), bundle, voice_adaptation)
        probs, _ = _classify(bundle, feats)
        entries.append({
            "start_s": round(float(start), 3), "end_s": round(float(end), 3),
            "label": bundle.classes[int(np.argmax(probs))],
            "probabilities": _probabilities(bundle.classes, probs),
        })
    return entries
