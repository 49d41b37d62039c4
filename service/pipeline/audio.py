"""Audio features (paper Alg. 1): peak normalisation and MFCC frames, computed in a
stream so that memory does not grow with the length of the clip.

The signal is never held whole. Blocks go through an `AudioAccumulator`, which keeps
the mel power spectrum of the *raw* signal (40 floats per 10 ms) and the peak of each
hop. Peak normalisation is applied afterwards, in the mel domain: the mel power of
y / p is mel(y) / p², so any stretch of the track (the clip, or one timeline segment)
is normalised by its own peak without decoding it again. The result matches
`librosa.feature.mfcc(y / peak, center=True)` on the whole signal to float rounding.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import librosa
import numpy as np

from . import audio_frames
from .config import PipelineConfig

# Below this peak the track is treated as silent: normalising it would only amplify noise.
SILENCE_PEAK = 1e-4
_TOP_DB = 80.0            # librosa's power_to_db default, as its mfcc uses
_CHUNK_FRAMES = 6000      # 60 s of frames per step of the MFCC computation


@lru_cache(maxsize=4)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


@dataclass
class AudioTrack:
    """Mel power frames of a (stretch of a) signal, before normalisation."""

    mel: np.ndarray          # float32 [n_frames, n_mels]; frame i is centred on sample i * hop
    hop_peaks: np.ndarray    # float32 [n_frames]: max |x| over the hop starting at frame i's centre
    n_samples: int
    t0: float                # time of frame 0 on the caller's clock (seconds)
    # Scale-free per-frame quantities (audio_frames.RAW_NAMES), kept when the config asks
    # for rich frame features: float32 [n_frames, 8], else None.
    raw: np.ndarray | None = None

    def slice(self, start_s: float, end_s: float, cfg: PipelineConfig) -> "AudioTrack":
        """Frames centred in [start, end), on a clock that starts at `start`."""
        fps = cfg.sample_rate / cfg.hop_length
        a = max(0, int(np.ceil((start_s - self.t0) * fps - 1e-9)))
        b = max(a, min(len(self.mel), int(np.ceil((end_s - self.t0) * fps - 1e-9))))
        return AudioTrack(self.mel[a:b], self.hop_peaks[a:b], (b - a) * cfg.hop_length,
                          self.t0 + a / fps - start_s, None if self.raw is None else self.raw[a:b])

    @property
    def peak(self) -> float:
        return float(self.hop_peaks.max()) if self.hop_peaks.size else 0.0

    def is_silent(self) -> bool:
        return self.peak < SILENCE_PEAK

    def mfcc(self, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
        """MFCC of the peak-normalised stretch and frame times; empty if silent or too short.

        Equal to librosa's `mfcc(S=power_to_db(mel))`, computed `_CHUNK_FRAMES` frames at a
        time so a long track needs no whole-length temporaries; power_to_db's floor (80 dB
        under the loudest bin) is taken from the whole stretch first.
        """
        if self.n_samples < cfg.win_length or self.is_silent() or len(self.mel) == 0:
            return np.zeros((0, cfg.n_mfcc), np.float32), np.zeros(0)
        peak = np.float32(self.peak)
        scale = peak * peak
        floor_db = librosa.power_to_db(np.array([self.mel.max() / scale], np.float32))[0] - _TOP_DB
        out = np.empty((len(self.mel), cfg.n_mfcc), np.float32)
        for a in range(0, len(self.mel), _CHUNK_FRAMES):
            log_mel = librosa.power_to_db(self.mel[a:a + _CHUNK_FRAMES].T / scale, top_db=None)
            out[a:a + _CHUNK_FRAMES] = librosa.feature.mfcc(S=np.maximum(log_mel, floor_db), n_mfcc=cfg.n_mfcc).T
        times = self.t0 + np.arange(len(self.mel)) * cfg.hop_length / cfg.sample_rate
        return out, times


    def usable(self, cfg: PipelineConfig) -> bool:
        return self.n_samples >= cfg.win_length and not self.is_silent() and len(self.mel) > 0

    def frame_features(self, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
        """The audio autoencoder's input per frame and the frame times, as the config says:
        13 MFCC (`audio_features="mfcc"`, the paper's) or log-mel + spectral shape + energy
        + pitch/voicing with deltas (`"rich"`). Empty if silent or too short."""
        if cfg.audio_features == "mfcc":
            return self.mfcc(cfg)
        if cfg.audio_features != "rich":
            raise ValueError(f"unknown audio_features {cfg.audio_features!r}")
        dim = audio_dim(cfg)
        if not self.usable(cfg):
            return np.zeros((0, dim), np.float32), np.zeros(0)
        if self.raw is None:
            raise ValueError("this track was accumulated without rich frame features")
        feats = audio_frames.frame_matrix(self.mel, self.raw, self.peak)
        return feats, self.t0 + np.arange(len(self.mel)) * cfg.hop_length / cfg.sample_rate

    def speech_active(self, cfg: PipelineConfig) -> np.ndarray:
        """Speech-active frames (energy gate on the mel energy, `speech_gate_db`; all frames
        when the gate is off): bool [n_frames], empty when `frame_features` is."""
        if not self.usable(cfg):
            return np.zeros(0, bool)
        energy = audio_frames.to_db(self.mel.sum(axis=1), self.peak ** 2)
        return audio_frames.speech_active(energy, cfg.speech_gate_db)


def audio_dim(cfg: PipelineConfig) -> int:
    """Width of a frame of the autoencoder's input under `cfg`."""
    assert cfg.audio_frame_dim == (cfg.n_mfcc if cfg.audio_features == "mfcc"
                                   else 2 * (cfg.n_mels + len(audio_frames.SCALAR_NAMES)))
    return cfg.audio_frame_dim


class AudioAccumulator:
    """Feed float32 blocks in order; `finish()` returns the `AudioTrack` of the whole signal.

    Frames follow librosa's `center=True` with zero padding: n_fft/2 zeros before the
    first sample and after the last, 1 + n_samples // hop frames.
    """

    def __init__(self, cfg: PipelineConfig):
        self.cfg = cfg
        self.basis = _mel_basis(cfg.sample_rate, cfg.n_fft, cfg.n_mels)
        self.pending = np.zeros(cfg.n_fft // 2, np.float32)   # samples not yet consumed by a frame
        self.peak_tail = np.zeros(0, np.float32)               # |x| not yet grouped into a whole hop
        self.mel: list[np.ndarray] = []
        self.peaks: list[np.ndarray] = []
        self.raw: list[np.ndarray] | None = [] if cfg.audio_features != "mfcc" else None
        self.n_samples = 0

    def feed(self, block: np.ndarray) -> None:
        block = np.asarray(block, np.float32)
        self.n_samples += len(block)
        hop = self.cfg.hop_length
        mags = np.concatenate([self.peak_tail, np.abs(block)])
        whole = len(mags) // hop * hop
        self.peaks.append(mags[:whole].reshape(-1, hop).max(axis=1))
        self.peak_tail = mags[whole:]
        self.pending = np.concatenate([self.pending, block])
        self._frames()

    def _frames(self) -> None:
        cfg = self.cfg
        if len(self.pending) < cfg.n_fft:
            return
        n = 1 + (len(self.pending) - cfg.n_fft) // cfg.hop_length
        used = (n - 1) * cfg.hop_length + cfg.n_fft
        spec = librosa.stft(self.pending[:used], n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                            win_length=cfg.win_length, center=False)
        power = np.abs(spec) ** 2
        self.mel.append(np.ascontiguousarray((self.basis @ power).T, dtype=np.float32))
        if self.raw is not None:
            frames = audio_frames.frames_of(self.pending[:used], cfg.n_fft, cfg.hop_length)
            self.raw.append(audio_frames.raw_frame_features(frames, power, cfg.sample_rate))
        self.pending = self.pending[n * cfg.hop_length:]

    def finish(self) -> AudioTrack:
        cfg = self.cfg
        self.pending = np.concatenate([self.pending, np.zeros(cfg.n_fft // 2, np.float32)])
        self._frames()
        if self.peak_tail.size:
            self.peaks.append(np.array([self.peak_tail.max()], np.float32))
        mel = np.concatenate(self.mel) if self.mel else np.zeros((0, cfg.n_mels), np.float32)
        peaks = np.concatenate(self.peaks) if self.peaks else np.zeros(0, np.float32)
        n_frames = 1 + self.n_samples // cfg.hop_length if self.n_samples else 0
        mel, peaks = mel[:n_frames], peaks[:n_frames]
        if len(peaks) < len(mel):  # the last frame's hop starts past the end of the signal
            peaks = np.concatenate([peaks, np.zeros(len(mel) - len(peaks), np.float32)])
        raw = None
        if self.raw is not None:
            width = len(audio_frames.RAW_NAMES)
            raw = (np.concatenate(self.raw) if self.raw else np.zeros((0, width), np.float32))[:n_frames]
        return AudioTrack(mel, peaks, self.n_samples, 0.0, raw)


def track_of(signal: np.ndarray, cfg: PipelineConfig) -> AudioTrack:
    acc = AudioAccumulator(cfg)
    if len(signal):
        acc.feed(signal)
    return acc.finish()


def mfcc_frames(signal: np.ndarray, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC per frame of the peak-normalised signal: (float32 [n_frames, n_mfcc], times [n_frames])."""
    return track_of(signal, cfg).mfcc(cfg)


def warm_up(cfg: PipelineConfig) -> None:
    """librosa compiles its kernels with numba on first use (≈10 s cold): do it at start-up."""
    t = np.arange(cfg.sample_rate, dtype=np.float32) / cfg.sample_rate
    mfcc_frames(np.sin(2 * np.pi * 220 * t), cfg)
