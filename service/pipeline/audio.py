"""Audio features (paper Alg. 1): peak normalisation and MFCC frames."""
from __future__ import annotations

import librosa
import numpy as np

from .config import PipelineConfig

# Below this peak the track is treated as silent: normalising it would only amplify noise.
SILENCE_PEAK = 1e-4


def peak_normalise(signal: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(signal))) if signal.size else 0.0
    if peak < SILENCE_PEAK:
        return np.zeros_like(signal, dtype=np.float32)
    return (signal / peak).astype(np.float32)


def is_silent(signal: np.ndarray) -> bool:
    return signal.size == 0 or float(np.max(np.abs(signal))) < SILENCE_PEAK


def mfcc_frames(signal: np.ndarray, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC per frame of the peak-normalised signal.

    Returns (mfcc float32 [n_frames, n_mfcc], frame centre times in seconds [n_frames]).
    """
    y = peak_normalise(signal)
    if y.size < cfg.win_length:
        return np.zeros((0, cfg.n_mfcc), np.float32), np.zeros(0)
    m = librosa.feature.mfcc(
        y=y, sr=cfg.sample_rate, n_mfcc=cfg.n_mfcc, n_fft=cfg.n_fft, win_length=cfg.win_length,
        hop_length=cfg.hop_length, n_mels=cfg.n_mels, center=True,
    )
    frames = np.ascontiguousarray(m.T, dtype=np.float32)
    times = librosa.frames_to_time(np.arange(len(frames)), sr=cfg.sample_rate, hop_length=cfg.hop_length)
    return frames, times


def warm_up(cfg: PipelineConfig) -> None:
    """librosa compiles its kernels with numba on first use (≈10 s cold): do it at start-up."""
    t = np.arange(cfg.sample_rate, dtype=np.float32) / cfg.sample_rate
    mfcc_frames(np.sin(2 * np.pi * 220 * t), cfg)
