"""The face expert per corpus beside its teachers and their pools (issue 40): accuracy / UAR
on FER2013's validation carve (where pool weights are chosen), RAF-DB's validation and test
carves, FER2013 public_test and the held-out CK+ subjects. Used by `bench/face_teachers.py`
and, in a build that distils (`--face-distill-pool`), by the report's model card.

Everyone is flip-averaged except the zoo model (once a face: `trainer.face.soft_labels`); the
expert and students read the build's 48-px grey crops, the teachers their own crops of the
same image. The zoo model was trained on RAF-DB's official train split, from which the
project's RAF-DB validation and test carves are cut: its figures there, and a pool's holding
it, are on faces it trained on (CONTAMINATED), and RAF-DB validation cannot choose its weight.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

COLUMNS = ("val fer2013:train", "val rafdb", "test rafdb", "test fer2013:public_test", "test ckplus")
COLUMN_NAMES = {"val fer2013:train": "FER2013 val carve", "val rafdb": "RAF-DB val carve*",
                "test rafdb": "RAF-DB test carve*", "test fer2013:public_test": "FER2013 public_test",
                "test ckplus": "CK+ held-out"}
CONTAMINATED = ("val rafdb", "test rafdb")   # the zoo model trained on these faces


def per_corpus(samples, probs: np.ndarray, y: np.ndarray) -> dict[str, dict[str, float]]:
    """Accuracy and UAR (unweighted average recall) per corpus (FER2013 per its own split)."""
    pred = probs.argmax(1)
    out = {}
    corpora = np.array([s.corpus if s.corpus != "fer2013" else f"fer2013:{s.split}" for s in samples])
    for c in sorted(set(corpora)):
        m = corpora == c
        yc, pc = y[m], pred[m]
        out[c] = {"n": int(m.sum()), "accuracy": round(float((pc == yc).mean()), 4),
                  "uar": round(float(np.mean([(pc[yc == k] == k).mean() for k in np.unique(yc)])), 4)}
    return out


def corpus_table(samples: dict[str, list], cfg, cache, models: dict[str, Path], data_dir: Path,
                 cache_root: Path) -> dict[str, Any]:
    """{"rows": {model or pool: {column: {n, accuracy, uar}}}, "pools": {pool: weights}}.
    `models`: name -> checkpoint file of the face ResNet (the expert, students)."""
    from trainer.data import LABEL_SETS
    from trainer.face.backbone import load_faces, ordered_faces
    from trainer.face.distill import choose_weights, expert_probs, log_linear, pool_spec, teacher_table

    classes = list(LABEL_SETS["basic7"])
    answers, labels, faces_of = {}, {}, {}
    for split in ("val", "test"):
        faces = ordered_faces(samples[split])
        x, y = load_faces(faces, cfg, cache, classes)
        probs = teacher_table(faces, data_dir, cache_root, only=(f"{split}/",))
        for name, file in models.items():
            probs[name] = expert_probs(file, x, len(classes))
        answers[split], labels[split], faces_of[split] = probs, y, faces

    # Pool weights on FER2013's validation carve (no teacher here is known to have trained on it).
    fer_val = np.array([s.corpus == "fer2013" for s in faces_of["val"]])
    sub = {k: v[fer_val] for k, v in answers["val"].items()}
    pools: dict[str, dict[str, float]] = {"zoo + face_api, equal": {"zoo": 1.0, "face_api": 1.0}}
    for base in models:
        for members in (("face_api",), ("zoo",), ("zoo", "face_api")):
            chosen, _ = choose_weights(sub, labels["val"][fer_val], (base,) + members)
            pools[f"{base} + {' + '.join(members)}, equal"] = {base: 1.0, **{m: 1.0 for m in members}}
            pools[f"{base} + {' + '.join(members)}, FER-val weights {pool_spec(chosen)}"] = chosen
    rows: dict[str, dict] = {}
    for split in ("val", "test"):
        probs, y, faces = answers[split], labels[split], faces_of[split]
        scored = {name: probs[name] for name in ("face_api", "zoo", *models)}
        scored.update({name: log_linear(probs, w) for name, w in pools.items()})
        for name, p in scored.items():
            rows.setdefault(name, {}).update({f"{split} {c}": v for c, v in per_corpus(faces, p, y).items()})
    return {"rows": rows, "pools": pools}


def markdown(table: dict[str, Any], columns: Sequence[str] = COLUMNS) -> str:
    rows = table["rows"]
    first = next(iter(rows.values()))
    cols = [c for c in columns if c in first]
    out = ["| model | " + " | ".join(f"{COLUMN_NAMES[c]} (n={first[c]['n']})" for c in cols) + " |",
           "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        out.append(f"| {name} | " + " | ".join(f"{r[c]['accuracy']:.3f} / {r[c]['uar']:.3f}" for c in cols) + " |")
    return "\n".join(out)
