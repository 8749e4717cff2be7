"""Statistics over training seeds: bootstrap intervals, rank tests and epoch counts.

Each model in the suite is trained with a few seeds (typically 3 to 10), and
every claim is judged from one value per seed. The conventions here are:

* A "sample" is a 1-D array with one value per seed. Paired inputs (``a`` and
  ``b``, or ``x`` and ``y``) list the same seeds in the same order.
* Every function that draws random numbers takes an explicit
  ``numpy.random.Generator`` as ``rng``. Nothing here seeds or reads a global
  random state.
* Intervals are bootstrap confidence intervals from ``scipy.stats.bootstrap``.
  Before resampling, the seeds are sorted into a canonical order, so the
  result depends on the values and the generator but not on the order in
  which the runs were listed.
* Inputs that cannot support the estimate (too few seeds, NaN or infinite
  values) raise ``DegenerateInputError``, a ``ValueError``, with a message that
  names the problem and what is needed.

Names of estimates are spelled out as in the rliable library
(google-research/rliable): interquartile mean, probability of improvement.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.stats

__all__ = [
    "DegenerateInputError",
    "EpochsToTarget",
    "Interval",
    "MannWhitneyResult",
    "bootstrap_interval",
    "epochs_to_convergence",
    "epochs_to_target",
    "interquartile_mean",
    "mann_whitney",
    "normalised_entropy",
    "paired_bootstrap_interval",
    "paired_differences",
    "probability_of_improvement",
    "reduction_interval",
    "spearman_interval",
]

Statistic = Callable[..., Any]

# Bootstrap methods of scipy.stats.bootstrap, keyed by lower-case name.
_BOOTSTRAP_METHODS = {"percentile": "percentile", "basic": "basic", "bca": "BCa"}

# Upper bound on the elements of one batch of resampled arrays (8 MiB of
# float64 per array), so that large samples are resampled in several batches.
_MAX_BATCH_ELEMENTS = 2**20


class DegenerateInputError(ValueError):
    """Input that cannot support the requested estimate.

    Raised for too few seeds, NaN or infinite values, and statistics that are
    undefined on the data. The message names the input and what is needed.
    """


@dataclass(frozen=True)
class Interval:
    """Confidence interval around a point estimate.

    ``widened`` is True when the interval computed by the method did not
    contain ``estimate`` and was extended to it (see ``bootstrap_interval``).
    """

    estimate: float
    low: float
    high: float
    confidence: float
    n: int
    method: str
    widened: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

        if not self.low <= self.high:
            raise ValueError(f"interval bounds must satisfy low <= high, got [{self.low}, {self.high}]")

    def contains(self, value: float) -> bool:
        """Return whether ``low <= value <= high`` (bounds included)."""
        return bool(self.low <= value <= self.high)

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a dict of plain Python values, ready for JSON."""
        return asdict(self)


@dataclass(frozen=True)
class MannWhitneyResult:
    """Two-sided Mann-Whitney U test of x against y.

    ``statistic`` is U for x: the number of pairs (x_i, y_j) with x_i > y_j,
    ties counting one half. ``effect_size`` is the rank-biserial correlation
    2 * U / (n_x * n_y) - 1, in [-1, 1] and positive when x tends to be larger.
    """

    statistic: float
    pvalue: float
    effect_size: float
    n_x: int
    n_y: int


@dataclass(frozen=True)
class EpochsToTarget:
    """Training length of one run, in epochs.

    ``epochs`` is the 1-based epoch at which the run reached its criterion, or
    ``cap`` when it never did (then ``reached`` is False).
    """

    epochs: int
    reached: bool
    cap: int


# ---------------------------------------------------------------------------
# Input validation


