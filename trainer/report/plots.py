"""PNG figures for the report: confusion matrices and one-vs-rest ROC curves."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(path: Path, title: str, panels: dict[str, np.ndarray], classes: Sequence[str]) -> None:
    """One row of row-normalised confusion matrices (one per input view)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (view, cm) in zip(axes[0], panels.items()):
        cm = np.asarray(cm, np.float64)
        norm = cm / np.clip(cm.sum(axis=1, keepdims=True), 1, None)
        ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
        for i in range(len(classes)):
            for j in range(len(classes)):
                if cm[i, j]:
                    ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(classes)), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{view} (n={int(cm.sum())})", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def roc_figure(path: Path, title: str, y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> None:
    """One-vs-rest ROC curve per class present in the test set, with its AUC."""
    from sklearn.metrics import auc, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, name in enumerate(classes):
        positives = y_true == i
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, probs[:, i])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(fpr, tpr):.2f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reliability_figure(path: Path, title: str, panels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       bins: int = 15) -> None:
    """Reliability diagrams (accuracy against confidence, 15 bins) per view: (y, probs before,
    probs after calibration)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (view, (y, before, after)) in zip(axes[0], panels.items()):
        for probs, label in ((before, "before"), (after, "after")):
            conf, right = probs.max(1), probs.argmax(1) == y
            idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
            xs = [conf[idx == b].mean() for b in range(bins) if (idx == b).any()]
            ys = [right[idx == b].mean() for b in range(bins) if (idx == b).any()]
            ax.plot(xs, ys, "o-", label=label)
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        ax.set(title=view, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
