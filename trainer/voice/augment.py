"""Training copies of a voice recording as another corpus, room or microphone would give it.

What differs between emotional-speech corpora and a user's recording, and what a model
trained on two studio corpora must not take for emotion: how the speech is framed (a crop of
it, silence around it, where it starts), its speed and the speaker's pitch, the room
(reverberation), the noise floor, the microphone's and the channel's band, and lossy coding
(the codec copies of `trainer.voice.features`). Each copy is drawn from a seeded generator, so
a copy is reproducible and cacheable; `describe` gives what was drawn.

All of it is numpy/scipy on the decoded 16 kHz signal; the copy then goes through the serving
code's feature path like any upload.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

FRAME_S = 0.010
SPEECH_DB = 30.0        # a 10 ms frame within this of the loudest counts as speech (framing)


@dataclass(frozen=True)
class Augment:
    """Probabilities and ranges of each change; a copy applies each with its probability."""

    crop_prob: float = 0.6              # a window of 1.5-3 s of the speech
    crop_s: tuple[float, float] = (1.5, 3.0)
    pad_prob: float = 0.3               # silence (or the noise floor) before and after
    pad_s: tuple[float, float] = (0.2, 2.0)
    speed_prob: float = 0.5             # resampled: tempo and pitch together
    speed: tuple[float, float] = (0.9, 1.1)
    pitch_prob: float = 0.4             # pitch alone, in semitones
    pitch_st: tuple[float, float] = (-2.0, 2.0)
    reverb_prob: float = 0.3
    rt60_s: tuple[float, float] = (0.2, 0.8)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 30.0)
    band_prob: float = 0.3              # telephone-like band limits
    gain_db: tuple[float, float] = (-20.0, 0.0)


def speech_span(x: np.ndarray, sr: int, db: float = SPEECH_DB) -> tuple[int, int]:
    """[start, stop) samples from the first to the last 10 ms frame within `db` of the loudest."""
    hop = max(1, int(FRAME_S * sr))
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    rms = np.sqrt((x[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(1) + 1e-20)
    level = 20 * np.log10(rms)
    on = np.flatnonzero(level >= level.max() - db)
    return int(on[0] * hop), int(min(len(x), (on[-1] + 1) * hop))


def crop(x: np.ndarray, sr: int, rng: np.random.Generator, span_s: tuple[float, float]) -> np.ndarray:
    a, b = speech_span(x, sr)
    length = int(rng.uniform(*span_s) * sr)
    if b - a <= length:
        return x[a:b]
    start = a + int(rng.integers(0, b - a - length + 1))
    return x[start:start + length]


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Played `factor` times faster (tempo and pitch both), by polyphase resampling."""
    up, down = 100, int(round(100 * factor))
    return sps.resample_poly(x, up, down).astype(np.float32) if down != up else x


def shift_pitch(x: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """Pitch moved by `semitones`, tempo kept (librosa's phase vocoder + resampling)."""
    import librosa

    return librosa.effects.pitch_shift(x, sr=sr, n_steps=semitones, res_type="soxr_hq").astype(np.float32)


def reverberate(x: np.ndarray, sr: int, rng: np.random.Generator, rt60_s: float) -> np.ndarray:
    """Convolved with a synthetic room response: exponentially decaying noise (RT60 `rt60_s`),
    a direct path first; the wet level drawn between a small room and a hall."""
    n = int(rt60_s * sr)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)
    ir[0] = 0.0
    ir /= np.sqrt((ir ** 2).sum()) + 1e-12
    direct = np.zeros(n)
    direct[0] = 1.0
    wet = rng.uniform(0.3, 1.0)
    y = sps.fftconvolve(x, direct + wet * ir)[: len(x)]
    return (y / (np.abs(y).max() + 1e-9) * (np.abs(x).max() + 1e-9)).astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a random spectral slope (white to brown-ish), unit RMS."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.maximum(np.arange(n // 2 + 1), 1.0)
    spec *= f ** (-rng.uniform(0.0, 1.0))
    y = np.fft.irfft(spec, n)
    return y / (np.sqrt((y ** 2).mean()) + 1e-12)


