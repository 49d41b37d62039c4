"""Rich audio frame features, the speech gate and utterance statistics: the
streamed service path and the trainer compute identical features."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import corpus_dir

from service.pipeline import audio, audio_frames, fusion, media
from service.pipeline.config import MediaLimits, PipelineConfig
from service.pipeline.extract import decode_clip
from trainer.cache import FeatureCache
from trainer.data import Sample
from trainer.voice.features import _direct_blocks, frame_features

RICH = PipelineConfig(audio_features="rich", n_mels=64, speech_gate_db=35.0)
SR = RICH.sample_rate


def _ravdess(n: int = 1) -> list:
    return sorted((corpus_dir("ravdess") / "Actor_03").glob("*.flac"))[:n]


def _tone(f0: float, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    # a voice-like harmonic tone
    return (amp * sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))).astype(np.float32)


def test_rich_frame_layout_and_default_config_is_the_papers():
    cfg = PipelineConfig()
    assert cfg.audio_features == "mfcc" and cfg.speech_gate_db == 0 and cfg.utterance_dim == 0
    assert audio.audio_dim(cfg) == 13 and audio.audio_dim(RICH) == 144
    assert len(audio_frames.rich_names(64)) == 144
    feats, times = audio.track_of(_tone(150), RICH).frame_features(RICH)
    assert feats.shape == (SR // RICH.hop_length + 1, 144) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and len(times) == len(feats)


def test_service_stream_equals_trainer_features_exactly(tmp_path):
    """The service decodes with ffmpeg in 10 s blocks (decode_clip); the trainer reads the
    corpus file in process in the same blocks: bit-identical frames, times and gate."""
    path = _ravdess()[0]
    limits = MediaLimits(allowed_formats=MediaLimits().allowed_formats + ("flac",))
    served = decode_clip(path, RICH, limits).audio
    feats, times = served.frame_features(RICH)
    trained = frame_features(Sample(path, "neutral", "ravdess:03", "ravdess", "audio"), RICH, FeatureCache(tmp_path))
    np.testing.assert_array_equal(trained.features, feats)
    np.testing.assert_array_equal(trained.times, times)
    np.testing.assert_array_equal(trained.active(RICH), served.speech_active(RICH))
    again = frame_features(Sample(path, "neutral", "ravdess:03", "ravdess", "audio"), RICH, FeatureCache(tmp_path))
    np.testing.assert_array_equal(again.features, feats)   # a cache hit returns the same


def test_in_process_flac_read_is_bit_identical_to_ffmpeg():
    for path in _ravdess(3) + sorted((corpus_dir("tess") / "OAF_angry").glob("*.flac"))[:2]:
        direct = np.concatenate(_direct_blocks(path, SR))
        np.testing.assert_array_equal(direct, media.decode_audio(path, SR, 30.0, formats=None))


@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_stream_matches_whole_signal(seed):
    """Any block sizes (a long clip streamed by the service) give the whole signal's
    features; only the mel/spectral matrix products are blocked differently by BLAS
    (differences of float rounding, far below any decision)."""
    signal = np.concatenate([np.zeros(SR // 2, np.float32), _tone(180, 1.5), 0.01 * _tone(90, 0.7)])
    whole = audio.track_of(signal, RICH)
    acc = audio.AudioAccumulator(RICH)
    rng = np.random.default_rng(seed)
    i = 0
    while i < len(signal):
        n = int(rng.integers(1, 7000))
        acc.feed(signal[i:i + n])
        i += n
    chunked = acc.finish()
    a, ta = whole.frame_features(RICH)
    b, tb = chunked.frame_features(RICH)
    np.testing.assert_array_equal(ta, tb)
    np.testing.assert_allclose(a, b, atol=2e-3, rtol=1e-4)
    np.testing.assert_array_equal(whole.speech_active(RICH), chunked.speech_active(RICH))


@pytest.mark.parametrize("f0", [90.0, 150.0, 240.0, 400.0])
def test_yin_pitch_of_a_harmonic_tone(f0):
    frames = audio_frames.frames_of(_tone(f0, 0.5), RICH.n_fft, RICH.hop_length)
    est, periodicity = audio_frames.yin(frames, SR)
    assert np.median(est) == pytest.approx(f0, rel=0.01)
    assert np.median(periodicity) > 0.9
    noise = np.random.default_rng(0).standard_normal(SR // 2).astype(np.float32)
    _, p_noise = audio_frames.yin(audio_frames.frames_of(noise, RICH.n_fft, RICH.hop_length), SR)
    assert np.median(p_noise) < audio_frames.VOICED_PERIODICITY


def test_features_do_not_depend_on_level():
    sig = np.concatenate([_tone(200, 0.6), 0.3 * _tone(120, 0.6)])
    loud, _ = audio.track_of(sig, RICH).frame_features(RICH)
    quiet, _ = audio.track_of(0.1 * sig, RICH).frame_features(RICH)
    np.testing.assert_allclose(loud, quiet, atol=2e-3)


def test_silence_at_the_ends_does_not_change_gated_statistics():
    voice = np.concatenate([_tone(200, 0.8), _tone(140, 0.8)])
    padded = np.concatenate([np.full(SR, 1e-4, np.float32), voice, np.full(SR, 1e-4, np.float32)])
    stats = []
    for sig in (voice, padded):
        track = audio.track_of(sig, RICH)
        feats, _ = track.frame_features(RICH)
        active = track.speech_active(RICH)
        stats.append(audio_frames.utterance_stats(feats[:, :72], active))
        if sig is padded:
            assert active.sum() < 0.55 * len(active)   # the two seconds of silence are gated out
    # the 5 frames of hang-over on each side are the only difference: small beside what
    # two seconds of silence do to statistics over every frame
    ungated = audio_frames.utterance_stats(audio.track_of(padded, RICH).frame_features(RICH)[0][:, :72])
    assert np.abs(stats[1] - stats[0]).mean() < 0.2 * np.abs(ungated - stats[0]).mean()


def test_window_stats_skip_silent_codes_and_utterance_block():
    times = np.arange(300) * 0.01
    codes = np.zeros((300, 4), np.float32)
    codes[100:200] = 1.0                                   # speech in the middle second
    active = np.zeros(300, bool)
    active[100:200] = True
    centres = np.array([0.5, 1.5, 2.5])
    gated, present = fusion.audio_window_stats(codes, times, centres, 1.0, active)
    assert present.all() and np.allclose(gated[:, :4], 1.0)   # silent windows take the nearest speech
    plain, _ = fusion.audio_window_stats(codes, times, centres, 1.0)
    assert np.allclose(plain[0, :4], 0.0)
    cfg = PipelineConfig(audio_code_dim=4, audio_utterance_stats="mean,std,p50", image_feature_dim=8, k_summary=3)
    lay = cfg.layout()
    assert lay["audio_utterance"] == [16, 28] and lay["flags"] == [28, 31] and cfg.step_dim == 31
    utt = audio_frames.utterance_stats(codes, active, cfg.utterance_stats)
    seq = fusion.build_sequence(cfg, None, np.zeros(3, bool), gated, present, utt)
    assert np.allclose(seq[:, 16:20], 1.0) and np.allclose(seq[:, 20:28], [0, 0, 0, 0, 1, 1, 1, 1])
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    assert PipelineConfig().layout() == {"image": [0, 2048], "audio_mean": [2048, 2080],
                                         "audio_std": [2080, 2112], "flags": [2112, 2115]}


@pytest.mark.slow
def test_encoder_and_utterance_classifier_export_to_onnx(tmp_path):
    """The trainer's audio encoder (standardisation inside) and utterance classifier go
    through export_onnx; the pipeline's utterance statistics of the ONNX codes feed the
    classifier."""
    from service.model.bundle import open_session
    from trainer.export import export_onnx
    from trainer.voice.features import train_audio_encoder, train_utterance_classifier, utterance_vector

    cfg = replace(RICH, audio_code_dim=8, audio_utterance_stats="mean,std,p50")
    rng = np.random.default_rng(0)
    frames = (rng.standard_normal((600, audio.audio_dim(cfg))) * 5 + 3).astype(np.float32)
    enc = train_audio_encoder(frames, cfg, epochs=1)
    e = export_onnx(enc, tmp_path / "enc.onnx", sample_inputs=frames[:32], input_name="frames", output_name="code")
    codes = open_session(e.path, "audio_encoder", ["CPUExecutionProvider"], 1).run(frames)
    assert codes.shape == (600, 8)
    x = np.stack([utterance_vector(codes[i:i + 60], np.ones(60, bool), cfg) for i in range(0, 600, 60)])
    assert x.shape == (10, cfg.utterance_dim)
    clf = train_utterance_classifier(x, np.arange(10) % 7, 7, epochs=1)
    c = export_onnx(clf, tmp_path / "clf.onnx", sample_inputs=x, input_name="utterance", output_name="probs")
    probs = open_session(c.path, "utterance", ["CPUExecutionProvider"], 1).run(x)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_long_tracks_are_computed_in_chunks_with_the_same_values():
    """frame_matrix and utterance_stats work a block at a time (memory of a 10-minute clip):
    the values must not depend on the block size, deltas across block edges included."""
    from service.pipeline import audio_frames as af

    rng = np.random.default_rng(3)
    n = 1000
    mel = (rng.random((n, 16)) ** 4).astype(np.float32)
    raw = (rng.random((n, len(af.RAW_NAMES))) * 300).astype(np.float32)
    whole = af.frame_matrix(mel, raw, 0.7, chunk=n)
    assert np.array_equal(whole, af.frame_matrix(mel, raw, 0.7, chunk=37))
    assert np.array_equal(whole[:, whole.shape[1] // 2:], af.deltas(whole[:, :whole.shape[1] // 2]))
    active = rng.random(n) > 0.4
    assert np.array_equal(af.utterance_stats(whole, active, block=whole.shape[1]),
                          af.utterance_stats(whole, active, block=5))


def test_an_mp3_round_trip_is_decoded_as_an_upload_and_cached(tmp_path):
    """The audio head's codec copies: LAME at 16 kHz low-passes near 7.3 kHz, so the top mel
    band of the copy loses energy (about 11 dB over the voiced frames) while the bands of the
    voice stay put; the second call reads the cache instead of running ffmpeg again."""
    from trainer.voice.features import codec_frame_features

    path = _ravdess(1)[0]
    sample = Sample(path=path, label="neutral", speaker="ravdess:03", corpus="ravdess", modality="audio")
    cache = FeatureCache(tmp_path / "cache")
    orig = frame_features(sample, RICH, FeatureCache(None))
    coded = codec_frame_features(sample, RICH, cache, "mp3_64k")
    n = min(len(orig.features), len(coded.features))
    assert abs(len(orig.features) - len(coded.features)) < 20  # the encoder's padding at most
    voiced = orig.active(RICH)[:n]
    drop = (orig.features[:n, :RICH.n_mels] - coded.features[:n, :RICH.n_mels])[voiced].mean(axis=0)  # log-mel dB
    assert np.abs(drop[5:60]).max() < 1.0 and drop[-1] > 5.0, drop.round(1)
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert len(files) == 1
    again = codec_frame_features(sample, RICH, cache, "mp3_64k")
    assert np.array_equal(again.features, coded.features) and list((tmp_path / "cache").rglob("*.npz")) == files


def test_speech_gate_fits_a_stretch_shorter_than_its_hangover():
    """A track of a few frames (a live window's first 50 ms, a file with a blip of audio) gets
    one mask value per frame; longer stretches are unchanged by how it is computed."""
    from service.pipeline.audio_frames import speech_active

    rng = np.random.default_rng(0)
    for n in (1, 3, 6, 10, 11, 12, 40):
        energy = rng.normal(-30, 20, n)
        active = speech_active(energy, 35.0)
        assert active.shape == (n,)
        if n >= 11:
            same = np.convolve((energy >= energy.max() - 35.0).astype(float), np.ones(11), mode="same") > 0
            assert (active == same).all()
