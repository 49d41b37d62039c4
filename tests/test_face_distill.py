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
