"""The bundle's face detector: MediaPipe BlazeFace (short range) converted to ONNX.

The model is `face_detection_short_range.tflite` from the PyPI wheel `mediapipe==0.10.14`
(Apache-2.0; newer wheels ship no .tflite), pinned by its sha256. It is fetched once with
`pip download` into the cache (only that file is kept), converted with
`python -m tf2onnx.convert --tflite F --opset 17` and checked against TensorFlow Lite's own
interpreter on the same inputs. Anchors, decoding and non-maximum suppression are numpy code
in the shared pipeline (`service.pipeline.face_detector`).

    python -m trainer.face.detector export OUT_DIR          # OUT_DIR/face_detector.onnx
    python -m trainer.face.detector add BUNDLE_DIR          # add it to an existing bundle (manifest updated)
    python -m trainer.face.detector framing [--data DIR]    # measure the crop framing on FER2013 / CK+48

`build` wiring: `exports["face_detector"] = export_face_detector(stage)`; its
`manifest_entry()` carries the second output, the licence and the source.
"""
from __future__ import annotations

import argparse
import glob
import json
import random
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from service.model.bundle import FACE_DETECTOR, MANIFEST, sha256_file
from service.pipeline import face_detector as fd
from service.pipeline.config import PipelineConfig
from trainer.export import ExportResult
from trainer.paths import CACHE_DIR, DATA_DIR

MEDIAPIPE = "mediapipe==0.10.14"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
TFLITE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
LICENCE = "Apache-2.0"
SOURCE = {
    "model": "MediaPipe BlazeFace, short range (face_detection_short_range.tflite)",
    "package": MEDIAPIPE, "member": MEMBER, "tflite_sha256": TFLITE_SHA256, "licence": LICENCE,
    "licence_url": "https://github.com/google-ai-edge/mediapipe/blob/v0.10.14/LICENSE",
    "model_card": "https://storage.googleapis.com/mediapipe-assets/MediaPipe%20BlazeFace%20Model%20Card%20(Short%20Range).pdf",
    "converted_with": "python -m tf2onnx.convert --tflite F --opset 17 (tf2onnx 1.17)",
}
FILE = "face_detector.onnx"
PARITY_ATOL = 1e-3     # raw regressors are pixels of a 128-px input, logits up to ~100
DEFAULT_CACHE = CACHE_DIR / "detector"
DEFAULT_DATA = DATA_DIR


@dataclass
class DetectorExport(ExportResult):
    """An `ExportResult` (first output: `regressors`) with every output, licence and source."""

    outputs: list[dict[str, Any]] = field(default_factory=list)

    def artifact(self, **extra: Any):
        return super().artifact(outputs=self.outputs, licence=LICENCE, source=SOURCE, **extra)

    def manifest_entry(self) -> dict[str, Any]:
        return self.artifact().model_dump(mode="json", exclude_none=True)


