"""Snapshot ensembles and weight averages of the committed face-backbone checkpoints (the face
expert's optional "averaging the weights of the last checkpoints"): each checkpoint, the mean answer of
several, their averaged weights, and the averaged weights with BatchNorm statistics
re-estimated on training faces (SWA's update_bn). Flip-averaged, one face at a time, on the
validation faces (to choose) and the test faces (FER2013 public_test + held-out CK+: to report).

    .venv/bin/python bench/face_snapshots.py            # ~10 min on 2 cores with the face crops cached

The checkpoints are the fp16 copies under checkpoints/face_backbone/ (40, 60 and 80 epochs of
the default recipe); the crops come from the feature cache a build fills (`load_faces`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SNAPSHOTS = {"40 epochs": "f6333420afde81ba", "60 epochs": "6c2a18294ab7b7db", "80 epochs": "a23e6f9b1bd676ef"}


def bn_refreshed(model, weights: list[np.ndarray], faces: np.ndarray, cfg, batch: int = 256) -> list[np.ndarray]:
    """`weights` with every BatchNorm's moving statistics replaced by the mean of its batch
    statistics over `faces` (a forward pass in training mode with momentum 0)."""
    import keras

    from service.pipeline.visual import resnet_input

    model.set_weights(weights)
    bns = [layer for layer in model.layers[1].layers if isinstance(layer, keras.layers.BatchNormalization)]
    sums = {id(b): [0.0, 0.0] for b in bns}
    for b in bns:
        b.momentum = 0.0
    n = 0
    for a in range(0, len(faces), batch):
        model(resnet_input(faces[a:a + batch], cfg), training=True)
        n += 1
        for b in bns:
            sums[id(b)][0] += np.asarray(b.moving_mean)
            sums[id(b)][1] += np.asarray(b.moving_variance)
    for b in bns:
        b.moving_mean.assign(sums[id(b)][0] / n)
        b.moving_variance.assign(sums[id(b)][1] / n)
        b.momentum = 0.9
    return model.get_weights()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=REPO / ".cache")
    p.add_argument("--bn-faces", type=int, default=8192, help="training faces for the BatchNorm re-estimate")
    args = p.parse_args()

    from service.pipeline.config import PipelineConfig
    from trainer.cache import FeatureCache
    from trainer.data import LABEL_SETS
    from trainer.face.backbone import COMMITTED, classifier_from_checkpoint, face_samples, load_faces
    from trainer.face.training import FaceRecipe, predict_faces, read_checkpoint

    recipe = FaceRecipe.for_this_cpu()
    cfg = PipelineConfig(image_size=recipe.image_size)
    classes = list(LABEL_SETS["basic7"])
    samples, cache = face_samples(args.data), FeatureCache(args.cache / "features")
    faces = {split: load_faces(samples[split], cfg, cache, classes) for split in ("train", "val", "test")}
    bn_faces = faces["train"][0][np.random.default_rng(0).choice(len(faces["train"][1]), args.bn_faces, replace=False)]
    weights = {k: read_checkpoint(COMMITTED / f"{v}.npz")["weights"] for k, v in SNAPSHOTS.items()}
    model = classifier_from_checkpoint(COMMITTED / f"{SNAPSHOTS['80 epochs']}.npz", len(classes), recipe)

    def answers(w: list[np.ndarray]) -> dict[str, np.ndarray]:
        model.set_weights(w)
        return {s: predict_faces(model, faces[s][0], cfg.pixel_mean, cfg.pixel_std, flip=True) for s in ("val", "test")}

    rows = {k: answers(w) for k, w in weights.items()}
    for combo in (("60 epochs", "80 epochs"), tuple(SNAPSHOTS)):
        label = " + ".join(c.split()[0] for c in combo)
        rows[f"mean answer of {label}"] = {s: np.mean([rows[c][s] for c in combo], 0) for s in ("val", "test")}
        averaged = [np.mean([weights[c][i] for c in combo], 0) for i in range(len(weights[combo[0]]))]
        rows[f"weights of {label} averaged"] = answers(averaged)
        rows[f"weights of {label} averaged, BatchNorm re-estimated"] = answers(bn_refreshed(model, averaged, bn_faces, cfg))
    print(f"| snapshot(s) | validation ({len(faces['val'][1])} faces) | test ({len(faces['test'][1])} faces) |")
    print("|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | " + " | ".join(f"{np.mean(r[s].argmax(1) == faces[s][1]):.4f}" for s in ("val", "test")) + " |")


if __name__ == "__main__":
    main()
