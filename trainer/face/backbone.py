"""The face backbone stage's data and cache: which faces train it, where its checkpoint
lives, and a command to run (or resume) its training alone, in the background:

    python -m trainer.face.backbone --minutes 85      # one run; the same command resumes
    python -m trainer.face.backbone --restarts 20     # the finished schedule + a 20-epoch warm restart

The build's face-backbone stage calls the same `trained_backbone`, so a background run
and a build share one checkpoint (keyed by the recipe and the exact training faces).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache
from trainer.data import LABEL_SETS, Sample, discover_corpora, load_corpus, map_label
from trainer.data.splits import split_of
from trainer.face.training import FaceRecipe, _Checkpoint, read_checkpoint, train_face_backbone
from trainer.paths import CACHE_DIR, CHECKPOINTS_DIR, DATA_DIR

log = logging.getLogger("trainer.face")
FACE_CORPORA = ("fer2013", "ckplus", "rafdb")
# Portable (fp16) checkpoints committed to resume a long schedule on a fresh clone, by key.
COMMITTED = CHECKPOINTS_DIR / "face_backbone"


def face_samples(data_dir: Path, corpora: Sequence[str] = FACE_CORPORA) -> dict[str, list[Sample]]:
    found = discover_corpora(data_dir)
    out: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    for c in corpora:
        if c in found:
            for s in load_corpus(c, found[c]):
                if s.modality == "image":
                    out[split_of(s)].append(s)
    return out


def ordered_faces(samples: Sequence[Sample]) -> list[Sample]:
    """Face samples in the order `face_samples` gives (by corpus, then as loaded): the
    checkpoint key of a background run and of a build must agree."""
    rank = {c: i for i, c in enumerate(FACE_CORPORA)}
    return sorted(samples, key=lambda s: rank.get(s.corpus, len(rank)))


def load_faces(samples: Sequence[Sample], cfg: PipelineConfig, cache: FeatureCache, classes: list[str],
               label_set: str = "basic7") -> tuple[np.ndarray, np.ndarray]:
    """uint8 crops [n, s, s] through the pipeline's corpus-face path, and class indices; cached."""
    from trainer.features import face_crops

    keep = [s for s in samples if map_label(s.label, label_set) is not None]
    index = {c: i for i, c in enumerate(classes)}

    def compute() -> dict[str, np.ndarray]:
        crops = face_crops(keep, cfg) if keep else np.zeros((0, cfg.image_size, cfg.image_size), np.uint8)
        return {"x": crops, "y": np.array([index[map_label(s.label, label_set)] for s in keep], np.int64)}

    key = FeatureCache.key("face-crops/v1", cfg.image_size, label_set, [(str(s.path), s.label) for s in keep])
    got = cache.get("face_crops", key, compute)
    return got["x"], got["y"]


def checkpoint_dir(cache_root: Path, recipe: FaceRecipe, classes: list[str], train: Sequence[Sample],
                   val: Sequence[Sample]) -> Path:
    key = FeatureCache.key("face-backbone/v1", recipe.key(), classes, [(str(s.path), s.label) for s in train],
                           [str(s.path) for s in val])
    return cache_root / "face_backbone" / key[:16]


def checkpoint_file(cache_root: Path, recipe: FaceRecipe, classes: list[str], samples: dict[str, list[Sample]]) -> Path:
    """The file that holds a schedule's weights: its checkpoint in the cache, else its committed copy."""
    where = checkpoint_dir(cache_root, recipe, classes, ordered_faces(samples["train"]), ordered_faces(samples["val"]))
    return _Checkpoint(where, COMMITTED / f"{where.name}.npz").source() or where / "state.npz"


