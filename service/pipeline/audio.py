"""Audio features (paper Alg. 1): peak normalisation and MFCC frames, computed in a
stream so that memory does not grow with the length of the clip.

The signal is never held whole. Blocks go through an `AudioAccumulator`, which keeps
the mel power spectrum of the *raw* signal (40 floats per 10 ms) and the peak of each
hop. Peak normalisation is applied afterwards, in the mel domain: the mel power of
y / p is mel(y) / p², so any stretch of the track (the clip, or one timeline segment)
is normalised by its own peak without decoding it again. The result matches
`librosa.feature.mfcc(y / peak, center=True)` on the whole signal to float rounding.

librosa itself is not imported here: importing it loads numba, and its first MFCC compiles
kernels (seconds on a small CPU, ~15 s under load), which kept a fresh service from being
ready quickly. The few pieces it supplied (mel filter bank, windowed STFT, power_to_db and
the DCT) are written below with numpy/scipy, operation for operation as librosa 0.11 does
them; tests/test_audio_features.py proves the features equal librosa's.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft
import scipy.signal

from service.pipeline import audio_frames
from service.pipeline.config import PipelineConfig

# Below this peak the track is treated as silent: normalising it would only amplify noise.
SILENCE_PEAK = 1e-4
_TOP_DB = 80.0            # librosa's power_to_db default, as its mfcc uses
_AMIN = 1e-10             # librosa's power_to_db floor on power
_CHUNK_FRAMES = 6000      # 60 s of frames per step of the MFCC computation


# Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above; the
# constants are computed as librosa computes them so every float rounds the same way.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = (_MIN_LOG_HZ - 0.0) / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: float) -> float:
    mel = (hz - 0.0) / _F_SP
    return _MIN_LOG_MEL + np.log(hz / _MIN_LOG_HZ) / _LOGSTEP if hz >= _MIN_LOG_HZ else mel


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    freqs = 0.0 + _F_SP * mels
    log_t = mels >= _MIN_LOG_MEL
    freqs[log_t] = _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels[log_t] - _MIN_LOG_MEL))
    return freqs


@lru_cache(maxsize=4)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """`librosa.filters.mel(sr, n_fft, n_mels)`: Slaney mel scale, Slaney area normalisation,
    0 Hz to Nyquist, float32 [n_mels, 1 + n_fft // 2]."""
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(float(sample_rate) / 2), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


@lru_cache(maxsize=4)
def _fft_window(n_fft: int, win_length: int) -> np.ndarray:
    """librosa's STFT window: periodic Hann of `win_length`, zero-padded to `n_fft` centred,
    float64 [n_fft, 1]."""
    window = scipy.signal.get_window("hann", win_length, fftbins=True)
    lpad = (n_fft - win_length) // 2
    return np.pad(window, (lpad, n_fft - win_length - lpad))[:, np.newaxis]


def _power_spectrum(y: np.ndarray, n_fft: int, hop_length: int, win_length: int, inner: int | None = None) -> np.ndarray:
    """|librosa.stft(y, center=False)|² as float32 [1 + n_fft // 2, n_frames]. With `inner`
    (< n_fft): the spectrum of each frame's centred `inner` samples, Hann-windowed and
    transformed with n_fft = inner, on the same frame centres [1 + inner // 2, n_frames]."""
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop_length].T
    if inner is not None:
        lpad = (n_fft - inner) // 2
        frames, n_fft, win_length = frames[lpad:lpad + inner], inner, inner
    spec = scipy.fft.rfft(_fft_window(n_fft, win_length) * frames, axis=0).astype(np.complex64)
    return np.abs(spec) ** 2


def power_to_db(power: np.ndarray) -> np.ndarray:
    """`librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)`."""
    log_spec = 10.0 * np.log10(np.maximum(_AMIN, power))
    log_spec -= 10.0 * np.log10(np.maximum(_AMIN, 1.0))  # in place: the dtype stays float32
    return log_spec