def fetch_tflite(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The pinned .tflite, from the cache or from the mediapipe wheel (pip download, no deps)."""
    cache_dir = Path(cache_dir)
    target = cache_dir / Path(MEMBER).name
    if target.is_file() and sha256_file(target) == TFLITE_SHA256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mediapipe-") as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", MEDIAPIPE, "--no-deps", "--only-binary", ":all:",
                        "-q", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src, open(target.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    digest = sha256_file(target.with_suffix(".part"))
    if digest != TFLITE_SHA256:
        raise RuntimeError(f"{MEMBER} from {MEDIAPIPE} has sha256 {digest}, expected {TFLITE_SHA256}")
    target.with_suffix(".part").replace(target)
    return target


def _parity_inputs() -> np.ndarray:
    """Inputs for the TFLite-vs-ONNX check: noise, flat grey, and a smooth face-like blob."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:128, 0:128] / 127.0
    blob = np.exp(-((xx - 0.5) ** 2 / 0.05 + (yy - 0.5) ** 2 / 0.08)) * 2 - 1
    return np.stack([rng.uniform(-1, 1, (128, 128, 3)), np.zeros((128, 128, 3)),
                     np.repeat(blob[..., None], 3, -1)]).astype(np.float32)


def _tflite_outputs(tflite: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(tflite))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def export_face_detector(out_dir: Path, tflite: Path | None = None, cache_dir: Path = DEFAULT_CACHE) -> DetectorExport:
    """Convert BlazeFace to `out_dir/face_detector.onnx`, check it against TFLite, describe it."""
    import onnx
    import onnxruntime as ort

    tflite = Path(tflite) if tflite else fetch_tflite(cache_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILE
    proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--opset", "17",
                           "--output", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tf2onnx could not convert {tflite}:\n{proc.stderr[-3000:]}")
    onnx.checker.check_model(onnx.load(str(path)))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp, outs = sess.get_inputs()[0], sess.get_outputs()
    names = [o.name for o in outs]
    if inp.name != fd.INPUT_NAME or tuple(names) != fd.OUTPUT_NAMES:
        raise RuntimeError(f"unexpected graph signature {inp.name} -> {names}")
    worst = 0.0
    for x in _parity_inputs():
        ref = _tflite_outputs(tflite, x[None])
        got = dict(zip(names, sess.run(None, {inp.name: x[None]})))
        worst = max(worst, *(float(np.max(np.abs(ref[n] - got[n]))) for n in names))
    if worst > PARITY_ATOL:
        raise RuntimeError(f"ONNX face detector differs from TFLite by {worst:.2e} (> {PARITY_ATOL:g})")
    shapes = [list(o.shape) for o in outs]
    return DetectorExport(
        path=path, sha256=sha256_file(path), input_name=inp.name, output_name=names[0],
        input_shape=list(inp.shape), output_shape=shapes[0], max_abs_diff=worst, fp16_weights=False,
        tolerance=PARITY_ATOL, size_bytes=path.stat().st_size,
        outputs=[{"name": n, "shape": s} for n, s in zip(names, shapes)])


MODEL_CARD = """
## Face detector

`face_detector.onnx`: MediaPipe BlazeFace, short range (`face_detection_short_range.tflite` from
the PyPI wheel `mediapipe==0.10.14`, sha256 `{tflite}`), licence **Apache-2.0**
(Copyright Google LLC; https://github.com/google-ai-edge/mediapipe/blob/v0.10.14/LICENSE),
converted to ONNX with tf2onnx (opset 17; max |ONNX - TFLite| = {diff:.1e} on the check inputs).
Input `input` [1, 128, 128, 3] RGB in [-1, 1]; outputs `regressors` [1, 896, 16] and
`classificators` [1, 896, 1]; anchors, decoding and weighted NMS in `service/pipeline/face_detector.py`.
Made for faces within about 2 m of a phone camera (Google's model card): small or distant faces
are missed (a frame where none is found is searched again in 2x2 tiles). Video frames are cropped
around the largest face, eyes levelled, framed like the FER2013 / CK+48 faces (side {scale} x,
and centre {offset} x below the eyes, the eye distance + eyes-to-mouth distance).
"""


def add_face_detector(bundle_dir: Path, tflite: Path | None = None, cache_dir: Path = DEFAULT_CACHE) -> DetectorExport:
    """Add (or replace) the face detector of an existing bundle: the ONNX file, its manifest
    entry, the preprocessing parameters of this code (old Haar ones dropped, new ones at
    their defaults) and a model-card section in report.md. Until a bundle is rebuilt with it."""
    bundle_dir = Path(bundle_dir)
    manifest_path = bundle_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    result = export_face_detector(bundle_dir, tflite, cache_dir)
    # The face parameters of an older bundle described Haar-cascade crops: this code's
    # defaults (the measured BlazeFace framing and flag thresholds) replace them.
    defaults = PipelineConfig()
    face_params = {k: getattr(defaults, k) for k in defaults.to_dict() if k.startswith("face_")}
    cfg = replace(PipelineConfig.from_dict(manifest["preprocessing"]), **face_params)
    manifest["preprocessing"] = cfg.to_dict()
    manifest["artifacts"][FACE_DETECTOR] = result.manifest_entry()
    manifest.setdefault("provenance", {})["face_detector"] = (
        "added to this bundle by trainer.face.detector.add_face_detector; no trained model saw video crops "
        "(no audio-visual corpus), so the classifiers are unchanged")
    tmp = manifest_path.with_suffix(".json.part")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(manifest_path)
    report = bundle_dir / "report.md"
    if report.is_file() and "## Face detector" not in report.read_text():
        with open(report, "a") as fh:
            fh.write(model_card(result, cfg))
    return result


def model_card(result: ExportResult, cfg: PipelineConfig) -> str:
    return MODEL_CARD.format(tflite=TFLITE_SHA256, diff=result.max_abs_diff, scale=cfg.face_crop_scale,
                             offset=cfg.face_crop_offset)


# --------------------------------------------------------------------------- framing
def measure_framing(detector: fd.BlazeFace, data_dir: Path = DEFAULT_DATA, n_fer: int = 600, n_ck: int = 300,
                    upscale: int = 4, canvas: tuple[int, int] = (480, 360), seed: int = 0) -> dict[str, Any]:
    """How FER2013 / CK+48 crops frame a face, in terms of what the detector sees.

    Each corpus image (48x48) is upscaled `upscale` times into a grey canvas the size of a
    decoded video frame and run through the detector. With θ the eye-line angle, w the face
    size (`visual.face_size`: eye distance + eyes-to-mouth distance) and m the eye midpoint, the
    corpus crop (the whole image) has side s·w and centre m + w·(dx, dy) in the face's own axes
    (eyes level): the medians of s, dx, dy over the corpus are the crop framing (the same with
    the detector's box width for w is given beside); pose and sharpness percentiles give the
    flag thresholds."""
    import cv2

    from service.pipeline import visual

    rng = random.Random(seed)
    sets = {"fer2013": sorted(glob.glob(str(Path(data_dir) / "fer2013" / "train" / "*" / "*.jpg"))),
            "ckplus48": sorted(glob.glob(str(Path(data_dir) / "ckplus48" / "*" / "*.png")))}
    out: dict[str, Any] = {}
    cfg = PipelineConfig()
    for name, files in sets.items():
        rng.shuffle(files)
        files = files[: n_fer if name == "fer2013" else n_ck]
        rows = []
        for f in files:
            im = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
            n = im.shape[0]
            big = cv2.resize(im, (n * upscale, n * upscale), interpolation=cv2.INTER_CUBIC)
            w, h = canvas
            frame = np.full((h, w), 128, np.uint8)
            y0, x0 = (h - n * upscale) // 2, (w - n * upscale) // 2
            frame[y0:y0 + n * upscale, x0:x0 + n * upscale] = big
            faces = detector.detect(frame)
            if not faces:
                continue
            face = faces[0]
            kp = (face.keypoints - [x0, y0]) / upscale
            width = visual.face_size(face) / upscale
            box_width = face.width / upscale
            theta = np.arctan2(kp[1, 1] - kp[0, 1], kp[1, 0] - kp[0, 0])
            along, down = np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])
            rel = np.array([n / 2, n / 2]) - (kp[0] + kp[1]) / 2
            p = visual.pose(fd.Face(face.box, face.keypoints, face.score))
            rows.append((n / width, rel @ along / width, rel @ down / width, p.yaw, p.pitch, p.roll_deg,
                         visual.sharpness(visual.corpus_face(im, cfg).image), n / box_width, rel @ down / box_width))
        a = np.array(rows)
        pct = lambda col, qs: [round(float(v), 4) for v in np.percentile(a[:, col], qs)]  # noqa: E731
        out[name] = {
            "images": len(files), "detected": len(rows),
            "crop_scale_median": round(float(np.median(a[:, 0])), 4),
            "crop_scale_mad_rel": round(float(np.median(np.abs(a[:, 0] - np.median(a[:, 0]))) / np.median(a[:, 0])), 4),
            "offset_across_median": round(float(np.median(a[:, 1])), 4),
            "offset_down_median": round(float(np.median(a[:, 2])), 4),
            "by_box_width": {"crop_scale_median": round(float(np.median(a[:, 7])), 4),
                             "crop_scale_mad_rel": round(float(np.median(np.abs(a[:, 7] - np.median(a[:, 7])))
                                                               / np.median(a[:, 7])), 4),
                             "offset_down_median": round(float(np.median(a[:, 8])), 4)},
            "abs_yaw_p50_p95_p99": [round(float(v), 4) for v in np.percentile(np.abs(a[:, 3]), [50, 95, 99])],
            "pitch_p0.5_p50_p99.5": pct(4, [0.5, 50, 99.5]),
            "roll_deg_p5_p50_p95": pct(5, [5, 50, 95]),
            "sharpness_p1_p50": pct(6, [1, 50]),
        }
    return out


