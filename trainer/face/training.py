"""Training the face backbone on face-image corpora, within a time budget, resumable.

The recipe a practitioner would recognise for FER2013-sized faces: random shifts, zoom,
small rotations and flips, brightness/contrast jitter and random erasing; label
smoothing; SGD with Nesterov momentum, a short linear warm-up then cosine decay sized to
the whole schedule; L2 weight decay on the convolutions; XLA-compiled training steps
(measured 2.5x faster on a 2-core AMD EPYC: 154 vs 62 faces/s); mixed bfloat16 only where
the CPU has avx512_bf16 (there 1.35-1.6x faster; without it bf16 is emulated: 12.6 faces/s
here). No class weighting: FER2013's accuracy is the target
and weighting its tiny "disgust" class trades accuracy for recall there.

A schedule longer than one run's time budget is built from several runs: after every epoch
the weights, the optimizer state and the learning curve go to `checkpoint_dir`; a run that
reaches its budget stops at the epoch boundary (`TrainingPaused`), and the next run with the
same recipe resumes exactly there (the schedule is a function of the global step). A finished
schedule is extended by warm restarts (`restarts`: further cosine cycles from `restart_lr`,
SGDR): such a recipe starts from the checkpoint of the schedule it extends. A recipe with
`init_from` is a fine-tuning schedule: it starts from the weights of that (committed)
checkpoint with a fresh optimizer, e.g. to add a corpus to what a finished schedule learnt.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("trainer.face")


EXECUTION_ONLY = ("mixed_bfloat16", "xla")
# Fields added after schedules were keyed: left out of the key at these values, so a
# committed checkpoint keeps its key.
LATER_FIELDS = {"init_from": "", "lowres_prob": 0.0, "distill": "", "distill_alpha": 0.5, "distill_every": 1}


class TrainingPaused(RuntimeError):
    """A run reached its time budget; its state is checkpointed and the same command resumes it."""


@dataclass(frozen=True)
class FaceRecipe:
    image_size: int = 48
    widths: tuple[int, ...] = (32, 64, 128, 256)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    epochs: int = 40
    batch_size: int = 64
    peak_lr: float = 0.05
    warmup_epochs: int = 2
    momentum: float = 0.9
    weight_decay: float = 2.5e-4         # L2 factor: gradient += 5e-4 * w, the usual SGD "wd 5e-4"
    label_smoothing: float = 0.1
    dropout: float = 0.2
    shift: float = 0.1                   # fraction of the side
    zoom: float = 0.1
    rotation_deg: float = 10.0
    erase_prob: float = 0.5
    mixed_bfloat16: bool = False         # `bf16_is_native()` decides the default in `FaceRecipe.for_this_cpu`
    xla: bool = True
    seed: int = 0
    restarts: tuple[int, ...] = ()       # warm restarts: epochs of each further cosine cycle
    restart_lr: float = 0.01             # ... each from this rate down to 0
    init_from: str = ""                  # fine-tuning: the checkpoint (committed key) whose weights start it
    lowres_prob: float = 0.0             # per face: shrunk to 35-100 % of its side and back (small, blurred video faces)
    distill: str = ""                    # distillation: the teachers' pool the soft targets come from (trainer.face.distill)
    distill_alpha: float = 0.5           # ... target = alpha * hard label + (1 - alpha) * the pool's probabilities
    distill_every: int = 1               # ... over every k-th training face (a shorter epoch on a busy CPU)

    def key(self) -> dict[str, Any]:
        """What the schedule computes: a checkpoint resumes under this key whatever the CPU
        (bf16 and XLA are how a step runs here, not what it computes). Without restarts the
        restart fields are left out, so schedules keyed before they existed keep their key."""
        skip = EXECUTION_ONLY + (() if self.restarts else ("restarts", "restart_lr"))
        return {k: v for k, v in asdict(self).items()
                if k not in skip and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}

    @property
    def total_epochs(self) -> int:
        return self.epochs + sum(self.restarts)

    def extends(self) -> "FaceRecipe | None":
        """The schedule this one continues (one warm restart fewer), if any."""
        return replace(self, restarts=self.restarts[:-1]) if self.restarts else None

    @classmethod
    def for_this_cpu(cls, **kw) -> "FaceRecipe":
        return cls(**{"mixed_bfloat16": bf16_is_native(), **kw})


def bf16_is_native() -> bool:
    """True where the CPU computes bfloat16 natively (avx512_bf16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _augmenter(recipe: FaceRecipe, seed: int):
    import keras
    from keras import layers

    return keras.Sequential([
        layers.RandomFlip("horizontal", seed=seed),
        layers.RandomRotation(recipe.rotation_deg / 360.0, fill_mode="reflect", seed=seed + 1),
        layers.RandomZoom(recipe.zoom, recipe.zoom, fill_mode="reflect", seed=seed + 2),
        layers.RandomTranslation(recipe.shift, recipe.shift, fill_mode="reflect", seed=seed + 3),
    ], name="face_augment")


def _random_erase(x, prob: float):
    """Per image, with probability `prob`, one rectangle (2-25 % of the area, aspect 0.3-3.3)
    filled with uniform noise (Zhong et al. 2020). x: float32 [B, s, s, 1] in [0, 255]."""
    import tensorflow as tf

    b, s = tf.shape(x)[0], tf.shape(x)[1]
    sf = tf.cast(s, tf.float32)
    area = tf.random.uniform([b], 0.02, 0.25) * sf * sf
    aspect = tf.exp(tf.random.uniform([b], math.log(0.3), math.log(3.3)))
    h = tf.clip_by_value(tf.sqrt(area * aspect), 1.0, sf)
    w = tf.clip_by_value(tf.sqrt(area / aspect), 1.0, sf)
    y0 = tf.random.uniform([b]) * (sf - h)
    x0 = tf.random.uniform([b]) * (sf - w)
    grid = tf.cast(tf.range(s), tf.float32)
    rows = (grid[None, :] >= y0[:, None]) & (grid[None, :] < (y0 + h)[:, None])
    cols = (grid[None, :] >= x0[:, None]) & (grid[None, :] < (x0 + w)[:, None])
    on = tf.random.uniform([b]) < prob
    box = rows[:, :, None] & cols[:, None, :] & on[:, None, None]
    noise = tf.random.uniform(tf.shape(x), 0.0, 255.0)
    return tf.where(box[..., None], noise, x)


def _low_resolution(x, prob: float):
    """Per image, with probability `prob`, the face shrunk to 35-100 % of its side (area filter)
    and brought back (bilinear): the detail a small or blurred face in a video frame has.
    x: float32 [B, s, s, 1]."""
    import tensorflow as tf

    s = x.shape[1]
    scale = tf.random.uniform([], 0.35, 1.0)
    small = tf.maximum(8, tf.cast(tf.round(scale * s), tf.int32))
    soft = tf.image.resize(tf.image.resize(x, [small, small], method="area"), [s, s], method="bilinear")
    on = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < prob
    return tf.where(on, soft, x)


def _normalise(x, pixel_mean: float, pixel_std: float):
    """Exactly `service.pipeline.visual.resnet_input`: (p - mean) / std, grey to 3 channels."""
    import tensorflow as tf

    return tf.repeat((x - pixel_mean) / pixel_std, 3, axis=-1)


def _datasets(train_x: np.ndarray, train_y: np.ndarray, recipe: FaceRecipe, pixel_mean: float,
              pixel_std: float, epoch_seed: int):
    import tensorflow as tf

    augment = _augmenter(recipe, recipe.seed + epoch_seed)

    def prepare(x, y):
        x = tf.cast(x, tf.float32)[..., None]
        x = augment(x, training=True)
        lo = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], 0.75, 1.25)      # contrast
        hi = tf.random.uniform([tf.shape(x)[0], 1, 1, 1], -25.0, 25.0)     # brightness
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = tf.clip_by_value((x - mean) * lo + mean + hi, 0.0, 255.0)
        if recipe.lowres_prob > 0:
            x = _low_resolution(x, recipe.lowres_prob)
        x = _random_erase(x, recipe.erase_prob)
        return _normalise(x, pixel_mean, pixel_std), y

    order = np.random.default_rng(recipe.seed * 1000 + epoch_seed).permutation(len(train_y))
    # One-hot labels as int32 (as every committed schedule trained); soft targets stay float.
    targets = train_y[order].astype(np.float32 if recipe.distill else np.int32)
    ds = tf.data.Dataset.from_tensor_slices((train_x[order], targets))
    return ds.batch(recipe.batch_size, drop_remainder=True).map(
        prepare, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def lr_at(step: int, steps_per_epoch: int, recipe: FaceRecipe) -> float:
    """Linear warm-up to `peak_lr`, then cosine decay to 0 at the end of the first schedule;
    each warm restart is a cosine cycle of its own from `restart_lr` to 0."""
    warm = recipe.warmup_epochs * steps_per_epoch
    total = recipe.epochs * steps_per_epoch
    if step < warm:
        return recipe.peak_lr * (step + 1) / warm
    if step < total or not recipe.restarts:
        return 0.5 * recipe.peak_lr * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    start = total
    for epochs in recipe.restarts:
        length = epochs * steps_per_epoch
        if step < start + length:
            return 0.5 * recipe.restart_lr * (1 + math.cos(math.pi * (step - start) / length))
        start += length
    return 0.0  # past the last cycle


def _schedule(steps_per_epoch: int, recipe: FaceRecipe):
    import keras
    import tensorflow as tf

    class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
        """`lr_at` in TensorFlow ops."""

        def __call__(self, step):
            step = tf.cast(step, tf.float32)
            warm = float(recipe.warmup_epochs * steps_per_epoch)
            total = float(recipe.epochs * steps_per_epoch)
            warm_lr = recipe.peak_lr * (step + 1.0) / max(warm, 1.0)
            frac = tf.minimum(1.0, (step - warm) / max(1.0, total - warm))
            lr = tf.where(step < warm, warm_lr, 0.5 * recipe.peak_lr * (1.0 + tf.cos(math.pi * frac)))
            start = total
            for epochs in recipe.restarts:
                length = float(epochs * steps_per_epoch)
                frac = tf.minimum(1.0, (step - start) / max(1.0, length))
                lr = tf.where(step >= start, 0.5 * recipe.restart_lr * (1.0 + tf.cos(math.pi * frac)), lr)
                start += length
            return lr

        def get_config(self):
            return {}

    return WarmupCosine()


def read_checkpoint(file: Path) -> dict[str, Any]:
    """A checkpoint file (a run's state.npz or its committed fp16 copy): weights and optimizer
    variables as float32, the learning curve and the recipe key."""
    def f32(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32) if a.dtype == np.float16 else a

    with np.load(file, allow_pickle=False) as z:
        n_w, n_o = int(z["n_weights"]), int(z["n_opt"])
        return {"weights": [f32(z[f"w{i:04d}"]) for i in range(n_w)],
                "optimizer": [f32(z[f"o{i:04d}"]) for i in range(n_o)],
                "curve": json.loads(str(z["curve"])), "recipe": json.loads(str(z["recipe"]))}


class _Checkpoint:
    """weights + optimizer variables + curve, in one npz written atomically. `seed`: a portable
    (fp16) copy of a checkpoint, committed to resume a schedule on a fresh clone, used when
    the directory holds none."""

    def __init__(self, directory: Path, seed: Path | None = None):
        self.dir = Path(directory)
        self.file = self.dir / "state.npz"
        self.seed = seed

    def source(self) -> Path | None:
        """The file `load` reads: this directory's checkpoint, else the seed, else None."""
        return self.file if self.file.is_file() else self.seed if self.seed and self.seed.is_file() else None

    def exists(self) -> bool:
        return self.source() is not None

    def load(self) -> dict[str, Any] | None:
        file = self.source()
        if file is None:
            return None
        if file == self.seed:
            log.info("face backbone: resuming from the committed checkpoint %s", file)
        return read_checkpoint(file)

    def write_portable(self, out: Path) -> Path:
        """This checkpoint with float32 arrays stored as float16 (half the bytes), for committing."""
        with np.load(self.file, allow_pickle=False) as z:
            arrays = {k: z[k].astype(np.float16) if z[k].dtype == np.float32 else z[k] for k in z.files}
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out, **arrays)
        return out

    def save(self, model, optimizer, curve: list[dict], recipe: FaceRecipe) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        weights = model.get_weights()
        opt = [np.asarray(v) for v in optimizer.variables]
        arrays = {f"w{i:04d}": w for i, w in enumerate(weights)}
        arrays.update({f"o{i:04d}": v for i, v in enumerate(opt)})
        tmp = self.dir / f".state.{os.getpid()}.tmp.npz"
        np.savez(tmp, n_weights=len(weights), n_opt=len(opt), curve=json.dumps(curve),
                 recipe=json.dumps(recipe.key()), **arrays)
        os.replace(tmp, self.file)


