"""Rich audio frame features in plain numpy: spectral shape, energy, pitch and
voicing per frame, plus the speech-activity gate and the statistics over speech-active
frames. No librosa and no numba on this path.

The work splits in two, as the mel path does (`audio.AudioAccumulator`):

1. `raw_frame_features(frames, power, ...)`, while the signal streams in: per STFT frame,
   quantities that peak normalisation does not change (spectral centroid, bandwidth,
   roll-off, flatness, zero-crossing rate, YIN pitch and periodicity) plus the frame's raw
   power, which it scales by 1/peak².
2. `frame_matrix(...)`, once a stretch (clip or timeline segment) is known: log-mel and
   log-energy of the peak-normalised stretch, the scale-free columns, and deltas over time.

So a stream fed in any block sizes and the whole signal give identical features.
"""
from __future__ import annotations

import numpy as np

# Columns of `raw_frame_features` (the accumulator keeps these per frame).
RAW_NAMES = ("centroid_khz", "bandwidth_khz", "rolloff_khz", "flatness_log10", "zcr", "power",
             "f0_hz", "periodicity")
# Scalar columns of a frame after normalisation (log-mel bands come first, these after).
SCALAR_NAMES = ("centroid_khz", "bandwidth_khz", "rolloff_khz", "flatness_log10", "zcr",
                "energy_db", "pitch_st", "periodicity")

F0_MIN, F0_MAX = 65.0, 500.0     # Hz: the speaking range of adult voices
YIN_THRESHOLD = 0.2              # first CMNDF dip below this is the period (de Cheveigné & Kawahara)
VOICED_PERIODICITY = 0.6         # 1 - CMNDF at the period: above this a frame counts as voiced
ROLLOFF = 0.85
TOP_DB = 80.0
DELTA_WIDTH = 2                  # deltas by linear regression over ±2 frames
_EPS = 1e-10


