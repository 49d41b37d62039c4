"""Late-fusion references (issue 17): the served classifier's audio-only and face-only
answers on the same sequences, combined outside the network, to compare against the fused
sequence model on identical inputs.

- `late_product`: product of experts, p ∝ p_audio · p_face (no fitted parameter).
- `late_weighted`: log-linear pooling p ∝ p_audio^wa · p_face^wf with (wa, wf) chosen on
  validation speakers by negative log-likelihood (a learned gate with two weights; it also
  calibrates, as a temperature would).

The evaluation sequences hold, per clip, the views fused / audio / face of the same clip and
face in the same order (trainer/pairs.py), so the audio and face rows line up.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from .calibrate import nll

WEIGHTS = np.arange(0.25, 2.51, 0.25)


def pool(p_audio: np.ndarray, p_face: np.ndarray, w_audio: float = 1.0, w_face: float = 1.0) -> np.ndarray:
    logp = (w_audio * np.log(np.clip(p_audio, 1e-12, None)) + w_face * np.log(np.clip(p_face, 1e-12, None)))
    logp -= logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


def fit_weights(y: np.ndarray, p_audio: np.ndarray, p_face: np.ndarray) -> tuple[float, float]:
    """The (wa, wf) on a 0.25 grid minimising the negative log-likelihood of the pooled answer."""
    return min(itertools.product(WEIGHTS, WEIGHTS), key=lambda w: nll(y, pool(p_audio, p_face, *w)))


def _pair(views: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (ya, pa), (yf, pf) = views["audio"], views["face"]
    if len(ya) != len(yf) or not np.array_equal(ya, yf):
        raise ValueError("audio-only and face-only rows do not line up")
    return ya, pa, pf


def late_fusion(val: dict[str, tuple[np.ndarray, np.ndarray]],
                test: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Scored test rows ({"fused": {"y", "p"}}) of each reference, and the fitted weights."""
    if not all(v in d for d in (val, test) for v in ("audio", "face")):
        return {}, {}
    y_val, pa_val, pf_val = _pair(val)
    wa, wf = fit_weights(y_val, pa_val, pf_val)
    y, pa, pf = _pair(test)
    scored = {"late_product": {"fused": {"y": y, "p": pool(pa, pf)}},
              "late_weighted": {"fused": {"y": y, "p": pool(pa, pf, wa, wf)}}}
    return scored, {"late_weighted": {"w_audio": float(wa), "w_face": float(wf), "fitted_on": "validation speakers"}}