def accuracy(model, x: np.ndarray, y: np.ndarray, pixel_mean: float, pixel_std: float, flip: bool = False,
             batch: int = 256) -> float:
    """Top-1 accuracy of a classifier on uint8 faces [n, s, s]; `flip`: average with the mirror."""
    probs = predict_faces(model, x, pixel_mean, pixel_std, flip, batch)
    return float((probs.argmax(1) == y).mean()) if len(y) else float("nan")


def predict_faces(model, x: np.ndarray, pixel_mean: float, pixel_std: float, flip: bool = False,
                  batch: int = 256) -> np.ndarray:
    from service.pipeline.config import PipelineConfig
    from service.pipeline.visual import resnet_input  # the serving normalisation, not a copy of it

    xs = resnet_input(x, PipelineConfig(pixel_mean=pixel_mean, pixel_std=pixel_std))
    probs = model.predict(xs, batch_size=batch, verbose=0)
    if flip:
        probs = (probs + model.predict(xs[:, :, ::-1], batch_size=batch, verbose=0)) / 2
    return probs


def _restore(model, optimizer, recipe: FaceRecipe, ckpt: _Checkpoint, extends_from: _Checkpoint | None,
             init_weights: Path | None) -> list[dict]:
    """Weights and optimizer state where the schedule stands (its checkpoint, else that of the
    schedule it extends), or the starting weights of a fine-tuning recipe; the curve so far."""
    state = ckpt.load()
    if state is None and extends_from is not None:
        # The schedule this one continues: identical up to its end, so wherever it stopped.
        state = extends_from.load()
    if state is None:
        if recipe.init_from:
            if init_weights is None or not Path(init_weights).is_file():
                raise FileNotFoundError(f"fine-tuning starts from checkpoint {recipe.init_from!r}: "
                                        f"{init_weights} not found")
            model.set_weights(read_checkpoint(init_weights)["weights"])
            log.info("face backbone: fine-tuning from the weights of %s", init_weights)
        return []
    stored = {k: v for k, v in state["recipe"].items() if k not in EXECUTION_ONLY}
    ancestors, r = [], recipe
    while r is not None:
        ancestors.append(json.loads(json.dumps(r.key())))
        r = r.extends()
    if stored not in ancestors:
        raise ValueError(f"{ckpt.file} was written by another recipe; remove it or use another directory")
    model.set_weights(state["weights"])
    for var, value in zip(optimizer.variables, state["optimizer"]):
        var.assign(value)
    log.info("face backbone: resuming after epoch %d of %d", len(state["curve"]), recipe.total_epochs)
    return state["curve"]


