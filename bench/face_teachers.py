"""The face expert beside its teachers and their pools, per corpus (issue 40): accuracy / UAR
on FER2013 public_test, the held-out CK+ subjects and RAF-DB's validation and test carves,
plus FER2013's validation carve, where the pools' weights are chosen.

    .venv/bin/python bench/face_teachers.py                        # the served expert (ffce5c27b30aa751)
    .venv/bin/python bench/face_teachers.py --student KEY_OR_FILE  # and a distilled student beside it

Everyone is flip-averaged; the expert and students read the build's 48-px grey crops, the
teachers their own crops of the same image (trainer/face/soft_labels.py). A pool is
log-linear (p ∝ Π p^w). Weights are chosen on FER2013's validation carve only: the zoo model
was trained on RAF-DB's official train split, from which the project's RAF-DB validation and
test carves are cut, so every figure of the zoo model (or a pool holding it) on the RAF-DB
carve is on faces it trained on (marked *), and RAF-DB validation cannot choose its weight.
`fer` (not here) was trained on FER2013 train; face-api's training data is not documented.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from face_corpora import per_corpus  # noqa: E402

COLUMNS = ("val fer2013:train", "val rafdb", "test rafdb", "test fer2013:public_test", "test ckplus")
NAMES = {"val fer2013:train": "FER2013 val carve", "val rafdb": "RAF-DB val carve*",
         "test rafdb": "RAF-DB test carve*", "test fer2013:public_test": "FER2013 public_test",
         "test ckplus": "CK+ held-out"}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", action="append", default=[], help="a committed checkpoint key or a state.npz")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=REPO / ".cache")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "face_teachers.json")
    args = p.parse_args(argv)

    from service.pipeline.config import PipelineConfig
    from trainer.cache import FeatureCache
    from trainer.data import LABEL_SETS
    from trainer.face.backbone import COMMITTED, face_samples, load_faces, ordered_faces
    from trainer.face.distill import SERVED, choose_weights, expert_probs, log_linear, pool_spec, teacher_table

    classes = list(LABEL_SETS["basic7"])
    cfg, cache, samples = PipelineConfig(image_size=48), FeatureCache(args.cache / "features"), face_samples(args.data)
    models = {"expert (served)": SERVED, **{f"student {Path(s).stem if '/' in s else s}": s for s in args.student}}
    answers, labels, faces_of = {}, {}, {}
    for split in ("val", "test"):
        faces = ordered_faces(samples[split])
        x, y = load_faces(faces, cfg, cache, classes)
        probs = teacher_table(faces, args.data, args.cache, only=(f"{split}/",))
        for name, ref in models.items():
            probs[name] = expert_probs(Path(ref) if "/" in ref else COMMITTED / f"{ref}.npz", x, len(classes))
        answers[split], labels[split], faces_of[split] = probs, y, faces

    # Pool weights on FER2013's validation carve (no teacher here is known to have trained on it).
    fer_val = np.array([s.corpus == "fer2013" for s in faces_of["val"]])
    sub = {k: v[fer_val] for k, v in answers["val"].items()}
    pools = {}
    for base in models:
        for members in (("face_api",), ("zoo",), ("zoo", "face_api")):
            equal = {base: 1.0, **{m: 1.0 for m in members}}
            chosen, _ = choose_weights(sub, labels["val"][fer_val], (base,) + members)
            pools[f"{base} + {' + '.join(members)}, equal"] = equal
            pools[f"{base} + {' + '.join(members)}, FER-val weights {pool_spec(chosen)}"] = chosen
    pools["zoo + face_api, equal"] = {"zoo": 1.0, "face_api": 1.0}

    rows = {}
    for split in ("val", "test"):
        probs, y, faces = answers[split], labels[split], faces_of[split]
        for name in ("face_api", "zoo", *models):
            rows.setdefault(name, {}).update({f"{split} {c}": v for c, v in per_corpus(faces, probs[name], y).items()})
        for name, w in pools.items():
            rows.setdefault(name, {}).update({f"{split} {c}": v for c, v in per_corpus(faces, log_linear(probs, w), y).items()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average": os.getloadavg()[0], "rows": rows, "pools": pools},
                                   indent=1))
    n = next(iter(rows.values()))
    print("Accuracy / UAR, flip-averaged. * = the zoo model trained on these faces (RAF-DB's official train "
          "split); pool weights chosen on FER2013's validation carve.\n")
    print("| model | " + " | ".join(f"{NAMES[c]} (n={n[c]['n']})" for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[c]['accuracy']:.3f} / {r[c]['uar']:.3f}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