@lru_cache(maxsize=1)
def default_detector(cache_dir: Path = DEFAULT_CACHE) -> fd.BlazeFace:
    """BlazeFace converted once into the cache (for encoders that carry no detector session)."""
    out = Path(cache_dir) / f"onnx-{TFLITE_SHA256[:12]}"
    if not (out / FILE).is_file():
        export_face_detector(out, cache_dir=cache_dir)
    return fd.BlazeFace(_session(out / FILE))


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trainer.face.detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="convert BlazeFace to OUT/face_detector.onnx")
    e.add_argument("out", type=Path)
    a = sub.add_parser("add", help="add the face detector to an existing bundle directory")
    a.add_argument("bundle", type=Path)
    f = sub.add_parser("framing", help="measure the crop framing of FER2013 / CK+48 faces")
    f.add_argument("--data", type=Path, default=DEFAULT_DATA)
    f.add_argument("--onnx", type=Path, help="a converted detector (default: convert into a temp dir)")
    for p in (e, a, f):
        p.add_argument("--tflite", type=Path, help="face_detection_short_range.tflite (default: fetched, cached)")
    args = ap.parse_args(argv)
    if args.cmd == "export":
        print(json.dumps(export_face_detector(args.out, args.tflite).manifest_entry(), indent=1))
    elif args.cmd == "add":
        print(json.dumps(add_face_detector(args.bundle, args.tflite).manifest_entry(), indent=1))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = args.onnx or export_face_detector(Path(tmp), args.tflite).path
            print(json.dumps(measure_framing(fd.BlazeFace(_session(onnx_path)), args.data), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