def trained_backbone(samples: dict[str, list[Sample]], cfg: PipelineConfig, cache: FeatureCache,
                     cache_root: Path, recipe: FaceRecipe, classes: list[str], max_minutes: float | None = None,
                     init_weights: Path | None = None, targets_of=None):
    """(classifier, backbone, curve) of the face ResNet, trained or resumed from its checkpoint.
    A fine-tuning recipe (`init_from`) starts from `init_weights` (default: the committed
    checkpoint named `init_from`). `targets_of(train_samples, labels)`: the soft targets of a
    distillation recipe (`recipe.distill`), e.g. `trainer.face.distill.soft_targets`."""
    train, val = ordered_faces(samples["train"]), ordered_faces(samples["val"])
    tx, ty = load_faces(train, cfg, cache, classes)
    targets = None
    if recipe.distill:
        if targets_of is None:
            raise ValueError(f"recipe distils from {recipe.distill!r}: give targets_of")
        k, all_y = max(1, recipe.distill_every), ty
        targets = lambda: targets_of(train, all_y)[::k]  # noqa: E731 (only when an epoch remains to train)
        tx, ty = tx[::k], ty[::k]
    vx, vy = load_faces(val, cfg, cache, classes)
    where = checkpoint_dir(cache_root, recipe, classes, train, val)
    log.info("face backbone: %d training faces, %d validation faces, checkpoint %s", len(ty), len(vy), where)
    # A schedule extended by warm restarts starts from the nearest shorter one that has a checkpoint.
    extends_from, shorter = None, recipe.extends()
    while shorter is not None and extends_from is None:
        there = checkpoint_dir(cache_root, shorter, classes, train, val)
        found = _Checkpoint(there, COMMITTED / f"{there.name}.npz")
        extends_from, shorter = (found if found.exists() else None), shorter.extends()
    return train_face_backbone(tx, ty, vx, vy, len(classes), recipe, where, pixel_mean=cfg.pixel_mean,
                               pixel_std=cfg.pixel_std, max_minutes=max_minutes,
                               seed_checkpoint=COMMITTED / f"{where.name}.npz", extends_from=extends_from,
                               init_weights=init_weights or (COMMITTED / f"{recipe.init_from}.npz"
                                                             if recipe.init_from else None),
                               targets=targets)


def classifier_from_checkpoint(file: Path, n_classes: int, recipe: FaceRecipe | None = None):
    """The face ResNet classifier (float32) with the weights of a checkpoint file, e.g. a
    committed one: `COMMITTED / "<key>.npz"`."""
    from trainer.models.face_resnet import build_face_backbone, build_face_classifier

    recipe = recipe or FaceRecipe.for_this_cpu()
    model = build_face_classifier(build_face_backbone(recipe.image_size, recipe.widths, recipe.blocks, 0),
                                  n_classes, recipe.dropout)
    model.set_weights(read_checkpoint(file)["weights"])
    return model


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m trainer.face.backbone", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--cache", type=Path, default=CACHE_DIR)
    p.add_argument("--epochs", type=int, default=FaceRecipe.epochs)
    p.add_argument("--restarts", type=int, nargs="*", default=[],
                   help="warm restarts after the schedule: epochs of each further cosine cycle")
    p.add_argument("--restart-lr", type=float, default=FaceRecipe.restart_lr)
    p.add_argument("--peak-lr", type=float, default=FaceRecipe.peak_lr)
    p.add_argument("--warmup-epochs", type=int, default=FaceRecipe.warmup_epochs)
    p.add_argument("--init-from", default="", help="fine-tune from this committed checkpoint (its key)")
    p.add_argument("--lowres-prob", type=float, default=FaceRecipe.lowres_prob)
    p.add_argument("--corpora", nargs="+", default=list(FACE_CORPORA))
    p.add_argument("--minutes", type=float, default=85.0, help="this run's time budget")
    p.add_argument("--commit-checkpoint", action="store_true",
                   help="write the current checkpoint, fp16, under checkpoints/face_backbone/ (to commit) and exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    recipe = FaceRecipe.for_this_cpu(epochs=args.epochs, restarts=tuple(args.restarts), restart_lr=args.restart_lr,
                                     peak_lr=args.peak_lr, warmup_epochs=args.warmup_epochs,
                                     init_from=args.init_from, lowres_prob=args.lowres_prob)
    cfg = PipelineConfig(image_size=recipe.image_size)
    classes = list(LABEL_SETS["basic7"])
    samples = face_samples(args.data, args.corpora)
    if args.commit_checkpoint:
        where = checkpoint_dir(args.cache, recipe, classes, ordered_faces(samples["train"]),
                               ordered_faces(samples["val"]))
        print(_Checkpoint(where).write_portable(COMMITTED / f"{where.name}.npz"))
        return
    clf, _, curve = trained_backbone(samples, cfg, FeatureCache(args.cache / "features"), args.cache, recipe,
                                     classes, args.minutes)
    from trainer.face.training import accuracy

    tx, ty = load_faces(samples["test"], cfg, FeatureCache(args.cache / "features"), classes)
    log.info("done: %d epochs; test accuracy %.4f (flip-averaged %.4f)", len(curve),
             accuracy(clf, tx, ty, cfg.pixel_mean, cfg.pixel_std),
             accuracy(clf, tx, ty, cfg.pixel_mean, cfg.pixel_std, flip=True))


if __name__ == "__main__":
    main()