def _as_sample(values: npt.ArrayLike, name: str, *, min_size: int, unit: str = "seeds") -> np.ndarray:
    """Return ``values`` as a finite 1-D float array with at least ``min_size`` entries."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of {unit}, got shape {array.shape}")

    if array.size < min_size:
        raise DegenerateInputError(f"{name} needs at least {min_size} {unit}, got {array.size}")

    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        raise DegenerateInputError(
            f"{name} contains {bad} NaN or infinite value(s) out of {array.size}. "
            "Drop or repair those runs first"
        )
    return array


def _as_pair(
    a: npt.ArrayLike, b: npt.ArrayLike, names: tuple[str, str], *, min_size: int, unit: str = "seeds"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate two paired samples, which must have the same length."""
    first = _as_sample(a, names[0], min_size=min_size, unit=unit)
    second = _as_sample(b, names[1], min_size=min_size, unit=unit)
    if first.size != second.size:
        raise ValueError(
            f"paired inputs must have the same length, "
            f"got {first.size} values in {names[0]} and {second.size} in {names[1]}"
        )
    return first, second


def _check_rng(rng: np.random.Generator) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}. "
            "Create one with numpy.random.default_rng(seed)"
        )


def _canonical_method(method: str) -> str:
    try:
        return _BOOTSTRAP_METHODS[method.lower()]
    except KeyError:
        raise ValueError(f"method must be 'percentile', 'basic' or 'BCa', got {method!r}") from None


# ---------------------------------------------------------------------------
# Bootstrap core


def _zero_width(estimate: float, confidence: float, n: int, method: str) -> Interval:
    return Interval(estimate, estimate, estimate, confidence, n, f"bootstrap-{method}")


def _contain_estimate(estimate: float, low: float, high: float, confidence: float, n: int, method: str) -> Interval:
    """Build the interval, extending it to the estimate if the bounds miss it.

    A percentile or basic interval is built from quantiles of the bootstrap
    distribution. For a skewed or biased statistic, such as a variance, or at a
    low confidence level, both bounds can lie on one side of the full-sample
    estimate. Reporting an interval that excludes its own point estimate
    would mislead, so the nearer bound is moved to the estimate and
    ``widened`` records that this happened.
    """
    widened = not low <= estimate <= high
    return Interval(
        estimate=estimate,
        low=min(low, estimate),
        high=max(high, estimate),
        confidence=confidence,
        n=n,
        method=f"bootstrap-{method}",
        widened=widened,
    )


def _run_bootstrap(
    data: tuple[np.ndarray, ...],
    statistic: Statistic,
    *,
    confidence: float,
    n_resamples: int,
    method: str,
    rng: np.random.Generator,
) -> Interval:
    """Bootstrap ``statistic(*data)``, drawing the same positions from every array of ``data``.

    ``data`` contains equal-length 1-D arrays, already validated and in
    canonical order. If every array is constant, each resample equals the
    original sample, so the bootstrap distribution is a single point and the
    result is a zero-width interval at the estimate.
    """
    _check_rng(rng)
    method = _canonical_method(method)
    n = data[0].size

    estimate = float(statistic(*data))
    if not np.isfinite(estimate):
        raise DegenerateInputError(f"the statistic is {estimate} on the full sample of {n}, but it must be finite")

    if all(np.ptp(array) == 0 for array in data):
        return _zero_width(estimate, confidence, n, method)

    low, high, method = _scipy_bounds(data, statistic, confidence, n_resamples, method, rng)
    return _contain_estimate(estimate, low, high, confidence, n, method)


