"""Late-fusion references: the served classifier's audio-only and face-only
answers on the same sequences, combined outside the network, to compare against the fused
sequence model on identical inputs.

- `late_product`: product of experts, p ∝ p_audio · p_face (no fitted parameter).
- `late_weighted`: log-linear pooling p ∝ p_audio^wa · p_face^wf with (wa, wf) chosen on
  validation speakers by negative log-likelihood (a learned gate with two weights; it also
  calibrates, as a temperature would).

The evaluation sequences hold, per clip, the views fused / audio / face of the same clip and
face in the same order (trainer/fusion/pairs.py), so the audio and face rows line up.
"""
from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from service.model.calibration import expected_calibration_error
from service.model.calibration import log_linear_pool as pool
from trainer.fusion.calibrate import nll

WEIGHTS = np.arange(0.25, 2.51, 0.25)


def fit_weights(y: np.ndarray, p_audio: np.ndarray, p_face: np.ndarray) -> tuple[float, float]:
    """The (wa, wf) on a 0.25 grid minimising the negative log-likelihood of the pooled answer."""
    return min(itertools.product(WEIGHTS, WEIGHTS), key=lambda w: nll(y, pool(p_audio, p_face, *w)))


def _pair(views: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (ya, pa), (yf, pf) = views["audio"], views["face"]
    if len(ya) != len(yf) or not np.array_equal(ya, yf):
        raise ValueError("audio-only and face-only rows do not line up")
    return ya, pa, pf


def late_fusion(val: dict[str, tuple[np.ndarray, np.ndarray]],
                test: dict[str, tuple[np.ndarray, np.ndarray]],
                fusion: str = "auto") -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Scored test rows ({"fused": {"y", "p"}}) of each reference, and what was fitted and
    chosen: `served` is the manifest's fusion entry. `fusion` "auto" serves "late_weighted"
    only when it is more accurate than the sequence model's fused answer on the validation
    sequences (ties keep the proposed model); "sequence" or "late_weighted" is served as given
    (the recipe's choice, measured through the service: see Recipe.fusion)."""
    if fusion not in ("auto", "sequence", "late_weighted"):
        raise ValueError(f"fusion must be auto, sequence or late_weighted, not {fusion!r}")
    if not all(v in d for d in (val, test) for v in ("audio", "face")):
        return {}, {}
    y_val, pa_val, pf_val = _pair(val)
    wa, wf = fit_weights(y_val, pa_val, pf_val)
    y, pa, pf = _pair(test)
    scored = {"late_product": {"fused": {"y": y, "p": pool(pa, pf)}},
              "late_weighted": {"fused": {"y": y, "p": pool(pa, pf, wa, wf)}}}
    val_acc = {"late_weighted": float((pool(pa_val, pf_val, wa, wf).argmax(1) == y_val).mean())}
    if "fused" in val:
        val_acc["sequence"] = float((val["fused"][1].argmax(1) == val["fused"][0]).mean())
    figures = "validation pseudo-pairs: " + ", ".join(f"{k} {v:.3f}" for k, v in val_acc.items())
    if fusion == "auto":
        method = "late_weighted" if val_acc["late_weighted"] > val_acc.get("sequence", 1.0) else "sequence"
        chosen_by = figures
    else:
        method, chosen_by = fusion, f"the recipe (fusion={fusion}); {figures}"
    served = {"method": method, "w_audio": float(wa), "w_face": float(wf), "chosen_by": chosen_by}
    ece = expected_calibration_error(y, scored["late_weighted"]["fused"]["p"])
    return scored, {"late_weighted": {"w_audio": float(wa), "w_face": float(wf), "fitted_on": "validation speakers",
                                      "validation_accuracy": val_acc, "ece_test": ece}, "served": served}


def other_fusion(method: str) -> str:
    """The fusion method a bundle does not serve: its `other_fusion` variant in the figures."""
    return "sequence" if method == "late_weighted" else "late_weighted"
