"""Feature extraction for training, through the service's pipeline (design §2: the
trainer imports the service's pipeline, never the reverse)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from service.pipeline import visual
from service.pipeline.config import MediaLimits, PipelineConfig
from service.pipeline.extract import Encoders, extract_file
from trainer.data import Sample
from trainer.progress import progress

# Face corpora whose images are framed as the serving crop frames a face (measured by
# `python -m trainer.face.detector framing`): they enter the pipeline at the crop stage. Other
# face photos (RAF-DB) are detected and aligned as a video face is.
FRAMED_AS_SERVED = frozenset({"fer2013", "ckplus"})


def face_crop(sample: Sample, cfg: PipelineConfig, detector=None) -> visual.FaceCrop:
    image = cv2.imread(str(sample.path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"unreadable image {sample.path}")
    if sample.corpus not in FRAMED_AS_SERVED:
        if detector is None:
            from trainer.face.detector import default_detector

            detector = default_detector()
        found = visual.photo_face(image, detector, cfg)
        if found is not None:
            return found
    return visual.corpus_face(image, cfg)  # framed as served, or no face found: the photo as it is


def face_crops(samples: Sequence[Sample], cfg: PipelineConfig) -> np.ndarray:
    """uint8 [n, s, s] crops of face-corpus images framed as the serving path frames a face."""
    detector = None
    if any(s.corpus not in FRAMED_AS_SERVED for s in samples):
        from trainer.face.detector import default_detector

        detector = default_detector()
    return np.stack([face_crop(s, cfg, detector).image for s in progress(samples, "faces: load + crop")])


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
    the pinned BlazeFace conversion (`trainer.face.detector.default_detector`)."""
    if not samples:
        return np.zeros((0, cfg.k_summary, cfg.step_dim), np.float32)
    detector = getattr(encoders, "face_detector", None)
    if detector is None:
        from trainer.face.detector import default_detector

        detector = default_detector()
    return np.stack([extract_file(Path(s.path), cfg, encoders, limits, detector=detector).sequence
                     for s in progress(samples, "video: full pipeline")])
