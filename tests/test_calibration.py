"""Temperature scaling (design §2 step 8): the math the service applies and the trainer fits."""
from __future__ import annotations

import numpy as np
import pytest

from service.model.calibration import apply_temperature, expected_calibration_error, served_view
from trainer.fusion.calibrate import calibrate_views, ece_floor, fit_temperature


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 7, n)
    logits = rng.normal(0, 1, (n, 7))
    logits[np.arange(n), y] += 1.5
    p = np.exp(3 * logits)        # the true posterior is softmax(1.5 * logits): twice too sharp
    return y, p / p.sum(1, keepdims=True)


def test_temperature_is_softmax_of_scaled_logits():
    z = np.array([[2.0, 0.5, -1.0]])
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(apply_temperature(p, 2.0), np.exp(z / 2) / np.exp(z / 2).sum(), atol=1e-12)
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-12)


def test_fitted_temperature_undoes_overconfidence_and_lowers_ece():
    y, p = _overconfident(4000, 0)
    t = fit_temperature(y[:2000], p[:2000])
    assert 1.7 < t < 2.3
    out = calibrate_views({"fused": (y[:2000], p[:2000])}, {"fused": (y[2000:], p[2000:])})["views"]["fused"]
    assert out["ece_after"] < 0.05 < out["ece_before"] and out["nll_after"] < out["nll_before"]


def test_ece_of_a_perfectly_calibrated_toy_is_zero_and_served_views():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]])) == pytest.approx(0)
    assert served_view(True, True) == "fused" and served_view(True, False) == "audio"
    assert served_view(False, True) == "face"


def test_ece_floor_is_what_calibrated_answers_show_and_shrinks_with_rows():
    """Labels drawn from the answers themselves are calibrated by construction: their ECE
    averages to the floor; over-confident answers sit well above it; more rows, lower floor."""
    y, p = _overconfident(4000, 1)
    rng = np.random.default_rng(2)
    floors = {n: ece_floor(p[:n]) for n in (120, 480, 4000)}
    assert floors[120] > floors[480] > floors[4000] > 0
    # labels drawn row by row with rng.choice: not the vectorised draw ece_floor itself uses
    calibrated = [expected_calibration_error(np.array([rng.choice(7, p=row) for row in p[:240]]), p[:240])
                  for _ in range(100)]
    assert np.mean(calibrated) == pytest.approx(ece_floor(p[:240]), rel=0.15)
    assert expected_calibration_error(y[:240], p[:240]) > 2 * ece_floor(p[:240])
