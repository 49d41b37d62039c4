"""The pure parts of bench/heldout_eval.py: labels, seeded pairing, metrics, the framings (on
generated signals) and the summary rows of the new kinds. No server, no corpora, no TensorFlow;
ffmpeg only for one framed clip (skipped without it)."""
from __future__ import annotations

import importlib.util
import shutil
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


# ---------------------------------------------------------------- framings (generated signals)

SR = 16000


def tone(seconds: float, amp: float = 0.5, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(seconds * SR))) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), np.float32)


def speechlike(lead: float = 0.7, speech: float = 2.2, tail: float = 0.6, floor_db: float = -60.0) -> np.ndarray:
    """Noise `floor_db` below a tone burst: lead-in, `speech` seconds of tone, tail."""
    rng = np.random.default_rng(0)
    x = np.concatenate([silence(lead), tone(speech), silence(tail)])
    return (x + 0.5 * 10 ** (floor_db / 20) * rng.standard_normal(len(x))).astype(np.float32)


def test_frame_levels(he):
    levels = he.frame_levels(np.concatenate([tone(0.5, amp=0.5, hz=200.0), silence(0.3)]), SR)  # 2 periods a frame
    assert len(levels) == 80                                              # 10 ms frames
    assert levels[:50] == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.05)  # a sine's RMS
    assert (levels[50:] == -200).all()                                    # digital silence
    assert len(he.frame_levels(tone(0.005), SR)) == 1                     # shorter than a frame


def test_speech_span_first_and_last_word(he):
    x = speechlike(lead=0.7, speech=2.2, tail=0.6)
    a, b = he.speech_span(x, SR)
    assert abs(a - 0.7 * SR) <= 160 and abs(b - 2.9 * SR) <= 160          # within a frame
    # a frame 20 dB down counts as speech, one 40 dB down does not (the rule is 30 dB)
    quiet, softer = tone(0.2, amp=0.05), tone(0.2, amp=0.005)
    a, b = he.speech_span(np.concatenate([silence(0.3), quiet, tone(1.0), softer, silence(0.3)]), SR)
    assert (a, b) == (int(0.3 * SR), int(1.5 * SR))
    assert he.speech_span(silence(1.0), SR) == (0, SR)                   # nothing louder: all of it


def test_cut_window_seeded_and_inside(he):
    windows = [he.cut_window(8000, 8000 + 3 * SR, SR, seed) for seed in range(50)]
    for a, b in windows:
        assert 8000 <= a < b <= 8000 + 3 * SR and 1.5 * SR <= b - a <= 3.0 * SR
    assert len(set(windows)) > 40                                         # the seed draws
    assert he.cut_window(8000, 8000 + 3 * SR, SR, 7) == windows[7]        # reproducible
    assert he.cut_window(100, 100 + SR, SR, 3) == (100, 100 + SR)         # speech shorter: all of it


def test_reframe(he):
    x = speechlike(lead=0.7, speech=2.5, tail=0.6)
    a, b = he.speech_span(x, SR)
    speech = x[a:b]

    trim = he.reframe(x, "trim2s", seed=1)
    assert len(trim) == 2 * SR and np.array_equal(trim, x[a:a + 2 * SR])
    short = he.reframe(speechlike(lead=0.7, speech=1.0, tail=0.2), "trim2s", seed=1)
    assert len(short) == 2 * SR and (short[-int(0.7 * SR):] == 0).all()   # ends sooner: silence after

    for seed in range(10):
        cut = he.reframe(x, "cut", seed)
        assert 1.5 * SR <= len(cut) <= 2.5 * SR + 160                     # inside 2.5 s of speech
        windows = np.lib.stride_tricks.sliding_window_view(speech, 64)
        start = int(np.flatnonzero((windows == cut[:64]).all(axis=1))[0])
        assert np.array_equal(speech[start:start + len(cut)], cut)        # a window of the speech

        pad = he.reframe(x, "pad", seed)
        nz = np.flatnonzero(pad)
        before, after = nz[0], len(pad) - 1 - nz[-1]
        assert 0.5 * SR <= before <= 2.0 * SR and 0.5 * SR <= after <= 2.0 * SR + 1
        assert np.array_equal(pad[before:before + len(speech)], speech)
        assert (pad[:before] == 0).all() and (pad[before + len(speech):] == 0).all()  # digital silence

        late = he.reframe(x, "late", seed)
        assert len(late) == 6 * SR
        offset = np.flatnonzero(late)[0]
        assert 1.0 * SR <= offset <= 3.0 * SR
        assert np.array_equal(late[offset:offset + len(speech)], speech) and not late[offset + len(speech):].any()

    for framing in he.FRAMINGS:                                           # seeded: reproducible
        assert np.array_equal(he.reframe(x, framing, 5), he.reframe(x, framing, 5))
    assert not np.array_equal(he.reframe(x, "pad", 5), he.reframe(x, "pad", 6))
    long = he.reframe(speechlike(lead=0.2, speech=4.5, tail=0.2), "late", seed=0)
    assert len(long) > 6 * SR                                             # no speech is lost
    with pytest.raises(ValueError, match="unknown framing"):
        he.reframe(x, "stretch", 0)