def train_face_backbone(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                        n_classes: int, recipe: FaceRecipe, checkpoint_dir: Path, *,
                        pixel_mean: float = 127.5, pixel_std: float = 127.5,
                        max_minutes: float | None = None, seed_checkpoint: Path | None = None,
                        extends_from: "_Checkpoint | None" = None, init_weights: Path | None = None,
                        targets=None):
    """Train (or resume) the face ResNet; returns (classifier, backbone, curve), both models
    in float32 (the weights of a mixed-precision run copied into a float32 build, which is
    what gets exported). Raises TrainingPaused when `max_minutes` ends the run early.
    `extends_from`: the checkpoint of a schedule that a recipe with warm restarts continues
    (the same schedule up to that one's end), used when `checkpoint_dir` (and
    `seed_checkpoint`) hold nothing yet. `init_weights`: the checkpoint file a fine-tuning
    recipe (`init_from`) starts from, weights only. `targets`: [n, classes] probabilities to
    train towards instead of the one-hot labels (distillation's soft targets), or a function
    giving them, called only when an epoch remains to train (a finished checkpoint needs none)."""
    import keras

    from trainer.models.face_resnet import build_face_backbone, build_face_classifier

    keras.utils.set_random_seed(recipe.seed)
    if recipe.mixed_bfloat16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = build_face_backbone(recipe.image_size, recipe.widths, recipe.blocks, recipe.weight_decay)
        model = build_face_classifier(backbone, n_classes, recipe.dropout)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    steps = len(train_y) // recipe.batch_size
    optimizer = keras.optimizers.SGD(_schedule(steps, recipe), momentum=recipe.momentum, nesterov=True)
    model.compile(optimizer=optimizer, jit_compile=recipe.xla,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
                  metrics=["accuracy"])
    optimizer.build(model.trainable_variables)

    ckpt = _Checkpoint(checkpoint_dir, seed_checkpoint)
    curve = _restore(model, optimizer, recipe, ckpt, extends_from, init_weights)

    started = time.perf_counter()
    minutes_before = curve[-1]["minutes"] if curve else 0.0
    onehot = np.eye(n_classes, dtype=np.float32)
    for epoch in range(len(curve), recipe.total_epochs):
        if max_minutes is not None and curve and (time.perf_counter() - started) / 60 + \
                (curve[-1]["epoch_minutes"] if curve else 0) > max_minutes:
            raise TrainingPaused(f"face backbone paused after epoch {epoch} of {recipe.total_epochs} "
                                 f"(run budget {max_minutes:.0f} min); run the same command again to resume")
        t0 = time.perf_counter()
        if callable(targets):
            targets = targets()
        ds = _datasets(train_x, onehot[train_y] if targets is None else targets.astype(np.float32), recipe,
                       pixel_mean, pixel_std, epoch)
        hist = model.fit(ds, epochs=1, verbose=0)
        val_acc = accuracy(model, val_x, val_y, pixel_mean, pixel_std)
        epoch_min = (time.perf_counter() - t0) / 60
        curve.append({"epoch": epoch + 1, "minutes": round(minutes_before + (time.perf_counter() - started) / 60, 2),
                      "epoch_minutes": round(epoch_min, 2), "train_loss": round(float(hist.history["loss"][-1]), 4),
                      "train_accuracy": round(float(hist.history["accuracy"][-1]), 4),
                      "val_accuracy": round(val_acc, 4),
                      "lr_end": round(lr_at((epoch + 1) * steps - 1, steps, recipe), 6)})
        log.info("face backbone epoch %d/%d: %s", epoch + 1, recipe.total_epochs,
                 ", ".join(f"{k} {v}" for k, v in curve[-1].items() if k != "epoch"))
        ckpt.save(model, optimizer, curve, recipe)

    # The float32 twin that gets exported: the same weights, float32 compute.
    backbone32 = build_face_backbone(recipe.image_size, recipe.widths, recipe.blocks)
    model32 = build_face_classifier(backbone32, n_classes, recipe.dropout)
    model32.set_weights(model.get_weights())
    return model32, backbone32, curve
