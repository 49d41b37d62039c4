"""Train/serve skew: the trainer and the service compute identical features for the same file."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import corpus_dir
from media import make_video

from service.model.bundle import EncoderSessions, load_bundle, open_session
from service.pipeline.extract import clip_features, decode_clip
from service.pipeline.fusion import utterance_of
from service.settings import Settings
from trainer.build import pipeline_config
from trainer.cache import FeatureCache
from trainer.data import Sample
from trainer.features import video_sequences
from trainer.recipe import BuildOptions, Recipe
from trainer.voice.features import frame_features, frames_utterance

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trainer_side(quick_bundle):
    """What the trainer uses: the config from its build options and the ONNX files it exported."""
    opts = BuildOptions(data_dir=Path("."), out_dir=quick_bundle, recipe=Recipe.for_profile("quick"), profile="quick")
    manifest = json.loads((quick_bundle / "manifest.json").read_text())
    sessions = {r: open_session(quick_bundle / manifest["artifacts"][r]["file"], r)
                for r in ("audio_encoder", "frame_encoder", "image_features", "face_detector", "voice_encoder")
                if r in manifest["artifacts"]}
    return pipeline_config(opts), EncoderSessions(sessions)


@pytest.fixture(scope="module")
def service_side(quick_bundle):
    """What the service uses: the bundle as it loads it, config rebuilt from the manifest."""
    return load_bundle(quick_bundle, ["CPUExecutionProvider"]), Settings().media_limits()


def test_trainer_config_is_what_the_service_reads(trainer_side, service_side):
    assert trainer_side[0] == service_side[0].config


@pytest.mark.parametrize("emotion", ["ANG", "HAP"])
def test_identical_sequences_for_a_real_clip(trainer_side, service_side, emotion):
    clip = corpus_dir("cremad_av") / f"1001_DFA_{emotion}_XX.flv"
    cfg, encoders = trainer_side
    sample = Sample(path=clip, label="angry", speaker="cremad:1001", corpus="cremad", modality="video")
    trained = video_sequences([sample], cfg, encoders)[0]
    bundle, limits = service_side
    served = clip_features(decode_clip(clip, bundle.config, limits, detector=bundle.face_detector),
                           bundle.config, bundle).sequence
    assert served.shape == (cfg.k_summary, cfg.step_dim)
    np.testing.assert_array_equal(trained, served)
    assert served[:, : cfg.image_feature_dim].any() and served[:, cfg.flag_columns].all()


def test_identical_utterance_for_a_real_voice(trainer_side, service_side, tmp_path):
    """The audio head's input: what the trainer caches for a RAVDESS recording (the hand-made
    statistics, and the speech encoder's states of every layer, pooled, the build's layers
    taken out) is what the service computes for the same file through the bundle's truncated
    encoder."""
    cfg = trainer_side[0]
    flac = corpus_dir("ravdess") / "Actor_02" / "03-01-04-01-02-02-02.flac"
    sample = Sample(path=flac, label="sad", speaker="ravdess:02", corpus="ravdess", modality="audio")
    trained = frames_utterance(frame_features(sample, cfg, FeatureCache(tmp_path / "cache")), cfg)
    bundle, limits = service_side
    served = utterance_of(clip_features(decode_clip(flac, bundle.config, limits), bundle.config, bundle).sequence,
                          bundle.config)
    hand = cfg.hand_utterance_dim
    assert served.shape == trained.shape == (cfg.utterance_dim,) and cfg.voice_utterance_dim > 0
    np.testing.assert_array_equal(trained[:hand], served[:hand])
    np.testing.assert_allclose(trained[hand:], served[hand:], atol=2e-5, rtol=0)


def test_identical_audio_frames_for_the_same_audio(trainer_side, service_side, tmp_path):
    clip = make_video(tmp_path / "a.mp4", seconds=2)
    cfg = trainer_side[0]
    sample = Sample(path=clip, label="neutral", speaker="x:1", corpus="x", modality="audio")
    trained = frame_features(sample, cfg, FeatureCache(tmp_path / "cache"))
    cached = frame_features(sample, cfg, FeatureCache(tmp_path / "cache"))  # a cache hit returns the same
    bundle, limits = service_side
    served, times = decode_clip(clip, bundle.config, limits, detector=bundle.face_detector).audio.frame_features(
        bundle.config)
    assert len(served) > 100
    np.testing.assert_array_equal(trained.features, served)
    np.testing.assert_array_equal(cached.features, served)
    np.testing.assert_array_equal(trained.times, times)
