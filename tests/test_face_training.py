"""The face backbone's training: time budget, checkpoint, resume, and the portable (fp16)
checkpoint a fresh clone resumes from."""
from __future__ import annotations

import numpy as np
import pytest

from trainer.face_training import FaceRecipe, TrainingPaused, _Checkpoint, lr_at, train_face_backbone


def test_schedule_warms_up_then_decays_to_zero():
    r = FaceRecipe(epochs=10, warmup_epochs=2, peak_lr=0.1)
    assert lr_at(0, 100, r) == pytest.approx(0.1 / 200)
    assert lr_at(199, 100, r) == pytest.approx(0.1)
    assert lr_at(999, 100, r) == pytest.approx(0.0, abs=1e-5)
    assert lr_at(600, 100, r) < lr_at(300, 100, r)


def test_recipe_key_ignores_how_steps_run():
    assert FaceRecipe(mixed_bfloat16=True, xla=False).key() == FaceRecipe(mixed_bfloat16=False, xla=True).key()
    assert FaceRecipe(epochs=3).key() != FaceRecipe(epochs=4).key()


@pytest.mark.slow
def test_paused_run_resumes_and_a_portable_checkpoint_seeds_a_fresh_directory(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (96, 24, 24), dtype=np.uint8), rng.integers(0, 3, 96)
    recipe = FaceRecipe(image_size=24, widths=(8, 16), blocks=(1, 1), epochs=2, batch_size=32, xla=False)
    with pytest.raises(TrainingPaused, match="run the same command again"):
        train_face_backbone(x, y, x[:32], y[:32], 3, recipe, tmp_path / "a", max_minutes=1e-6)
    portable = _Checkpoint(tmp_path / "a").write_portable(tmp_path / "seed.npz")
    with np.load(portable) as z:
        assert z["w0000"].dtype == np.float16
    _, backbone, curve = train_face_backbone(x, y, x[:32], y[:32], 3, recipe, tmp_path / "fresh",
                                             seed_checkpoint=portable)
    assert [c["epoch"] for c in curve] == [1, 2]          # epoch 1 from the seed, epoch 2 trained here
    assert backbone.output_shape == (None, 16)
    _, _, again = train_face_backbone(x, y, x[:32], y[:32], 3, recipe, tmp_path / "fresh")
    assert again == curve                                  # finished: nothing left to train