def _scipy_bounds(
    data: tuple[np.ndarray, ...],
    statistic: Statistic,
    confidence: float,
    n_resamples: int,
    method: str,
    rng: np.random.Generator,
) -> tuple[float, float, str]:
    """Run ``scipy.stats.bootstrap`` and return the bounds and the method that produced them.

    scipy returns NaN bounds when the statistic is undefined on some
    resamples, which raises DegenerateInputError here. It also returns NaN
    bounds for BCa when the bootstrap or jackknife distribution is a single
    point, for example the median of [0, 0, 0, 1]. A single-point bootstrap
    distribution gives a zero-width interval at that point. Otherwise this
    returns the percentile interval of the same resamples, with method
    "percentile".
    """
    options = {"batch": max(1, _MAX_BATCH_ELEMENTS // data[0].size), "paired": True, "confidence_level": confidence}
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        # scipy warns before returning NaN bounds, which are handled below.
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        result = scipy.stats.bootstrap(data, statistic, n_resamples=n_resamples, method=method, rng=rng, **options)

    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if not (np.isnan(low) or np.isnan(high)):
        return low, high, method

    distribution = result.bootstrap_distribution
    undefined = int(np.count_nonzero(np.isnan(distribution)))
    if undefined:
        raise DegenerateInputError(
            f"the statistic is undefined (NaN) on {undefined} of {distribution.size} bootstrap resamples. "
            "This happens when a resample repeats too few distinct values, "
            "so more samples with distinct values are needed"
        )

    if np.ptp(distribution) == 0:
        point = float(distribution.flat[0])
        return point, point, method

    # Reuses the resamples above, so no further random numbers are drawn.
    fallback = scipy.stats.bootstrap(
        data, statistic, n_resamples=0, bootstrap_result=result, method="percentile", rng=rng, **options
    )
    return float(fallback.confidence_interval.low), float(fallback.confidence_interval.high), "percentile"


# ---------------------------------------------------------------------------
# Bootstrap intervals


def paired_differences(a: npt.ArrayLike, b: npt.ArrayLike) -> np.ndarray:
    """Return the per-seed differences ``a - b``.

    ``a`` and ``b`` contain one value per seed, listing the same seeds in the
    same order. Raises ValueError if the lengths differ, and
    DegenerateInputError if either is empty or contains NaN or infinite
    values.
    """
    first, second = _as_pair(a, b, ("a", "b"), min_size=1)
    return first - second


def bootstrap_interval(
    values: npt.ArrayLike,
    *,
    statistic: Statistic = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "percentile",
    rng: np.random.Generator,
) -> Interval:
    """Estimate ``statistic(values)`` with a bootstrap confidence interval over seeds.

    ``values`` contains one value per seed (at least 2). ``statistic`` maps a
    1-D array to a scalar. A statistic that accepts an ``axis`` keyword, like
    ``np.mean``, is evaluated on all resamples at once, and any other one is
    called once per resample. ``method`` is passed to
    ``scipy.stats.bootstrap``: "percentile", "basic" or "BCa". When scipy
    cannot compute BCa bounds for a varying bootstrap distribution, the
    result is the percentile interval of the same resamples, and ``method``
    of the result is "bootstrap-percentile".

    The estimate is the statistic on the full sample. When all values are
    equal, every resample is the full sample, so the interval has zero width
    at the estimate. When the bounds from scipy do not contain the estimate,
    the interval is extended to it and ``widened`` is set.
    """
    sample = np.sort(_as_sample(values, "values", min_size=2))
    return _run_bootstrap(
        (sample,), statistic, confidence=confidence, n_resamples=n_resamples, method=method, rng=rng
    )


def paired_bootstrap_interval(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    statistic: Statistic = np.mean,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    method: str = "percentile",
    rng: np.random.Generator,
) -> Interval:
    """Estimate ``statistic(a - b)`` with a bootstrap interval over seed pairs.

    ``a`` and ``b`` contain one value per seed, in the same seed order (at
    least 2 seeds). Resampling the per-seed differences is the same as
    resampling the seed pairs, because the statistic uses only the
    differences. Degenerate cases and the widening guard are as in
    ``bootstrap_interval``.
    """
    differences = paired_differences(a, b)
    if differences.size < 2:
        raise DegenerateInputError(f"a paired bootstrap needs at least 2 seeds, got {differences.size}")

    return bootstrap_interval(
        differences, statistic=statistic, confidence=confidence, n_resamples=n_resamples, method=method, rng=rng
    )


def _spearman_correlation(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman's rank correlation along ``axis``: the Pearson correlation of the ranks.

    ``scipy.stats.spearmanr`` returns a correlation matrix for 2-D input, so the
    batched form is built from ``rankdata`` and ``pearsonr``. Constant inputs
    give NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.ConstantInputWarning)
        ranks_x = scipy.stats.rankdata(x, axis=axis)
        ranks_y = scipy.stats.rankdata(y, axis=axis)
        return scipy.stats.pearsonr(ranks_x, ranks_y, axis=axis).statistic


def spearman_interval(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    rng: np.random.Generator,
) -> Interval:
    """Estimate Spearman's rank correlation of x and y with a bootstrap interval.

    ``x`` and ``y`` are paired, one value each per sample (at least 3 samples),
    and the bootstrap resamples the pairs (percentile method). The
    correlation is undefined on a resample whose x or y values are all equal.
    When any resample is undefined this raises DegenerateInputError instead of
    dropping it, because dropping would condition the interval on the
    resamples that vary. With n distinct pairs, a resample is constant with
    probability n ** (1 - n). Over 9999 resamples, that makes a failure likely
    for 6 or fewer samples, about 1 in 12 for 7 and under 1 in 100 from 8.
    """
    first, second = _as_pair(x, y, ("x", "y"), min_size=3, unit="samples")
    for name, array in (("x", first), ("y", second)):
        if np.ptp(array) == 0:
            raise DegenerateInputError(f"{name} is constant, so the Spearman correlation is undefined")

    order = np.lexsort((second, first))
    return _run_bootstrap(
        (first[order], second[order]),
        _spearman_correlation,
        confidence=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=rng,
    )


def _one_minus_mean_ratio(model: np.ndarray, baseline: np.ndarray, axis: int = -1) -> np.ndarray:
    return 1.0 - np.mean(model, axis=axis) / np.mean(baseline, axis=axis)


def reduction_interval(
    epochs_model: npt.ArrayLike,
    epochs_baseline: npt.ArrayLike,
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    rng: np.random.Generator,
) -> Interval:
    """Estimate the relative reduction in training epochs, 1 - mean(model) / mean(baseline).

    ``epochs_model`` and ``epochs_baseline`` contain one positive epoch count
    per seed, in the same seed order (at least 2 seeds). Count a run that never
    reached its target at the cap (``EpochsToTarget.epochs``) so that it is
    not dropped. A reduction of 0.3 means the model needs 30 % fewer epochs on
    average, and a negative value means it needs more.

    The statistic is a ratio of means, not a mean of per-seed ratios. It
    measures how much shorter the average run is, and it is less sensitive
    than a mean of ratios to one seed with a short baseline run. The interval
    is a percentile bootstrap over seed pairs: each resample draws seeds with
    replacement and keeps the model and baseline runs of a seed together.
    When runs with the same seed share data order or initialisation, this
    keeps their correlation in the interval.
    """
    model, baseline = _as_pair(epochs_model, epochs_baseline, ("epochs_model", "epochs_baseline"), min_size=2)
    for name, array in (("epochs_model", model), ("epochs_baseline", baseline)):
        if np.any(array <= 0):
            raise ValueError(f"{name} must contain positive epoch counts, got minimum {array.min()}")

    order = np.lexsort((baseline, model))
    return _run_bootstrap(
        (model[order], baseline[order]),
        _one_minus_mean_ratio,
        confidence=confidence,
        n_resamples=n_resamples,
        method="percentile",
        rng=rng,
    )


# ---------------------------------------------------------------------------
# Point estimates and rank tests


def interquartile_mean(values: npt.ArrayLike) -> float:
    """Return the interquartile mean: the mean of the middle 50 % of values.

    ``values`` contains one value per seed (at least 1). It is
    ``scipy.stats.trim_mean(values, 0.25)``, which removes
    ``floor(0.25 * n)`` values from each end, so for n < 4 it is the mean.
    """
    sample = _as_sample(values, "values", min_size=1)
    return float(scipy.stats.trim_mean(sample, 0.25))


def probability_of_improvement(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Return the probability of improvement P(X > Y) + 0.5 P(X = Y).

    ``x`` and ``y`` contain one value per seed of two models (at least 1 each,
    lengths may differ). The probability is taken over all n_x * n_y pairs of
    seeds, which equals the Mann-Whitney U of x divided by n_x * n_y.
    """
    result = mann_whitney(x, y)
    return result.statistic / (result.n_x * result.n_y)


def mann_whitney(x: npt.ArrayLike, y: npt.ArrayLike) -> MannWhitneyResult:
    """Run a two-sided Mann-Whitney U test of x against y.

    ``x`` and ``y`` contain one value per seed of two models (at least 1 each,
    lengths may differ). With scipy's method="auto" (scipy 1.17), the p-value
    is exact when one sample has at most 8 values and there are no ties, and
    otherwise comes from the tie-corrected normal approximation.

    NOTE: with ties among a few seeds, that approximate p-value can be rough.
    """
    first = _as_sample(x, "x", min_size=1)
    second = _as_sample(y, "y", min_size=1)

    test = scipy.stats.mannwhitneyu(first, second, alternative="two-sided")
    u_statistic = float(test.statistic)
    effect_size = 2.0 * u_statistic / (first.size * second.size) - 1.0
    return MannWhitneyResult(u_statistic, float(test.pvalue), effect_size, first.size, second.size)


# ---------------------------------------------------------------------------
# Epoch counts


def _as_curve(curve: npt.ArrayLike) -> np.ndarray:
    return _as_sample(curve, "curve", min_size=1, unit="epochs")


def epochs_to_target(curve: npt.ArrayLike, target: float, *, cap: int | None = None) -> EpochsToTarget:
    """Count the epochs a run needs to reach a validation accuracy ``target``.

    ``curve`` contains one validation accuracy per epoch, epoch 1 first. The
    result is the first epoch whose value is >= ``target``. A run that does
    not reach the target within ``cap`` epochs counts as ``cap`` epochs with
    ``reached=False``, so that averages over seeds keep it instead of
    dropping it. ``cap`` defaults to ``len(curve)``. A smaller cap ignores
    later epochs, and a larger cap counts a run that stopped early as if it
    had trained to the cap.
    """
    values = _as_curve(curve)
    cap = values.size if cap is None else cap
    if cap < 1:
        raise ValueError(f"cap must be at least 1 epoch, got {cap}")

    hits = np.flatnonzero(values >= target)
    if hits.size and hits[0] + 1 <= cap:
        return EpochsToTarget(epochs=int(hits[0]) + 1, reached=True, cap=cap)
    return EpochsToTarget(epochs=cap, reached=False, cap=cap)


def epochs_to_convergence(curve: npt.ArrayLike, *, patience: int, min_delta: float = 0.0) -> EpochsToTarget:
    """Count the epochs to convergence under early stopping on validation accuracy.

    ``curve`` contains one validation accuracy per epoch, epoch 1 first, and
    higher is better (pass a negated loss for a loss curve). An epoch improves
    when its value exceeds the best so far by more than ``min_delta``.
    Training stops once ``patience`` epochs in a row bring no improvement, and
    the result is the last improving epoch with ``reached=True``. If the curve
    ends before patience runs out, the run has not converged, and the result
    is ``len(curve)`` epochs with ``reached=False``. The cap is ``len(curve)``.
    """
    values = _as_curve(curve)
    if patience < 1:
        raise ValueError(f"patience must be at least 1 epoch, got {patience}")
    if min_delta < 0:
        raise ValueError(f"min_delta must be non-negative, got {min_delta}")

    best, best_epoch = -np.inf, 0
    for epoch, value in enumerate(values, start=1):
        if value - min_delta > best:
            best, best_epoch = value, epoch
        elif epoch - best_epoch >= patience:
            return EpochsToTarget(epochs=best_epoch, reached=True, cap=values.size)
    return EpochsToTarget(epochs=values.size, reached=False, cap=values.size)


# ---------------------------------------------------------------------------
# Expert usage


def normalised_entropy(usage: npt.ArrayLike, axis: int = -1) -> np.ndarray:
    """Return the entropy of expert usage divided by log(number of experts).

    ``usage`` contains non-negative counts or shares, with experts along
    ``axis`` (at least 2 experts). Each slice is normalised to a distribution
    first. The result has ``axis`` removed: 1 means uniform usage, 0 means a
    single expert takes everything. A slice with zero total usage gives 0.
    """
    counts = np.asarray(usage, dtype=float)
    n_experts = counts.shape[axis] if counts.ndim else 0
    if n_experts < 2:
        raise DegenerateInputError(f"normalised entropy needs at least 2 experts along axis {axis}, got {n_experts}")

    bad = int(np.count_nonzero(~np.isfinite(counts)))
    if bad:
        raise DegenerateInputError(f"usage contains {bad} NaN or infinite value(s), but it must be finite")
    if np.any(counts < 0):
        raise ValueError(f"usage must be non-negative, got minimum {counts.min()}")

    entropy = scipy.stats.entropy(counts, axis=axis) / np.log(n_experts)
    return np.where(counts.sum(axis=axis) == 0, 0.0, entropy)
