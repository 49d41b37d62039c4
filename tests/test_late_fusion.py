"""The late-fusion references (trainer/late_fusion.py) on synthetic per-modality answers."""
import numpy as np
import pytest

from trainer.late_fusion import late_fusion, pool


def _views(rng, n, audio_strength, face_strength):
    y = rng.integers(0, 7, n)

    def answers(strength):
        z = rng.normal(size=(n, 7))
        z[np.arange(n), y] += strength
        p = np.exp(z)
        return p / p.sum(1, keepdims=True)

    return {"audio": (y, answers(audio_strength)), "face": (y, answers(face_strength))}


def _acc(s):
    return float((s["p"].argmax(1) == s["y"]).mean())


def test_pooling_two_independent_experts_beats_each_and_weights_follow_their_strength():
    rng = np.random.default_rng(0)
    val, test = _views(rng, 800, 0.8, 2.0), _views(rng, 800, 0.8, 2.0)
    scored, fitted = late_fusion(val, test)
    alone = [float((p.argmax(1) == y).mean()) for y, p in test.values()]
    assert _acc(scored["late_product"]["fused"]) > max(alone)
    w = fitted["late_weighted"]
    assert w["w_face"] > w["w_audio"]          # the stronger expert gets the larger exponent
    assert _acc(scored["late_weighted"]["fused"]) >= _acc(scored["late_product"]["fused"]) - 0.02


def test_pool_is_a_distribution_and_misaligned_rows_are_refused():
    rng = np.random.default_rng(1)
    v = _views(rng, 50, 1.0, 1.0)
    p = pool(v["audio"][1], v["face"][1], 0.5, 2.0)
    assert np.allclose(p.sum(1), 1.0) and (p >= 0).all()
    bad = {"audio": v["audio"], "face": (v["face"][0][::-1], v["face"][1])}
    with pytest.raises(ValueError):
        late_fusion(bad, v)
    assert late_fusion({"audio": v["audio"]}, v) == ({}, {})
