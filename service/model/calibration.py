"""Calibrated probabilities (design §2 step 8): temperature scaling per served view.

The classifiers output softmax probabilities p = softmax(z). Dividing the logits by a
temperature T is the same as raising p to 1/T and renormalising (log p differs from z by a
constant per row), so the bundle's ONNX graphs stay as exported and the temperature is a
number in the manifest. The trainer fits T on validation speakers (trainer/fusion/calibrate.py);
the service applies it per view: "fused" when audio and face are both present, else the
present modality's view ("audio" or "face").
"""
from __future__ import annotations

import numpy as np

VIEWS = ("fused", "audio", "face")


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Rows of `probs` (softmax outputs) re-tempered: softmax(log p / T)."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None)) / float(temperature)
    logp -= logp.max(axis=-1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=-1, keepdims=True)


def expected_calibration_error(y: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """ECE with `bins` equal-width confidence bins: sum over bins of |accuracy - confidence|
    weighted by the share of rows in the bin (Guo et al. 2017)."""
    if len(y) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    right = (probs.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            ece += sel.mean() * abs(right[sel].mean() - conf[sel].mean())
    return float(ece)


def log_linear_pool(p_audio: np.ndarray, p_face: np.ndarray, w_audio: float = 1.0, w_face: float = 1.0) -> np.ndarray:
    """Late fusion of two experts' answers: p ∝ p_audio^w_audio · p_face^w_face (row-wise);
    weights 1, 1 are the product of experts."""
    logp = w_audio * np.log(np.clip(p_audio, 1e-12, None)) + w_face * np.log(np.clip(p_face, 1e-12, None))
    logp -= logp.max(axis=-1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=-1, keepdims=True)


def confidence_pool(rows: np.ndarray) -> np.ndarray:
    """One answer from the per-frame answers [n, C] of the same face track: their log-linear
    pool, each frame weighted by its own confidence (max probability) and the weights summing
    to 1, so a frame that shows the expression clearly outweighs a blurred or turned one and
    n copies of one still answer what the still answers alone."""
    rows = np.clip(np.asarray(rows, np.float64), 1e-12, None)
    w = rows.max(axis=1)
    logp = (w / w.sum()) @ np.log(rows)
    p = np.exp(logp - logp.max())
    return p / p.sum()


# The least trust a voice keeps: its answer is flattened to p^0.1, never to uniform, so an
# audio-only answer out of domain keeps the head's ranking at a confidence near chance.
MIN_RELIABILITY = 0.1


def reliability(distance: float, inside: float, outside: float) -> float:
    """Trust in a voice from its distance to the training voices (`trainer.voice.domain`):
    1 up to `inside`, MIN_RELIABILITY from `outside` on, linear in between."""
    r = (outside - float(distance)) / max(outside - inside, 1e-9)
    return float(np.clip(r, MIN_RELIABILITY, 1.0))


def flattened(probs: np.ndarray, trust: float) -> np.ndarray:
    """An expert's answer with its evidence scaled by `trust` in [0, 1]: p^trust, renormalised
    (1: unchanged; towards 0: towards uniform). In a log-linear pool this is the expert's weight
    times `trust`, so the other expert takes over."""
    return apply_temperature(probs, 1.0 / trust) if trust < 1.0 else probs


def served_view(audio_present: bool, face_present: bool) -> str:
    if audio_present and face_present:
        return "fused"
    return "audio" if audio_present else "face"
