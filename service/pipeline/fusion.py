"""The fusion sequence (design §2 step 5).

Step t = [ResNet feature of summary face t | mean and std of the audio codes in the
window around its time | presence flags]. Missing modalities are zeros *with* a flag.
"""
from __future__ import annotations

import numpy as np

from service.pipeline.config import FLAG_NAMES, PipelineConfig


def audio_window_stats(codes: np.ndarray, code_times: np.ndarray, centres: np.ndarray,
                       window_s: float, active: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the codes within ±window/2 of each centre.

    Returns (stats float32 [T, 2 * code_dim], present bool [T]). A centre with no code in
    its window takes the nearest code, so a short clip still contributes its audio.
    `active` (bool per code, the speech gate): only speech-active codes count, so a window
    of silence takes the nearest speech instead of summarising the silence; a clip with no
    active frame at all falls back to every frame.
    """
    t_count, dim = len(centres), codes.shape[1] if codes.ndim == 2 else 0
    stats = np.zeros((t_count, 2 * dim), np.float32)
    present = np.zeros(t_count, bool)
    if len(codes) == 0:
        return stats, present
    if active is not None and active.any() and not active.all():
        codes, code_times = codes[active], code_times[active]
    half = window_s / 2
    for t, c in enumerate(centres):
        lo, hi = np.searchsorted(code_times, [c - half, c + half])
        window = codes[lo:hi] if hi > lo else codes[[int(np.abs(code_times - c).argmin())]]
        stats[t, :dim] = window.mean(axis=0)
        stats[t, dim:] = window.std(axis=0)
        present[t] = True
    return stats, present


def build_sequence(cfg: PipelineConfig, image_features: np.ndarray | None, face_detected: np.ndarray,
                   audio_stats: np.ndarray, audio_present: np.ndarray,
                   utterance: np.ndarray | None = None) -> np.ndarray:
    """Assemble the [K, step_dim] fusion sequence; `image_features` None = no video.
    `utterance`: the per-utterance audio side input (cfg.utterance_dim), repeated in every
    step where audio is present (layout block "audio_utterance", only when configured)."""
    k = cfg.k_summary
    seq = np.zeros((k, cfg.step_dim), np.float32)
    lay = cfg.layout()
    flags = np.zeros((k, len(FLAG_NAMES)), np.float32)
    if image_features is not None:
        a, b = lay["image"]
        seq[:, a:b] = image_features
        flags[:, 1] = 1.0
        flags[:, 2] = face_detected.astype(np.float32)
    a, b = lay["audio_mean"][0], lay["audio_std"][1]
    seq[:, a:b] = audio_stats * audio_present[:, None]
    if cfg.utterance_dim:
        a, b = lay["audio_utterance"]
        if utterance is not None:
            seq[:, a:b] = utterance[None, :] * audio_present[:, None]
    flags[:, 0] = audio_present.astype(np.float32)
    a, b = lay["flags"]
    seq[:, a:b] = flags
    return seq


def step_times(duration_s: float, k: int) -> np.ndarray:
    """K evenly spread times (interval centres): the clock of a clip without video frames."""
    return (np.arange(k) + 0.5) * duration_s / k


# What each modality owns in a fusion step: its layout blocks (those the layout has) and flags.
# Removing a modality zeroes all of them, which is exactly `build_sequence` without it.
MODALITY_PARTS = {
    "audio": (("audio_mean", "audio_std", "audio_utterance"), ("audio_present",)),
    "face": (("image",), ("video_present", "face_detected")),
}


def modality_view(sequence: np.ndarray, cfg: PipelineConfig, keep: str) -> np.ndarray:
    """The same fusion sequence with the other modality removed, as training shows it (modality
    dropout): every block and flag that modality owns (MODALITY_PARTS) is zeroed, so
    `keep="face"` is a silent clip's sequence and `keep="audio"` a clip without video."""
    if keep not in MODALITY_PARTS:
        raise ValueError(f"keep must be 'audio' or 'face', not {keep!r}")
    lay = cfg.layout()
    out = np.array(sequence, np.float32, copy=True)
    (removed,) = set(MODALITY_PARTS) - {keep}
    blocks, flags = MODALITY_PARTS[removed]
    for name in blocks:
        if name in lay:
            out[..., lay[name][0]:lay[name][1]] = 0.0
    for flag in flags:
        out[..., lay["flags"][0] + FLAG_NAMES.index(flag)] = 0.0
    return out


def utterance_of(sequence: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """The per-utterance audio side input that `build_sequence` repeated in the audio-present
    steps of a [K, step_dim] sequence (zeros when no step has audio): the audio head's input."""
    lay = cfg.layout()
    a, b = lay.get("audio_utterance", (0, 0))
    present = np.flatnonzero(sequence[:, lay["flags"][0]] > 0)
    return np.array(sequence[present[0], a:b] if len(present) else np.zeros(b - a), np.float32)


def face_rows(sequence: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """The image features of the steps of a [K, step_dim] sequence that hold a face (video
    present), [n, image_feature_dim]: the face head's input, one row per summary frame."""
    lay = cfg.layout()
    a, b = lay["image"]
    present = np.flatnonzero(sequence[:, lay["flags"][0] + FLAG_NAMES.index("video_present")] > 0)
    return np.array(sequence[present, a:b], np.float32)
