"""The face classifier per corpus, never pooled: FER2013 public_test, the held-out CK+ subjects
and RAF-DB's validation and test parts (carved from its train split by trainer.data.splits),
for each checkpoint given. Flip-averaged, one face at a time, on the crops the build uses
(corpus faces at the crop stage; RAF-DB photos detected and aligned as a video face is).
Accuracy and UAR (unweighted average recall: RAF-DB's classes are very unequal).

    .venv/bin/python bench/face_corpora.py a23e6f9b1bd676ef .cache/face_backbone/<key>/state.npz

A name without a slash is a committed checkpoint (checkpoints/face_backbone/<name>.npz).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.face.corpus_table import per_corpus  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=REPO / ".cache")
    args = p.parse_args()

    from service.pipeline.config import PipelineConfig
    from trainer.cache import FeatureCache
    from trainer.data import LABEL_SETS
    from trainer.face.backbone import COMMITTED, classifier_from_checkpoint, face_samples, load_faces, ordered_faces
    from trainer.face.training import FaceRecipe, predict_faces

    recipe = FaceRecipe.for_this_cpu()
    cfg = PipelineConfig(image_size=recipe.image_size)
    classes = list(LABEL_SETS["basic7"])
    samples, cache = face_samples(args.data), FeatureCache(args.cache / "features")
    rows = {}
    for split in ("val", "test"):
        faces = ordered_faces(samples[split])
        x, y = load_faces(faces, cfg, cache, classes)
        for name in args.checkpoints:
            file = Path(name) if "/" in name else COMMITTED / f"{name}.npz"
            model = classifier_from_checkpoint(file, len(classes), recipe)
            probs = predict_faces(model, x, cfg.pixel_mean, cfg.pixel_std, flip=True)
            rows.setdefault(name, {}).update({f"{split} {c}": v for c, v in per_corpus(faces, probs, y).items()})
    print(json.dumps(rows, indent=1))
    cols = sorted({c for r in rows.values() for c in r})
    print("| checkpoint | " + " | ".join(f"{c} (n={next(iter(rows.values()))[c]['n']})" for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]['accuracy']:.3f} / {r[c]['uar']:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
