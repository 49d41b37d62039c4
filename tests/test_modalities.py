"""Per-modality answers: beside the fused probabilities, each present modality's
own, from the classifier on the sequence with the other modality removed."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, corpus_dir, turned_face_clip
from media import make_video

from service.http.schemas import PredictResponse
from service.model.bundle import load_bundle
from service.model.predictor import predict_file
from service.pipeline import fusion
from service.pipeline.config import MediaLimits, PipelineConfig


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(REPO_ROOT / "models" / "default", ["CPUExecutionProvider"], threads=1)


def test_modality_view_removes_exactly_one_modality():
    cfg = PipelineConfig(image_feature_dim=6, audio_code_dim=2)
    seq = np.arange(2 * cfg.step_dim, dtype=np.float32).reshape(2, cfg.step_dim) + 1
    lay = cfg.layout()
    audio = fusion.modality_view(seq, cfg, "audio")
    assert not audio[:, slice(*lay["image"])].any()
    np.testing.assert_array_equal(audio[:, lay["audio_mean"][0]:lay["audio_std"][1]],
                                  seq[:, lay["audio_mean"][0]:lay["audio_std"][1]])
    assert audio[:, lay["flags"][0]].all() and not audio[:, lay["flags"][0] + 1:].any()
    face = fusion.modality_view(seq, cfg, "face")
    np.testing.assert_array_equal(face[:, slice(*lay["image"])], seq[:, slice(*lay["image"])])
    assert not face[:, lay["audio_mean"][0]:lay["audio_std"][1]].any() and not face[:, lay["flags"][0]].any()
    with pytest.raises(ValueError):
        fusion.modality_view(seq, cfg, "both")


@pytest.mark.parametrize("stats", ["", "mean,std,p10,p50,p90"])
def test_each_view_is_the_sequence_of_a_clip_without_the_other_modality(stats):
    """The served experts see exactly what training's one-modality views are: the sequence
    `build_sequence` makes when the other modality is absent. With the per-utterance block
    (the shipped layout), the face view once kept the utterance statistics: a "face" answer
    that heard the voice, on inputs training never showed."""
    cfg = PipelineConfig(image_feature_dim=6, audio_code_dim=2, audio_utterance_stats=stats)
    rng = np.random.default_rng(0)
    k = cfg.k_summary
    image, windows = rng.normal(size=(k, 6)).astype(np.float32), rng.normal(size=(k, 4)).astype(np.float32)
    utterance = rng.normal(size=cfg.utterance_dim).astype(np.float32) if cfg.utterance_dim else None
    detected, present, nobody = np.ones(k, bool), np.ones(k, bool), np.zeros(k, bool)
    both = fusion.build_sequence(cfg, image, detected, windows, present, utterance)
    silent = fusion.build_sequence(cfg, image, detected, np.zeros_like(windows), nobody, None)
    no_video = fusion.build_sequence(cfg, None, nobody, windows, present, utterance)
    np.testing.assert_array_equal(fusion.modality_view(both, cfg, "face"), silent)
    np.testing.assert_array_equal(fusion.modality_view(both, cfg, "audio"), no_video)


@pytest.mark.slow
def test_audio_visual_clip_has_both_modalities_answers(bundle):
    result = predict_file(bundle, corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv", MediaLimits())
    PredictResponse.model_validate(result)
    by = result["probabilities_by_modality"]
    assert set(by) == {"audio", "face"}
    for probs in by.values():
        assert probs is not None and list(probs) == bundle.classes and sum(probs.values()) == pytest.approx(1)
    assert by["audio"] != by["face"]


@pytest.mark.slow
def test_audio_only_file_answers_audio_alone(bundle, tmp_path: Path):
    clip = make_video(tmp_path / "speech.m4a", video=False, seconds=2)
    result = predict_file(bundle, clip, MediaLimits())
    by = result["probabilities_by_modality"]
    assert by["face"] is None and by["audio"] == result["probabilities"]


@pytest.mark.slow
def test_a_clip_of_a_turned_face_is_answered_from_the_face_marked_low_quality(bundle, tmp_path: Path):
    result = predict_file(bundle, turned_face_clip(tmp_path), MediaLimits())
    PredictResponse.model_validate(result)
    assert result["modalities"] == {"audio": "missing", "face": "low_quality"}
    assert result["probabilities_by_modality"]["face"] == result["probabilities"]
    assert all(f["face_detected"] for f in result["summary_frames"])
