"""Faces and summary frames (paper Alg. 2 and the input side of Alg. 3)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.cluster import KMeans

from service.pipeline.config import PipelineConfig
from service.pipeline.face_detector import BlazeFace, Face

# Why a detected face is not used (`FaceCrop.reason`); "" = used.
TOO_SMALL, TURNED, BLURRED = "too_small", "turned", "blurred"
UNSTEADY = "unsteady"  # a middling detection in too few of the clip's frames (extract.FaceCollector)
# Flagged faces a clip is answered from when no frame shows a usable one: the face expert
# learned from turned and blurred faces too (FER2013 has them), and refusing a clip whose
# every frame shows such a face would answer "no face" for a face anyone sees.
FALLBACK_REASONS = (TURNED, BLURRED)


@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray      # uint8 grey, image_size x image_size: the aligned face
    detected: bool = True  # a usable face (False: `reason` says why it is flagged)
    reason: str = ""       # "", or why the face is not used: too_small, turned, blurred
    score: float = 1.0     # detector score (1 for corpus faces)


@dataclass(frozen=True)
class Pose:
    """Keypoint geometry of a detection, in the face's own frame (eyes level)."""

    roll_deg: float        # angle of the eye line (image y down: positive = clockwise)
    yaw: float             # nose tip sideways from the eye midpoint, in eye distances (0 = frontal)
    pitch: float           # nose tip below the eye line, in eye-to-mouth distances


def pose(face: Face) -> Pose:
    right_eye, left_eye, nose, mouth = face.keypoints[:4].astype(np.float64)
    theta = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    along = np.array([math.cos(theta), math.sin(theta)])
    down = np.array([-math.sin(theta), math.cos(theta)])
    mid = (right_eye + left_eye) / 2
    eye_dist = max(float(np.linalg.norm(left_eye - right_eye)), 1e-6)
    mouth_dist = max(float((mouth - mid) @ down), 1e-6)
    return Pose(math.degrees(theta), float((nose - mid) @ along) / eye_dist, float((nose - mid) @ down) / mouth_dist)


def face_size(face: Face) -> float:
    """The face's scale for framing: eye distance + distance from the eye midpoint to the mouth.
    Unlike the detector's box it does not change when the head rolls (CREMA-D frames rotated
    by ±10-20°: median ratio to upright 1.004, 10th-90th percentile 0.98-1.03; box 0.97, 0.94-1.02),
    and it frames the face corpora as tightly (FER2013 spread 8.7 %, CK+ 2.8 %; box 8.3 %, 3.0 %)."""
    right_eye, left_eye, _, mouth = face.keypoints[:4].astype(np.float64)
    mid = (right_eye + left_eye) / 2
    return float(np.linalg.norm(left_eye - right_eye) + np.linalg.norm(mouth - mid))


def align_face(frame: np.ndarray, face: Face, cfg: PipelineConfig) -> np.ndarray:
    """The face rotated so its eyes are level, cropped square like a FER2013/CK+ face
    (side `face_crop_scale` x `face_size`, centred `face_crop_offset` x `face_size` below the
    eye midpoint, across the eye line), grey uint8 image_size²."""
    right_eye, left_eye = face.keypoints[0].astype(np.float64), face.keypoints[1].astype(np.float64)
    theta = math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])
    cos, sin = math.cos(theta), math.sin(theta)
    size = face_size(face)
    side = max(cfg.face_crop_scale * size, 1.0)
    centre = (right_eye + left_eye) / 2 + cfg.face_crop_offset * size * np.array([-sin, cos])
    # Warp at about the source resolution, then shrink with an area filter (a warp alone
    # would alias when the face is larger than the crop).
    out = max(cfg.image_size, int(round(side)))
    k = out / side
    m = np.array([[k * cos, k * sin, 0.0], [-k * sin, k * cos, 0.0]])
    m[:, 2] = out / 2 - m[:, :2] @ centre
    crop = cv2.warpAffine(frame, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return resize(crop, cfg.image_size) if out != cfg.image_size else crop


def sharpness(crop: np.ndarray) -> float:
    """Contrast-free sharpness of a crop: variance of its Laplacian over its variance."""
    img = crop.astype(np.float32)
    var = float(img.var())
    return float(cv2.Laplacian(img, cv2.CV_32F).var()) / var if var > 1e-6 else 0.0


def face_crop(frame: np.ndarray, face: Face, cfg: PipelineConfig) -> FaceCrop:
    """Aligned crop of a detection, flagged when too small, too turned or too blurred."""
    image = align_face(frame, face, cfg)
    p = pose(face)
    if face.width < cfg.face_min_size:
        reason = TOO_SMALL
    elif abs(p.yaw) > cfg.face_max_yaw or not cfg.face_min_pitch <= p.pitch <= cfg.face_max_pitch:
        reason = TURNED
    elif sharpness(image) < cfg.face_min_sharpness:
        reason = BLURRED
    else:
        reason = ""
    return FaceCrop(image, not reason, reason, face.score)


def find_faces(frame: np.ndarray, detector: BlazeFace, cfg: PipelineConfig) -> list[Face]:
    """Faces of a frame, largest first: the whole frame at 128 px, and when that finds none,
    2x2 tiles of `face_tile_fraction` x its long side (smaller faces; 0 = no second pass), then
    (`face_retry`) its mirror image and its histogram-equalised grey (low-contrast faces)."""
    thr, iou = cfg.face_score_threshold, cfg.face_nms_iou
    faces = detector.detect(frame, thr, iou)
    if not faces and cfg.face_tile_fraction > 0:
        faces = detector.detect_tiles(frame, cfg.face_tile_fraction, thr, iou)
    if not faces and cfg.face_retry:
        faces = detector.detect_mirrored(frame, thr, iou)
        if not faces:
            grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
            faces = detector.detect(cv2.equalizeHist(grey), thr, iou)
    return faces


def detect_face(frame: np.ndarray, detector: BlazeFace, cfg: PipelineConfig) -> FaceCrop | None:
    """The largest face of a frame, aligned (flagged if unusable); None when there is none."""
    faces = find_faces(frame, detector, cfg)
    return face_crop(frame, faces[0], cfg) if faces else None


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
    return FaceCrop(resize(image[y0:y0 + side, x0:x0 + side], cfg.image_size))


def photo_face(image: np.ndarray, detector: BlazeFace, cfg: PipelineConfig, upscale: int = 2,
               canvas: tuple[int, int] = (480, 360)) -> FaceCrop | None:
    """A face photo framed unlike FER2013 (e.g. RAF-DB's tight alignment, 1.12 face sizes a
    side against FER2013's 1.33) framed as the serving path frames a video face: the photo,
    upscaled, is placed in a grey canvas the size of a decoded frame (the detector needs
    context around a face), detected, and aligned on the photo itself (edges replicated where
    the framing reaches past it). None when no face is found."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    h, w = image.shape
    k = min(upscale, canvas[0] / w, canvas[1] / h)
    big = cv2.resize(image, (int(w * k), int(h * k)), interpolation=cv2.INTER_CUBIC)
    frame = np.full((canvas[1], canvas[0]), 128, np.uint8)
    y0, x0 = (canvas[1] - big.shape[0]) // 2, (canvas[0] - big.shape[1]) // 2
    frame[y0:y0 + big.shape[0], x0:x0 + big.shape[1]] = big
    faces = find_faces(frame, detector, cfg)
    if not faces:
        return None
    f = faces[0]
    face = Face((f.box - [x0, y0, x0, y0]) / k, (f.keypoints - [x0, y0]) / k, f.score)
    return FaceCrop(align_face(image, face, cfg), score=f.score)


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