def frames_of(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """[n, n_fft] view of frames starting every `hop` samples (no padding)."""
    n = 1 + (len(signal) - n_fft) // hop
    return np.lib.stride_tricks.as_strided(signal, (n, n_fft), (signal.strides[0] * hop, signal.strides[0]),
                                           writeable=False)


def yin(frames: np.ndarray, sample_rate: int, fmin: float = F0_MIN, fmax: float = F0_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised YIN over frames [n, N]: (f0 Hz [n], periodicity = 1 - CMNDF at the period [n]).

    Difference function over a window W = N - max_lag, computed through the FFT;
    cumulative-mean normalisation; the period is the first local minimum under
    `YIN_THRESHOLD` (else the global minimum) within [sr/fmax, sr/fmin], refined by a
    parabola. Scale-free: the same for x and a·x.
    """
    n, length = frames.shape
    max_lag = min(int(sample_rate / fmin), length // 2)
    min_lag = max(2, int(sample_rate / fmax))
    w = length - max_lag
    x = np.asarray(frames, np.float32)
    nfft = 1 << int(np.ceil(np.log2(length + w)))
    # r[t] = sum_{j<w} x[j] x[j+t], in float32 through the FFT (numpy >= 2 keeps the dtype)
    fx = np.fft.rfft(x, nfft, axis=1)
    fw = np.fft.rfft(x[:, :w], nfft, axis=1)
    r = np.fft.irfft(fx * np.conj(fw), nfft, axis=1)[:, : max_lag + 1].astype(np.float64)
    x64 = x.astype(np.float64)
    sq = np.concatenate([np.zeros((n, 1)), np.cumsum(x64 * x64, axis=1)], axis=1)
    e0 = sq[:, w][:, None]                                   # sum_{j<w} x[j]^2
    lags = np.arange(max_lag + 1)
    et = sq[:, lags + w] - sq[:, lags]                        # sum_{j<w} x[j+t]^2
    d = np.maximum(e0 + et - 2 * r, 0.0)
    d[:, 0] = 0.0
    cum = np.cumsum(d[:, 1:], axis=1) / np.arange(1, max_lag + 1)
    cmndf = np.ones_like(d)
    cmndf[:, 1:] = d[:, 1:] / np.maximum(cum, _EPS)
    band = cmndf[:, min_lag:max_lag]
    below = band < YIN_THRESHOLD
    first = np.where(below.any(axis=1), below.argmax(axis=1), band.argmin(axis=1))
    # walk down to the local minimum after the first dip (a few steps suffice)
    rows = np.arange(n)
    for _ in range(8):
        step = (first + 1 < band.shape[1]) & (band[rows, np.minimum(first + 1, band.shape[1] - 1)] < band[rows, first])
        if not step.any():
            break
        first = first + step
    tau = first + min_lag
    # parabolic refinement
    left = cmndf[rows, np.maximum(tau - 1, 1)]
    mid = cmndf[rows, tau]
    right = cmndf[rows, np.minimum(tau + 1, max_lag)]
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > _EPS, 0.5 * (left - right) / np.where(np.abs(denom) > _EPS, denom, 1.0), 0.0)
    period = tau + np.clip(shift, -1, 1)
    silent = e0[:, 0] <= _EPS
    periodicity = np.where(silent, 0.0, np.clip(1.0 - mid, 0.0, 1.0))
    return (sample_rate / period).astype(np.float32), periodicity.astype(np.float32)


def raw_frame_features(frames: np.ndarray, power: np.ndarray, sample_rate: int) -> np.ndarray:
    """Per frame (rows of `frames` [n, n_fft]; `power` [n_fft//2+1, n] of the same frames):
    float32 [n, len(RAW_NAMES)], all scale-free except `power` (mean power per bin)."""
    p = power.T.astype(np.float64)                           # [n, F]
    freqs = np.linspace(0, sample_rate / 2, p.shape[1]) / 1000.0
    total = p.sum(axis=1)
    safe = np.maximum(total, _EPS)
    centroid = (p @ freqs) / safe
    bandwidth = np.sqrt(np.maximum((p * (freqs[None, :] - centroid[:, None]) ** 2).sum(axis=1) / safe, 0.0))
    cum = np.cumsum(p, axis=1)
    rolloff = freqs[np.minimum((cum < ROLLOFF * cum[:, -1:]).sum(axis=1), len(freqs) - 1)]
    pn = p / safe[:, None]                                   # scale-free spectral distribution
    flatness = (np.log(pn + 1e-12).mean(axis=1) - np.log(pn.mean(axis=1) + 1e-12)) / np.log(10.0)
    signs = np.signbit(frames)
    zcr = (signs[:, 1:] != signs[:, :-1]).mean(axis=1)
    f0, periodicity = yin(frames, sample_rate)
    quiet = total <= _EPS
    centroid[quiet] = bandwidth[quiet] = rolloff[quiet] = 0.0
    out = np.stack([centroid, bandwidth, rolloff, flatness, zcr, total / p.shape[1], f0, periodicity], axis=1)
    return out.astype(np.float32)


def deltas(x: np.ndarray, width: int = DELTA_WIDTH, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Regression deltas over ±width frames, edges repeated (as HTK / librosa 'nearest'), of
    rows [start, stop) of `x`: the same values as that slice of the whole array's deltas."""
    stop = len(x) if stop is None else stop
    if stop <= start:
        return x[start:stop].copy()
    lo, hi = max(0, start - width), min(len(x), stop + width)
    pad = np.concatenate([np.repeat(x[lo:lo + 1], width - (start - lo), 0), x[lo:hi],
                          np.repeat(x[hi - 1:hi], width - (hi - stop), 0)])
    n = stop - start
    num = sum(k * (pad[width + k: width + k + n] - pad[width - k: width - k + n]) for k in range(1, width + 1))
    return (num / (2 * sum(k * k for k in range(1, width + 1)))).astype(np.float32)


def to_db(power: np.ndarray, scale: float, floor_db: float | None = None) -> np.ndarray:
    """10·log10(power/scale), floored `TOP_DB` under the stretch's maximum (or at `floor_db`)."""
    db = 10.0 * np.log10(np.maximum(power / np.float32(scale), _EPS))
    floor = db.max() - TOP_DB if floor_db is None else floor_db
    return np.maximum(db, floor).astype(np.float32)


def _top_floor(power: np.ndarray, scale: float) -> float:
    """to_db's default floor of `power`, from its largest value alone (log is monotonic)."""
    return to_db(np.array([power.max()], np.float32), scale)[0] - TOP_DB


def frame_matrix(mel: np.ndarray, raw: np.ndarray, peak: float, with_deltas: bool = True,
                 chunk: int = 6000) -> np.ndarray:
    """Rich frame features of a peak-normalised stretch: [log-mel dB (n_mels) | SCALAR_NAMES]
    (+ their deltas): float32 [n, (n_mels + 8) * (2 if with_deltas else 1)]. Computed `chunk`
    frames at a time (the dB floors from the whole stretch first): the same values, without a
    long track's whole-length temporaries."""
    scale = float(peak) ** 2
    n, n_mels = mel.shape
    dim = n_mels + len(SCALAR_NAMES)
    power = raw[:, RAW_NAMES.index("power")]
    mel_floor = _top_floor(mel, scale) if n else 0.0
    energy_floor = _top_floor(power, scale) if n else 0.0
    out = np.empty((n, 2 * dim if with_deltas else dim), np.float32)
    for a in range(0, n, chunk):
        r = raw[a:a + chunk]
        f0, per = r[:, RAW_NAMES.index("f0_hz")], r[:, RAW_NAMES.index("periodicity")]
        # pitch in semitones re 100 Hz on voiced frames; unvoiced frames carry 0 (periodicity says which)
        pitch = np.where(per >= VOICED_PERIODICITY, 12.0 * np.log2(np.maximum(f0, 1.0) / 100.0), 0.0)
        energy = to_db(power[a:a + chunk], scale, energy_floor)
        out[a:a + chunk, :n_mels] = to_db(mel[a:a + chunk], scale, mel_floor)
        out[a:a + chunk, n_mels:dim] = np.stack([r[:, 0], r[:, 1], r[:, 2], r[:, 3], r[:, 4], energy, pitch, per],
                                                axis=1).astype(np.float32)
    if with_deltas:
        for a in range(0, n, chunk):
            out[a:a + chunk, dim:] = deltas(out[:, :dim], start=a, stop=min(n, a + chunk))
    return out


def rich_names(n_mels: int, with_deltas: bool = True) -> list[str]:
    base = [f"logmel_{i}" for i in range(n_mels)] + list(SCALAR_NAMES)
    return base + [f"d_{b}" for b in base] if with_deltas else base


def speech_active(energy_db: np.ndarray, gate_db: float, hangover: int = 5) -> np.ndarray:
    """Energy gate: frames within `gate_db` of the stretch's loudest frame, widened by
    `hangover` frames each side (onsets and decays of words). gate_db <= 0: every frame."""
    if gate_db <= 0 or len(energy_db) == 0:
        return np.ones(len(energy_db), bool)
    active = energy_db >= energy_db.max() - gate_db
    if hangover > 0:
        kernel = np.ones(2 * hangover + 1)
        # "full", then the centred part: mode="same" would return the kernel's length for a stretch
        # shorter than it (under 11 frames, ~0.1 s), and the mask would no longer fit its frames
        n = len(active)
        active = np.convolve(active.astype(float), kernel, mode="full")[hangover:hangover + n] > 0
    return active


UTTERANCE_STATS = ("mean", "std", "p10", "p50", "p90")


def utterance_stats(x: np.ndarray, active: np.ndarray | None = None,
                    stats: tuple[str, ...] = UTTERANCE_STATS, block: int = 16) -> np.ndarray:
    """Statistics of rows of `x` [n, d] over the active frames (all when none is active):
    float32 [len(stats) * d], blocks in the order of `stats`. Empty input gives zeros.
    Computed `block` columns at a time (each column's statistics are its own): a 10-minute
    track's float64 temporaries stay a few MB instead of hundreds."""
    n, d = x.shape
    if n == 0:
        return np.zeros(len(stats) * d, np.float32)
    rows = active if active is not None and active.any() else slice(None)
    pct = {s: float(s[1:]) for s in stats if s.startswith("p")}
    out = np.empty((len(stats), d), np.float64)
    for a in range(0, d, block):
        cols = x[rows, a:a + block].astype(np.float64)
        qs = dict(zip(pct, np.percentile(cols, list(pct.values()), axis=0))) if pct else {}
        for i, s in enumerate(stats):
            out[i, a:a + block] = cols.mean(0) if s == "mean" else cols.std(0) if s == "std" else qs[s]
    return out.reshape(-1).astype(np.float32)
