"""Tests for mre_repro.stats: hand-checked values and bootstrap properties."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from mre_repro.stats import (
    DegenerateInputError,
    EpochsToTarget,
    Interval,
    bootstrap_interval,
    epochs_to_convergence,
    epochs_to_target,
    interquartile_mean,
    mann_whitney,
    normalised_entropy,
    paired_bootstrap_interval,
    paired_differences,
    probability_of_improvement,
    reduction_interval,
    spearman_interval,
)

# Few resamples keep each bootstrap call in the millisecond range.
RESAMPLES = 199

PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)

# Accuracy-like values per seed. Rounding to 3 decimals makes ties likely,
# which exercises the rank-based code and the zero-variance path.
seed_value = st.floats(min_value=0.0, max_value=1.0, allow_nan=False).map(lambda v: round(v, 3))
seed_values = st.lists(seed_value, min_size=2, max_size=10)
generator_seed = st.integers(min_value=0, max_value=2**32 - 1)
methods = st.sampled_from(["percentile", "basic", "BCa"])
statistics = st.sampled_from([np.mean, np.median, np.max, np.var, interquartile_mean])
confidences = st.sampled_from([0.1, 0.5, 0.9, 0.95, 0.99])


@st.composite
def paired_seed_values(draw: st.DrawFn) -> tuple[list[float], list[float]]:
    """Two lists of per-seed values of equal length."""
    n = draw(st.integers(min_value=2, max_value=10))
    first = draw(st.lists(seed_value, min_size=n, max_size=n))
    second = draw(st.lists(seed_value, min_size=n, max_size=n))
    return first, second


def rng_from(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# Interval


def test_interval_contains_bounds_inclusive() -> None:
    interval = Interval(estimate=0.5, low=0.2, high=0.8, confidence=0.95, n=5, method="bootstrap-percentile")

    assert interval.contains(0.2)
    assert interval.contains(0.8)
    assert not interval.contains(0.81)
    assert not interval.contains(float("nan"))


def test_interval_to_dict_is_json_ready() -> None:
    interval = bootstrap_interval([0.1, 0.2, 0.4], n_resamples=RESAMPLES, rng=rng_from(0))

    record = interval.to_dict()

    assert record["estimate"] == pytest.approx(0.7 / 3)
    assert record["n"] == 3
    assert record["method"] == "bootstrap-percentile"
    assert json.loads(json.dumps(record)) == record


def test_interval_rejects_reversed_bounds() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        Interval(estimate=0.5, low=0.8, high=0.2, confidence=0.95, n=5, method="bootstrap-percentile")


# ---------------------------------------------------------------------------
# Hand-checked values


def test_interquartile_mean_drops_quarters() -> None:
    # Sorted: 1 2 | 3 4 5 6 | 7 100. trim_mean cuts floor(0.25 * 8) = 2 values
    # from each end, leaving 3, 4, 5, 6 with mean 4.5.
    assert interquartile_mean([1, 2, 3, 4, 100, 5, 6, 7]) == pytest.approx(4.5)


def test_interquartile_mean_small_sample_is_mean() -> None:
    # floor(0.25 * 3) = 0, so nothing is cut.
    assert interquartile_mean([1, 2, 6]) == pytest.approx(3.0)


def test_probability_of_improvement_by_hand() -> None:
    # The four seed pairs (x, y): (2, 1) win 1, (2, 2) tie 0.5, (3, 1) win 1,
    # (3, 2) win 1. The total is 3.5 out of 4 pairs, so 0.875.
    assert probability_of_improvement([2, 3], [1, 2]) == pytest.approx(0.875)


def test_probability_of_improvement_complements() -> None:
    x, y = [0.1, 0.5, 0.7], [0.2, 0.5]

    assert probability_of_improvement(x, y) + probability_of_improvement(y, x) == pytest.approx(1.0)


def test_paired_differences_subtracts_per_seed() -> None:
    differences = paired_differences([0.9, 0.8, 0.7], [0.5, 0.8, 1.0])

    np.testing.assert_allclose(differences, [0.4, 0.0, -0.3])


def test_paired_differences_length_mismatch() -> None:
    with pytest.raises(ValueError, match="same length, got 3 values in a and 2 in b"):
        paired_differences([1, 2, 3], [1, 2])


def test_paired_differences_nan() -> None:
    with pytest.raises(DegenerateInputError, match="b contains 1 NaN or infinite value"):
        paired_differences([1, 2, 3], [1, np.nan, 3])


def test_mann_whitney_separated_samples() -> None:
    larger, smaller = [5.0, 6.0, 7.0, 8.0], [1.0, 2.0, 3.0]

    forward = mann_whitney(larger, smaller)
    backward = mann_whitney(smaller, larger)

    assert forward.effect_size == pytest.approx(1.0)
    assert backward.effect_size == pytest.approx(-1.0)
    assert forward.statistic == pytest.approx(12.0)
    assert (forward.n_x, forward.n_y) == (4, 3)


def test_mann_whitney_matches_scipy() -> None:
    x, y = [0.61, 0.72, 0.70, 0.65, 0.69], [0.60, 0.66, 0.58, 0.62]

    result = mann_whitney(x, y)
    expected = scipy.stats.mannwhitneyu(x, y, alternative="two-sided")

    assert result.statistic == pytest.approx(expected.statistic)
    assert result.pvalue == pytest.approx(expected.pvalue)


def test_epochs_to_target_reached() -> None:
    curve = [0.50, 0.70, 0.80, 0.85, 0.79]

    assert epochs_to_target(curve, 0.80) == EpochsToTarget(epochs=3, reached=True, cap=5)


def test_epochs_to_target_never_reached() -> None:
    curve = [0.50, 0.70, 0.75]

    assert epochs_to_target(curve, 0.80) == EpochsToTarget(epochs=3, reached=False, cap=3)
    assert epochs_to_target(curve, 0.80, cap=10) == EpochsToTarget(epochs=10, reached=False, cap=10)


def test_epochs_to_target_after_cap() -> None:
    curve = [0.50, 0.70, 0.90]

    assert epochs_to_target(curve, 0.80, cap=2) == EpochsToTarget(epochs=2, reached=False, cap=2)


def test_epochs_to_convergence_plateau() -> None:
    # Epoch 3 is the best. Epochs 4, 5 and 6 do not improve, so with
    # patience 3 training stops after epoch 6.
    curve = [0.40, 0.60, 0.70, 0.70, 0.69, 0.70, 0.71]

    assert epochs_to_convergence(curve, patience=3) == EpochsToTarget(epochs=3, reached=True, cap=7)


def test_epochs_to_convergence_min_delta() -> None:
    # Epoch 4 gains 0.005 over epoch 3, less than min_delta, so it does not
    # count as an improvement.
    curve = [0.40, 0.60, 0.700, 0.705, 0.70, 0.70]

    assert epochs_to_convergence(curve, patience=3, min_delta=0.01) == EpochsToTarget(3, True, 6)
    assert epochs_to_convergence(curve, patience=3) == EpochsToTarget(6, False, 6)


def test_epochs_to_convergence_ends_early() -> None:
    curve = [0.40, 0.60, 0.70, 0.70, 0.70]

    assert epochs_to_convergence(curve, patience=3) == EpochsToTarget(epochs=5, reached=False, cap=5)


def test_normalised_entropy_cases() -> None:
    usage = np.array([[3, 3, 3, 3], [0, 0, 7, 0], [0, 0, 0, 0], [1, 1, 0, 0]])

    entropy = normalised_entropy(usage)

    np.testing.assert_allclose(entropy, [1.0, 0.0, 0.0, 0.5])


def test_normalised_entropy_other_axis() -> None:
    shares = np.array([[0.5, 1.0], [0.5, 0.0]])

    np.testing.assert_allclose(normalised_entropy(shares, axis=0), [1.0, 0.0])


def test_normalised_entropy_one_expert() -> None:
    with pytest.raises(DegenerateInputError, match="at least 2 experts"):
        normalised_entropy([[5.0], [3.0]])


def test_normalised_entropy_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        normalised_entropy([1.0, -1.0])


def test_reduction_interval_by_hand() -> None:
    # mean(model) = 6, mean(baseline) = 10, so the reduction is 1 - 6/10 = 0.4.
    interval = reduction_interval([5, 6, 7], [9, 10, 11], n_resamples=RESAMPLES, rng=rng_from(0))

    assert interval.estimate == pytest.approx(0.4)
    assert interval.n == 3
    assert interval.low <= 0.4 <= interval.high


def test_reduction_interval_identical_runs() -> None:
    interval = reduction_interval([8, 8], [10, 10], n_resamples=RESAMPLES, rng=rng_from(0))

    assert (interval.low, interval.estimate, interval.high) == pytest.approx((0.2, 0.2, 0.2))


def test_reduction_interval_rejects_zero_epochs() -> None:
    with pytest.raises(ValueError, match="positive epoch counts"):
        reduction_interval([0, 6], [10, 10], n_resamples=RESAMPLES, rng=rng_from(0))


# ---------------------------------------------------------------------------
# Bootstrap intervals


def test_bootstrap_constant_values_zero_width() -> None:
    for method in ("percentile", "basic", "BCa"):
        interval = bootstrap_interval([0.8, 0.8, 0.8], method=method, n_resamples=RESAMPLES, rng=rng_from(0))

        assert (interval.low, interval.high) == (interval.estimate, interval.estimate)
        assert interval.estimate == pytest.approx(0.8)
        assert interval.method == f"bootstrap-{method}"


def test_bootstrap_widens_to_estimate() -> None:
    # The bootstrap distribution of the population variance is centred below
    # the full-sample variance, so a narrow percentile interval misses it.
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    interval = bootstrap_interval(values, statistic=np.var, confidence=0.1, n_resamples=999, rng=rng_from(1))

    assert interval.widened
    assert interval.high == interval.estimate
    assert interval.estimate == pytest.approx(np.var(values))


def test_bootstrap_bca_falls_back_to_percentile() -> None:
    # Every leave-one-out median of [0, 0, 0, 1] is 0, so the BCa acceleration
    # is 0 / 0 and scipy returns NaN bounds.
    values = [0.0, 0.0, 0.0, 1.0]

    bca = bootstrap_interval(values, statistic=np.median, method="BCa", n_resamples=RESAMPLES, rng=rng_from(3))
    percentile = bootstrap_interval(values, statistic=np.median, n_resamples=RESAMPLES, rng=rng_from(3))

    assert bca.method == "bootstrap-percentile"
    assert (bca.low, bca.high) == (percentile.low, percentile.high)


def test_bootstrap_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="'percentile', 'basic' or 'BCa'"):
        bootstrap_interval([1.0, 2.0], method="studentized", rng=rng_from(0))


def test_bootstrap_requires_generator() -> None:
    with pytest.raises(TypeError, match="numpy.random.default_rng"):
        bootstrap_interval([1.0, 2.0], rng=0)  # type: ignore[arg-type]


def test_paired_bootstrap_one_seed() -> None:
    with pytest.raises(DegenerateInputError, match="at least 2 seeds, got 1"):
        paired_bootstrap_interval([0.9], [0.8], rng=rng_from(0))


def test_spearman_monotone_relation() -> None:
    x = np.linspace(0.0, 1.0, 20)

    increasing = spearman_interval(x, np.exp(3 * x), n_resamples=RESAMPLES, rng=rng_from(0))
    decreasing = spearman_interval(x, -(x**3), n_resamples=RESAMPLES, rng=rng_from(0))

    assert increasing.estimate == pytest.approx(1.0)
    assert increasing.low == pytest.approx(1.0)
    assert decreasing.estimate == pytest.approx(-1.0)
    assert decreasing.high == pytest.approx(-1.0)


def test_spearman_matches_scipy_with_ties() -> None:
    x = [1, 2, 2, 3, 5, 5, 6, 8, 9, 9]
    y = [2, 1, 4, 4, 3, 7, 6, 9, 8, 8]

    interval = spearman_interval(x, y, n_resamples=RESAMPLES, rng=rng_from(0))

    assert interval.estimate == pytest.approx(scipy.stats.spearmanr(x, y).statistic)
    assert interval.contains(interval.estimate)


def test_spearman_too_few_samples() -> None:
    # With 3 samples, 1 resample in 9 repeats a single pair, which has no
    # defined correlation.
    with pytest.raises(DegenerateInputError, match="undefined .NaN. on"):
        spearman_interval([1.0, 2.0, 3.0], [1.0, 3.0, 2.0], n_resamples=RESAMPLES, rng=rng_from(0))


def test_spearman_constant_input() -> None:
    with pytest.raises(DegenerateInputError, match="y is constant"):
        spearman_interval([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0], rng=rng_from(0))


# ---------------------------------------------------------------------------
# Properties


@PROPERTY_SETTINGS
@given(values=seed_values, statistic=statistics, method=methods, confidence=confidences, seed=generator_seed)
def test_bootstrap_contains_estimate(values, statistic, method, confidence, seed) -> None:
    interval = bootstrap_interval(
        values, statistic=statistic, confidence=confidence, method=method, n_resamples=RESAMPLES, rng=rng_from(seed)
    )

    assert interval.low <= interval.estimate <= interval.high
    assert interval.estimate == pytest.approx(statistic(np.asarray(values)))
    assert interval.n == len(values)


@PROPERTY_SETTINGS
@given(pair=paired_seed_values(), method=methods, seed=generator_seed)
def test_paired_bootstrap_contains_estimate(pair, method, seed) -> None:
    a, b = pair

    interval = paired_bootstrap_interval(a, b, method=method, n_resamples=RESAMPLES, rng=rng_from(seed))

    assert interval.low <= interval.estimate <= interval.high
    assert interval.estimate == pytest.approx(np.mean(np.subtract(a, b)))


@PROPERTY_SETTINGS
@given(values=seed_values, method=methods, seed=generator_seed, data=st.data())
def test_bootstrap_seed_order_invariant(values, method, seed, data) -> None:
    permuted = data.draw(st.permutations(values))

    original = bootstrap_interval(values, method=method, n_resamples=RESAMPLES, rng=rng_from(seed))
    reordered = bootstrap_interval(permuted, method=method, n_resamples=RESAMPLES, rng=rng_from(seed))

    assert reordered == original


@PROPERTY_SETTINGS
@given(pair=paired_seed_values(), seed=generator_seed, data=st.data())
def test_paired_seed_order_invariant(pair, seed, data) -> None:
    a, b = np.asarray(pair[0]), np.asarray(pair[1])
    order = np.asarray(data.draw(st.permutations(range(a.size))))

    original = paired_bootstrap_interval(a, b, n_resamples=RESAMPLES, rng=rng_from(seed))
    reordered = paired_bootstrap_interval(a[order], b[order], n_resamples=RESAMPLES, rng=rng_from(seed))

    assert reordered == original


@PROPERTY_SETTINGS
@given(
    epochs=st.lists(st.tuples(st.integers(1, 50), st.integers(1, 50)), min_size=2, max_size=10),
    seed=generator_seed,
    data=st.data(),
)
def test_reduction_seed_order_invariant(epochs, seed, data) -> None:
    model, baseline = (np.asarray(column) for column in zip(*epochs))
    order = np.asarray(data.draw(st.permutations(range(model.size))))

    original = reduction_interval(model, baseline, n_resamples=RESAMPLES, rng=rng_from(seed))
    reordered = reduction_interval(model[order], baseline[order], n_resamples=RESAMPLES, rng=rng_from(seed))

    assert reordered == original
    assert original.low <= original.estimate <= original.high
    assert original.estimate == pytest.approx(1 - model.mean() / baseline.mean())


@PROPERTY_SETTINGS
@given(
    x=st.lists(st.integers(0, 20), min_size=10, max_size=10, unique=True),
    y=st.lists(st.integers(0, 20), min_size=10, max_size=10, unique=True),
    seed=generator_seed,
    data=st.data(),
)
def test_spearman_seed_order_invariant(x, y, seed, data) -> None:
    first, second = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.asarray(data.draw(st.permutations(range(first.size))))

    original = spearman_interval(first, second, n_resamples=RESAMPLES, rng=rng_from(seed))
    reordered = spearman_interval(first[order], second[order], n_resamples=RESAMPLES, rng=rng_from(seed))

    assert reordered == original
    assert original.low <= original.estimate <= original.high


@PROPERTY_SETTINGS
@given(values=seed_values, method=methods, seed=generator_seed)
def test_bootstrap_same_seed_same_interval(values, method, seed) -> None:
    first = bootstrap_interval(values, method=method, n_resamples=RESAMPLES, rng=rng_from(seed))
    second = bootstrap_interval(values, method=method, n_resamples=RESAMPLES, rng=rng_from(seed))

    assert first == second


@PROPERTY_SETTINGS
@given(value=seed_value, seed=generator_seed)
def test_bootstrap_one_seed_raises(value, seed) -> None:
    with pytest.raises(DegenerateInputError, match="needs at least 2 seeds, got 1"):
        bootstrap_interval([value], n_resamples=RESAMPLES, rng=rng_from(seed))


@PROPERTY_SETTINGS
@given(values=seed_values, bad=st.sampled_from([np.nan, np.inf, -np.inf]), seed=generator_seed, data=st.data())
def test_bootstrap_non_finite_raises(values, bad, seed, data) -> None:
    position = data.draw(st.integers(0, len(values) - 1))
    values[position] = bad

    with pytest.raises(DegenerateInputError, match=f"contains 1 NaN or infinite value.s. out of {len(values)}"):
        bootstrap_interval(values, n_resamples=RESAMPLES, rng=rng_from(seed))


@PROPERTY_SETTINGS
@given(x=seed_values, y=seed_values)
def test_probability_of_improvement_matches_pairs(x, y) -> None:
    wins = 0.0
    for first in x:
        for second in y:
            if first > second:
                wins += 1.0
            elif first == second:
                wins += 0.5

    assert probability_of_improvement(x, y) == pytest.approx(wins / (len(x) * len(y)))
    assert mann_whitney(x, y).effect_size == pytest.approx(2 * wins / (len(x) * len(y)) - 1)
