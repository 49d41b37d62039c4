"""The pretrained teachers of the face expert (trainer/face/teachers.py): each conversion
reproduces its reference on real faces, and each teacher gets the crop it was trained on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import corpus_dir

pytest.importorskip("onnxruntime")
from trainer.face import teachers as T  # noqa: E402


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"pretrained model {path} not found (../shared/models)")
    return path


def _real_faces(n: int = 12) -> list[np.ndarray]:
    """RGB images: RAF-DB colour photos and FER2013 grey crops, one per emotion folder in turn."""
    from trainer.face.soft_labels import read_rgb

    files = []
    for corpus, pattern in (("rafdb", "train/*/*.jpg"), ("fer2013", "public_test/*/*")):
        found = sorted(corpus_dir(corpus).glob(pattern))
        files += found[:: max(1, len(found) // (n // 2))][: n // 2]
    return [read_rgb(f) for f in files]


@pytest.fixture(scope="module")
def yunet():
    return T.YuNet(_need(T.YUNET_ONNX))


def test_tfjs_reader_reads_every_weight_of_the_manifest():
    weights = T.read_tfjs_weights(_need(T.FACE_API_DIR))
    assert len(weights) == 49 and weights["fc/weights"].shape == (256, 7)
    # uint8-quantised: every value on the grid min + k * scale, k in 0..255
    assert weights["dense0/conv0/filters"].min() >= -0.7126 and weights["dense0/conv0/filters"].max() <= 0.766


def test_face_api_onnx_matches_its_graph_on_real_faces(tmp_path, yunet):
    """Keras build -> ONNX (the trainer's exporter) against the graph written with TensorFlow's
    raw ops as face-api's TypeScript calls tf.js, on real faces cropped as face-api crops."""
    import onnxruntime as ort

    weights = T.read_tfjs_weights(_need(T.FACE_API_DIR))
    x = np.stack([T.face_api_input(img, yunet.find(img).box) for img in _real_faces()])
    ref = T.face_api_reference(weights, x)
    export = T.export_face_api(tmp_path / "face_api.onnx", x[:2])
    got = ort.InferenceSession(str(export.path), providers=["CPUExecutionProvider"]).run(None, {"face": x})[0]
    assert np.abs(got - ref).max() < 1e-4
    assert len(set(ref.argmax(1))) > 1, "one answer for every face: a broken graph"


def test_zoo_with_a_batch_axis_answers_as_the_published_model(tmp_path, yunet):
    import onnxruntime as ort

    published = ort.InferenceSession(str(_need(T.ZOO_ONNX)), providers=["CPUExecutionProvider"])
    batched = ort.InferenceSession(str(T.zoo_with_batch_axis(tmp_path / "zoo.onnx")),
                                   providers=["CPUExecutionProvider"])
    x = np.stack([T.zoo_input(img, yunet.find(img).landmarks) for img in _real_faces(8)])
    ref = np.concatenate([published.run(None, {"data": x[i:i + 1]})[0] for i in range(len(x))])
    assert np.array_equal(batched.run(None, {"data": x})[0], ref)


def test_alignment_puts_yunet_landmarks_on_the_arcface_template(yunet):
    found = [yunet.find(img) for img in _real_faces()]
    assert sum(f.detected for f in found) >= 10, "YuNet should find nearly every corpus face"
    for f in found:
        if f.detected:
            m = T.similarity_transform(f.landmarks, T.ARCFACE_112)
            moved = f.landmarks @ m[:, :2].T + m[:, 2]
            assert np.abs(moved - T.ARCFACE_112).max() < 12  # px of 112: a face, not a reflection


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = T.similarity_transform(src, src @ (scale * rot).T + shift)
    assert np.allclose(m[:, :2], scale * rot) and np.allclose(m[:, 2], shift)


def test_teacher_classes_map_onto_basic7():
    p = np.eye(7)
    for classes in (T.FACE_API_CLASSES, T.ZOO_CLASSES):
        mapped = T.to_basic7(p, classes)
        from trainer.data import BASIC7
        for i, c in enumerate(classes):
            assert mapped[i].argmax() == BASIC7.index(c)
