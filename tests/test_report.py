"""Report helpers of the trainer that need no training."""
from __future__ import annotations

import numpy as np


def test_corpus_breakdown_scores_each_audio_corpus_alone():
    from trainer.stages.evaluation import corpus_breakdown

    classes = ["a", "b"]
    group = np.array(["ravdess:17", "ravdess:18", "tess:OAF", "tess:YAF"] * 2)
    view = np.array(["fused"] * 4 + ["audio"] * 4)
    y = np.array([0, 1, 0, 1])
    right = np.eye(2)[y]
    scored = {"fused": {"y": y, "p": right}, "audio": {"y": y, "p": right[::-1]}}  # audio: every prediction wrong
    out = corpus_breakdown({"group": group, "view": view}, scored, classes)
    assert set(out) == {"ravdess", "tess"}
    assert out["ravdess"]["fused"]["accuracy"] == 1 and out["tess"]["fused"]["n"] == 2
    assert out["ravdess"]["audio"]["accuracy"] == 0 and out["tess"]["audio"]["accuracy"] == 0
    assert corpus_breakdown({"group": group[:2], "view": view[:2]}, {"fused": {"y": y[:2], "p": right[:2]}}, classes) == {}


def test_fitness_rows_sample_is_seeded_and_bounded():
    from trainer.stages.selection import fitness_rows

    assert (fitness_rows(50, 100, 0) == np.arange(50)).all()
    assert (fitness_rows(50, None, 0) == np.arange(50)).all()
    rows = fitness_rows(10_000, 3000, 0)
    assert len(rows) == len(set(rows)) == 3000 and rows.max() < 10_000 and (np.diff(rows) > 0).all()
    assert (rows == fitness_rows(10_000, 3000, 0)).all() and not (rows == fitness_rows(10_000, 3000, 1)).all()
