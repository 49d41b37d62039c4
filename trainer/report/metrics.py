"""Metrics for the report (design §3): accuracy, macro-F1, unweighted average recall,
per-class recall, confusion matrix and one-vs-rest ROC-AUC."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score, roc_auc_score

from service.model.calibration import expected_calibration_error


def metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    present = sorted(set(int(v) for v in y_true))
    recall = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Macro scores over the classes present in the test set.
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "uar": float(np.mean([recall[i] for i in present])),
        "per_class_recall": {classes[i]: float(recall[i]) for i in present},
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "ece": expected_calibration_error(np.asarray(y_true), np.asarray(probs, np.float64)),  # 15 bins
    }
    if len(present) > 1:
        try:
            p = probs[:, present] / np.clip(probs[:, present].sum(1, keepdims=True), 1e-12, None)
            out["roc_auc_ovr"] = float(roc_auc_score(y_true, p, labels=present, multi_class="ovr")
                                       if len(present) > 2 else roc_auc_score(y_true == present[1], p[:, 1]))
        except ValueError:
            out["roc_auc_ovr"] = None
    return out
