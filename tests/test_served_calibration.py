"""Calibration through the serving path (trainer/fusion/served_calibration.py): the refit on
synthetic answers, and on the quick bundle that the step scores exactly what the service
serves."""
from __future__ import annotations

import numpy as np

from service.model.manifest import Calibration, Fusion
from trainer.fusion.served_calibration import ServedClip, refit


def _clip(rng, view, y, strength, sharpness=1.0):
    def answer():
        z = rng.normal(size=7)
        z[y] += strength
        p = np.exp(sharpness * z)
        return p / p.sum()

    experts = {"audio": answer(), "face": answer()} if view == "fused" else {}
    return ServedClip("av" if view == "fused" else view, y, view, np.zeros((8, 4)), experts, answer())


def test_refit_tempers_overconfident_views_and_fits_the_fusion_weights():
    rng = np.random.default_rng(0)
    clips = [_clip(rng, view, int(rng.integers(0, 7)), 1.0, sharpness=4.0)
             for view in ("fused", "audio") for _ in range(300)]
    old = Calibration.model_validate({"views": {"face": {"temperature": 1.7, "n_validation": 9}}})
    calibration, fusion, accuracy = refit(clips, old, Fusion(method="late_weighted", w_audio=2.5, w_face=2.5))
    assert calibration.views["audio"].temperature > 2.0  # answers four times too sharp
    assert calibration.views["fused"].n_validation == 300
    assert calibration.views["face"].temperature == 1.7  # no face-only clip: kept
    assert fusion.method == "late_weighted" and max(fusion.w_audio, fusion.w_face) < 1.0
    assert set(accuracy) == {"late_weighted", "sequence"}


def test_refit_can_choose_the_fusion_more_accurate_on_the_clips():
    """The sequence model's fused answer (the fused clips' raw answer) against the pooled
    experts: with `choose`, whichever is right more often is served."""
    rng = np.random.default_rng(1)
    fusion = Fusion(method="late_weighted")
    sharp_raw = [_clip(rng, "fused", int(rng.integers(0, 7)), 0.0) for _ in range(200)]
    for c in sharp_raw:                     # experts are noise; the sequence answer knows the class
        c.raw = np.eye(7)[c.y] * 0.9 + 0.1 / 7
    _, kept, accuracy = refit(sharp_raw, None, fusion)
    assert kept.method == "late_weighted" and accuracy["sequence"] == 1.0 > accuracy["late_weighted"]
    _, chosen, _ = refit(sharp_raw, None, fusion, choose=True)
    assert chosen.method == "sequence"
    strong_experts = [_clip(rng, "fused", int(rng.integers(0, 7)), 4.0) for _ in range(200)]
    for c in strong_experts:
        c.raw = np.full(7, 1 / 7)
    _, chosen, accuracy = refit(strong_experts, None, Fusion(method="sequence"), choose=True)
    assert chosen.method == "late_weighted" and accuracy["late_weighted"] > accuracy["sequence"]


def test_the_step_scores_what_the_service_serves(quick_bundle, data_dir, tmp_path):
    """The quick build ran the step; its served answers of validation clips equal predict_file's."""
    from pathlib import Path

    from service.model.bundle import load_bundle
    from service.model.predictor import predict_file
    from service.pipeline.config import MediaLimits
    from trainer.fusion.served_calibration import FITTED_ON, answer_clips, make_clips, served_probabilities

    bundle = load_bundle(quick_bundle)
    manifest = bundle.manifest
    assert manifest.calibration.fitted_on == FITTED_ON
    test = manifest.metrics["served_clips"]["test"]["by_kind"]
    assert test and set(test) <= {"av", "face", "audio"}
    assert all(v["served"]["n"] > 0 for v in test.values())
    # every av and audio clip has a voice, so each is answered
    clips = [c for c in make_clips(data_dir, "val", tmp_path, per_class=1) if c[0] in ("av", "audio")][:4]
    answered = answer_clips(bundle, clips, MediaLimits())
    assert len(answered) == len(clips)
    ours = served_probabilities(bundle, manifest, answered)
    theirs = [predict_file(bundle, Path(p), MediaLimits())["probabilities"] for _, p, _ in clips]
    np.testing.assert_allclose(ours, np.array([[t[c] for c in bundle.classes] for t in theirs]), atol=1e-5)


def test_a_refit_starts_from_the_pseudo_pair_fit_the_bundle_recorded(quick_bundle):
    """Refitting a bundle that was already refitted (python -m trainer.fusion.served_calibration)
    starts from the classifiers stage's fit, so its `pseudo_pairs` column stays that fit."""
    import pytest

    from service.model.manifest import Manifest
    from trainer.fusion.served_calibration import pseudo_pair_fit

    served, _ = Manifest.read(quick_bundle)
    before = served.metrics["served_clips"]
    restored = pseudo_pair_fit(served)
    assert restored.fusion.w_audio == before["fusion_before"]["w_audio"]
    assert restored.fusion.w_face == before["fusion_before"]["w_face"]
    assert restored.calibration.model_dump(mode="json") == before["calibration_before"]
    assert restored.calibration.fitted_on != served.calibration.fitted_on     # not the serving-path fit
    fresh = served.model_copy(update={"metrics": {k: v for k, v in served.metrics.items() if k != "served_clips"}})
    assert pseudo_pair_fit(fresh) is fresh                                    # nothing refitted yet
    unrecorded = served.model_copy(update={"metrics": {**served.metrics, "served_clips": {
        k: v for k, v in before.items() if k != "calibration_before"}}})
    with pytest.raises(ValueError, match="--from served_calibration"):
        pseudo_pair_fit(unrecorded)