def test_framing_seeds_and_cache_paths_do_not_collide(he, tmp_path):
    seeds = {he.framing_seed(s, name, f) for s in (0, 1) for name in ("a.flac", "b.flac") for f in he.FRAMINGS}
    assert len(seeds) == 16 and he.framing_seed(0, "/x/a.flac", "cut") == he.framing_seed(0, "a.flac", "cut")
    speech = [he.Item(Path(f"/speech/03-01-0{c}-01-01-0{i}-17.flac"), label)
              for c, label, n in (("3", "happy", 2), ("4", "sad", 1)) for i in range(1, n + 1)]
    pairs = he.pair_clips(speech, _items(he, {"happy": 2, "sad": 1}, "faces"))
    jobs = [j for s in (0, 1) for j in he.plan_jobs(["audio", "framing"], pairs, [], tmp_path, seed=s)
            if j.kind == "framing"]
    assert len(jobs) == 2 * 4 * 3 and {j.row for j in jobs} == {f"framing:{f}" for f in he.FRAMINGS}
    from trainer.fusion.served_clips import framed_path
    paths = {framed_path(he.Item(Path(j.sources["speech"]), j.label), j.variant, s, tmp_path)
             for s in (0, 1) for j in jobs[:12]}
    assert len(paths) == 24


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_make_framed_encodes_like_audio(he, tmp_path):
    from trainer.fusion.served_clips import decode_mono, make_framed, write_wav

    src = write_wav(tmp_path / "03-01-03-01-01-01-17.wav", speechlike(lead=0.7, speech=2.0, tail=0.6))
    item = he.Item(src, "happy")
    out = make_framed(item, "late", 0, tmp_path / "cache")
    assert out.suffix == ".m4a" and out.exists() and "framing" in out.parts
    y = decode_mono(out)
    assert abs(len(y) / SR - 6.0) < 0.1                                   # 6 s, AAC's padding aside
    lv = he.frame_levels(y, SR)
    onset = np.flatnonzero(lv > lv.max() - 30)[0] / 100
    expected = np.flatnonzero(he.reframe(decode_mono(src), "late", he.framing_seed(0, src.name, "late")))[0] / SR
    assert abs(onset - expected) < 0.06
    assert make_framed(item, "late", 0, tmp_path / "cache") == out        # cached
    assert make_framed(item, "late", 1, tmp_path / "cache") != out        # another seed: another file


# ---------------------------------------------------------------- URDU and the summary rows

def test_restricted_accuracy(he):
    eye = np.eye(len(he.BASIC7))
    probs = np.array([0.6 * eye[4] + 0.4 * eye[3],    # fearful answered; angry wins among the 4
                      0.7 * eye[6] + 0.3 * eye[1],    # surprised; happy among the 4 (truth sad)
                      eye[0]])                        # neutral, right
    assert he.restricted_accuracy(["angry", "sad", "neutral"], probs, he.URDU4) == pytest.approx(2 / 3)
    assert he.classification_metrics(["angry", "sad", "neutral"], probs)["accuracy"] == pytest.approx(1 / 3)
    assert he.restricted_accuracy([], np.zeros((0, 7)), he.URDU4) is None


def _rec(he, kind, true, label, face=None, variant=None):
    p = {c: (0.95 if c == label else 0.05 / 6) for c in he.BASIC7}
    r = {"kind": kind, "true": true, "status": 200, "label": label, "probabilities": p, "clip": f"/c/{true}.m4a",
         "modalities": {"face": "detected" if face else "missing", "audio": "present"},
         "probabilities_by_modality": {"audio": p, "face": {c: float(c == face) for c in he.BASIC7} if face else None}}
    if variant:
        r["variant"] = variant
    return r


def test_summary_rows_of_the_new_kinds(he):
    records = [_rec(he, "audio", "happy", "happy"), _rec(he, "framing", "happy", "sad", variant="trim2s"),
               _rec(he, "framing", "happy", "happy", variant="late"),
               _rec(he, "urdu", "angry", "fearful"), _rec(he, "urdu", "sad", "sad"),
               _rec(he, "urdu_face", "angry", "neutral", face="angry"),   # face right, fused wrong
               _rec(he, "urdu_face", "sad", "sad", face="happy")]         # fused right, face wrong
    summary = he.summarise(records, ["audio", "framing", "urdu", "urdu_face"])
    assert list(summary) == ["audio", "framing:trim2s", "framing:late", "urdu", "urdu_face"]
    assert summary["framing:trim2s"]["accuracy"] == 0 and summary["framing:late"]["accuracy"] == 1
    u = summary["urdu"]
    assert u["accuracy"] == 0.5 and u["answered"] == {"fearful": 1, "sad": 1} and u["wrong_confident"] == 1
    assert "accuracy_4" in u and "face_right_fused_wrong" not in u
    f = summary["urdu_face"]
    assert f["face_view_accuracy"] == 0.5 and (f["face_right_fused_wrong"], f["fused_right_face_wrong"]) == (1, 1)
    meta = {"split": "test", "split_note": "x", "model_dir": "m", "model": "m", "limit": None, "seed": 0}
    table = he.markdown(summary, records, meta)
    for row in ("| framing:trim2s | 1 | 0 | – |", "| framing:late |", "| urdu | 2 |", "| urdu_face | 2 | 0 | 2/2 |"):
        assert row in table
    assert "| urdu | 2 | 0.500 |" in table and "fearful 1, sad 1" in table
