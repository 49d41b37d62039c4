"""Wrapper fitness of a feature subset (DESIGN §9, paper §3.5).

``fitness(mask) = α · error + (1 − α) · |selected| / |all|``, α = 0.99 by default, and
``fitness(empty) = 1``.

* ``error = 1 − balanced accuracy`` (the mean of per-class recalls, i.e. the unweighted
  average recall the evaluation reports, DESIGN §3) of out-of-fold predictions pooled
  over the folds. Balanced rather than plain accuracy because the label space is
  imbalanced (RAVDESS calm merges into neutral; FER2013's disgust is ~1.5 % of its
  faces, and pseudo-pairs inherit that), and plain accuracy would reward dropping the
  features that only rare classes need.
* Cross-validation is ``GroupKFold`` over the given speaker groups: a speaker's samples
  are never on both sides of a fold, so a feature that identifies the speaker cannot
  look predictive.
* The classifier is a cheap one: k-NN (k = 5, Euclidean, brute force) or multinomial
  logistic regression, always behind a ``StandardScaler`` fitted on the training part of
  each fold only (no leakage of test-fold statistics). Standardisation is per column,
  so the scaler of a subset equals the columns of the scaler of all features: each
  fold's train/test parts are standardised once, up front, and a subset only slices
  columns. That is exactly ``Pipeline([StandardScaler(), clf])`` refitted per subset
  (:meth:`SubsetFitness.cv_error_pipeline` is that reference, and a test holds the two
  equal) at about 20 % less cost per evaluation.
* Each evaluation runs with native thread pools (OpenMP, BLAS) limited to ``n_threads``
  (default 1): the matrices are small, and on a loaded machine the default
  one-thread-per-core pools oversubscribe and were measured 7–13× slower (2-core host).
* Results are cached by the packed bytes of the mask: evaluating the same subset twice
  computes it once; ``evaluations`` counts the distinct subsets actually computed.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import ThreadpoolController

__all__ = ["SubsetFitness", "CLASSIFIERS"]

CLASSIFIERS = ("knn", "logreg")


class SubsetFitness:
    """Callable ``mask -> fitness`` with a cache; see the module docstring."""

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray,
        *,
        alpha: float = 0.99,
        classifier: str = "knn",
        cv_folds: int = 3,
        n_neighbors: int = 5,
        n_threads: int | None = 1,
    ) -> None:
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        groups = np.asarray(groups)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D, got shape {X.shape}")
        n = X.shape[0]
        if y.shape != (n,) or groups.shape != (n,):
            raise ValueError(f"y and groups must have shape ({n},), got {y.shape} and {groups.shape}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise ValueError("group-aware cross-validation needs at least 2 distinct groups (speakers)")
        if cv_folds < 2:
            raise ValueError("cv_folds must be >= 2")
        self.cv_folds = min(cv_folds, n_groups)
        self.X, self.y, self.groups = X, y, groups
        self.alpha = float(alpha)
        self.classifier = classifier
        self.n_neighbors = int(n_neighbors)
        self.n_threads = n_threads
        self._threads = ThreadpoolController()
        self.n_features = X.shape[1]
        # Folds are fixed once, so every subset is judged on the same split.
        self.folds: list[tuple[np.ndarray, np.ndarray]] = list(
            GroupKFold(n_splits=self.cv_folds).split(X, y, groups)
        )
        # Per-fold standardisation, fitted on the fold's training rows only.
        self._fold_data: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for train, test in self.folds:
            scaler = StandardScaler().fit(X[train])
            self._fold_data.append((scaler.transform(X[train]), scaler.transform(X[test]), y[train], test))
        self._cache: dict[bytes, tuple[float, float]] = {}
        self.evaluations = 0  # distinct subsets actually computed
        self.calls = 0  # lookups, cached or not

    # ------------------------------------------------------------------ helpers
    def _key(self, mask: np.ndarray) -> bytes:
        return np.packbits(mask).tobytes()

    def _check(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_features,):
            raise ValueError(f"mask must have shape ({self.n_features},), got {mask.shape}")
        return mask

    def _classifier(self, n_train: int):
        if self.classifier == "knn":
            return KNeighborsClassifier(n_neighbors=min(self.n_neighbors, n_train), algorithm="brute")
        return LogisticRegression(max_iter=300)

    def _cv_error(self, mask: np.ndarray) -> float:
        cols = np.flatnonzero(mask)
        pred = np.empty_like(self.y)
        for Xtr, Xte, ytr, test in self._fold_data:
            clf = self._classifier(len(ytr))
            clf.fit(Xtr[:, cols], ytr)
            pred[test] = clf.predict(Xte[:, cols])
        return float(1.0 - balanced_accuracy_score(self.y, pred))

    def cv_error_pipeline(self, mask: np.ndarray) -> float:
        """Reference (uncached, slower) error: ``Pipeline([StandardScaler(), clf])``
        refitted on each fold's training rows of the subset."""
        mask = self._check(mask)
        if not mask.any():
            return 1.0
        Xs = self.X[:, np.flatnonzero(mask)]
        pred = np.empty_like(self.y)
        for train, test in self.folds:
            model = Pipeline([("scale", StandardScaler()), ("clf", self._classifier(len(train)))])
            model.fit(Xs[train], self.y[train])
            pred[test] = model.predict(Xs[test])
        return float(1.0 - balanced_accuracy_score(self.y, pred))

    # ------------------------------------------------------------------ API
    def evaluate(self, mask: np.ndarray) -> tuple[float, float]:
        """``(fitness, cv_error)`` of a subset; empty subset -> ``(1.0, 1.0)``."""
        mask = self._check(mask)
        self.calls += 1
        key = self._key(mask)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        n_sel = int(mask.sum())
        if n_sel == 0:
            result = (1.0, 1.0)
        else:
            if self.n_threads is None:
                err = self._cv_error(mask)
            else:
                with self._threads.limit(limits=self.n_threads):
                    err = self._cv_error(mask)
            fit = self.alpha * err + (1.0 - self.alpha) * n_sel / self.n_features
            result = (float(fit), err)
            self.evaluations += 1
        self._cache[key] = result
        return result

    def __call__(self, mask: np.ndarray) -> float:
        return self.evaluate(mask)[0]

    def cv_error(self, mask: np.ndarray) -> float:
        return self.evaluate(mask)[1]
