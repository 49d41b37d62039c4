"""The service computes MFCCs without librosa (no numba on the serving path); they must be
the features the shipped bundle was trained on: librosa's, to float rounding."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from service.pipeline import audio
from service.pipeline.config import PipelineConfig

pytestmark = pytest.mark.unit

CFG = PipelineConfig()


def librosa_mfcc(y: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """The reference: librosa's MFCC of the peak-normalised signal, as the bundle's docs define it."""
    librosa = pytest.importorskip("librosa")
    y = y / np.abs(y).max()
    return librosa.feature.mfcc(y=y, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft,
                                hop_length=cfg.hop_length, win_length=cfg.win_length, n_mels=cfg.n_mels).T


def signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    sr = CFG.sample_rate
    t = np.arange(int(2.3 * sr)) / sr
    chirp = np.sin(2 * np.pi * (100 + 900 * t) * t) * np.exp(-t)
    return {
        "noise": rng.normal(scale=0.1, size=sr).astype(np.float32),
        "chirp": (0.5 * chirp).astype(np.float32),
        # a loud start and near-silence after it: the 80 dB floor binds
        "burst": np.concatenate([rng.normal(size=sr // 4), 1e-6 * rng.normal(size=sr)]).astype(np.float32),
        "short": rng.normal(size=CFG.n_fft + 3).astype(np.float32),
    }


def test_mel_basis_equals_librosa():
    librosa = pytest.importorskip("librosa")
    for sr, n_fft, n_mels in [(16000, 512, 40), (16000, 400, 26), (22050, 2048, 128)]:
        ours = audio._mel_basis(sr, n_fft, n_mels)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        assert ours.dtype == ref.dtype
        np.testing.assert_array_equal(ours, ref)


def test_power_to_db_and_dct_equal_librosa():
    librosa = pytest.importorskip("librosa")
    rng = np.random.default_rng(1)
    power = (rng.random((40, 300)) ** 6).astype(np.float32)
    power[0, :5] = 0.0
    np.testing.assert_array_equal(audio.power_to_db(power), librosa.power_to_db(power, top_db=None))
    log_mel = librosa.power_to_db(power)
    np.testing.assert_array_equal(audio.mfcc_of_log_mel(log_mel, 13), librosa.feature.mfcc(S=log_mel, n_mfcc=13))


@pytest.mark.parametrize("name", list(signals()))
def test_streamed_mfcc_equals_librosa(name):
    y = signals()[name]
    ours, times = audio.mfcc_frames(y, CFG)
    ref = librosa_mfcc(y, CFG)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    # streamed in blocks vs librosa on the whole signal: float32 rounding only
    assert np.max(np.abs(ours - ref)) <= 1e-6 * float(np.abs(ref).max())


@pytest.mark.parametrize("name", list(signals()))
def test_same_features_as_the_librosa_based_service(name, monkeypatch):
    """The streamed path with librosa's functions put back (what the service ran before)
    gives bit-identical MFCCs: the shipped bundle sees exactly the features it was trained on."""
    librosa = pytest.importorskip("librosa")
    y = signals()[name]
    ours, _ = audio.mfcc_frames(y, CFG)
    audio._mel_basis.cache_clear()
    monkeypatch.setattr(audio, "_mel_basis", lambda sr, n_fft, n_mels: librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels).astype(np.float32))
    monkeypatch.setattr(audio, "_power_spectrum", lambda y, n_fft, hop, win: np.abs(librosa.stft(
        y, n_fft=n_fft, hop_length=hop, win_length=win, center=False)) ** 2)
    monkeypatch.setattr(audio, "power_to_db", lambda p: librosa.power_to_db(p, top_db=None))
    monkeypatch.setattr(audio, "mfcc_of_log_mel", lambda s, n: librosa.feature.mfcc(S=s, n_mfcc=n))
    before, _ = audio.mfcc_frames(y, CFG)
    np.testing.assert_array_equal(ours, before)


def test_stft_power_equals_librosa():
    librosa = pytest.importorskip("librosa")
    y = signals()["chirp"]
    ours = audio._power_spectrum(y, CFG.n_fft, CFG.hop_length, CFG.win_length)
    ref = np.abs(librosa.stft(y, n_fft=CFG.n_fft, hop_length=CFG.hop_length, win_length=CFG.win_length,
                              center=False)) ** 2
    np.testing.assert_array_equal(ours, ref)


def test_serving_path_imports_neither_librosa_nor_numba():
    code = ("import sys, numpy as np; from service.pipeline import audio, extract; "
            "from service.pipeline.config import PipelineConfig; import service.http.routes, service.http.app; "
            "audio.warm_up(PipelineConfig()); "
            "print(sorted(m for m in ('librosa', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
