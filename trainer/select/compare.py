"""The report's comparison of feature-selection methods (issue: IZOA, faithful and tested).

Each method chooses its mask on the training split only (group-aware CV on training
speakers); then the same cheap classifier as the fitness (scaler + k-NN), fitted on the
training split with that mask, is scored on the test split. Same split, same classifier,
same features for every method: only the mask differs.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from trainer.select.feature_selection import SelectionResult, select_features


def test_scores(mask: np.ndarray, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                y_test: np.ndarray, n_neighbors: int = 5) -> dict[str, float]:
    cols = np.flatnonzero(mask)
    model = Pipeline([("scale", StandardScaler()),
                      ("knn", KNeighborsClassifier(n_neighbors=min(n_neighbors, len(y_train)), algorithm="brute"))])
    model.fit(X_train[:, cols], y_train)
    pred = model.predict(X_test[:, cols])
    return {"accuracy": float(accuracy_score(y_test, pred)), "uar": float(balanced_accuracy_score(y_test, pred))}


def compare_methods(X_train: np.ndarray, y_train: np.ndarray, groups: np.ndarray, X_test: np.ndarray,
                    y_test: np.ndarray, *, given: dict[str, SelectionResult] | None = None,
                    methods: Sequence[str] = ("none", "izoa", "zoa", "mutual_info"),
                    **search: Any) -> dict[str, dict[str, Any]]:
    """Per method: features kept, training-CV error and fitness, test accuracy and UAR.
    `given` holds results already computed (the bundle's IZOA run), `search` the options
    of `select_features` (population, iterations, always_keep, seed...)."""
    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        sel = (given or {}).get(method) or select_features(X_train, y_train, groups, method=method, **search)
        out[method] = {"n_selected": int(sel.n_selected), "n_total": int(X_train.shape[1]),
                       "cv_error": float(sel.cv_error), "fitness": float(sel.fitness),
                       "evaluations": int(sel.evaluations),
                       **{f"test_{k}": v for k, v in test_scores(sel.mask, X_train, y_train, X_test, y_test).items()}}
    return out
