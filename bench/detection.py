"""Face detection, BlazeFace (the bundle's `face_detector`) beside OpenCV's Haar cascade (the
detector it replaced), on the frames the service samples: detection rate and per-frame cost.

    .venv/bin/python bench/detection.py --clips a.flv,b.flv [--model-dir models/default] [--json OUT]

Unlike bench.py this imports the service's pipeline (it measures one stage, not the service):
bench.py runs it as a child process. Frames are decoded exactly as the service does
(`media.stream_frames`: sampled at `frame_fps`, long side `frame_max_side`, grey), then each
frame is also transformed into variants: rotated +20° and -20° about the frame centre (black
corners), darker (intensities x 0.35), and smaller (the frame shrunk to half size in the middle
of a frame of the original size, black around it: a face half as large in a larger view).

Every CREMA-D frame shows one face (the actor, facing the camera), so frames with a visible
face = all frames; a frame counts as detected when the largest detection's centre lies within
0.35 reference box widths of the face's true centre (BlazeFace's box on the untouched frame,
moved by the variant's transform); frames where BlazeFace misses the untouched frame have no
reference and count as detected if anything is found. "usable" = detected and not flagged
(too small, turned, blurred). Cost per frame: wall and CPU time of the whole detection step
(BlazeFace: letterbox, ONNX Runtime on 1 thread, decoding, NMS, the tile pass where the frame
pass finds nothing, alignment, flags; Haar: the old path, equalisation + detectMultiScale(1.1, 5,
minSize 40) + square crop, OpenCV's own threads), both in this process; CPU time is the
process's (all its threads).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from service.model.bundle import FACE_DETECTOR, open_session, read_manifest  # noqa: E402
from service.pipeline import media, visual  # noqa: E402
from service.pipeline.config import MediaLimits, PipelineConfig  # noqa: E402
from service.pipeline.face_detector import BlazeFace  # noqa: E402

VARIANTS = ("original", "rotated+20", "rotated-20", "darker", "smaller")
HIT_RADIUS = 0.35


def variant(frame: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(transformed frame, 2x3 affine map of frame points into it)."""
    h, w = frame.shape
    if name.startswith("rotated"):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), float(name[len("rotated"):]), 1.0)
        return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0), m
    if name == "darker":
        return (frame.astype(np.float32) * 0.35).round().astype(np.uint8), np.array([[1.0, 0, 0], [0, 1.0, 0]])
    if name == "smaller":
        small = cv2.resize(frame, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        out = np.zeros_like(frame)
        y0, x0 = (h - h // 2) // 2, (w - w // 2) // 2
        out[y0:y0 + h // 2, x0:x0 + w // 2] = small
        return out, np.array([[0.5, 0, x0], [0, 0.5, y0]])
    return frame, np.array([[1.0, 0, 0], [0, 1.0, 0]])


class Haar:
    """The face step of the service before BlazeFace (service/pipeline/visual.py at 34cb509)."""

    def __init__(self) -> None:
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def __call__(self, frame: np.ndarray, cfg: PipelineConfig):
        faces = self.cascade.detectMultiScale(cv2.equalizeHist(frame), scaleFactor=1.1, minNeighbors=5,
                                              minSize=(40, 40))
        if not len(faces):
            return None
        x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
        side = int(max(fw, fh) * 1.1)
        x0, y0 = max(0, x + fw // 2 - side // 2), max(0, y + fh // 2 - side // 2)
        cv2.resize(frame[y0:y0 + side, x0:x0 + side], (cfg.image_size, cfg.image_size), interpolation=cv2.INTER_AREA)
        return np.array([x + fw / 2, y + fh / 2])


def timed(fn, *args):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, (time.perf_counter() - w0) * 1000, (time.process_time() - c0) * 1000


def run(clips: list[Path], model_dir: Path, faceless: list[Path] = (), variants: tuple[str, ...] = VARIANTS) -> dict:
    manifest = read_manifest(model_dir)
    cfg = PipelineConfig.from_dict(manifest.preprocessing)
    det = BlazeFace(open_session(model_dir / manifest.artifacts[FACE_DETECTOR].file, FACE_DETECTOR,
                                 ["CPUExecutionProvider"], 1).session)
    haar = Haar()

    def blaze_step(img: np.ndarray):
        """visual.detect_face, keeping the detections to score them."""
        faces = visual.find_faces(img, det, cfg)
        return faces, (visual.face_crop(img, faces[0], cfg) if faces else None)
    stats = {v: {"frames": 0, "blaze_detected": 0, "blaze_usable": 0, "haar_detected": 0, "flagged": {},
                 "blaze_ms": [], "blaze_cpu_ms": [], "haar_ms": [], "haar_cpu_ms": []} for v in variants}
    limits = MediaLimits()
    visual.detect_face(np.full((270, 360), 128, np.uint8), det, cfg)  # warm-up
    per_clip = {}
    for clip in clips:
        info = media.probe(clip, limits)
        frames = list(media.stream_frames(clip, min(cfg.frame_fps, cfg.max_frames / info.duration_s),
                                          cfg.max_frames, cfg.frame_max_side, limits.timeout_s))
        per_clip[clip.name] = {"frames": len(frames), "frame_size": list(frames[0][1].shape[::-1]) if frames else None}
        for _, frame in frames:
            ref = det.detect(frame, cfg.face_score_threshold, cfg.face_nms_iou)
            ref_centre = (ref[0].box[:2] + ref[0].box[2:]) / 2 if ref else None
            for name in variants:
                img, m = variant(frame, name)
                s = stats[name]
                s["frames"] += 1
                centre = radius = None
                if ref_centre is not None:
                    centre = m[:, :2] @ ref_centre + m[:, 2]
                    radius = HIT_RADIUS * ref[0].width * abs(np.linalg.det(m[:, :2])) ** 0.5

                def hit(c) -> bool:
                    return c is not None and (centre is None or np.linalg.norm(c - centre) <= radius)

                (faces, crop), ms, cpu = timed(blaze_step, img)
                s["blaze_ms"].append(ms)
                s["blaze_cpu_ms"].append(cpu)
                found = hit((faces[0].box[:2] + faces[0].box[2:]) / 2 if faces else None)
                s["blaze_detected"] += found
                if found and crop is not None:
                    if crop.detected:
                        s["blaze_usable"] += 1
                    else:
                        s["flagged"][crop.reason] = s["flagged"].get(crop.reason, 0) + 1
                hc, ms, cpu = timed(haar, img, cfg)
                s["haar_ms"].append(ms)
                s["haar_cpu_ms"].append(cpu)
                s["haar_detected"] += hit(hc)
    # Frames with no face at all (a test pattern): any detection is a false one.
    false = {"frames": 0, "blaze_false": 0, "haar_false": 0}
    for clip in faceless:
        info = media.probe(clip, limits)
        for _, frame in media.stream_frames(clip, min(cfg.frame_fps, cfg.max_frames / info.duration_s),
                                            cfg.max_frames, cfg.frame_max_side, limits.timeout_s):
            false["frames"] += 1
            false["blaze_false"] += bool(visual.find_faces(frame, det, cfg))
            false["haar_false"] += haar(frame, cfg) is not None
    out = {"clips": per_clip, "faceless": {"clips": [c.name for c in faceless], **false}, "config": {k: v for k, v in cfg.to_dict().items() if k.startswith("face_")},
           "variants": {}}
    for name, s in stats.items():
        if not s["frames"]:
            continue
        n = s["frames"]
        out["variants"][name] = {
            "frames": s["frames"],
            "blaze_ms_sum": sum(s["blaze_ms"]), "haar_ms_sum": sum(s["haar_ms"]),
            "blaze_cpu_ms_sum": sum(s["blaze_cpu_ms"]), "haar_cpu_ms_sum": sum(s["haar_cpu_ms"]),
            "blaze_rate": s["blaze_detected"] / n, "blaze_usable_rate": s["blaze_usable"] / n,
            "haar_rate": s["haar_detected"] / n, "blaze_flagged": s["flagged"],
            "blaze_ms_median": statistics.median(s["blaze_ms"]), "blaze_cpu_ms_median": statistics.median(s["blaze_cpu_ms"]),
            "haar_ms_median": statistics.median(s["haar_ms"]), "haar_cpu_ms_median": statistics.median(s["haar_cpu_ms"]),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", default="", help="comma-separated video files")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"from {','.join(VARIANTS)}")
    ap.add_argument("--faceless", default="", help="comma-separated video files without any face")
    ap.add_argument("--model-dir", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    a = ap.parse_args(argv)
    res = run([Path(c) for c in a.clips.split(",") if c], a.model_dir, [Path(c) for c in a.faceless.split(",") if c],
              tuple(v for v in a.variants.split(",") if v))
    text = json.dumps(res, indent=1)
    if a.json:
        a.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
