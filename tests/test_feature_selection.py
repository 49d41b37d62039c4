"""Feature selection: ZOA / IZOA optimiser, wrapper fitness, public entry point."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special
from sklearn.datasets import make_classification

from trainer.select import SelectionResult, SubsetFitness, position_to_bits, select_features
from trainer.select.zoa import (
    DEFAULT_R,
    cauchy_mutation,
    convergence_factor,
    defence_move,
    foraging_move,
    levy_step,
    lion_escape_move,
    mantegna_sigma,
    mantegna_uv,
    zoa_minimize,
)

N_INF, N_NOISE = 5, 25


def _informative_data(seed: int = 0, n: int = 300):
    """Columns 0..4 informative (make_classification with shuffle=False), 5..29 pure noise;
    10 speakers of 30 samples each."""
    X, y = make_classification(
        n_samples=n,
        n_features=N_INF + N_NOISE,
        n_informative=N_INF,
        n_redundant=0,
        n_repeated=0,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=1.5,
        shuffle=False,
        random_state=seed,
    )
    groups = np.repeat(np.arange(10), n // 10)
    return X, y, groups


@pytest.fixture(scope="module")
def informative_data():
    return _informative_data(0)


# --------------------------------------------------------------------------- Lévy flight
def test_mantegna_sigma_value():
    # σ_u for β = 1.5 from the closed form, and the σ (not σ²) value the design quotes.
    beta = 1.5
    expected = (
        math.gamma(1 + beta) * math.sin(math.pi * beta / 2) / (math.gamma((1 + beta) / 2) * beta * 2 ** ((beta - 1) / 2))
    ) ** (1 / beta)
    assert mantegna_sigma(1.5) == pytest.approx(expected, rel=1e-12)
    assert mantegna_sigma(1.5) == pytest.approx(0.6966, abs=1e-4)


def test_mantegna_u_has_standard_deviation_sigma_u():
    rng = np.random.default_rng(1)
    u, v = mantegna_uv(rng, 200_000, 1.5)
    sigma_u = mantegna_sigma(1.5)
    # median |N(0, σ²)| = σ · Φ⁻¹(3/4); with σ² (≈0.485) in its place this is 30 % off.
    q = special.ndtri(0.75)
    assert np.median(np.abs(u)) / q == pytest.approx(sigma_u, rel=0.02)
    assert np.median(np.abs(v)) / q == pytest.approx(1.0, rel=0.02)


def _theoretical_median_abs_levy(beta: float) -> float:
    """Median of |u| / |v|^(1/β), u ~ N(0, σ_u²), v ~ N(0,1), by numerical integration:
    P(|Z| <= m) = E_v[erf(m |v|^(1/β) / (σ_u √2))]."""
    sigma_u = mantegna_sigma(beta)

    def cdf(m):
        f = lambda v: special.erf(m * abs(v) ** (1 / beta) / (sigma_u * math.sqrt(2))) * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
        return integrate.quad(f, -np.inf, np.inf)[0]

    return optimize.brentq(lambda m: cdf(m) - 0.5, 1e-3, 10.0)


def test_levy_step_scale_matches_mantegna_theory():
    rng = np.random.default_rng(2)
    m = _theoretical_median_abs_levy(1.5)
    steps = levy_step(rng, 200_000, beta=1.5, scale=0.01)
    assert np.median(np.abs(steps)) == pytest.approx(0.01 * m, rel=0.03)
    # symmetric, heavy-tailed: far more mass beyond 10 medians than a Gaussian would have
    assert abs(np.mean(steps > 0) - 0.5) < 0.01
    assert np.mean(np.abs(steps) > 10 * 0.01 * m) > 0.005


# --------------------------------------------------------------------------- moves
def test_move_equations():
    x = np.array([1.0, -2.0, 4.0])
    pz = np.array([0.5, 0.5, -1.0])
    r = np.array([0.0, 0.5, 1.0])
    assert np.allclose(foraging_move(x, pz, r, 2), x + r * (pz - 2 * x))
    levy = np.array([0.1, -0.2, 0.3])
    assert np.allclose(foraging_move(x, pz, r, 1, levy), x + (r + levy) * (pz - x))
    assert np.allclose(defence_move(x, pz, r, 1), x + r * (pz - x))
    # lion escape: R·(2r − 1)·factor·x, so r = 0 / 0.5 / 1 give −R, 0, +R (times factor·x)
    out = lion_escape_move(x, r, 0.5, R=0.1)
    assert np.allclose(out, [1.0 - 0.05 * 1.0, -2.0, 4.0 + 0.05 * 4.0])
    c = np.array([1.0, -1.0, 0.0])
    assert np.allclose(cauchy_mutation(pz, c, 1.0), pz + pz * c)
    assert DEFAULT_R == 0.1


def test_convergence_factors():
    assert convergence_factor(0, 10, "linear") == 1.0 and convergence_factor(10, 10, "linear") == 0.0
    assert convergence_factor(0, 10, "cosine") == 1.0
    assert convergence_factor(10, 10, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert convergence_factor(5, 10, "cosine") == pytest.approx(math.cos(math.pi / 4))


class _Recorder:
    """Constant objective (every move is accepted as a tie) that records each candidate."""

    def __init__(self):
        self.points: list[np.ndarray] = []

    def __call__(self, x):
        self.points.append(np.array(x, copy=True))
        return 0.0


@pytest.mark.parametrize("variant", ["zoa", "izoa"])
def test_lion_escape_inside_optimizer_is_symmetric(variant):
    """Recover the lion-escape (S1) candidates of phase 2 from a real run and check that
    (x_new − x) / (R·factor·x) = 2r − 1 covers [−1, 1] symmetrically with the variant's
    factor (mealpy's `2 + rand − 1` would make every step positive)."""
    N, D, T = 6, 40, 12
    rec = _Recorder()
    zoa_minimize(rec, D, population=N, iterations=T, lower=-1e9, upper=1e9, variant=variant, rng=np.random.default_rng(3))
    per_iter = 2 * N + (1 if variant == "izoa" else 0)
    assert len(rec.points) == N + T * per_iter
    zs, n_s1 = [], 0
    for t in range(1, T):  # factor is 0 at t = T
        base = N + (t - 1) * per_iter
        phase1 = rec.points[base : base + N]  # accepted (ties), so these are x before phase 2
        phase2 = rec.points[base + N : base + 2 * N]
        factor = convergence_factor(t, T, "cosine" if variant == "izoa" else "linear")
        for x, x_new in zip(phase1, phase2):
            z = (x_new - x) / (DEFAULT_R * factor * x)
            if np.all(np.abs(z) <= 1 + 1e-9):  # an S1 move; S2 moves are far outside
                n_s1 += 1
                assert np.abs(z).max() > 0.8  # the band is used fully with this factor
                zs.append(z)
    assert n_s1 >= 10
    zs = np.concatenate(zs)
    assert abs(zs.mean()) < 0.1
    assert 0.4 < np.mean(zs < 0) < 0.6


@pytest.mark.parametrize("variant", ["zoa", "izoa"])
def test_foraging_coefficient_is_uniform_for_zoa_and_levy_perturbed_for_izoa(variant):
    """Phase 1 of the first iteration, with a constant objective: PZ is zebra 0 (argmin of
    ties), and (x_new − x) / (PZ − I·x) recovers the per-dimension coefficient: r ∈ [0, 1]
    for ZOA, r + L for IZOA, which leaves [0, 1] on a small heavy-tailed fraction."""
    N, D = 30, 50
    rec = _Recorder()
    zoa_minimize(rec, D, population=N, iterations=1, lower=-1e9, upper=1e9, variant=variant, rng=np.random.default_rng(4))
    init, phase1 = rec.points[:N], rec.points[N : 2 * N]
    pz = init[0]
    outside = []
    for i in range(1, N):
        x = init[i]
        fractions = []
        for I in (1, 2):  # I is not recorded: take the value that explains the move best
            coef = (phase1[i] - x) / (pz - I * x)
            fractions.append(np.mean((coef < 0) | (coef > 1)))
        outside.append(min(fractions))
    if variant == "zoa":
        assert max(outside) == 0.0
    else:
        assert 0.0 < np.mean(outside) < 0.1


@pytest.mark.parametrize("variant", ["zoa", "izoa"])
def test_optimizer_greedy_and_converges_on_sphere(variant):
    res = zoa_minimize(
        lambda x: float(np.sum(x**2)), 10, population=20, iterations=100, lower=-10, upper=10,
        variant=variant, rng=np.random.default_rng(0),
    )
    assert res.best_fitness < 1e-6
    assert all(b <= a for a, b in zip(res.history, res.history[1:]))
    # greedy acceptance: no zebra's fitness ever gets worse
    pop = np.array(res.population_history)
    assert np.all(np.diff(pop, axis=0) <= 0)
    assert res.best_fitness == pytest.approx(float(np.sum(res.best_position**2)))
    assert res.calls == 20 + 100 * (40 + (1 if variant == "izoa" else 0))


# --------------------------------------------------------------------------- fitness
def test_empty_subset_costs_one(informative_data):
    X, y, g = informative_data
    f = SubsetFitness(X, y, g)
    mask = np.zeros(X.shape[1], dtype=bool)
    assert f(mask) == 1.0
    assert f.cv_error(mask) == 1.0
    assert f.evaluations == 0


def test_fitness_formula_and_cache(informative_data):
    X, y, g = informative_data
    f = SubsetFitness(X, y, g, alpha=0.9)
    mask = np.zeros(X.shape[1], dtype=bool)
    mask[:N_INF] = True
    fit, err = f.evaluate(mask)
    assert fit == pytest.approx(0.9 * err + 0.1 * N_INF / X.shape[1])
    assert 0.0 <= err < 0.2  # informative columns alone classify well
    f(mask.copy())
    assert f.evaluations == 1 and f.calls == 2
    # all-noise subset is near chance (3 classes)
    noise = ~mask
    assert f.cv_error(noise) > 0.45


@pytest.mark.parametrize("classifier", ["knn", "logreg"])
def test_fast_path_equals_sklearn_pipeline(informative_data, classifier):
    X, y, g = informative_data
    f = SubsetFitness(X, y, g, classifier=classifier)
    rng = np.random.default_rng(0)
    for _ in range(4):
        mask = rng.random(X.shape[1]) < 0.4
        assert f.cv_error(mask) == pytest.approx(f.cv_error_pipeline(mask), abs=1e-12)


def _speaker_data():
    """One feature identifies the speaker (a code per speaker); the class is speaker-
    dependent (90 % of a speaker's clips share its dominant class) but the code does not
    predict the class of an unseen speaker (neighbouring codes alternate classes)."""
    rng = np.random.default_rng(0)
    n_spk, per = 12, 20
    groups = np.repeat(np.arange(n_spk), per)
    dominant = groups % 2
    y = np.where(rng.random(groups.size) < 0.9, dominant, 1 - dominant)
    code = groups + 0.01 * rng.standard_normal(groups.size)
    X = np.column_stack([code, rng.standard_normal(groups.size)])
    return X, y, groups


def test_group_aware_cv_does_not_leak_speakers():
    X, y, groups = _speaker_data()
    mask = np.array([True, False])
    f = SubsetFitness(X, y, groups, cv_folds=3)
    for train, test in f.folds:
        assert not set(groups[train]) & set(groups[test])
    assert f.cv_error(mask) > 0.4  # speaker identity is useless for unseen speakers
    # control: if folds were allowed to mix speakers (each sample its own group), the
    # same feature looks excellent — this is what the group split prevents.
    leaky = SubsetFitness(X, y, np.arange(len(y)), cv_folds=3)
    assert leaky.cv_error(mask) < 0.2
    # and the entry point uses the groups it is given
    res = select_features(X, y, groups, method="none")
    assert res.cv_error > 0.4


def test_too_few_groups_is_an_error(informative_data):
    X, y, _ = informative_data
    with pytest.raises(ValueError, match="groups"):
        SubsetFitness(X, y, np.zeros(len(y)))


# --------------------------------------------------------------------------- selection
@pytest.mark.parametrize("method", ["izoa", "zoa"])
def test_selection_keeps_informative_drops_noise(informative_data, method):
    X, y, g = informative_data
    calls = []
    res = select_features(
        X, y, g, method=method, population=10, iterations=25, seed=0,
        progress=lambda t, T, best: calls.append((t, T, best)),
    )
    baseline = select_features(X, y, g, method="none")
    assert isinstance(res, SelectionResult) and res.method == method
    assert res.mask.dtype == bool and res.mask.shape == (X.shape[1],)
    assert res.n_selected == int(res.mask.sum())
    assert res.mask[:N_INF].sum() >= N_INF - 1  # most informative features kept
    assert res.mask[N_INF:].sum() <= N_NOISE // 2  # most noise dropped
    assert res.cv_error <= baseline.cv_error
    assert res.fitness < baseline.fitness
    # history: one entry per iteration, never worse (greedy), ends at the result
    assert len(res.history) == 25
    assert all(b <= a for a, b in zip(res.history, res.history[1:]))
    assert res.history[-1] == pytest.approx(res.fitness)
    # progress called once per iteration with the best-so-far
    assert [c[0] for c in calls] == list(range(1, 26)) and all(c[1] == 25 for c in calls)
    assert [c[2] for c in calls] == res.history
    # distinct evaluations are at most the objective calls (cache hits are free)
    per_iter = 2 * 10 + (1 if method == "izoa" else 0)
    assert 0 < res.evaluations <= 10 + 25 * per_iter


def test_reproducible_with_seed(informative_data):
    X, y, g = informative_data
    a = select_features(X, y, g, method="izoa", population=6, iterations=5, seed=7)
    b = select_features(X, y, g, method="izoa", population=6, iterations=5, seed=7)
    c = select_features(X, y, g, method="izoa", population=6, iterations=5, seed=8)
    assert np.array_equal(a.mask, b.mask) and a.history == b.history and a.evaluations == b.evaluations
    assert not (np.array_equal(a.mask, c.mask) and a.history == c.history)


@pytest.mark.parametrize("method", ["izoa", "zoa", "mutual_info", "none"])
def test_always_keep(informative_data, method):
    X, y, g = informative_data
    keep = [N_INF + 3, X.shape[1] - 1]  # two pure-noise columns the search would drop
    res = select_features(X, y, g, method=method, population=6, iterations=4, k=3, always_keep=keep, seed=0)
    assert res.mask[keep].all()
    if method == "mutual_info":
        assert res.n_selected == 3 + 2


def test_always_keep_everything_and_bad_index(informative_data):
    X, y, g = informative_data
    res = select_features(X, y, g, method="izoa", always_keep=range(X.shape[1]))
    assert res.mask.all()
    with pytest.raises(ValueError):
        select_features(X, y, g, method="zoa", always_keep=[X.shape[1]])


def test_mutual_info_baseline(informative_data):
    X, y, g = informative_data
    res = select_features(X, y, g, method="mutual_info", k=N_INF, seed=0)
    assert res.n_selected == N_INF and res.method == "mutual_info"
    assert res.mask[:N_INF].sum() >= N_INF - 1
    default = select_features(X, y, g, method="mutual_info", seed=0)
    assert default.n_selected == X.shape[1] // 4
    none = select_features(X, y, g, method="none")
    assert none.mask.all() and none.n_selected == X.shape[1] and none.evaluations == 1


def test_transfer_functions_and_v_shaped_run(informative_data):
    x = np.array([-3.0, -0.6, -0.5, 0.0, 0.1, 0.5, 0.6, 3.0])
    assert position_to_bits(x, "s").tolist() == [False, False, False, False, True, True, True, True]
    # |tanh x| > 0.5  <=>  |x| > atanh(0.5) ≈ 0.549
    assert position_to_bits(x, "v").tolist() == [True, True, False, False, False, False, True, True]
    X, y, g = informative_data
    res = select_features(X, y, g, method="izoa", transfer="v", population=6, iterations=4, seed=0)
    assert res.n_selected >= 1 and all(b <= a for a, b in zip(res.history, res.history[1:]))
    with pytest.raises(ValueError):
        select_features(X, y, g, method="izoa", transfer="x")
    with pytest.raises(ValueError):
        select_features(X, y, g, method="pso")


# --------------------------------------------------------------------------- report comparison
def test_compare_methods_scores_every_mask_on_held_out_data():
    from trainer.select.compare import compare_methods

    X_all, y_all, _ = _informative_data(0, n=600)  # one draw: even rows train, odd rows test
    X, y, X_test, y_test = X_all[::2], y_all[::2], X_all[1::2], y_all[1::2]
    groups = np.arange(len(y)) % 10
    given = select_features(X, y, groups, method="izoa", population=8, iterations=6, seed=0)
    out = compare_methods(X, y, groups, X_test, y_test, given={"izoa": given}, population=8, iterations=6, seed=0)
    assert list(out) == ["none", "izoa", "zoa", "mutual_info"]
    assert out["izoa"]["n_selected"] == given.n_selected and out["izoa"]["fitness"] == given.fitness
    assert out["none"]["n_selected"] == X.shape[1]
    for r in out.values():
        assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["test_uar"] <= 1
    # Dropping the noise columns must pay off on held-out data too.
    assert out["izoa"]["test_uar"] > out["none"]["test_uar"]

