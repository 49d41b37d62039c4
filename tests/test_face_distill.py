"""Distillation of the face teachers into the face ResNet (trainer/face/distill.py): pools,
their weights, and soft targets reaching the training loop."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.face.distill import choose_weights, log_linear, parse_pool, pool_spec
from trainer.face.training import FaceRecipe, train_face_backbone


def test_committed_checkpoints_keep_their_key_and_a_distilled_schedule_gets_its_own():
    plain = FaceRecipe(epochs=12, init_from="a23e6f9b1bd676ef", lowres_prob=0.3)
    assert "distill" not in plain.key() and "distill_alpha" not in plain.key()
    assert FaceRecipe(epochs=12, init_from="a23e6f9b1bd676ef", lowres_prob=0.3, distill="zoo=1").key() != plain.key()


def test_log_linear_pool_and_weights_chosen_on_the_given_faces():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 400)
    good = np.full((400, 7), 0.01)
    good[np.arange(400), y] = 0.94                    # right every time, and sure of it
    noise = rng.dirichlet(np.ones(7), 400)
    probs = {"a": noise, "b": good / good.sum(1, keepdims=True)}
    assert np.allclose(log_linear(probs, {"a": 1, "b": 0}), noise)  # weight 0 leaves a member out
    weights, acc = choose_weights(probs, y, ("a", "b"))
    assert acc == 1.0 and weights["b"] > 0
    assert parse_pool(pool_spec({"expert": 1.0, "zoo": 0.5})) == {"expert": 1.0, "zoo": 0.5}


@pytest.mark.slow
def test_soft_targets_are_what_the_network_learns(tmp_path):
    """Labels say class 0 for every face; soft targets say class 2: the distilled network follows them."""
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (64, 16, 16), dtype=np.uint8), np.zeros(64, int)
    targets = np.tile(np.array([0.0, 0.0, 1.0], np.float32), (64, 1))
    recipe = FaceRecipe(image_size=16, widths=(8,), blocks=(1,), epochs=2, batch_size=32, xla=False,
                        peak_lr=0.1, warmup_epochs=1, distill="test=1", label_smoothing=0.0)
    calls = []
    clf, _, _ = train_face_backbone(x, y, x[:32], y[:32], 3, recipe, tmp_path / "d",
                                    targets=lambda: calls.append(1) or targets)
    assert calls == [1]
    from trainer.face.training import predict_faces

    assert (predict_faces(clf, x[:32], 127.5, 127.5).argmax(1) == 2).mean() > 0.9
    _, _, _ = train_face_backbone(x, y, x[:32], y[:32], 3, recipe, tmp_path / "d",
                                  targets=lambda: calls.append(2) or targets)
    assert calls == [1]                               # finished: the targets are not asked for again


@pytest.mark.slow
def test_a_bundle_with_the_served_weights_as_student_answers_as_the_shipped_bundle(tmp_path, data_dir):
    """bundle_with_student on the served expert's own checkpoint: the service opens the copy
    (every sha256 checked) and its face expert answers real faces as the shipped one does."""
    from conftest import REPO_ROOT
    from service.model.bundle import load_bundle
    from service.pipeline.config import PipelineConfig
    from service.pipeline.visual import resnet_input
    from trainer.cache import FeatureCache
    from trainer.data import LABEL_SETS
    from trainer.face.backbone import COMMITTED, face_samples, load_faces
    from trainer.face.distill import SERVED, bundle_with_student

    shipped = REPO_ROOT / "models" / "default"
    cfg, cache = PipelineConfig(image_size=48), FeatureCache(tmp_path / "cache")
    samples = {k: [s for s in v if s.corpus == "fer2013"][:16] for k, v in face_samples(data_dir, ("fer2013",)).items()}
    out = bundle_with_student(shipped, tmp_path / "b", COMMITTED / f"{SERVED}.npz", cache, samples)
    with pytest.raises(SystemExit, match="exists"):
        bundle_with_student(shipped, out, COMMITTED / f"{SERVED}.npz", cache, samples)
    x = resnet_input(load_faces(samples["test"], cfg, cache, list(LABEL_SETS["basic7"]))[0], cfg)
    answers = []
    for bundle in (load_bundle(shipped), load_bundle(out)):
        answers.append(bundle.sessions["face_head"].run(bundle.sessions["image_features"].run(x)))
    assert np.abs(answers[0] - answers[1]).max() < 0.02
    assert (answers[0].argmax(1) == answers[1].argmax(1)).mean() >= 0.9


def test_the_model_card_names_the_teachers_and_marks_the_contaminated_columns():
    from types import SimpleNamespace

    from trainer.face.teachers import SOURCES
    from trainer.report.writer import _face_teachers

    cell = {"n": 10, "accuracy": 0.5, "uar": 0.4}
    cols = ("val fer2013:train", "val rafdb", "test rafdb", "test fer2013:public_test", "test ckplus")
    t = {"rows": {"zoo": {c: cell for c in cols}}, "pools": {}, "pool": "expert=1,zoo=1", "alpha": 0.5, "epochs": 3,
         "sources": {k: {"model": v[0], "licence": v[1], "note": v[2]} for k, v in SOURCES.items()}}
    text = "\n".join(_face_teachers(SimpleNamespace(metrics={"face_teachers": t})))
    assert "RAF-DB val carve*" in text and "trained on RAF-DB" in text and "Apache-2.0" in text and "MIT" in text
    assert _face_teachers(SimpleNamespace(metrics={})) == []


def test_distilling_over_every_kth_face_keys_its_own_checkpoint():
    from trainer.face.distill import distill_recipe

    assert "distill_every" not in distill_recipe().key()
    assert distill_recipe(every=3).key()["distill_every"] == 3
