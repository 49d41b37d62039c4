"""Stage `feature_selection`: the IZOA mask over the step features (paper §3.5), fitted on
training speakers only, and the comparison none / IZOA / ZOA / mutual information."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.select import select_features
from trainer.select.compare import compare_methods
from trainer.stages import BuildContext, log, stage_output
from trainer.stages.fusion import Pairs


@stage_output
@dataclass
class Selection:
    mask: np.ndarray                 # selected step-feature columns, ascending
    fitness: float
    cv_error: float
    comparison: dict[str, Any]       # method -> kept, CV error, fitness, test accuracy / UAR


def fitness_rows(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Training rows the feature-selection fitness sees: all, or `cap` drawn at random
    (seeded). The k-NN cross-validation costs O(rows^2) per evaluation, and the pseudo-pair
    draws of one clip share its audio, so a sample keeps the search affordable."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def feature_selection(ctx: BuildContext, pairs: Pairs) -> Selection:
    r, cfg = ctx.recipe, ctx.cfg
    tr, te = pairs.data["train"], pairs.data["test"]
    # IZOA chooses among the image columns; the audio columns (autoencoder codes, utterance
    # statistics) and the presence flags stay in every mask. The k-NN fitness weighs every
    # column the same, so image columns decide it and audio columns were dropped at random:
    # a build with them selectable kept 19 of 64.
    always_keep = list(range(cfg.layout()["image"][1], cfg.step_dim))
    rows = fitness_rows(len(tr["y"]), r.izoa_rows, r.seed)
    X_sel, y_sel, g_sel = tr["X"][rows].mean(axis=1), tr["y"][rows], np.asarray(tr["group"])[rows]
    search = dict(population=r.izoa_population, iterations=r.izoa_iterations, always_keep=always_keep, seed=r.seed)
    sel = select_features(X_sel, y_sel, g_sel, method="izoa", **search)
    mask = np.flatnonzero(sel.mask)
    log.info("IZOA kept %d of %d features (fitness %.4f, CV error %.4f)", len(mask), cfg.step_dim,
             sel.fitness, sel.cv_error)
    comparison = compare_methods(X_sel, y_sel, g_sel, te["X"].mean(axis=1), te["y"], given={"izoa": sel}, **search)
    return Selection(mask, float(sel.fitness), float(sel.cv_error), comparison)
