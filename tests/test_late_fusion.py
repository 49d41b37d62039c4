"""The late-fusion references (trainer/fusion/late.py) on synthetic per-modality answers."""
import numpy as np
import pytest

from trainer.fusion.late import late_fusion, pool


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


def test_the_served_fusion_is_the_one_more_accurate_on_validation():
    rng = np.random.default_rng(2)
    val, test = _views(rng, 600, 0.8, 1.5), _views(rng, 600, 0.8, 1.5)
    y = val["audio"][0]
    weak = np.full((len(y), 7), 1 / 7)                    # a fused answer that knows nothing
    _, info = late_fusion({**val, "fused": (y, weak)}, test)
    assert info["served"]["method"] == "late_weighted"
    strong = np.eye(7)[y]                                  # a fused answer that is always right
    _, info = late_fusion({**val, "fused": (y, strong)}, test)
    assert info["served"]["method"] == "sequence"
    assert 0.0 <= info["late_weighted"]["ece_test"] <= 1.0
    # the recipe may name the served fusion (measured through the service); the figures stay in chosen_by
    _, info = late_fusion({**val, "fused": (y, strong)}, test, "late_weighted")
    assert info["served"]["method"] == "late_weighted" and "sequence 1.000" in info["served"]["chosen_by"]
    with pytest.raises(ValueError):
        late_fusion(val, test, "mean")


def test_a_bundle_serving_late_fusion_pools_the_modality_views(tmp_path):
    """Bundle.answer with fusion "late_weighted": the pooled audio-only and face-only answers."""
    from service.model.bundle import Bundle
    from service.model.calibration import log_linear_pool
    from service.model.manifest import Fusion
    from service.pipeline.fusion import modality_view

    class FakeBundle(Bundle):
        def __init__(self, manifest, config, sessions=None):
            self.manifest, self._config, self.sessions = manifest, config, sessions or {}

        @property
        def config(self):
            return self._config

        def classify(self, sequences, role="classifier"):
            # a deterministic function of the input, distinct per view
            z = np.stack([np.arange(7) * float(s.sum() % 3 + 1) for s in sequences]) / 10
            return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    from service.pipeline.config import PipelineConfig

    cfg = PipelineConfig(audio_utterance_stats="mean,std")
    seq = np.random.default_rng(3).normal(size=(cfg.k_summary, cfg.step_dim)).astype(np.float32)

    class M:
        calibration = None
        fusion = Fusion(method="late_weighted", w_audio=0.5, w_face=1.5)

    b = FakeBundle(M(), cfg)
    pa, pf = b.classify(np.stack([modality_view(seq, cfg, "audio"), modality_view(seq, cfg, "face")]))
    assert np.allclose(b.answer(seq, "fused"), log_linear_pool(pa, pf, 0.5, 1.5))
    M.fusion = Fusion()
    assert np.allclose(b.answer(seq, "fused"), b.classify(seq[None])[0])

    # With an audio head, the head answers audio-only clips and is the audio expert of late fusion.
    from service.pipeline.fusion import utterance_of

    class Head:
        def run(self, u):
            assert u.shape == (1, cfg.utterance_dim)
            z = np.tile(np.linspace(0, 1, 7), (len(u), 1)) * (1 + float(np.abs(u).sum() % 2))
            return np.exp(z) / np.exp(z).sum(1, keepdims=True)

    M.fusion = Fusion(method="late_weighted", w_audio=0.5, w_face=1.5)
    b = FakeBundle(M(), cfg, {"audio_head": Head()})
    ph = Head().run(utterance_of(seq, cfg)[None])[0]
    assert np.allclose(b.answer(seq, "audio"), ph)
    assert np.allclose(b.answer(seq, "fused"), log_linear_pool(ph, pf, 0.5, 1.5))
    assert np.allclose(b.answer(modality_view(seq, cfg, "face"), "face"), pf)


def test_utterance_of_reads_back_what_the_sequence_was_built_with():
    from service.pipeline.config import PipelineConfig
    from service.pipeline.fusion import build_sequence, utterance_of

    cfg = PipelineConfig(audio_utterance_stats="mean,p50")
    rng = np.random.default_rng(4)
    u = rng.normal(size=cfg.utterance_dim).astype(np.float32)
    stats = rng.normal(size=(cfg.k_summary, 2 * cfg.audio_code_dim)).astype(np.float32)
    present = np.array([False, True] + [True] * (cfg.k_summary - 2))
    seq = build_sequence(cfg, None, np.zeros(cfg.k_summary, bool), stats, present, u)
    assert np.array_equal(utterance_of(seq, cfg), u)
    silent = build_sequence(cfg, None, np.zeros(cfg.k_summary, bool), stats, np.zeros(cfg.k_summary, bool), u)
    assert not utterance_of(silent, cfg).any()