def add_noise(x: np.ndarray, sr: int, rng: np.random.Generator, snr_db: float) -> np.ndarray:
    """Noise at `snr_db` under the speech's power (measured over its speech frames)."""
    a, b = speech_span(x, sr)
    power = float((x[a:b].astype(np.float64) ** 2).mean()) if b > a else float((x ** 2).mean())
    noise = coloured_noise(len(x), rng) * np.sqrt(power / 10 ** (snr_db / 10))
    return (x + noise).astype(np.float32)


def band_limit(x: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A channel's band: high-pass at 100-400 Hz, low-pass at 3.4-7 kHz (4th-order Butterworth)."""
    lo, hi = rng.uniform(100, 400), min(rng.uniform(3400, 7000), 0.45 * sr)
    sos = sps.butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos")
    return sps.sosfilt(sos, x).astype(np.float32)


def pad(x: np.ndarray, sr: int, rng: np.random.Generator, pad_s: tuple[float, float]) -> np.ndarray:
    before, after = (np.zeros(int(rng.uniform(*pad_s) * sr), np.float32) for _ in range(2))
    return np.concatenate([before, x.astype(np.float32), after])


def reframed(x: np.ndarray, sr: int, how: str, seed: int = 0) -> np.ndarray:
    """The framing test's variants of a recording (the same speech, framed otherwise):
    `trim2s` starts at the first word and lasts 2.0 s; `cut` a seeded 1.5-3 s window inside
    the speech; `pad` the speech with seeded 0.5-2 s of silence before and after; `late` the
    speech at a seeded 1-3 s offset in 6 s of silence."""
    rng = np.random.default_rng(seed)
    a, b = speech_span(x, sr)
    if how == "trim2s":
        return x[a:a + int(2.0 * sr)]
    if how == "cut":
        return crop(x, sr, rng, (1.5, 3.0))
    if how == "pad":
        return pad(x[a:b], sr, rng, (0.5, 2.0))
    if how == "late":
        out = np.zeros(max(int(6.0 * sr), int(3.0 * sr) + b - a), np.float32)
        start = int(rng.uniform(1.0, 3.0) * sr)
        out[start:start + b - a] = x[a:b]
        return out
    raise ValueError(f"unknown framing {how!r}")


def augmented(x: np.ndarray, sr: int, seed: int, aug: Augment = Augment()) -> np.ndarray:
    """One training copy of the signal `x` (float32, mono, `sr` Hz), drawn with `seed`."""
    rng = np.random.default_rng(seed)
    on = {k: rng.random() < p for k, p in (("crop", aug.crop_prob), ("speed", aug.speed_prob),
                                          ("pitch", aug.pitch_prob), ("reverb", aug.reverb_prob),
                                          ("band", aug.band_prob), ("pad", aug.pad_prob),
                                          ("noise", aug.noise_prob))}
    y = np.asarray(x, np.float32)
    if on["crop"]:
        y = crop(y, sr, rng, aug.crop_s)
    if on["speed"]:
        y = change_speed(y, rng.uniform(*aug.speed))
    if on["pitch"]:
        y = shift_pitch(y, sr, rng.uniform(*aug.pitch_st))
    if on["reverb"]:
        y = reverberate(y, sr, rng, rng.uniform(*aug.rt60_s))
    if on["band"]:
        y = band_limit(y, sr, rng)
    if on["pad"]:
        y = pad(y, sr, rng, aug.pad_s)
    if on["noise"]:  # after padding: the noise floor runs under the silence too, as in a room
        y = add_noise(y, sr, rng, rng.uniform(*aug.snr_db))
    y = y * np.float32(10 ** (rng.uniform(*aug.gain_db) / 20))
    return np.clip(y, -1.0, 1.0).astype(np.float32)
