"""Video-like variants of one face image (pairs like videos).

A real clip shows one person whose summary frames differ a little: a few pixels of shift,
a slightly different scale or roll, lighting, focus and compression. Training and
evaluation sequences pair a clip's audio with ONE face image and K such variants of it
(variant 0 is the image itself), each passed through the serving crop-to-feature path,
instead of K different people (a vote that no video gives).
"""
from __future__ import annotations

import cv2
import numpy as np


def face_variants(crop: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """`k` uint8 variants [k, s, s] of a grey face crop; the first is the crop unchanged."""
    s = crop.shape[0]
    out = np.empty((k, s, s), np.uint8)
    out[0] = crop
    for i in range(1, k):
        angle = rng.uniform(-6, 6)
        scale = rng.uniform(0.93, 1.07)
        m = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
        m[:, 2] += rng.uniform(-0.05, 0.05, 2) * s
        img = cv2.warpAffine(crop, m, (s, s), borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
        img = (img - img.mean()) * rng.uniform(0.8, 1.2) + img.mean() + rng.uniform(-20, 20)
        img = np.clip(img, 0, 255).astype(np.uint8)
        sigma = rng.uniform(0, 1.0)
        if sigma > 0.3:
            img = cv2.GaussianBlur(img, (0, 0), sigma)
        quality = int(rng.integers(35, 95))
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out[i] = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE) if ok else img
    return out


def all_variants(crops: np.ndarray, k: int, seed: int) -> np.ndarray:
    """[n, k, s, s] variants of every crop (seeded)."""
    rng = np.random.default_rng(seed)
    return np.stack([face_variants(c, k, rng) for c in crops]) if len(crops) else np.zeros((0, k) + crops.shape[1:],
                                                                                             np.uint8)
