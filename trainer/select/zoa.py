"""Zebra Optimization Algorithm (ZOA) and its Lévy-flight improvement (IZOA), in numpy.

Minimises an objective over continuous positions in a box ``[lower, upper]^D``. The
feature-selection wrapper (``feature_selection.py``) maps positions to feature subsets;
this module knows nothing about features.

ZOA (Trojovská, Dehghani, Trojovský, IEEE Access 10, 2022; DESIGN.md §9). Notation:
N zebras ``X`` (rows), dimension D, iteration t = 1..T, ``r`` ~ U(0,1) drawn per
dimension, ``I = round(1 + rand)`` in {1, 2}, ``PZ`` the pioneer (best zebra so far).

* Eq. (3), phase 1, foraging:        ``x_new = x + r ⊙ (PZ − I·x)``
* Eq. (4)/(6), greedy acceptance:    keep ``x_new`` iff ``f(x_new) <= f(x)``
* Eq. (5) S1, Ps < 0.5, lion escape: ``x_new = x + R·(2r − 1)·(1 − t/T) ⊙ x``
* Eq. (5) S2, Ps >= 0.5, defence:    ``x_new = x + r ⊙ (AZ − I·x)``, AZ another zebra
* clip to the bounds after every move; 2 objective calls per zebra per iteration.

Choices, where the paper and the authors' MATLAB reference code leave room:

* ``R = 0.1`` as in the authors' reference code (some transcriptions print 0.01).
* Ties are accepted (``<=``) as in the reference code, so neutral moves may drift; the
  best-so-far fitness still never increases.
* ``Ps``, ``I`` and the attacked zebra ``AZ`` are drawn per zebra, and ``AZ`` is always a
  zebra other than the moving one (the reference code draws ``Ps`` and ``AZ`` once per
  iteration and may pick the zebra itself, in which case S2 degenerates to a shrink).
* ``PZ`` is refreshed at the start of each iteration (reference code) and once more at
  the end, so the history and the result include the last iteration's improvements.
* The lion-escape step uses ``2r − 1`` (uniform on [−1, 1], symmetric). mealpy's
  ``OriginalZOA`` writes ``2 + rand − 1`` there (always positive); that bug is not copied.

IZOA (the paper's improvement; the published Lévy-flight ZOA, e.g. JIFS-242010: Lévy
flight in foraging, cosine convergence factor, Cauchy mutation of the best):

* Eq. (L1), phase 1 with Lévy flight: ``x_new = x + (r + L) ⊙ (PZ − I·x)``, where
  ``L = s · u / |v|^(1/β)`` (Mantegna), ``β = 1.5``, ``s = 0.01``,
  ``u ~ N(0, σ_u²)``, ``v ~ N(0, 1)``,
  ``σ_u = [Γ(1+β)·sin(πβ/2) / (Γ((1+β)/2)·β·2^((β−1)/2))]^(1/β) ≈ 0.6966``.
  The Lévy step multiplies the foraging direction ``PZ − I·x`` (the "step ⊙ (PZ − I·x)"
  form of DESIGN §9) and is added to ZOA's own coefficient ``r``: most coordinates
  move as in ZOA, a heavy-tailed few take long flights along (or against) the foraging
  direction, which is what widens the search. Replacing ``r`` by ``L`` outright would
  make phase 1 almost a no-op (median ``|L|`` ≈ 0.005).
* Eq. (L2), phase 2 S1 with a nonlinear convergence factor:
  ``x_new = x + R·(2r − 1)·w(t) ⊙ x`` with ``w(t) = cos(π t / (2T))`` instead of
  ``1 − t/T`` (both go from 1 to 0; the cosine keeps the escape radius larger early and
  shrinks it faster late). S2 is ZOA's Eq. (5) S2 unchanged.
* Eq. (L3), Cauchy mutation of the best, once per iteration after phase 2:
  ``x_c = PZ + η · PZ ⊙ C``, ``C_j ~ Cauchy(0, 1)``, kept greedily (``f(x_c) <= f(PZ)``,
  it then replaces the best zebra). ``η = cauchy_scale``; ``η = 1`` is the textbook
  form. Cost: one extra objective call per iteration, so IZOA makes ``N + T(2N + 1)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = [
    "ZOAResult",
    "mantegna_sigma",
    "mantegna_uv",
    "levy_step",
    "convergence_factor",
    "foraging_move",
    "lion_escape_move",
    "defence_move",
    "cauchy_mutation",
    "zoa_minimize",
    "DEFAULT_R",
]

DEFAULT_R = 0.1  # lion-escape radius, as in the authors' reference code

Objective = Callable[[np.ndarray], float]


def mantegna_sigma(beta: float = 1.5) -> float:
    """σ_u of Mantegna's algorithm (a standard deviation, not a variance).

    ``σ_u = [Γ(1+β)·sin(πβ/2) / (Γ((1+β)/2)·β·2^((β−1)/2))]^(1/β)``; 0.6966 for β = 1.5.
    """
    if not 0.0 < beta <= 2.0:
        raise ValueError(f"beta must be in (0, 2], got {beta}")
    num = math.gamma(1.0 + beta) * math.sin(math.pi * beta / 2.0)
    den = math.gamma((1.0 + beta) / 2.0) * beta * 2.0 ** ((beta - 1.0) / 2.0)
    return (num / den) ** (1.0 / beta)


def mantegna_uv(
    rng: np.random.Generator, size: int | tuple[int, ...], beta: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """The two Gaussian draws of Mantegna's method: ``u ~ N(0, σ_u²)``, ``v ~ N(0, 1)``.

    numpy's ``normal`` takes the standard deviation, so ``σ_u`` is passed as is; passing
    ``σ_u²`` (≈ 0.485) there is the pitfall DESIGN §8 notes in mealpy.
    """
    u = rng.normal(0.0, mantegna_sigma(beta), size)
    v = rng.normal(0.0, 1.0, size)
    return u, v


def levy_step(
    rng: np.random.Generator, size: int | tuple[int, ...], beta: float = 1.5, scale: float = 0.01
) -> np.ndarray:
    """Lévy-flight steps by Mantegna's method: ``s · u / |v|^(1/β)`` with ``u``, ``v``
    from :func:`mantegna_uv`, ``β = 1.5`` and ``s = 0.01`` by default."""
    u, v = mantegna_uv(rng, size, beta)
    # |v| == 0 has probability ~0 but would divide by zero; the clip to bounds absorbs
    # the resulting huge step.
    av = np.maximum(np.abs(v), np.finfo(float).tiny)
    return scale * u / av ** (1.0 / beta)


def convergence_factor(t: int, T: int, kind: str = "linear") -> float:
    """ZOA's ``1 − t/T`` (``"linear"``) or IZOA's ``cos(π t / (2T))`` (``"cosine"``)."""
    if kind == "linear":
        return 1.0 - t / T
    if kind == "cosine":
        return math.cos(math.pi * t / (2.0 * T))
    raise ValueError(f"unknown convergence factor {kind!r}")


def foraging_move(x: np.ndarray, pz: np.ndarray, r: np.ndarray, I: int, levy: np.ndarray | None = None) -> np.ndarray:
    """Phase 1. ZOA Eq. (3): ``x + r ⊙ (PZ − I·x)``; IZOA Eq. (L1): ``x + (r + L) ⊙ (PZ − I·x)``."""
    coef = r if levy is None else r + levy
    return x + coef * (pz - I * x)


def lion_escape_move(x: np.ndarray, r: np.ndarray, factor: float, R: float = DEFAULT_R) -> np.ndarray:
    """Phase 2 S1, Eq. (5) S1 / (L2): ``x + R·(2r − 1)·factor ⊙ x``.

    ``factor`` is ``1 − t/T`` (ZOA) or ``cos(π t/(2T))`` (IZOA); ``2r − 1`` is uniform on
    [−1, 1], so the step is symmetric around zero.
    """
    return x + R * (2.0 * r - 1.0) * factor * x


def defence_move(x: np.ndarray, az: np.ndarray, r: np.ndarray, I: int) -> np.ndarray:
    """Phase 2 S2, Eq. (5) S2: ``x + r ⊙ (AZ − I·x)``, AZ the attacked (other) zebra."""
    return x + r * (az - I * x)


def cauchy_mutation(pz: np.ndarray, c: np.ndarray, scale: float) -> np.ndarray:
    """IZOA Eq. (L3): ``PZ + η · PZ ⊙ C`` with ``C`` standard Cauchy per dimension."""
    return pz + scale * pz * c


@dataclass
class ZOAResult:
    best_position: np.ndarray
    best_fitness: float
    history: list[float]  # best fitness after each iteration (non-increasing)
    positions: np.ndarray  # final population, shape (N, D)
    fitness: np.ndarray  # final population fitness, shape (N,)
    calls: int  # objective calls made (a caching objective may compute fewer)
    population_history: list[np.ndarray] = field(default_factory=list)  # fitness of each zebra per iteration


def _draw_I(rng: np.random.Generator) -> int:
    """``I = round(1 + rand)`` ∈ {1, 2}."""
    return int(np.rint(1.0 + rng.random()))


def _check_arguments(variant: str, dim: int, population: int, iterations: int, lower: float, upper: float) -> None:
    if variant not in ("zoa", "izoa"):
        raise ValueError(f"variant must be 'zoa' or 'izoa', got {variant!r}")
    if dim < 1:
        raise ValueError("dim must be >= 1")
    if population < 2:
        raise ValueError("population must be >= 2 (phase 2 needs another zebra)")
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if not lower < upper:
        raise ValueError("lower must be < upper")


class _CountedObjective:
    """The objective as a float, counting the calls made (``ZOAResult.calls``)."""

    def __init__(self, objective: Objective):
        self.objective = objective
        self.calls = 0

    def __call__(self, x: np.ndarray) -> float:
        self.calls += 1
        return float(self.objective(x))


@dataclass
class _Herd:
    """The population the phases update in place: positions ``X`` (N, D), their fitness,
    and the pioneer ``pz`` (best zebra so far, a copy) with its fitness ``fbest``."""

    X: np.ndarray
    fit: np.ndarray
    pz: np.ndarray
    fbest: float

    def refresh_pioneer(self) -> int:
        """Make the best current zebra the pioneer if it is at least as good; returns its index."""
        ib = int(np.argmin(self.fit))
        if self.fit[ib] <= self.fbest:
            self.pz, self.fbest = self.X[ib].copy(), float(self.fit[ib])
        return ib

    def accept(self, i: int, x_new: np.ndarray, f_new: float) -> None:
        """Greedy acceptance, Eq. (4)/(6): ties are accepted (reference code)."""
        if f_new <= self.fit[i]:
            self.X[i], self.fit[i] = x_new, f_new


def _initial_herd(
    evaluate: _CountedObjective, rng: np.random.Generator, N: int, D: int, lower: float, upper: float
) -> _Herd:
    # Initialisation: uniform in the box (reference code).
    X = lower + rng.random((N, D)) * (upper - lower)
    fit = np.array([evaluate(x) for x in X])
    ib = int(np.argmin(fit))
    return _Herd(X, fit, X[ib].copy(), float(fit[ib]))


def _foraging_phase(
    herd: _Herd,
    evaluate: _CountedObjective,
    rng: np.random.Generator,
    lower: float,
    upper: float,
    levy: tuple[float, float] | None,
) -> None:
    """Phase 1: foraging (Eq. 3; IZOA Eq. L1 when ``levy = (beta, scale)``), greedy acceptance."""
    N, D = herd.X.shape
    for i in range(N):
        I = _draw_I(rng)
        r = rng.random(D)
        step = None if levy is None else levy_step(rng, D, *levy)
        x_new = np.clip(foraging_move(herd.X[i], herd.pz, r, I, step), lower, upper)
        herd.accept(i, x_new, evaluate(x_new))


def _defence_phase(
    herd: _Herd,
    evaluate: _CountedObjective,
    rng: np.random.Generator,
    lower: float,
    upper: float,
    factor: float,
    R: float,
) -> None:
    """Phase 2: defence against predators (Eq. 5; IZOA Eq. L2 via ``factor``), greedy acceptance."""
    N, D = herd.X.shape
    for i in range(N):
        Ps = rng.random()
        if Ps < 0.5:  # S1: lion attack -> escape near the current position
            r = rng.random(D)
            x_new = lion_escape_move(herd.X[i], r, factor, R)
        else:  # S2: other predators -> move towards the attacked zebra AZ
            j = int(rng.integers(N - 1))
            j = j + 1 if j >= i else j  # uniform over the other zebras
            I = _draw_I(rng)
            r = rng.random(D)
            x_new = defence_move(herd.X[i], herd.X[j], r, I)
        x_new = np.clip(x_new, lower, upper)
        herd.accept(i, x_new, evaluate(x_new))


def _cauchy_phase(
    herd: _Herd,
    ib: int,
    evaluate: _CountedObjective,
    rng: np.random.Generator,
    lower: float,
    upper: float,
    scale: float,
) -> None:
    """IZOA: Cauchy mutation of the best (Eq. L3), greedy; a success replaces zebra ``ib``."""
    c = rng.standard_cauchy(herd.X.shape[1])
    x_c = np.clip(cauchy_mutation(herd.pz, c, scale), lower, upper)
    f_c = evaluate(x_c)
    if f_c <= herd.fbest:
        herd.X[ib], herd.fit[ib] = x_c, f_c
        herd.pz, herd.fbest = x_c.copy(), f_c


def zoa_minimize(
    objective: Objective,
    dim: int,
    *,
    population: int = 20,
    iterations: int = 30,
    lower: float = -6.0,
    upper: float = 6.0,
    variant: str = "izoa",
    rng: np.random.Generator | None = None,
    R: float = DEFAULT_R,
    levy_beta: float = 1.5,
    levy_scale: float = 0.01,
    cauchy_scale: float = 1.0,
    progress: Callable[[int, int, float], None] | None = None,
) -> ZOAResult:
    """Minimise ``objective`` over ``[lower, upper]^dim`` with ZOA (``variant="zoa"``) or
    IZOA (``variant="izoa"``). See the module docstring for the equations.

    ``progress(t, iterations, best_fitness)`` is called once per iteration (t from 1).
    """
    _check_arguments(variant, dim, population, iterations, lower, upper)
    rng = np.random.default_rng() if rng is None else rng
    izoa = variant == "izoa"
    T = iterations
    evaluate = _CountedObjective(objective)
    herd = _initial_herd(evaluate, rng, population, dim, lower, upper)
    history: list[float] = []
    pop_history: list[np.ndarray] = []

    for t in range(1, T + 1):
        # Pioneer zebra = best so far (reference code: updated at iteration start).
        herd.refresh_pioneer()
        _foraging_phase(herd, evaluate, rng, lower, upper, (levy_beta, levy_scale) if izoa else None)
        factor = convergence_factor(t, T, "cosine" if izoa else "linear")
        _defence_phase(herd, evaluate, rng, lower, upper, factor, R)
        ib = herd.refresh_pioneer()
        if izoa:
            _cauchy_phase(herd, ib, evaluate, rng, lower, upper, cauchy_scale)

        history.append(herd.fbest)
        pop_history.append(herd.fit.copy())
        if progress is not None:
            progress(t, T, herd.fbest)

    return ZOAResult(
        best_position=herd.pz,
        best_fitness=herd.fbest,
        history=history,
        positions=herd.X,
        fitness=herd.fit,
        calls=evaluate.calls,
        population_history=pop_history,
    )
