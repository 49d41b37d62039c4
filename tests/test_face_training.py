"""The face backbone's training: time budget, checkpoint, resume, and the portable (fp16)
checkpoint a fresh clone resumes from."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from trainer.face.training import FaceRecipe, TrainingPaused, _Checkpoint, lr_at, train_face_backbone


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
    longer = replace(recipe, restarts=(1,))                # a warm restart starts where it ended
    _, _, extended = train_face_backbone(x, y, x[:32], y[:32], 3, longer, tmp_path / "longer",
                                         extends_from=_Checkpoint(tmp_path / "fresh"))
    assert extended[:2] == curve and extended[2]["epoch"] == 3
    assert extended[2]["lr_end"] == pytest.approx(lr_at(3 * 3 - 1, 3, longer))
    assert 0 < extended[2]["lr_end"] < longer.restart_lr   # on the restart's cycle
    with pytest.raises(ValueError, match="another recipe"):  # a checkpoint of another schedule is refused
        train_face_backbone(x, y, x[:32], y[:32], 3, replace(recipe, epochs=5, restarts=(1,)), tmp_path / "other",
                            extends_from=_Checkpoint(tmp_path / "fresh"))


def test_warm_restarts_extend_the_schedule_and_keep_the_old_key():
    r = FaceRecipe(epochs=10, warmup_epochs=2, peak_lr=0.1)
    longer = FaceRecipe(epochs=10, warmup_epochs=2, peak_lr=0.1, restarts=(5,), restart_lr=0.02)
    assert "restarts" not in r.key() and longer.key() != r.key()     # schedules keyed before restarts keep their key
    assert longer.extends().key() == r.key() and longer.total_epochs == 15
    for step in (0, 150, 500, 999):                                   # identical up to the first schedule's end
        assert lr_at(step, 100, longer) == pytest.approx(lr_at(step, 100, r))
    assert lr_at(1000, 100, longer) == pytest.approx(0.02)            # the restart
    assert lr_at(1250, 100, longer) == pytest.approx(0.01)
    assert lr_at(1499, 100, longer) == pytest.approx(0.0, abs=1e-5)
    assert lr_at(2000, 100, longer) == 0.0


def test_the_tensorflow_schedule_is_lr_at():
    tf = pytest.importorskip("tensorflow")
    from trainer.face.training import _schedule
    longer = FaceRecipe(epochs=10, warmup_epochs=2, peak_lr=0.1, restarts=(5, 3), restart_lr=0.02)
    sched = _schedule(100, longer)
    for step in (0, 199, 200, 700, 999, 1000, 1250, 1499, 1500, 1650, 1799, 2500):
        assert float(sched(tf.constant(step))) == pytest.approx(lr_at(step, 100, longer), abs=1e-6), step
