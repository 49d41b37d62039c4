"""The voice's pretrained representation: a speech encoder's hidden states (Whisper tiny.en's
encoder, the bundle's `voice_encoder` artifact) pooled over the speech of a track.

Hand-made statistics learned from two dozen acted speakers do not cross corpora; an encoder
trained on 680,000 hours of speech hears a voice it has never met far better (held-out RAVDESS
actors 0.78 against 0.47 with the same linear classifier, ../shared/models/README.md).

Front end: Whisper's log-mel (80 Slaney bands of a 400-point STFT, 10-ms hop; log10, floored
8 decades under the loudest bin, then (x + 4) / 4), taken from the mel power frames that the
`AudioAccumulator` keeps beside its own (`AudioTrack.voice_mel`), after the same peak
normalisation as the hand features, so the level of a recording plays no part. The encoder runs
on the track's own length, in windows of at most 30 s (its 1500 positions): never padded to
30 s. Its states (50 per second) are pooled over the speech-active ones (the hand features'
energy gate, each state covering two 10-ms frames).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from service.pipeline import audio, audio_frames
from service.pipeline.config import PipelineConfig

# `encode(log_mel [1, T, n_mels]) -> states [1, ceil(T / 2), len(voice_layers) * voice_dim]`
Encode = Callable[[np.ndarray], np.ndarray]

_LOG_FLOOR = 1e-10      # Whisper's clamp on mel power before log10
_DYNAMIC_RANGE = 8.0    # decades kept under the loudest bin


def log_mel(track: audio.AudioTrack, cfg: PipelineConfig) -> np.ndarray:
    """Whisper's log-mel of the peak-normalised track, float32 [n_frames, voice_n_mels]; empty
    when the track is silent or too short."""
    if track.voice_mel is None:
        raise ValueError("this track was accumulated without the speech encoder's mel frames")
    if not track.usable(cfg):
        return np.zeros((0, cfg.voice_n_mels), np.float32)
    peak = np.float32(track.peak)
    log_spec = np.log10(np.maximum(track.voice_mel / (peak * peak), _LOG_FLOOR))
    log_spec = np.maximum(log_spec, log_spec.max() - _DYNAMIC_RANGE)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def windows(n_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """[start, end) frame windows of near-equal length covering `n_frames`, each at most
    `max_frames`, starting on even frames (each window's states then fall on the track's 20-ms
    grid): a 31-s track is two windows of 15.5 s, not 30 s and a 1-s scrap."""
    if n_frames <= 0:
        return []
    count = -(-n_frames // max_frames)
    edges = np.linspace(0, n_frames, count + 1).round().astype(int)
    edges[1:-1] -= edges[1:-1] % 2
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def states(track: audio.AudioTrack, cfg: PipelineConfig, encode: Encode) -> np.ndarray:
    """The encoder's hidden states of the whole track, float32 [ceil(n_frames / 2), width]."""
    mel = log_mel(track, cfg)
    parts = [encode(mel[None, a:b])[0] for a, b in windows(len(mel), cfg.voice_max_frames)]
    width = len(cfg.voice_layer_list) * cfg.voice_dim
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, width), np.float32)


def active_states(active_frames: np.ndarray, n_states: int) -> np.ndarray:
    """Speech-activity of each state (it covers frames 2j and 2j + 1) from the 10-ms frames' mask."""
    padded = np.zeros(2 * n_states, bool)
    padded[:min(len(active_frames), 2 * n_states)] = active_frames[:2 * n_states]
    return padded[0::2] | padded[1::2]


def embedding(track: audio.AudioTrack | None, cfg: PipelineConfig, encode: Encode) -> np.ndarray:
    """The voice's pooled representation, float32 [cfg.voice_utterance_dim]: `cfg.voice_stats`
    of the encoder's states over the speech-active ones (all, when the gate finds none); zeros
    for a track without usable audio (the utterance block's convention)."""
    if track is None or not track.usable(cfg):
        return np.zeros(cfg.voice_utterance_dim, np.float32)
    h = states(track, cfg, encode)
    active = active_states(track.speech_active(cfg), len(h))
    return audio_frames.utterance_stats(h, active, cfg.voice_stat_names)
