"""Feature extraction for training, through the service's pipeline (design §2: the
trainer imports the service's pipeline, never the reverse)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from service.pipeline import media, visual
from service.pipeline.config import MediaLimits, PipelineConfig
from service.pipeline.extract import Encoders, audio_mfcc, extract_file

from .cache import FeatureCache, file_key
from .data import Sample
from .progress import progress

_AUDIO_PARAMS = ("sample_rate", "n_mfcc", "n_fft", "win_length", "hop_length", "n_mels")


def mfcc_of(sample: Sample, cfg: PipelineConfig, cache: FeatureCache, timeout_s: float = 60.0) -> dict[str, np.ndarray]:
    """MFCC frames (+ times, duration) of an audio file, decoded by the serving code."""
    params = {k: getattr(cfg, k) for k in _AUDIO_PARAMS}

    def compute() -> dict[str, np.ndarray]:
        # Local corpus files (wav, flac) are trusted: no demuxer whitelist.
        signal = media.decode_audio(sample.path, cfg.sample_rate, timeout_s, formats=None)
        mfcc, times = audio_mfcc(signal, cfg)
        return {"mfcc": mfcc, "times": times, "duration": np.float64(len(signal) / cfg.sample_rate)}

    return cache.get("mfcc", FeatureCache.key("mfcc-v2", file_key(sample.path), params), compute)


def all_mfcc(samples: Sequence[Sample], cfg: PipelineConfig, cache: FeatureCache) -> list[dict[str, np.ndarray]]:
    # One decode per core: ffmpeg runs in a child process and librosa's numpy work releases the GIL.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(progress(pool.map(lambda s: mfcc_of(s, cfg, cache), samples), "audio: decode + MFCC",
                             total=len(samples)))


def face_crop(sample: Sample, cfg: PipelineConfig) -> visual.FaceCrop:
    image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"unreadable image {sample.path}")
    return visual.corpus_face(image, cfg)


def face_crops(samples: Sequence[Sample], cfg: PipelineConfig) -> np.ndarray:
    """uint8 [n, s, s] crops of face-corpus images, entering the pipeline at the crop stage."""
    return np.stack([face_crop(s, cfg).image for s in progress(samples, "faces: load + crop")])


def batched(items: np.ndarray, size: int) -> Iterable[np.ndarray]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def image_features(crops: np.ndarray, cfg: PipelineConfig, encoders: Encoders, batch: int = 64,
                   label: str = "faces: ResNet-50 features") -> np.ndarray:
    """2048-d features of face crops through the exported ResNet-50 (the serving session)."""
    out = [encoders.image_features(visual.resnet_input(chunk, cfg))
           for chunk in progress(list(batched(crops, batch)), label)]
    return np.concatenate(out) if out else np.zeros((0, cfg.image_feature_dim), np.float32)


def video_sequences(samples: Sequence[Sample], cfg: PipelineConfig, encoders: Encoders,
                    limits: MediaLimits | None = None) -> np.ndarray:
    """Fusion sequences of real audio-visual files: exactly `POST /predict`'s feature path.
    The face detector is the encoders' (`face_detector` session); encoders without one get
    the pinned BlazeFace conversion (`trainer.detector.default_detector`)."""
    if not samples:
        return np.zeros((0, cfg.k_summary, cfg.step_dim), np.float32)
    detector = getattr(encoders, "face_detector", None)
    if detector is None:
        from .detector import default_detector

        detector = default_detector()
    return np.stack([extract_file(Path(s.path), cfg, encoders, limits, detector=detector).sequence
                     for s in progress(samples, "video: full pipeline")])
