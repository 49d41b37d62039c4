"""Feature selection: IZOA / ZOA wrappers, a mutual-information filter, or nothing.

Public entry point: :func:`select_features`, returning a :class:`SelectionResult`.

Binary encoding of a continuous zebra position ``x`` (one coordinate per *free* feature,
i.e. not in ``always_keep``):

* positions live in ``[-6, 6]`` (:data:`POSITION_BOUNDS`): the S-shaped transfer is
  0.0025 / 0.9975 at the ends, so the box covers its whole useful range without letting
  coordinates run so far out that a move can no longer flip them;
* transfer ``"s"`` (default): ``S(x) = 1 / (1 + e^(−x))``; transfer ``"v"``:
  ``V(x) = |tanh x|``;
* bit = ``transfer(x) > 0.5``: a deterministic threshold, so one position maps to exactly
  one subset (the fitness of a position is then a function, greedy acceptance compares
  like with like, and the cache applies). For S this means ``x > 0``, for V ``|x| > 0.549``.
  The stochastic rule (bit = rand < transfer(x)) would re-draw the subset at every
  evaluation and make greedy acceptance compare noisy samples.

Features in ``always_keep`` (modality presence flags, for instance) are in every mask
and are not searched over; they count in ``n_selected`` and in the size term of the
fitness like any other selected feature.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from sklearn.feature_selection import mutual_info_classif

from trainer.select.fitness import SubsetFitness
from trainer.select.zoa import zoa_minimize

__all__ = [
    "SelectionResult",
    "select_features",
    "transfer_s",
    "transfer_v",
    "position_to_bits",
    "POSITION_BOUNDS",
    "METHODS",
]

POSITION_BOUNDS = (-6.0, 6.0)
METHODS = ("izoa", "zoa", "mutual_info", "none")


@dataclass
class SelectionResult:
    mask: np.ndarray  # bool, shape (D,)
    fitness: float
    cv_error: float
    n_selected: int
    history: list[float] = field(default_factory=list)  # best fitness per iteration
    evaluations: int = 0  # distinct fitness evaluations actually computed
    method: str = "izoa"  # "izoa" | "zoa" | "mutual_info" | "none"

    @property
    def indices(self) -> np.ndarray:
        """Selected feature indices, ascending (what the bundle manifest stores)."""
        return np.flatnonzero(self.mask)


def transfer_s(x: np.ndarray) -> np.ndarray:
    """S-shaped transfer ``1 / (1 + e^(−x))``."""
    return 1.0 / (1.0 + np.exp(-x))


def transfer_v(x: np.ndarray) -> np.ndarray:
    """V-shaped transfer ``|tanh x|``."""
    return np.abs(np.tanh(x))


_TRANSFERS = {"s": transfer_s, "v": transfer_v}


def position_to_bits(x: np.ndarray, transfer: str = "s") -> np.ndarray:
    """Deterministic binarisation: ``transfer(x) > 0.5``."""
    try:
        fn = _TRANSFERS[transfer]
    except KeyError:
        raise ValueError(f"transfer must be 's' or 'v', got {transfer!r}") from None
    return fn(np.asarray(x, dtype=np.float64)) > 0.5


def _validate(X: np.ndarray, y: np.ndarray, groups: np.ndarray, always_keep: Sequence[int]) -> np.ndarray:
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    n, D = X.shape
    if y.shape != (n,) or groups.shape != (n,):
        raise ValueError(f"y and groups must have shape ({n},), got {y.shape} and {groups.shape}")
    keep = np.asarray(list(always_keep), dtype=np.int64)
    if keep.size and (keep.min() < -D or keep.max() >= D):
        raise ValueError(f"always_keep indices must be in [0, {D}), got {sorted(set(always_keep))}")
    return np.unique(np.where(keep < 0, keep + D, keep))


def _check_choices(method: str, transfer: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if transfer not in _TRANSFERS:
        raise ValueError(f"transfer must be 's' or 'v', got {transfer!r}")


def _mutual_info_mask(X: np.ndarray, y: np.ndarray, keep: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """The ``k`` highest-``mutual_info_classif`` features (default ``D // 4``, at least 1) plus ``keep``."""
    D = X.shape[1]
    kk = max(1, D // 4) if k is None else int(k)
    if not 1 <= kk <= D:
        raise ValueError(f"k must be in [1, {D}], got {k}")
    scores = mutual_info_classif(X, y, random_state=seed)
    order = np.argsort(-scores, kind="stable")  # ties: lower index first
    mask = np.zeros(D, dtype=bool)
    mask[order[:kk]] = True
    mask[keep] = True
    return mask


def _zoa_search_mask(
    fitness: SubsetFitness,
    D: int,
    keep: np.ndarray,
    *,
    variant: str,
    transfer: str,
    population: int,
    iterations: int,
    seed: int,
    progress: Callable[[int, int, float], None] | None,
) -> tuple[np.ndarray, list[float]]:
    """IZOA / ZOA wrapper search over the free features; returns the best mask and the
    best-fitness history (empty when there is nothing to search)."""
    free = np.setdiff1d(np.arange(D), keep)
    if free.size == 0:  # everything is forced in: nothing to search
        return np.ones(D, dtype=bool), []

    def to_mask(position: np.ndarray) -> np.ndarray:
        mask = np.zeros(D, dtype=bool)
        mask[keep] = True
        mask[free[position_to_bits(position, transfer)]] = True
        return mask

    def objective(position: np.ndarray) -> float:
        return fitness(to_mask(position))

    lower, upper = POSITION_BOUNDS
    res = zoa_minimize(
        objective,
        int(free.size),
        population=population,
        iterations=iterations,
        lower=lower,
        upper=upper,
        variant=variant,
        rng=np.random.default_rng(seed),
        progress=progress,
    )
    return to_mask(res.best_position), list(res.history)


def _result(fitness: SubsetFitness, method: str, mask: np.ndarray, history: list[float]) -> SelectionResult:
    """Score ``mask`` with the shared fitness (so methods compare) and assemble the result."""
    fit, err = fitness.evaluate(mask)
    return SelectionResult(
        mask=mask,
        fitness=fit,
        cv_error=err,
        n_selected=int(mask.sum()),
        history=history if history else [fit],
        evaluations=fitness.evaluations,
        method=method,
    )


def select_features(
    X: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    *,
    method: str = "izoa",
    population: int = 20,
    iterations: int = 30,
    alpha: float = 0.99,
    classifier: str = "knn",
    cv_folds: int = 3,
    transfer: str = "s",
    always_keep: Sequence[int] = (),
    k: int | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> SelectionResult:
    """Select a feature subset of ``X`` (training data only) for labels ``y``.

    * ``"izoa"`` / ``"zoa"``: wrapper search (see :mod:`trainer.select.zoa`) minimising
      :class:`~trainer.select.fitness.SubsetFitness` (α·(1 − balanced accuracy) +
      (1 − α)·|S|/D, k-NN or logistic regression, GroupKFold over ``groups``).
      ``population`` zebras, ``iterations`` iterations; ``progress(t, iterations, best)``
      is called once per iteration.
    * ``"mutual_info"``: the ``k`` features (default ``D // 4``, at least 1) with the
      highest ``mutual_info_classif`` score (``random_state=seed``), plus
      ``always_keep`` (so up to ``k + len(always_keep)`` features).
    * ``"none"``: every feature.

    ``k`` is used by ``"mutual_info"`` only; ``progress`` is called by the iterative
    methods only. Raises ``ValueError`` for an unknown method / transfer / classifier,
    out-of-range ``always_keep`` indices, or fewer than 2 distinct groups.

    Whatever the method, the returned ``fitness`` / ``cv_error`` are measured by the same
    group-aware fitness, so methods can be compared. ``seed`` makes every method
    reproducible.
    """
    _check_choices(method, transfer)
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    groups = np.asarray(groups)
    keep = _validate(X, y, groups, always_keep)
    D = X.shape[1]
    fitness = SubsetFitness(X, y, groups, alpha=alpha, classifier=classifier, cv_folds=cv_folds)

    if method == "none":
        return _result(fitness, method, np.ones(D, dtype=bool), [])
    if method == "mutual_info":
        return _result(fitness, method, _mutual_info_mask(X, y, keep, k, seed), [])
    mask, history = _zoa_search_mask(
        fitness,
        D,
        keep,
        variant=method,
        transfer=transfer,
        population=population,
        iterations=iterations,
        seed=seed,
        progress=progress,
    )
    return _result(fitness, method, mask, history)
