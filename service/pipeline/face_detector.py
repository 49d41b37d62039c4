"""Face detection with MediaPipe's BlazeFace (short range), decoded in numpy (design §2 step 3).

The network itself ships in the bundle as the ONNX artifact `face_detector` (converted from
`face_detection_short_range.tflite` of the `mediapipe==0.10.14` wheel by `trainer.face.detector`,
Apache-2.0). It takes one 128x128 RGB image in [-1, 1] (NHWC) and returns, for each of 896
fixed anchors, 16 regressors (box centre offset and size, then six keypoints) and one logit.
What MediaPipe's graph does around it (`face_detection_short_range_cpu`) is here:

- letterbox: the frame is scaled to fit 128x128 with its aspect ratio kept, padded;
- anchors: SSD anchors for 4 layers, strides 8, 16, 16, 16, two per cell, fixed size
  (16x16x2 + 8x8x6 = 896), offset 0.5;
- decoding: scale 128 on every coordinate, sigmoid of the logit clipped to ±100;
- weighted non-maximum suppression (IoU 0.3): overlapping detections are averaged,
  weighted by score, instead of the best one alone being kept.

Keypoints, in this order: the person's right eye, left eye, nose tip, mouth centre, right
ear tragion, left ear tragion (the person's right eye is on the image's left in an
unmirrored frame).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import cv2
import numpy as np

INPUT_SIZE = 128
NUM_ANCHORS = 896
NUM_KEYPOINTS = 6
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")
MIRRORED_KEYPOINTS = (1, 0, 2, 3, 5, 4)  # KEYPOINTS' order in a mirror image: left and right swap
INPUT_NAME = "input"
OUTPUT_NAMES = ("regressors", "classificators")
_SCORE_CLIP = 100.0


@dataclass(frozen=True)
class Face:
    """One detection in frame pixels: box (x0, y0, x1, y1), keypoints [6, 2] (x, y), score."""

    box: np.ndarray
    keypoints: np.ndarray
    score: float

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@lru_cache(maxsize=1)
def anchors() -> np.ndarray:
    """[896, 2] anchor centres (x, y) in [0, 1]: MediaPipe's SsdAnchorsCalculator for
    num_layers 4, strides (8, 16, 16, 16), aspect ratio 1, fixed anchor size, offset 0.5.
    Consecutive layers of the same stride share a grid, so a 16-stride cell has 6 anchors."""
    out = []
    strides = (8, 16, 16, 16)
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        per_cell = 0
        while layer < len(strides) and strides[layer] == stride:
            per_cell += 2            # aspect ratio 1.0 + the interpolated-scale anchor
            layer += 1
        cells = int(np.ceil(INPUT_SIZE / stride))
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, per_cell, axis=0))
    result = np.concatenate(out).astype(np.float32)
    assert result.shape == (NUM_ANCHORS, 2)
    return result


def decode(regressors: np.ndarray, logits: np.ndarray, score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs of one image -> (boxes [n, 4] x0 y0 x1 y1, keypoints [n, 6, 2], scores [n]),
    in [0, 1] coordinates of the 128x128 input, for the anchors scoring at least the threshold."""
    reg = regressors.reshape(NUM_ANCHORS, 16)
    clipped = np.clip(logits.reshape(NUM_ANCHORS).astype(np.float64), -_SCORE_CLIP, _SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-clipped))
    keep = np.flatnonzero(scores >= score_threshold)
    if len(keep) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, NUM_KEYPOINTS, 2), np.float32), np.zeros(0, np.float32)
    r = reg[keep] / INPUT_SIZE
    a = anchors()[keep]
    cx, cy = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1]
    w, h = r[:, 2], r[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = r[:, 4:16].reshape(-1, NUM_KEYPOINTS, 2) + a[:, None, :]
    return boxes.astype(np.float32), kps.astype(np.float32), scores[keep].astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou_threshold: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's WEIGHTED suppression: take the best remaining detection, average it with
    every remaining one overlapping it by more than the threshold (weights = scores; the
    best one's score is kept), drop those, repeat. Best first."""
    order = np.argsort(-scores, kind="stable")
    out = []
    while len(order):
        best = order[0]
        overlap = _iou(boxes[best], boxes[order]) > iou_threshold
        group = order[overlap]
        w = scores[group][:, None]
        box = (boxes[group] * w).sum(0) / w.sum()
        kps = (keypoints[group] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, kps, float(scores[best])))
        order = order[~overlap]
    return out


@dataclass(frozen=True)
class Letterbox:
    """Where a frame lies inside the square detector input."""

    scale: float      # detector pixels per frame pixel
    pad_x: float      # detector pixels left of the frame
    pad_y: float


def letterbox(frame: np.ndarray, size: int = INPUT_SIZE) -> tuple[np.ndarray, Letterbox]:
    """Grey or BGR uint8 frame -> float32 [1, size, size, 3] RGB in [-1, 1] and its placement.
    A grey frame is replicated to three channels (the pipeline decodes grey frames)."""
    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    small = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas = np.zeros((size, size, 3), np.float32) - 1.0
    if small.ndim == 2:
        canvas[py:py + nh, px:px + nw] = (small.astype(np.float32) / 127.5 - 1.0)[..., None]
    else:
        canvas[py:py + nh, px:px + nw] = small[..., ::-1].astype(np.float32) / 127.5 - 1.0
    return canvas[None], Letterbox(scale, float(px), float(py))


class BlazeFace:
    """BlazeFace on an ONNX Runtime session (or anything with `run(None, {name: x})`).
    Thread-safe: ORT sessions may be run from several threads at once."""

    def __init__(self, session: Any):
        self.session = session

    def raw(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        regressors, logits = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return regressors, logits

    def detect_tiles(self, frame: np.ndarray, tile_fraction: float, score_threshold: float = 0.5,
                     iou_threshold: float = 0.3) -> list[Face]:
        """Faces found in (up to) 2x2 overlapping square tiles of side `tile_fraction` x the
        frame's long side, each detected at 128 px: a face too small for the whole frame at
        128 px is larger in its tile. Duplicates across tiles are suppressed (best score kept)."""
        h, w = frame.shape[:2]
        side = max(1, min(h, w, int(round(tile_fraction * max(h, w)))))
        xs = sorted({0, w - side})
        ys = sorted({0, h - side})
        found: list[Face] = []
        for y in ys:
            for x in xs:
                for f in self.detect(frame[y:y + side, x:x + side], score_threshold, iou_threshold):
                    found.append(Face(f.box + np.array([x, y, x, y], np.float32),
                                      f.keypoints + np.array([x, y], np.float32), f.score))
        found.sort(key=lambda f: -f.score)
        kept: list[Face] = []
        for f in found:
            if not kept or _iou(f.box, np.stack([k.box for k in kept])).max() <= iou_threshold:
                kept.append(f)
        kept.sort(key=lambda f: -f.area)
        return kept

    def detect_mirrored(self, frame: np.ndarray, score_threshold: float = 0.5, iou_threshold: float = 0.3) -> list[Face]:
        """Faces found in the mirror image of a frame, in the frame's own coordinates (the
        detector is not symmetric: some faces it misses one way it finds the other)."""
        w = frame.shape[1]
        out = []
        for f in self.detect(np.ascontiguousarray(frame[:, ::-1]), score_threshold, iou_threshold):
            box = np.array([w - f.box[2], f.box[1], w - f.box[0], f.box[3]], np.float32)
            kp = f.keypoints.copy()
            kp[:, 0] = w - kp[:, 0]
            out.append(Face(box, kp[list(MIRRORED_KEYPOINTS)], f.score))  # the right eye is the mirror's left
        return out

    def detect(self, frame: np.ndarray, score_threshold: float = 0.5, iou_threshold: float = 0.3) -> list[Face]:
        """Faces in a frame (pixel coordinates of `frame`), largest first."""
        x, lb = letterbox(frame)
        regressors, logits = self.raw(x)
        boxes, kps, scores = decode(regressors[0], logits[0], score_threshold)
        faces = []
        for box, kp, score in weighted_nms(boxes, kps, scores, iou_threshold):
            to_frame = lambda v, pad: (v * INPUT_SIZE - pad) / lb.scale  # noqa: E731
            fbox = np.array([to_frame(box[0], lb.pad_x), to_frame(box[1], lb.pad_y),
                             to_frame(box[2], lb.pad_x), to_frame(box[3], lb.pad_y)], np.float32)
            fkp = np.stack([to_frame(kp[:, 0], lb.pad_x), to_frame(kp[:, 1], lb.pad_y)], axis=1).astype(np.float32)
            faces.append(Face(fbox, fkp, score))
        faces.sort(key=lambda f: -f.area)
        return faces
