"""Temperature scaling fitted on validation speakers, per served view (design §2 step 8),
with the expected calibration error before and after on the test split."""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from service.model.calibration import apply_temperature, expected_calibration_error


def nll(y: np.ndarray, probs: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None))))


def fit_temperature(y: np.ndarray, probs: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the negative log-likelihood of softmax(log p / T)."""
    if len(y) == 0:
        return 1.0
    res = minimize_scalar(lambda log_t: nll(y, apply_temperature(probs, float(np.exp(log_t)))),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def ece_floor(probs: np.ndarray, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model would still show on these rows: the mean ECE
    (15 bins) over `draws` label sets drawn from `probs` themselves. With a few hundred rows
    the binned estimate is noisy and biased upwards, so an ECE near this floor cannot be
    told from a calibrated one."""
    if len(probs) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    eces = []
    for _ in range(draws):
        y = np.minimum((rng.random((len(probs), 1)) > cum).sum(axis=1), probs.shape[1] - 1)
        eces.append(expected_calibration_error(y, probs))
    return float(np.mean(eces))


def calibrate_views(val: dict[str, tuple[np.ndarray, np.ndarray]],
                    test: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Per view: T fitted on `val` (y, probs), ECE (15 bins) and NLL on `test` before and after."""
    out: dict[str, Any] = {"method": "temperature", "fitted_on": "validation speakers", "views": {}}
    for view, (y_val, p_val) in val.items():
        t = fit_temperature(y_val, p_val)
        entry: dict[str, Any] = {"temperature": t, "n_validation": int(len(y_val))}
        if view in test and len(test[view][0]):
            y, p = test[view]
            q = apply_temperature(p, t)
            entry.update(n_test=int(len(y)), ece_before=expected_calibration_error(y, p),
                         ece_after=expected_calibration_error(y, q), nll_before=nll(y, p), nll_after=nll(y, q))
        out["views"][view] = entry
    return out
