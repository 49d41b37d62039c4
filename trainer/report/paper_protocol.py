"""The paper's protocol, reported beside the honest one for comparison only: a random
80/20 split of the audio clips and of the face images, three classes (happy, sad,
surprised). The same speakers and the same sentences end up on both sides, so its
figures are optimistic by construction; the report labels them as leaky."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from service.pipeline.config import PipelineConfig
from trainer.data import LABEL_SETS
from trainer.fusion.pairs import FacePool, build_pairs
from trainer.report.metrics import metrics

PAPER_CLASSES = list(LABEL_SETS["paper3"])


def paper_protocol(cfg: PipelineConfig, encoders, mfccs: list, y: np.ndarray, pool: FacePool,
                   classes: Sequence[str], fit: Callable[[str, dict, int], Callable[[np.ndarray], np.ndarray]],
                   models: Sequence[str], *, draws: int, dropout: float, seed: int) -> dict[str, Any]:
    """Metrics per model and view on a random 80/20 split, paper3 classes.

    `mfccs`/`y`: every audio clip (AudioFrames) of every split with its class index in `classes`;
    `pool`: every face image. `fit(model, train_data, n_classes)` trains one classifier
    and returns its predict function (the same training as the speaker-independent one).
    """
    to_paper = {classes.index(c): i for i, c in enumerate(PAPER_CLASSES)}
    clips = np.flatnonzero(np.isin(y, list(to_paper)))
    faces = np.flatnonzero(np.isin(pool.labels, list(to_paper)))
    clip_y = np.array([to_paper[int(v)] for v in y[clips]])
    face_y = np.array([to_paper[int(v)] for v in pool.labels[faces]])
    c_tr, c_te = train_test_split(np.arange(len(clips)), test_size=0.2, stratify=clip_y, random_state=seed)
    f_tr, f_te = train_test_split(np.arange(len(faces)), test_size=0.2, stratify=face_y, random_state=seed)
    rng = np.random.default_rng(seed)

    def pairs(c_idx, f_idx, **kw):
        sub_pool = FacePool(pool.features[faces[f_idx]], face_y[f_idx])
        return build_pairs(cfg, encoders, [mfccs[clips[i]] for i in c_idx], clip_y[c_idx],
                           [str(i) for i in c_idx], sub_pool, rng=rng, **kw)

    train = pairs(c_tr, f_tr, draws=draws, dropout=dropout)
    test = pairs(c_te, f_te, draws=1, views=("fused", "audio", "face"))
    out: dict[str, Any] = {"classes": PAPER_CLASSES, "n_train_clips": int(len(c_tr)), "n_test_clips": int(len(c_te)),
                           "n_train_faces": int(len(f_tr)), "n_test_faces": int(len(f_te)), "models": {}}
    for name in models:
        predict = fit(name, train, len(PAPER_CLASSES))
        out["models"][name] = {view: metrics(test["y"][test["view"] == view], predict(test["X"][test["view"] == view]),
                                             PAPER_CLASSES) for view in ("fused", "audio", "face")}
    return out
