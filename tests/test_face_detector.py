"""The face front-end: BlazeFace decoding in numpy, aligned crops framed like the face
corpora, flags for unusable faces, and the detector as a bundle artifact."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import corpus_dir
from media import make_video

from service.model.bundle import BundleError, load_bundle
from service.pipeline import face_detector as fd
from service.pipeline import media, visual
from service.pipeline.config import MediaLimits, PipelineConfig
from service.pipeline.extract import decode_clip

CFG = PipelineConfig()


def test_anchors_follow_mediapipe_layout():
    a = fd.anchors()
    assert a.shape == (896, 2)
    # stride 8: 16x16 cells, 2 anchors each, row by row; then stride 16: 8x8 cells, 6 each
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[1], a[0])
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16])
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16])
    np.testing.assert_allclose(a[512:518], np.repeat([[0.5 / 8, 0.5 / 8]], 6, axis=0))
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_decode_and_weighted_nms():
    reg = np.zeros((896, 16), np.float32)
    logits = np.full((896, 1), -20.0, np.float32)
    a = fd.anchors()
    # two anchors of the same stride-16 cell see one face (slightly different boxes), one far away is weak
    for i, (dx, score) in enumerate([(0.0, 3.0), (4.0, 1.0)]):
        reg[600 + i, :4] = [dx, 0, 40, 40]
        reg[600 + i, 4:] = np.tile([dx, 0], 6)
        logits[600 + i] = score
    logits[10] = -1.0   # sigmoid 0.27: under the threshold
    boxes, kps, scores = fd.decode(reg, logits, 0.5)
    assert len(boxes) == 2 and kps.shape == (2, 6, 2)
    merged = fd.weighted_nms(boxes, kps, scores, 0.3)
    assert len(merged) == 1
    box, kp, score = merged[0]
    w_hi, w_lo = 1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))
    cx = a[600, 0] + (4.0 / 128) * w_lo / (w_hi + w_lo)
    assert (box[0] + box[2]) / 2 == pytest.approx(cx, abs=1e-6)
    assert box[2] - box[0] == pytest.approx(40 / 128, abs=1e-6)
    assert score == pytest.approx(w_hi)


def test_letterbox_maps_back_to_frame_pixels():
    frame = np.zeros((270, 360), np.uint8)
    x, lb = fd.letterbox(frame)
    assert x.shape == (1, 128, 128, 3) and x.min() >= -1 and x.max() <= 1
    assert lb.scale == pytest.approx(128 / 360) and lb.pad_x == 0 and lb.pad_y == pytest.approx((128 - 96) // 2)


@pytest.fixture(scope="module")
def cremad_frames():
    clip = corpus_dir("cremad_av") / "1001_DFA_HAP_XX.flv"
    return [f for _, f in media.stream_frames(clip, 4.0, 8, CFG.frame_max_side, 30.0)]


def test_real_faces_are_found_with_keypoints_where_the_face_is(detector, cremad_frames):
    for frame in cremad_frames:
        faces = detector.detect(frame)
        assert len(faces) == 1 and faces[0].score > 0.8
        f = faces[0]
        right_eye, left_eye, nose, mouth = f.keypoints[:4]
        assert right_eye[0] < nose[0] < left_eye[0]            # unmirrored: the person's right eye on the left
        assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
        assert f.box[0] < nose[0] < f.box[2] and f.box[1] < nose[1] < f.box[3]
        crop = visual.detect_face(frame, detector, CFG)
        assert crop.detected and crop.reason == "" and crop.image.shape == (CFG.image_size, CFG.image_size)


def _rotate(frame: np.ndarray, degrees: float) -> np.ndarray:
    h, w = frame.shape
    return cv2.warpAffine(frame, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))


@pytest.mark.parametrize("degrees", [20, -20])
def test_alignment_levels_the_eyes(detector, cremad_frames, degrees):
    """A frame rotated by ±20° gives about the crop of the upright frame (the keypoints' roll is
    off by ~2° in the median, 5-6° at worst: measured on the CREMA-D frames)."""
    frame = cremad_frames[2]
    upright_face = detector.detect(frame)[0]
    upright = visual.face_crop(frame, upright_face, CFG).image.astype(np.float32)
    rotated_face = detector.detect(_rotate(frame, degrees))[0]
    rotated = visual.face_crop(_rotate(frame, degrees), rotated_face, CFG)
    assert rotated.detected
    roll = visual.pose(rotated_face).roll_deg - visual.pose(upright_face).roll_deg
    assert roll == pytest.approx(-degrees, abs=6)  # OpenCV's positive angle turns counter-clockwise
    assert visual.face_size(rotated_face) == pytest.approx(visual.face_size(upright_face), rel=0.06)
    corr = np.corrcoef(upright.ravel(), rotated.image.astype(np.float32).ravel())[0, 1]
    assert corr > 0.7
    # a crop that is not aligned (the rotated frame's box, unrotated) matches worse
    f = detector.detect(_rotate(frame, degrees))[0]
    x0, y0, x1, y1 = f.box.astype(int)
    naive = cv2.resize(_rotate(frame, degrees)[max(0, y0):y1, max(0, x0):x1], upright.shape[::-1]).astype(np.float32)
    assert np.corrcoef(upright.ravel(), naive.ravel())[0, 1] < corr


def test_small_turned_and_blurred_faces_are_flagged(detector, cremad_frames):
    frame = cremad_frames[0]
    h, w = frame.shape
    tiny = np.zeros_like(frame)
    small = cv2.resize(frame, (w // 3, h // 3), interpolation=cv2.INTER_AREA)
    tiny[:h // 3, :w // 3] = small
    face = detector.detect(frame)[0]
    scaled = fd.Face(face.box / 3, face.keypoints / 3, face.score)
    assert visual.face_crop(tiny, scaled, CFG).reason == visual.TOO_SMALL
    blurred = cv2.GaussianBlur(frame, (0, 0), 6)
    assert visual.face_crop(blurred, face, CFG).reason == visual.BLURRED
    turned_kp = face.keypoints.copy()
    turned_kp[2, 0] = turned_kp[1, 0] + 5        # nose tip beyond the left eye: a profile
    turned = fd.Face(face.box, turned_kp, face.score)
    assert visual.pose(turned).yaw > CFG.face_max_yaw
    crop = visual.face_crop(frame, turned, CFG)
    assert crop.reason == visual.TURNED and not crop.detected


def test_smaller_face_found_by_the_tile_pass(detector, cremad_frames):
    """A face half as large (in a frame of the same size) is under what the short-range model
    sees at 128 px for the whole frame; the tile pass finds it, where it really is."""
    for frame in cremad_frames:
        h, w = frame.shape
        canvas = np.zeros_like(frame)
        canvas[h // 4:h // 4 + h // 2, w // 4:w // 4 + w // 2] = cv2.resize(frame, (w // 2, h // 2),
                                                                             interpolation=cv2.INTER_AREA)
        faces = visual.find_faces(canvas, detector, CFG)
        ref = detector.detect(frame)[0]
        assert faces and np.allclose(faces[0].box, ref.box / 2 + [w // 4, h // 4] * 2, atol=6)


def test_corpus_framing_is_what_the_config_says(detector):
    """FER2013 / CK+48 faces upscaled into a video-sized frame frame the face as the config's crop
    does (a small sample of the measurement that set it: `python -m trainer.face.detector framing`)."""
    from trainer.face.detector import measure_framing

    corpus_dir("fer2013"), corpus_dir("ckplus48")
    got = measure_framing(detector, n_fer=80, n_ck=40)
    for name in ("fer2013", "ckplus48"):
        g = got[name]
        assert g["detected"] >= 0.95 * g["images"]
        assert g["crop_scale_median"] == pytest.approx(CFG.face_crop_scale, rel=0.04)
        assert g["offset_down_median"] == pytest.approx(CFG.face_crop_offset, abs=0.03)
        assert abs(g["offset_across_median"]) < 0.03


def test_test_pattern_has_no_face_in_any_frame(detector, tmp_path):
    clip = make_video(tmp_path / "p.mp4", seconds=2, size="1280x720")
    faces = decode_clip(clip, CFG, MediaLimits(), detector=detector).faces
    assert faces.frames >= 7 and len(faces) == 0


def test_config_drops_retired_haar_parameters_and_refuses_unknown_ones():
    old = {**CFG.to_dict(), "face_margin": 0.05}
    assert PipelineConfig.from_dict(old) == CFG
    with pytest.raises(ValueError, match="unknown"):
        PipelineConfig.from_dict({**CFG.to_dict(), "face_mystery": 1})


def test_bundle_without_face_detector_is_refused(quick_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(quick_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["artifacts"]["face_detector"]
    assert entry["licence"] == "Apache-2.0" and [o["name"] for o in entry["outputs"]] == ["regressors", "classificators"]
    assert load_bundle(bundle, ["CPUExecutionProvider"]).face_detector is not None
    entry["outputs"][1]["name"] = "scores"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="outputs"):
        load_bundle(bundle, ["CPUExecutionProvider"])
    del manifest["artifacts"]["face_detector"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="face_detector"):
        load_bundle(bundle, ["CPUExecutionProvider"])
