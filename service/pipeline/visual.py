"""Faces and summary frames (paper Alg. 2 and the input side of Alg. 3)."""
from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.cluster import KMeans

from .config import PipelineConfig

_CASCADE = "haarcascade_frontalface_default.xml"
_local = threading.local()


def _detector() -> cv2.CascadeClassifier:
    # One classifier per thread: detectMultiScale on a shared instance is not documented as thread-safe.
    det = getattr(_local, "detector", None)
    if det is None:
        det = cv2.CascadeClassifier(cv2.data.haarcascades + _CASCADE)
        if det.empty():
            raise RuntimeError(f"OpenCV Haar cascade {_CASCADE} could not be loaded")
        _local.detector = det
    return det


@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray      # uint8 grey, image_size x image_size
    detected: bool         # False: centre-of-frame fallback


def _square(x0: float, y0: float, side: float, w: int, h: int) -> tuple[int, int, int, int]:
    side = min(side, w, h)
    x0 = min(max(0.0, x0), w - side)
    y0 = min(max(0.0, y0), h - side)
    return int(round(x0)), int(round(y0)), int(round(x0 + side)), int(round(y0 + side))


def crop_face(frame: np.ndarray, cfg: PipelineConfig) -> FaceCrop:
    """Largest frontal face grown by the margin, square; else the centre square, flagged."""
    h, w = frame.shape
    faces = _detector().detectMultiScale(
        cv2.equalizeHist(frame), scaleFactor=1.1, minNeighbors=5, minSize=(cfg.face_min_size, cfg.face_min_size)
    )
    if len(faces):
        fx, fy, fw, fh = max(faces, key=lambda f: f[2] * f[3])
        side = max(fw, fh) * (1 + 2 * cfg.face_margin)
        box = _square(fx + fw / 2 - side / 2, fy + fh / 2 - side / 2, side, w, h)
        detected = True
    else:
        side = 0.8 * min(w, h)
        box = _square((w - side) / 2, (h - side) / 2, side, w, h)
        detected = False
    x0, y0, x1, y1 = box
    return FaceCrop(resize(frame[y0:y1, x0:x1], cfg.image_size), detected)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Square grey image resized to size² (area filter when shrinking)."""
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def corpus_face(image: np.ndarray, cfg: PipelineConfig) -> FaceCrop:
    """A face-corpus image (FER2013, CK+) is already an aligned face crop: it enters the
    pipeline at the crop stage, then follows the serving path (thumbnail, ResNet)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = image.shape
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return FaceCrop(resize(image[y0:y0 + side, x0:x0 + side], cfg.image_size), True)


def thumbnails(crops: list[FaceCrop] | np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """Frame-autoencoder input: flattened grey thumbnails in [0, 1], float32 [n, size²]."""
    images = [c.image if isinstance(c, FaceCrop) else c for c in crops]
    s = cfg.frame_ae_size
    out = np.empty((len(images), s * s), np.float32)
    for i, img in enumerate(images):
        out[i] = resize(img, s).reshape(-1) / 255.0
    return out


def resnet_input(crops: list[FaceCrop] | np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """ResNet-50 batch: grey replicated to 3 channels, (p - mean) / std, float32 [n, s, s, 3]."""
    images = np.stack([c.image if isinstance(c, FaceCrop) else c for c in crops]).astype(np.float32)
    images = (images - cfg.pixel_mean) / cfg.pixel_std
    return np.repeat(images[..., None], 3, axis=-1)


def select_summary(latents: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Indices of K summary frames in time order: k-means on frame-autoencoder latents,
    the frame nearest each centroid. With fewer distinct frames than K, frames repeat
    (evenly spread) so the sequence always has K steps."""
    n = len(latents)
    if n == 0:
        return np.zeros(0, np.int64)
    n_clusters = min(k, n, len(np.unique(latents.round(6), axis=0)))
    if n_clusters < 2:
        chosen = np.zeros(1, np.int64) if n_clusters == 1 else np.zeros(0, np.int64)
    else:
        km = KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit(latents)
        dist = ((latents[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
        chosen = np.unique(dist.argmin(axis=0))
    chosen = np.sort(chosen)
    if len(chosen) < k:
        chosen = chosen[np.linspace(0, len(chosen) - 1, k).round().astype(np.int64)]
    return chosen