def mfcc_of_log_mel(log_mel: np.ndarray, n_mfcc: int) -> np.ndarray:
    """`librosa.feature.mfcc(S=log_mel, n_mfcc)`: orthonormal DCT-II over the mel axis, no lifter."""
    return scipy.fft.dct(log_mel, axis=-2, type=2, norm="ortho")[..., :n_mfcc, :]


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
    # The speech encoder's mel power frames (cfg.voice_n_fft, cfg.voice_n_mels: Whisper's),
    # on the same frame centres, when the config has a speech encoder: float32 [n_frames, 80].
    voice_mel: np.ndarray | None = None

    def slice(self, start_s: float, end_s: float, cfg: PipelineConfig) -> "AudioTrack":
        """Frames centred in [start, end), on a clock that starts at `start`."""
        fps = cfg.sample_rate / cfg.hop_length
        a = max(0, int(np.ceil((start_s - self.t0) * fps - 1e-9)))
        b = max(a, min(len(self.mel), int(np.ceil((end_s - self.t0) * fps - 1e-9))))
        return AudioTrack(self.mel[a:b], self.hop_peaks[a:b], (b - a) * cfg.hop_length,
                          self.t0 + a / fps - start_s, None if self.raw is None else self.raw[a:b],
                          None if self.voice_mel is None else self.voice_mel[a:b])

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
        floor_db = power_to_db(np.array([self.mel.max() / scale], np.float32))[0] - _TOP_DB
        out = np.empty((len(self.mel), cfg.n_mfcc), np.float32)
        for a in range(0, len(self.mel), _CHUNK_FRAMES):
            log_mel = power_to_db(self.mel[a:a + _CHUNK_FRAMES].T / scale)
            out[a:a + _CHUNK_FRAMES] = mfcc_of_log_mel(np.maximum(log_mel, floor_db), cfg.n_mfcc).T
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
        self.voice_mel: list[np.ndarray] | None = [] if cfg.voice_encoder else None
        if cfg.voice_encoder and not cfg.voice_n_fft <= cfg.n_fft:
            raise ValueError("the speech encoder's n_fft must not exceed the pipeline's")
        self.voice_basis = _mel_basis(cfg.sample_rate, cfg.voice_n_fft, cfg.voice_n_mels) if cfg.voice_encoder else None
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
        power = _power_spectrum(self.pending[:used], cfg.n_fft, cfg.hop_length, cfg.win_length)
        self.mel.append(np.ascontiguousarray((self.basis @ power).T, dtype=np.float32))
        if self.raw is not None:
            frames = audio_frames.frames_of(self.pending[:used], cfg.n_fft, cfg.hop_length)
            self.raw.append(audio_frames.raw_frame_features(frames, power, cfg.sample_rate))
        if self.voice_mel is not None:
            voice = _power_spectrum(self.pending[:used], cfg.n_fft, cfg.hop_length, cfg.win_length, cfg.voice_n_fft)
            self.voice_mel.append(np.ascontiguousarray((self.voice_basis @ voice).T, dtype=np.float32))
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
        voice_mel = None
        if self.voice_mel is not None:
            voice_mel = (np.concatenate(self.voice_mel) if self.voice_mel
                         else np.zeros((0, cfg.voice_n_mels), np.float32))[:n_frames]
        return AudioTrack(mel, peaks, self.n_samples, 0.0, raw, voice_mel)


def track_of(signal: np.ndarray, cfg: PipelineConfig) -> AudioTrack:
    acc = AudioAccumulator(cfg)
    if len(signal):
        acc.feed(signal)
    return acc.finish()


def mfcc_frames(signal: np.ndarray, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC per frame of the peak-normalised signal: (float32 [n_frames, n_mfcc], times [n_frames])."""
    return track_of(signal, cfg).mfcc(cfg)


def warm_up(cfg: PipelineConfig) -> None:
    """First call: builds the cached mel basis and window, and loads scipy's FFT plans."""
    t = np.arange(cfg.sample_rate, dtype=np.float32) / cfg.sample_rate
    mfcc_frames(np.sin(2 * np.pi * 220 * t), cfg)
