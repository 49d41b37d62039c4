"""The pure parts of bench/heldout_eval.py: labels, seeded pairing, metrics. No server, no
ffmpeg, no corpora, no TensorFlow."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from service.model.calibration import expected_calibration_error

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def he():
    had_tf = "tensorflow" in sys.modules
    spec = importlib.util.spec_from_file_location("heldout_eval", REPO / "bench" / "heldout_eval.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["heldout_eval"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert had_tf or "tensorflow" not in sys.modules, "bench/heldout_eval.py must not import TensorFlow"
    return module


@pytest.mark.parametrize("code,label", [("01", "neutral"), ("02", "neutral"), ("03", "happy"), ("04", "sad"),
                                        ("05", "angry"), ("06", "fearful"), ("07", "disgust"), ("08", "surprised")])
def test_ravdess_codes_map_to_basic7(he, code, label):
    assert he.ravdess_label(f"03-01-{code}-02-01-02-16.flac") == label
    assert he.ravdess_label(f"/any/Actor_16/03-01-{code}-01-02-01-16.wav") == label


def test_ravdess_and_cremad_names_rejected_or_mapped(he):
    with pytest.raises(ValueError):
        he.ravdess_label("03-01-09-01-01-01-16.flac")  # no such emotion code
    with pytest.raises(ValueError):
        he.ravdess_label("Training_123.jpg")
    assert [he.cremad_label(f"1001_DFA_{e}_XX.flv") for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")] == [
        "angry", "disgust", "fearful", "happy", "neutral", "sad"]


def _items(he, labels_counts: dict[str, int], prefix: str):
    return [he.Item(Path(f"/{prefix}/{label}/{i:03d}"), label) for label, n in labels_counts.items() for i in range(n)]


def test_pairing_same_emotion_reproducible_and_prefix_stable(he):
    speech = _items(he, {"happy": 10, "sad": 6, "angry": 4, "surprised": 3}, "speech")
    faces = _items(he, {"happy": 30, "sad": 2, "angry": 9}, "faces")  # none for surprised
    pairs = he.pair_clips(speech, faces, seed=7)
    assert all(p.speech.label == p.face.label == p.label for p in pairs)
    assert {p.label for p in pairs} == {"happy", "sad", "angry"}          # no surprised faces: left out
    assert len(pairs) == 20                                                 # every clip with a face pool
    # same seed, input in another order: the same pairs
    assert he.pair_clips(list(reversed(speech)), list(reversed(faces)), seed=7) == pairs
    # distinct faces while the pool lasts (happy: 10 clips, 30 faces), reused beyond (sad: 6 clips, 2 faces)
    happy = [p.face for p in pairs if p.label == "happy"]
    assert len(set(happy)) == 10
    assert len({p.face for p in pairs if p.label == "sad"}) == 2
    # --limit keeps a prefix of the full run's pairs per emotion
    limited = he.pair_clips(speech, faces, seed=7, limit=3)
    assert len(limited) == 9
    for label in ("happy", "sad", "angry"):
        assert [p for p in limited if p.label == label] == [p for p in pairs if p.label == label][:3]
    # another seed: another draw
    assert he.pair_clips(speech, faces, seed=8) != pairs


def test_metrics_on_a_toy(he):
    classes = he.BASIC7
    eye = np.eye(len(classes))
    truth = ["happy", "happy", "sad", "angry"]
    probs = np.array([
        0.05 * eye[0] + 0.95 * eye[1],        # happy, right, 0.95
        0.4 * eye[1] + 0.6 * eye[2],          # sad for happy, wrong, 0.6
        0.2 * eye[1] + 0.8 * eye[2],          # sad, right, 0.8
        0.92 * eye[0] + 0.08 * eye[3],        # neutral for angry, wrong and confident
    ])
    m = he.classification_metrics(truth, probs)
    assert m["n"] == 4 and m["accuracy"] == 0.5
    assert m["uar"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)               # over the classes in the truth
    # F1: happy p=1 r=.5 -> 2/3; sad p=.5 r=1 -> 2/3; angry 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["mean_confidence"] == pytest.approx((0.95 + 0.6 + 0.8 + 0.92) / 4)
    assert m["wrong_confident"] == 1
    assert m["confusion"][classes.index("angry")][classes.index("neutral")] == 1
    # ECE by hand, 15 equal-width bins: each row alone in its bin -> mean |right - conf|
    expected = (abs(1 - 0.95) + abs(0 - 0.6) + abs(1 - 0.8) + abs(0 - 0.92)) / 4
    assert m["ece"] == pytest.approx(expected)
    y = np.array([classes.index(t) for t in truth])
    assert m["ece"] == pytest.approx(expected_calibration_error(y, probs, bins=15))
    # two rows in one bin: |mean right - mean conf| of the bin
    two = he.classification_metrics(["happy", "sad"], np.array([0.9 * eye[1] + 0.1 * eye[0],
                                                                0.9 * eye[1] + 0.1 * eye[0]]))
    assert two["ece"] == pytest.approx(abs(0.5 - 0.9))


def test_prob_vector_in_basic7_order(he):
    v = he.prob_vector({"sad": 0.7, "happy": 0.3})
    assert v.tolist() == [0.0, 0.3, 0.7, 0.0, 0.0, 0.0, 0.0]
