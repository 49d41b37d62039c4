"""The feature pipeline end to end: file -> fusion sequence (design §2 steps 1-5).

One code path for trainer and service. The learned stages (audio encoder, frame
encoder, ResNet-50) come in through `Encoders`, in practice ONNX Runtime sessions of
the bundle (`service.runtime.OnnxEncoders`); the trainer runs the very same sessions
after exporting them, so training features and serving features cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from . import audio, fusion, media, visual
from .config import MediaLimits, PipelineConfig
from .timing import StageTimer


class Encoders(Protocol):
    def encode_audio(self, mfcc: np.ndarray) -> np.ndarray: ...          # [n, n_mfcc] -> [n, audio_code_dim]
    def encode_frames(self, thumbs: np.ndarray) -> np.ndarray: ...       # [n, ae_size²] -> [n, frame_code_dim]
    def image_features(self, batch: np.ndarray) -> np.ndarray: ...       # [n, s, s, 3] -> [n, 2048]


@dataclass
class DecodedClip:
    info: media.MediaInfo
    audio: np.ndarray          # float32 mono at cfg.sample_rate; empty without an audio stream
    frames: np.ndarray         # uint8 [N, H, W] sampled grey frames
    frame_times: np.ndarray    # seconds [N]


@dataclass
class ClipFeatures:
    sequence: np.ndarray               # float32 [K, step_dim]
    summary_times: np.ndarray          # seconds [K], time-ordered
    face_detected: np.ndarray          # bool [K]
    audio_used: bool
    video_used: bool
    duration_s: float
    timings: StageTimer = field(default_factory=StageTimer)


def decode_clip(path: Path, cfg: PipelineConfig, limits: MediaLimits, timer: StageTimer | None = None) -> DecodedClip:
    timer = timer or StageTimer()
    with timer.stage("probe"):
        info = media.probe(path, limits)
    with timer.stage("decode_audio"):
        signal = (media.decode_audio(path, cfg.sample_rate, limits.timeout_s)
                  if info.has_audio else np.zeros(0, np.float32))
    with timer.stage("decode_frames"):
        frames, times = media.sample_frames(path, info, cfg.frame_fps, cfg.max_frames, cfg.frame_max_side,
                                            limits.timeout_s)
    if signal.size == 0 and len(frames) == 0:
        raise media.MediaError("no_usable_stream", "no audio samples or video frames could be decoded")
    return DecodedClip(info, signal, frames, times)


def audio_mfcc(signal: np.ndarray, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC frames and their times; empty when the track is missing or silent."""
    if audio.is_silent(signal):
        return np.zeros((0, cfg.n_mfcc), np.float32), np.zeros(0)
    return audio.mfcc_frames(signal, cfg)


def audio_codes(mfcc: np.ndarray, cfg: PipelineConfig, encoders: Encoders) -> np.ndarray:
    """Audio-autoencoder codes per MFCC frame."""
    if len(mfcc) == 0:
        return np.zeros((0, cfg.audio_code_dim), np.float32)
    return encoders.encode_audio(mfcc)


def summary_faces(frames: np.ndarray, frame_times: np.ndarray, cfg: PipelineConfig, encoders: Encoders,
                  timer: StageTimer) -> tuple[list[visual.FaceCrop], np.ndarray]:
    """Face crops of the K summary frames and their timestamps (time-ordered)."""
    with timer.stage("face_detection"):
        crops = [visual.crop_face(f, cfg) for f in frames]
    with timer.stage("summary_selection"):
        latents = encoders.encode_frames(visual.thumbnails(crops, cfg))
        chosen = visual.select_summary(latents, cfg.k_summary, cfg.kmeans_seed)
    return [crops[i] for i in chosen], frame_times[chosen]


def face_features(faces: Sequence[visual.FaceCrop], cfg: PipelineConfig, encoders: Encoders,
                  timer: StageTimer) -> np.ndarray:
    """ResNet-50 features of face crops, one batched call: float32 [n, 2048]."""
    with timer.stage("image_features"):
        return encoders.image_features(visual.resnet_input(list(faces), cfg))


def assemble(cfg: PipelineConfig, codes: np.ndarray, code_times: np.ndarray, image_feats: np.ndarray | None,
             face_detected: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Fusion sequence from audio codes and the K summary faces' features (None: no video) at `times`."""
    stats, present = fusion.audio_window_stats(codes, code_times, times, cfg.audio_window_s)
    return fusion.build_sequence(cfg, image_feats, face_detected, stats, present)


def clip_features(clip: DecodedClip, cfg: PipelineConfig, encoders: Encoders,
                  timer: StageTimer | None = None) -> ClipFeatures:
    timer = timer or StageTimer()
    with timer.stage("audio_features"):
        mfcc, code_times = audio_mfcc(clip.audio, cfg)
        codes = audio_codes(mfcc, cfg, encoders)
    image_feats = None
    detected = np.zeros(cfg.k_summary, bool)
    if len(clip.frames):
        faces, times = summary_faces(clip.frames, clip.frame_times, cfg, encoders, timer)
        image_feats = face_features(faces, cfg, encoders, timer)
        detected = np.array([f.detected for f in faces])
    else:
        times = fusion.step_times(clip.info.duration_s, cfg.k_summary)
    seq = assemble(cfg, codes, code_times, image_feats, detected, times)
    return ClipFeatures(
        sequence=seq,
        summary_times=np.asarray(times, np.float64),
        face_detected=detected,
        audio_used=len(codes) > 0,
        video_used=image_feats is not None,
        duration_s=clip.info.duration_s,
        timings=timer,
    )


def extract_file(path: Path, cfg: PipelineConfig, encoders: Encoders, limits: MediaLimits | None = None,
                 timer: StageTimer | None = None) -> ClipFeatures:
    """Decode a media file and compute its fusion sequence: the single entry point that
    both `trainer build` (for audio-visual corpora) and `POST /predict` use."""
    timer = timer or StageTimer()
    clip = decode_clip(path, cfg, limits or MediaLimits(), timer)
    return clip_features(clip, cfg, encoders, timer)
