"""The modalities' own experts: the face head pooled over a clip's summary faces, and the
voice's trust from its distance to the training voices (flattening an out-of-domain voice so
the face takes over)."""
from __future__ import annotations

import numpy as np
import pytest

from service.model.bundle import load_bundle
from service.model.calibration import (
    MIN_RELIABILITY,
    confidence_pool,
    flattened,
    log_linear_pool,
    reliability,
)
from service.pipeline import fusion
from service.pipeline.config import PipelineConfig


def test_confidence_pool_of_copies_is_the_copy_and_a_clear_frame_outweighs_a_vague_one():
    p = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(confidence_pool(np.stack([p] * 5)), p, atol=1e-9)
    clear, vague = np.array([0.9, 0.05, 0.05]), np.array([0.3, 0.4, 0.3])
    pooled = confidence_pool(np.stack([clear, vague]))
    assert pooled.argmax() == 0 and pooled.sum() == pytest.approx(1.0)
    # an equal-weight pool would lean further towards the vague frame's class 1
    equal = log_linear_pool(clear, vague, 0.5, 0.5)
    assert pooled[1] < equal[1]


def test_face_rows_are_the_image_features_of_the_steps_with_a_face():
    cfg = PipelineConfig(image_feature_dim=4, audio_code_dim=2, k_summary=3)
    feats = np.arange(3 * 4, dtype=np.float32).reshape(3, 4) + 1
    seq = fusion.build_sequence(cfg, feats, np.ones(3, bool), np.zeros((3, 4), np.float32), np.ones(3, bool))
    np.testing.assert_array_equal(fusion.face_rows(seq, cfg), feats)
    no_video = fusion.build_sequence(cfg, None, np.zeros(3, bool), np.zeros((3, 4), np.float32), np.ones(3, bool))
    assert fusion.face_rows(no_video, cfg).shape == (0, 4)


def test_reliability_falls_from_inside_to_outside_and_never_to_nothing():
    assert reliability(0.5, 1.0, 3.0) == 1.0
    assert reliability(2.0, 1.0, 3.0) == pytest.approx(0.5)
    assert reliability(10.0, 1.0, 3.0) == MIN_RELIABILITY


def test_an_untrusted_voice_keeps_its_ranking_and_hands_the_fused_answer_to_the_face():
    voice = np.array([0.96, 0.01, 0.01, 0.02])   # confidently "class 0"
    face = np.array([0.2, 0.5, 0.2, 0.1])        # "class 1"
    np.testing.assert_array_equal(flattened(voice, 1.0), voice)
    flat = flattened(voice, MIN_RELIABILITY)
    assert flat.argmax() == 0 and flat.max() < 0.5
    assert log_linear_pool(voice, face, 0.5, 1.0).argmax() == 0
    assert log_linear_pool(flat, face, 0.5, 1.0).argmax() == 1


def test_domain_graph_computes_the_fitted_distance_and_a_shifted_voice_lies_far(tmp_path):
    pytest.importorskip("keras")
    from trainer.export import export_onnx
    from trainer.voice.domain import domain_model, fit_domain

    rng = np.random.default_rng(0)
    mix = rng.normal(size=(12, 12)) * np.logspace(-2, 2, 12)[:, None]   # correlated, very unequal scales
    x = rng.normal(size=(3000, 12)) @ mix + 50.0
    fit = fit_domain(x)
    assert 0.3 < np.median(fit.distance(x)) < 1.2   # below 1 by as much as the covariance was shrunk
    far = x[:100] + 5 * x.std(0)
    assert np.median(fit.distance(far)) > 3 * np.median(fit.distance(x[:100]))
    res = export_onnx(domain_model(fit), tmp_path / "domain.onnx", sample_inputs=x[:32].astype(np.float32),
                      input_name="utterance", output_name="distance", atol=1e-3)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"utterance": far[:8].astype(np.float32)})[0]
    np.testing.assert_allclose(got, fit.distance(far[:8]), rtol=1e-3)


def test_quick_bundle_serves_both_heads_and_a_domain(quick_bundle):
    """The build ships the face head and the voice's domain graph, and the bundle uses them:
    the face expert is the head's pooled answer, a voice far from the training voices is
    trusted less than one of them."""
    b = load_bundle(quick_bundle, ["CPUExecutionProvider"], threads=1)
    assert {"face_head", "audio_head", "audio_domain"} <= set(b.sessions)
    assert b.manifest.audio_domain is not None and b.manifest.audio_domain.outside > b.manifest.audio_domain.inside
    cfg = b.config
    rng = np.random.default_rng(1)
    dim = cfg.image_feature_dim
    feats = np.abs(rng.normal(size=(cfg.k_summary, dim))).astype(np.float32)
    seq = fusion.build_sequence(cfg, feats, np.ones(cfg.k_summary, bool),
                                np.zeros((cfg.k_summary, 2 * cfg.audio_code_dim), np.float32),
                                np.zeros(cfg.k_summary, bool))
    per_face = b.sessions["face_head"].run(feats)
    np.testing.assert_allclose(b.expert(seq, "face"), confidence_pool(per_face), rtol=1e-5)
    assert b.audio_reliability(seq) == 1.0   # no voice: nothing to distrust


def test_a_tone_is_no_voice_the_model_knows_and_held_out_speakers_mostly_are(quick_bundle, tmp_path):
    """Through the service's own pipeline: a pure 330 Hz tone lies far outside the training
    voices (its answer flattened, said in `modalities.audio`); of RAVDESS validation speakers'
    clips (actor 15, never trained on) most are trusted as they are."""
    from conftest import corpus_dir
    from media import make_video

    from service.model.predictor import predict_file
    from service.pipeline.config import MediaLimits

    b = load_bundle(quick_bundle, ["CPUExecutionProvider"], threads=1)
    tone = predict_file(b, make_video(tmp_path / "tone.mp4", video=False, seconds=3), MediaLimits())
    assert tone["modalities"]["audio"] == "out_of_domain" and tone["reliability"]["audio"] < 0.5
    assert max(tone["probabilities"].values()) < 0.6
    clips = sorted((corpus_dir("ravdess") / "Actor_15").glob("03-01-*"))[::10][:6]
    answers = [predict_file(b, c, MediaLimits()) for c in clips]
    assert sum(a["modalities"]["audio"] == "used" for a in answers) >= 4, [a["reliability"] for a in answers]
