"""The paper's claims as verdicts with intervals over seeds: `claims.json`.

"The paper" in this module is Perin, Lagomarsini, Gallicchio and Nuti,
*Mixture of Raytraced Experts*, arXiv 2507.12419 (2025).

`evaluate_claims` reads the finished runs of a profile's grid and returns one
`ClaimRecord` per claim, data set and comparison. Each record holds the
estimate, its bootstrap confidence interval over seeds, the pre-registered
threshold from `claims/tolerances.toml`, a verdict and the per-seed numbers
that the figures plot. `pytest claims/` and `mre-repro reproduce` both write
`claims.json` through this module.

Verdicts follow the rule at the top of `tolerances.toml`: "reproduced" when
the interval lies on the claimed side of the threshold, "not reproduced" when
it lies on the other side, "inconclusive" when it contains the threshold or
fewer than `statistics.min_seeds` seeds were run. The smoke profile trains on
generated data, so its verdicts are all "inconclusive" although every number
is still computed and recorded.

Runs are paired by seed: the MRE run and the baseline run of seed 3 share
the seed that sets data order and initialisation.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats

import mre_repro
from mre_repro.engine import DataOptions
from mre_repro.profiles import GridRun, Profile, build_grid
from mre_repro.reproduce import results_file, run_grid
from mre_repro.stats import (
    DegenerateInputError,
    EpochsToTarget,
    Interval,
    bootstrap_interval,
    epochs_to_convergence,
    epochs_to_target,
    mann_whitney,
    normalised_entropy,
    paired_bootstrap_interval,
    reduction_interval,
)
from mre_repro.store import RunResult, RunStore, code_version, utc_now, write_json_atomic

logger = logging.getLogger(__name__)

CLAIMS_SCHEMA = 1
TOLERANCES_FILE = "claims/tolerances.toml"
TOLERANCES_PATH = Path(mre_repro.__file__).resolve().parents[1] / TOLERANCES_FILE

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
SMOKE_REASON = "smoke profile"
# Name of the threshold 0 of claims of a positive effect, which no tolerance sets.
NO_EFFECT = "no-effect level"

# The MoE baselines of the epoch and accuracy claims.
BASELINE_ROLES = ("topk-moe-balanced", "threshold-moe")
# Router init scale that the paper's sqrt(N_e + 1) is compared against.
INIT_SCALE_BASELINE = "mre-init-1"
CROSS_DATASET = "all"

# Title and one-sentence statement of each claim, as the paper (arXiv
# 2507.12419) states it for MNIST, Fashion-MNIST and CIFAR-10.
CLAIM_TEXT: dict[str, tuple[str, str]] = {
    "epoch-reduction": (
        "Fewer epochs to the target accuracy",
        "MRE needs 10-40% fewer training epochs than MoE baselines at comparable or higher accuracy.",
    ),
    "epoch-convergence": (
        "Fewer epochs to convergence",
        "MRE needs 10-40% fewer training epochs than MoE baselines at comparable or higher accuracy.",
    ),
    "accuracy-parity": (
        "Comparable or higher accuracy",
        "MRE reaches comparable or higher accuracy than MoE baselines while training for fewer epochs.",
    ),
    "harder-samples": (
        "Harder samples use more experts",
        "Harder samples use more experts.",
    ),
    "misclassified-more-experts": (
        "Misclassified samples use more experts",
        "Harder samples use more experts.",
    ),
    "cross-dataset-order": (
        "Harder data sets use more experts",
        "Harder samples use more experts, so a harder data set uses more: CIFAR-10 more than Fashion-MNIST, and Fashion-MNIST more than MNIST.",
    ),
    "load-balance": (
        "Balanced experts without a load-balancing loss",
        "No load-balancing loss is needed: MRE uses its experts evenly without one.",
    ),
    "init-scale": (
        "Router init scale sqrt(N_e + 1)",
        "The sqrt(N_e + 1) router init (N_e = 8 experts) matters.",
    ),
    "anytime": (
        "More accurate with every step",
        "A prediction exists at every step, and it becomes more accurate as computation cycles through the experts' sequence.",
    ),
}


def load_tolerances(path: Path | None = None) -> dict[str, Any]:
    """Read the pre-registered tolerances (default: `claims/tolerances.toml` of the checkout)."""
    path = TOLERANCES_PATH if path is None else Path(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"tolerances file {path} not found; run from a checkout of the repository (pip install -e .), "
            "where claims/tolerances.toml sits beside the package"
        ) from None


# Records ----------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimRecord:
    """One verdict: a claim on one data set against one comparison; an element of claims.json `records`."""

    claim: str
    title: str = field(repr=False)
    statement: str = field(repr=False)
    dataset: str  # a data set name, or "all" for the cross-dataset claim
    reading: str
    comparison: str | None  # "vs <role>", or None when the claim reads the MRE alone
    verdict: str
    reason: str
    estimate: float | None
    interval: tuple[float, float] | None
    confidence: float
    n: int  # seeds behind the interval
    tolerance: dict[str, Any] = field(repr=False)  # {"name": dotted key in tolerances.toml or NO_EFFECT, "value", "rule"}
    run_ids: tuple[str, ...] = field(repr=False)
    details: dict[str, Any] = field(repr=False)  # per-seed numbers for the figures

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.claim, self.dataset, self.comparison)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["interval"] = None if self.interval is None else list(self.interval)
        record["run_ids"] = list(self.run_ids)
        return record


# Verdict decision -------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A pre-registered threshold and the side of it that the paper claims.

    The claimed side is `>= value`, or `> value` when `strict` (claims of a
    positive effect, where exactly 0 is no effect).
    """

    name: str  # dotted key in tolerances.toml, e.g. "epoch_reduction.min_reduction", or NO_EFFECT
    value: float
    label: str  # what the interval is of, e.g. "reduction"
    strict: bool = False
    # The value as tolerances.toml writes it, where the threshold derives from
    # it: a non-inferiority margin m gives the threshold -m.
    tolerance_value: float | None = None

    def judge(self, interval: Interval | None) -> tuple[str, str]:
        """Return the verdict of one interval against this threshold and its reason."""
        if interval is None:
            return INCONCLUSIVE, f"no bootstrap interval of the {self.label} could be computed"

        span = f"{self.label} interval [{interval.low:.3g}, {interval.high:.3g}]"
        above = interval.low > self.value if self.strict else interval.low >= self.value
        below = interval.high <= self.value if self.strict else interval.high < self.value
        if above:
            return REPRODUCED, f"{span} is {'above' if self.strict else 'at or above'} the threshold {self.value:g}"
        if below:
            return NOT_REPRODUCED, f"{span} is {'at or below' if self.strict else 'below'} the threshold {self.value:g}"
        return INCONCLUSIVE, f"{span} contains the threshold {self.value:g}"

    def claimed_condition(self) -> str:
        return f"the {self.label} interval's low end {'>' if self.strict else '>='} {self.value:g}"

    def failed_condition(self) -> str:
        return f"the {self.label} interval's high end {'<=' if self.strict else '<'} {self.value:g}"


def decision_rule(thresholds: Sequence[Threshold], extra: tuple[str, str] | None = None) -> str:
    """Write the decision rule of a claim as one sentence, for the record's `tolerance.rule`.

    `extra` is a condition of the claim without an interval, as a pair
    (phrase when it holds, phrase when it fails).
    """
    claimed = " and ".join(threshold.claimed_condition() for threshold in thresholds)
    failed = " or ".join(threshold.failed_condition() for threshold in thresholds)
    if extra:
        claimed, failed = f"{claimed} and {extra[0]}", f"{failed} or {extra[1]}"
    return f"reproduced when {claimed}; not reproduced when {failed}; otherwise inconclusive"


def decide(
    outcomes: Sequence[tuple[str, str]],
    n: int,
    *,
    profile: str,
    min_seeds: int,
    failures: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> tuple[str, str]:
    """Combine the checks of one claim into a verdict and a one-sentence reason.

    `outcomes` are (verdict, reason) pairs, one per check, as from
    `Threshold.judge`. In order: the smoke profile and n < min_seeds are
    inconclusive whatever the numbers. A `failures` entry, a condition of the
    claim that fails outright (such as a constant activation count), is "not
    reproduced". Then any check that is not reproduced makes the claim not
    reproduced, any inconclusive check makes it inconclusive, and it is
    reproduced when every check is. `notes` (for example runs counted at the
    cap) are appended to the reason unless the profile is smoke.
    """
    if profile == "smoke":
        return INCONCLUSIVE, SMOKE_REASON
    if n < min_seeds:
        return INCONCLUSIVE, _with_notes(f"too few seeds: n={n} < {min_seeds}", notes)
    if failures:
        return NOT_REPRODUCED, _with_notes(" and ".join(failures), notes)

    for verdict in (NOT_REPRODUCED, INCONCLUSIVE, REPRODUCED):
        reasons = [reason for outcome, reason in outcomes if outcome == verdict]
        if reasons:
            return verdict, _with_notes(" and ".join(reasons), notes)
    raise ValueError("decide needs at least one outcome or failure")


def _with_notes(reason: str, notes: Sequence[str]) -> str:
    return "; ".join([reason, *notes])


# Bootstrap settings -----------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """Intervals over seeds with the `[statistics]` settings of the tolerances.

    Every interval draws from a fresh `numpy.random.default_rng(seed)`, so an
    interval does not depend on which claims were evaluated before it. An
    interval that cannot be computed (fewer than 2 seeds, non-finite values)
    is None; the verdict is then inconclusive.
    """

    confidence: float
    n_resamples: int
    method: str
    seed: int

    @classmethod
    def from_tolerances(cls, tolerances: dict[str, Any]) -> Bootstrap:
        statistics = tolerances["statistics"]
        return cls(
            confidence=statistics["confidence"],
            n_resamples=statistics["bootstrap_resamples"],
            method=statistics["bootstrap_method"],
            seed=statistics["bootstrap_seed"],
        )

    def mean(self, values: Sequence[float]) -> Interval | None:
        """Interval of the mean over seeds of `values` (one per seed)."""
        options = {"confidence": self.confidence, "n_resamples": self.n_resamples, "method": self.method}
        return self._attempt(lambda: bootstrap_interval(values, rng=self._rng(), **options))

    def paired(self, a: Sequence[float], b: Sequence[float]) -> Interval | None:
        """Interval of the mean paired difference a - b (same seeds, same order)."""
        options = {"confidence": self.confidence, "n_resamples": self.n_resamples, "method": self.method}
        return self._attempt(lambda: paired_bootstrap_interval(a, b, rng=self._rng(), **options))

    def reduction(self, epochs_model: Sequence[int], epochs_baseline: Sequence[int]) -> Interval | None:
        """Interval of 1 - mean(model) / mean(baseline) epochs; always a percentile bootstrap."""
        options = {"confidence": self.confidence, "n_resamples": self.n_resamples}
        return self._attempt(lambda: reduction_interval(epochs_model, epochs_baseline, rng=self._rng(), **options))

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    @staticmethod
    def _attempt(compute: Callable[[], Interval]) -> Interval | None:
        try:
            return compute()
        except DegenerateInputError as err:
            logger.warning("no bootstrap interval: %s", err)
            return None


# Runs of one data set ---------------------------------------------------------


@dataclass(frozen=True)
class DatasetRuns:
    """The finished runs of one data set: role -> seed -> result."""

    dataset: str
    by_role: dict[str, dict[int, RunResult]]
    init_scales: dict[str, float]  # MRE role -> resolved router init scale

    def seeds(self, role: str) -> list[int]:
        return sorted(self.by_role.get(role, {}))

    def results(self, role: str) -> list[RunResult]:
        return [self.by_role[role][seed] for seed in self.seeds(role)]

    def paired(self, role_a: str, role_b: str) -> tuple[list[int], list[RunResult], list[RunResult]]:
        """Runs of the seeds that both roles have, in seed order."""
        seeds = sorted(set(self.seeds(role_a)) & set(self.seeds(role_b)))
        return seeds, [self.by_role[role_a][seed] for seed in seeds], [self.by_role[role_b][seed] for seed in seeds]


def group_by_dataset(results: Sequence[tuple[GridRun, RunResult]]) -> dict[str, DatasetRuns]:
    """Group grid results by data set, keeping the grid's data set order."""
    by_role: dict[str, dict[str, dict[int, RunResult]]] = defaultdict(lambda: defaultdict(dict))
    init_scales: dict[str, dict[str, float]] = defaultdict(dict)
    for run, result in results:
        by_role[run.dataset][run.role][run.seed] = result
        if run.config.model.kind == "mre":
            init_scales[run.dataset][run.role] = run.config.model.resolved_router_init_scale
    return {
        dataset: DatasetRuns(dataset, {role: dict(seeds) for role, seeds in roles.items()}, init_scales[dataset])
        for dataset, roles in by_role.items()
    }


def _run_ids(*groups: Sequence[RunResult]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(result.run_id for group in groups for result in group))


def _floats(values: Any) -> list[float]:
    return [float(value) for value in np.asarray(values, dtype=float).ravel()]


def _interval_dict(interval: Interval | None) -> dict[str, Any] | None:
    return None if interval is None else interval.to_dict()


# Expert usage -----------------------------------------------------------------


def usage_shares(usage: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-step shares of activations, (s, e) -> (s, e); a step no sample reached stays all zero."""
    counts = np.asarray(usage, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def usage_entropy(usage: Sequence[Sequence[float]]) -> float:
    """Normalised entropy of expert usage (s, e), averaged over the steps that fired any expert.

    A step that no sample reached (every ray stopped earlier) has no
    distribution to measure, so it is left out instead of counting as 0.
    """
    counts = np.asarray(usage, dtype=float)
    active = counts.sum(axis=1) > 0
    if not active.any():
        return 0.0
    return float(np.mean(normalised_entropy(counts[active], axis=-1)))


def dead_experts_per_step(usage: Sequence[Sequence[float]], dead_share: float) -> list[int]:
    """Experts below `dead_share` of their step's activations, per step (0 for steps no sample reached)."""
    counts = np.asarray(usage, dtype=float)
    shares = usage_shares(counts)
    active = counts.sum(axis=1) > 0
    return [int(np.count_nonzero(row < dead_share)) if live else 0 for row, live in zip(shares, active)]


# Evaluation context -----------------------------------------------------------


@dataclass(frozen=True)
class ClaimContext:
    """The runs of one data set and the evaluation settings, as every claim function reads them."""

    runs: DatasetRuns
    profile: str
    reading: str
    tolerances: dict[str, Any]
    bootstrap: Bootstrap

    @property
    def dataset(self) -> str:
        return self.runs.dataset

    def decide(
        self,
        checks: Sequence[tuple[Threshold, Interval | None]],
        n: int,
        failures: Sequence[str] = (),
        notes: Sequence[str] = (),
    ) -> tuple[str, str]:
        """Judge each (threshold, interval) check and combine them with `decide`."""
        return self.combine([threshold.judge(interval) for threshold, interval in checks], n, failures, notes)

    def combine(
        self, outcomes: Sequence[tuple[str, str]], n: int, failures: Sequence[str] = (), notes: Sequence[str] = ()
    ) -> tuple[str, str]:
        min_seeds = self.tolerances["statistics"]["min_seeds"]
        return decide(outcomes, n, profile=self.profile, min_seeds=min_seeds, failures=failures, notes=notes)

    def record(
        self,
        claim: str,
        comparison: str | None,
        outcome: tuple[str, str],
        *,
        estimate: float | None,
        interval: Interval | None,
        n: int,
        thresholds: Sequence[Threshold],
        run_ids: tuple[str, ...],
        details: dict[str, Any],
        extra_rule: tuple[str, str] | None = None,
        tolerance: dict[str, Any] | None = None,
    ) -> ClaimRecord:
        """Assemble a record; `tolerance` defaults to the first threshold and the rule of all of them."""
        title, statement = CLAIM_TEXT[claim]
        if tolerance is None:
            primary = thresholds[0]
            tolerance = {
                "name": primary.name,
                "value": primary.value if primary.tolerance_value is None else primary.tolerance_value,
                "rule": decision_rule(thresholds, extra_rule),
            }
        return ClaimRecord(
            claim=claim,
            title=title,
            statement=statement,
            dataset=self.dataset,
            reading=self.reading,
            comparison=comparison,
            verdict=outcome[0],
            reason=outcome[1],
            estimate=None if estimate is None else float(estimate),
            interval=None if interval is None else (interval.low, interval.high),
            confidence=self.bootstrap.confidence,
            n=n,
            tolerance=tolerance,
            run_ids=run_ids,
            details=details,
        )

    def unavailable(
        self,
        claim: str,
        comparison: str | None,
        thresholds: Sequence[Threshold],
        reason: str,
        details: dict[str, Any] | None = None,
        tolerance: dict[str, Any] | None = None,
    ) -> ClaimRecord:
        """Build an inconclusive record for a claim whose runs are missing; `details["unavailable"]` contains the reason."""
        outcome = (INCONCLUSIVE, SMOKE_REASON if self.profile == "smoke" else reason)
        return self.record(
            claim, comparison, outcome, estimate=None, interval=None, n=0, thresholds=thresholds, run_ids=(),
            details={**(details or {}), "unavailable": reason}, tolerance=tolerance,
        )


def _comparison(role: str | None) -> str | None:
    return None if role is None else f"vs {role}"


# Claim 1: fewer training epochs -----------------------------------------------


def _reduction_threshold(tolerances: dict[str, Any]) -> Threshold:
    return Threshold("epoch_reduction.min_reduction", tolerances["epoch_reduction"]["min_reduction"], "reduction")


def _val_curve(result: RunResult) -> list[float]:
    return [entry["val_accuracy"] for entry in result.history]


def epoch_reduction(ctx: ClaimContext, baseline: str) -> ClaimRecord:
    """Compare epochs to a validation accuracy of target_fraction x the baseline's mean best, MRE vs `baseline`.

    A run that never reaches the target counts at the cap (its configured
    epochs), as MLPerf counts time to target, and is reported, never dropped.
    """
    settings = ctx.tolerances["epoch_reduction"]
    seeds, mre, base = ctx.runs.paired("mre", baseline)
    if not seeds:
        threshold = _reduction_threshold(ctx.tolerances)
        return ctx.unavailable("epoch-reduction", _comparison(baseline), [threshold], f"no paired mre and {baseline} runs")

    target = settings["target_fraction"] * float(np.mean([result.final["best_val_accuracy"] for result in base]))

    def count(result: RunResult) -> EpochsToTarget:
        return epochs_to_target(_val_curve(result), target, cap=result.config["train"]["epochs"])

    details = {"target_accuracy": target, "target_fraction": settings["target_fraction"]}
    return _epochs_record(ctx, "epoch-reduction", baseline, seeds, mre, base, count, details, "never reached the target")


def epoch_convergence(ctx: ClaimContext, baseline: str) -> ClaimRecord:
    """Compare epochs until validation accuracy stops improving (early stopping), MRE vs `baseline`.

    A run still improving at its last epoch counts at the cap (its length).
    """
    settings = ctx.tolerances["epoch_reduction"]
    seeds, mre, base = ctx.runs.paired("mre", baseline)
    if not seeds:
        threshold = _reduction_threshold(ctx.tolerances)
        return ctx.unavailable("epoch-convergence", _comparison(baseline), [threshold], f"no paired mre and {baseline} runs")

    def count(result: RunResult) -> EpochsToTarget:
        return epochs_to_convergence(_val_curve(result), patience=settings["patience"], min_delta=settings["min_delta"])

    details = {"patience": settings["patience"], "min_delta": settings["min_delta"]}
    return _epochs_record(ctx, "epoch-convergence", baseline, seeds, mre, base, count, details, "never converged")


def _epochs_record(
    ctx: ClaimContext,
    claim: str,
    baseline: str,
    seeds: list[int],
    mre: list[RunResult],
    base: list[RunResult],
    count: Callable[[RunResult], EpochsToTarget],
    details: dict[str, Any],
    missed: str,
) -> ClaimRecord:
    """Count epochs per seed, bootstrap the reduction and decide; the shared tail of both epoch claims.

    `count` maps a run to its epochs under the claim's definition. `missed`
    names what a run counted at the cap failed to do, for the reason.
    """
    mre_counts, base_counts = [count(result) for result in mre], [count(result) for result in base]
    mre_epochs, base_epochs = [c.epochs for c in mre_counts], [c.epochs for c in base_counts]
    interval = ctx.bootstrap.reduction(mre_epochs, base_epochs)
    estimate = 1.0 - float(np.mean(mre_epochs)) / float(np.mean(base_epochs))

    never = {"mre": sum(not c.reached for c in mre_counts), baseline: sum(not c.reached for c in base_counts)}
    cap = max(c.cap for c in mre_counts + base_counts)
    notes = []
    if sum(never.values()):
        notes.append(f"{sum(never.values())} of {2 * len(seeds)} runs {missed} and count at the cap of {cap} epochs")

    threshold = _reduction_threshold(ctx.tolerances)
    details |= {
        "seeds": seeds,
        "mre_epochs": mre_epochs,
        "baseline_epochs": base_epochs,
        "mre_reached": [c.reached for c in mre_counts],
        "baseline_reached": [c.reached for c in base_counts],
        "cap": cap,
        "never_reached": never,
        "mre_val_accuracy": [_val_curve(result) for result in mre],
        "baseline_val_accuracy": [_val_curve(result) for result in base],
    }
    outcome = _guard_censoring(ctx.decide([(threshold, interval)], len(seeds), notes=notes), never["mre"], never[baseline])
    return ctx.record(
        claim, _comparison(baseline), outcome, estimate=estimate, interval=interval, n=len(seeds),
        thresholds=[threshold], run_ids=_run_ids(mre, base), details=details,
    )


def _guard_censoring(outcome: tuple[str, str], mre_censored: int, baseline_censored: int) -> tuple[str, str]:
    """Turn a verdict that censoring at the cap could have produced into "inconclusive".

    A run counted at the cap needed at least that many epochs, so its count
    is a lower bound. Censored baseline runs bias the reduction down, so
    "not reproduced" needs every baseline run uncensored. Censored MRE runs
    bias it up, so "reproduced" needs every MRE run uncensored.
    """
    verdict, reason = outcome
    if verdict == NOT_REPRODUCED and baseline_censored:
        return INCONCLUSIVE, f"{reason}; but {baseline_censored} baseline run(s) counted at the cap make the reduction a lower bound"
    if verdict == REPRODUCED and mre_censored:
        return INCONCLUSIVE, f"{reason}; but {mre_censored} MRE run(s) counted at the cap make the reduction an upper bound"
    return outcome


# Claim 2: comparable or higher accuracy ---------------------------------------


def accuracy_parity(ctx: ClaimContext, baseline: str) -> ClaimRecord:
    """Test non-inferiority of final test accuracy: the mean paired difference MRE - `baseline` above -margin."""
    margin = ctx.tolerances["accuracy_parity"]["non_inferiority_margin"]
    threshold = Threshold("accuracy_parity.non_inferiority_margin", -margin, "accuracy difference", tolerance_value=margin)
    seeds, mre, base = ctx.runs.paired("mre", baseline)
    if not seeds:
        return ctx.unavailable("accuracy-parity", _comparison(baseline), [threshold], f"no paired mre and {baseline} runs")

    mre_accuracy = [result.final["test_accuracy"] for result in mre]
    base_accuracy = [result.final["test_accuracy"] for result in base]
    differences = np.subtract(mre_accuracy, base_accuracy)
    interval = ctx.bootstrap.paired(mre_accuracy, base_accuracy)
    details = {
        "seeds": seeds,
        "mre_test_accuracy": mre_accuracy,
        "baseline_test_accuracy": base_accuracy,
        "differences": _floats(differences),
        "margin": margin,
    }
    outcome = ctx.decide([(threshold, interval)], len(seeds))
    return ctx.record(
        "accuracy-parity", _comparison(baseline), outcome, estimate=float(differences.mean()), interval=interval,
        n=len(seeds), thresholds=[threshold], run_ids=_run_ids(mre, base), details=details,
    )


# Claim 3: harder samples use more experts -------------------------------------


def _activations(result: RunResult) -> np.ndarray:
    return np.asarray(result.per_sample["activations"], dtype=float)


def _constant_reason(seeds: Sequence[int]) -> str:
    return (
        f"the MRE fired the same number of experts for every test sample in seed(s) {', '.join(map(str, seeds))}, "
        "so activations cannot follow difficulty"
    )


def _mean_by_difficulty_decile(difficulty: np.ndarray, activations: np.ndarray) -> list[float]:
    """Mean activations in ten equal-count bins of difficulty, easiest first."""
    bins = np.array_split(np.argsort(difficulty, kind="stable"), 10)
    return [float(activations[index].mean()) for index in bins if index.size]


def _spearman_or_zero(difficulty: np.ndarray, activations: np.ndarray) -> float:
    """Spearman correlation; 0 (no association) when every sample fired the same number of experts."""
    if np.ptp(activations) == 0:
        return 0.0
    return float(scipy.stats.spearmanr(difficulty, activations).statistic)


def harder_samples(ctx: ClaimContext, comparison: None = None) -> ClaimRecord:
    """Correlate per-sample difficulty with MRE activations (Spearman), one correlation per seed.

    Difficulty is the dense baseline's test loss per sample (nats), averaged
    over its seeds. A seed whose activation count is the same for every sample
    has no association with difficulty and counts as correlation 0.
    """
    min_spearman = ctx.tolerances["harder_samples"]["min_spearman"]
    threshold = Threshold("harder_samples.min_spearman", min_spearman, "mean Spearman correlation", strict=True)
    mre, dense = ctx.runs.results("mre"), ctx.runs.results("dense")
    if not mre or not dense:
        return ctx.unavailable("harder-samples", None, [threshold], "needs mre and dense runs")

    difficulty = np.mean([result.per_sample["loss"] for result in dense], axis=0)
    if np.ptp(difficulty) == 0:
        reason = "the dense baseline's test loss is the same for every sample"
        return ctx.unavailable("harder-samples", None, [threshold], reason)

    seeds = ctx.runs.seeds("mre")
    correlations = [_spearman_or_zero(difficulty, _activations(result)) for result in mre]
    constant = [seed for seed, result in zip(seeds, mre) if np.ptp(_activations(result)) == 0]
    deciles = [_mean_by_difficulty_decile(difficulty, _activations(result)) for result in mre]
    interval = ctx.bootstrap.mean(correlations)
    failures = [_constant_reason(constant)] if len(constant) == len(seeds) else []
    details = {
        "seeds": seeds,
        "spearman": correlations,
        "constant_activation_seeds": constant,
        "dense_seeds": ctx.runs.seeds("dense"),
        "mean_activations_by_difficulty_decile": _floats(np.mean(deciles, axis=0)),
    }
    outcome = ctx.decide([(threshold, interval)], len(seeds), failures=failures)
    return ctx.record(
        "harder-samples", None, outcome, estimate=float(np.mean(correlations)), interval=interval, n=len(seeds),
        thresholds=[threshold], run_ids=_run_ids(mre, dense), details=details,
    )


def misclassified_more_experts(ctx: ClaimContext, comparison: None = None) -> ClaimRecord:
    """Compare activations of misclassified and correctly classified test samples with a Mann-Whitney test per seed.

    The estimate is the mean rank-biserial correlation over seeds (positive:
    misclassified samples fire more experts). A seed with no misclassified
    or no correct sample has no test and is left out, listed in the details.
    """
    threshold = Threshold(NO_EFFECT, 0.0, "mean rank-biserial correlation", strict=True)
    mre = ctx.runs.results("mre")
    if not mre:
        return ctx.unavailable("misclassified-more-experts", None, [threshold], "needs mre runs")

    per_seed = _mann_whitney_per_seed(ctx.runs.seeds("mre"), mre)
    seeds, effects = per_seed["seeds"], per_seed["effect_sizes"]
    interval = ctx.bootstrap.mean(effects)
    constant = per_seed["constant_activation_seeds"]
    failures = [_constant_reason(constant)] if seeds and len(constant) == len(seeds) else []
    alpha = ctx.tolerances["harder_samples"]["alpha"]
    significant = sum(p is not None and p < alpha and e > 0 for p, e in zip(per_seed["pvalues"], effects))
    details = {**per_seed, "alpha": alpha, "significant_seeds": significant}
    outcome = ctx.decide([(threshold, interval)], len(seeds), failures=failures)
    return ctx.record(
        "misclassified-more-experts", None, outcome, estimate=float(np.mean(effects)) if effects else None,
        interval=interval, n=len(seeds), thresholds=[threshold], run_ids=_run_ids(mre), details=details,
    )


def _mann_whitney_per_seed(seeds: Sequence[int], results: Sequence[RunResult]) -> dict[str, list]:
    """Run the per-seed Mann-Whitney tests, activations of misclassified (x) against correct (y) test samples."""
    per_seed: dict[str, list] = {
        key: []
        for key in (
            "seeds", "effect_sizes", "pvalues", "mean_activations_misclassified", "mean_activations_correct",
            "constant_activation_seeds", "seeds_without_both_groups",
        )
    }
    for seed, result in zip(seeds, results):
        correct = np.asarray(result.per_sample["correct"], dtype=bool)
        activations = _activations(result)
        if correct.all() or not correct.any():
            per_seed["seeds_without_both_groups"].append(seed)
            continue

        test = mann_whitney(activations[~correct], activations[correct])
        per_seed["seeds"].append(seed)
        per_seed["effect_sizes"].append(test.effect_size)
        per_seed["pvalues"].append(test.pvalue if math.isfinite(test.pvalue) else None)
        per_seed["mean_activations_misclassified"].append(float(activations[~correct].mean()))
        per_seed["mean_activations_correct"].append(float(activations[correct].mean()))
        if np.ptp(activations) == 0:
            per_seed["constant_activation_seeds"].append(seed)
    return per_seed


def _experts_per_sample(ctx: ClaimContext) -> tuple[dict[str, Any], Interval | None]:
    """Collect the MRE's experts per test sample per seed on one data set, their mean and its interval."""
    results = ctx.runs.results("mre")
    values = [result.final["experts_per_sample"] for result in results]
    interval = ctx.bootstrap.mean(values)
    summary = {
        "seeds": ctx.runs.seeds("mre"),
        "experts_per_sample": values,
        "mean": float(np.mean(values)),
        "interval": _interval_dict(interval),
        "run_ids": list(_run_ids(results)),
    }
    return summary, interval


def _order_outcome(easier: str, harder: str, intervals: dict[str, Interval | None]) -> tuple[str, str]:
    """Judge one adjacent pair: the harder data set's interval must lie wholly above the easier one's."""
    low_set, high_set = intervals[easier], intervals[harder]
    if low_set is None or high_set is None:
        return INCONCLUSIVE, f"no bootstrap interval of experts per sample on {easier if low_set is None else harder}"

    spans = f"{harder} [{high_set.low:.3g}, {high_set.high:.3g}] and {easier} [{low_set.low:.3g}, {low_set.high:.3g}]"
    if high_set.low > low_set.high:
        return REPRODUCED, f"the intervals {spans} are ordered without overlap"
    if high_set.high < low_set.low:
        return NOT_REPRODUCED, f"the intervals {spans} are in the reverse order"
    return INCONCLUSIVE, f"the intervals {spans} overlap"


def cross_dataset_order(
    contexts: dict[str, ClaimContext], tolerances: dict[str, Any], profile: str, reading: str
) -> ClaimRecord:
    """Check that mean MRE experts per sample rise along `cross_dataset.datasets_in_order` (easiest first).

    Reproduced when each harder data set's interval lies wholly above the next
    easier one's, which also orders the means strictly. Not reproduced when a
    harder data set's interval lies wholly below the next easier one's.
    Evaluated only when every data set of the order has MRE runs.
    """
    order = tolerances["cross_dataset"]["datasets_in_order"]
    bootstrap = Bootstrap.from_tolerances(tolerances)
    ctx = ClaimContext(DatasetRuns(CROSS_DATASET, {}, {}), profile, reading, tolerances, bootstrap)
    rule = (
        f"reproduced when the MRE's mean experts per sample has {' > '.join(reversed(order))} "
        "with the intervals of adjacent data sets not overlapping; "
        "not reproduced when a harder data set's interval lies wholly below the next easier one's; otherwise inconclusive"
    )
    tolerance = {"name": "cross_dataset.datasets_in_order", "value": list(order), "rule": rule}

    present = [dataset for dataset in order if dataset in contexts and contexts[dataset].runs.seeds("mre")]
    summaries = {dataset: _experts_per_sample(contexts[dataset]) for dataset in present}
    details: dict[str, Any] = {"datasets": {dataset: summary for dataset, (summary, _) in summaries.items()}}
    if len(present) < len(order):
        reason = f"needs {_names(order)} runs (paper profile)"
        return ctx.unavailable("cross-dataset-order", None, [], reason, details=details, tolerance=tolerance)

    intervals = {dataset: interval for dataset, (_, interval) in summaries.items()}
    pairs = list(zip(order, order[1:]))
    means = {dataset: summary["mean"] for dataset, (summary, _) in summaries.items()}
    details["gaps"] = {f"{harder} - {easier}": means[harder] - means[easier] for easier, harder in pairs}
    n = min(len(summaries[dataset][0]["seeds"]) for dataset in order)
    outcome = ctx.combine([_order_outcome(easier, harder, intervals) for easier, harder in pairs], n)
    run_ids = tuple(run_id for summary, _ in summaries.values() for run_id in summary["run_ids"])
    return ctx.record(
        "cross-dataset-order", None, outcome, estimate=min(details["gaps"].values()), interval=None, n=n,
        thresholds=[], run_ids=run_ids, details=details, tolerance=tolerance,
    )


def _names(datasets: Sequence[str]) -> str:
    return f"{', '.join(datasets[:-1])} and {datasets[-1]}"


# Claim 4: balanced experts without a load-balancing loss ----------------------


def _usage_summary(results: Sequence[RunResult], dead_share: float) -> dict[str, Any]:
    """Summarise final test usage: entropy and dead experts per run, and the (s, e) shares averaged over seeds."""
    usages = [result.final["usage_test"] for result in results]
    return {
        "entropy": [usage_entropy(usage) for usage in usages],
        "dead_experts": [sum(dead_experts_per_step(usage, dead_share)) for usage in usages],
        "mean_shares": np.mean([usage_shares(usage) for usage in usages], axis=0).tolist(),
    }


def load_balance(ctx: ClaimContext, baseline: str = "topk-moe-balanced") -> ClaimRecord:
    """Measure the normalised entropy of the MRE's final expert usage, alone and paired against `baseline`.

    Entropy is measured per step on the test set's shares of activations and
    averaged over steps. An expert is dead at a step below `dead_share` of
    that step's activations; `dead_experts` sums the dead (step, expert)
    pairs of a run.
    """
    settings = ctx.tolerances["load_balance"]
    floor = Threshold("load_balance.entropy_floor", settings["entropy_floor"], "MRE usage entropy")
    margin = Threshold(
        "load_balance.margin", -settings["margin"], f"entropy difference MRE - {baseline}", tolerance_value=settings["margin"]
    )
    mre = ctx.runs.results("mre")
    if not mre:
        return ctx.unavailable("load-balance", _comparison(baseline), [floor, margin], "needs mre runs")

    roles = [role for role in ("mre", baseline, "topk-moe-unbalanced") if ctx.runs.seeds(role)]
    usage = {
        role: {"seeds": ctx.runs.seeds(role), **_usage_summary(ctx.runs.results(role), settings["dead_share"])}
        for role in roles
    }
    entropy_interval = ctx.bootstrap.mean(usage["mre"]["entropy"])
    differences = {role: _entropy_difference(ctx, role) for role in roles[1:]}
    difference, difference_interval = differences.get(baseline, ({"seeds": []}, None))

    n = min(len(mre), len(difference["seeds"]))
    outcome = ctx.decide([(floor, entropy_interval), (margin, difference_interval)], n)
    details = {
        "usage": usage,
        "differences": {role: summary for role, (summary, _) in differences.items()},
        "dead_share": settings["dead_share"],
    }
    all_runs = [result for role in roles for result in ctx.runs.results(role)]
    return ctx.record(
        "load-balance", _comparison(baseline), outcome, estimate=float(np.mean(usage["mre"]["entropy"])),
        interval=entropy_interval, n=n, thresholds=[floor, margin], run_ids=_run_ids(all_runs), details=details,
    )


def _entropy_difference(ctx: ClaimContext, role: str) -> tuple[dict[str, Any], Interval | None]:
    """Compute the paired difference of final usage entropy, MRE - `role`: per-seed summary and interval."""
    seeds, mre, other = ctx.runs.paired("mre", role)
    differences = np.subtract(
        [usage_entropy(result.final["usage_test"]) for result in mre],
        [usage_entropy(result.final["usage_test"]) for result in other],
    )
    interval = ctx.bootstrap.mean(differences)
    summary = {
        "seeds": seeds,
        "differences": _floats(differences),
        "estimate": float(differences.mean()) if seeds else None,
        "interval": _interval_dict(interval),
    }
    return summary, interval


# Claim 5: the sqrt(N_e + 1) router init ---------------------------------------


def _init_scale_summary(ctx: ClaimContext, role: str, dead_share: float) -> dict[str, Any]:
    """Summarise one init scale's runs: first-epoch and final usage entropy, dead experts, final test accuracy."""
    results = ctx.runs.results(role)
    return {
        "role": role,
        "scale": ctx.runs.init_scales[role],
        "seeds": ctx.runs.seeds(role),
        "early_entropy": [usage_entropy(result.history[0]["usage_train"]) for result in results],
        "final_entropy": [usage_entropy(result.final["usage_test"]) for result in results],
        "dead_experts": [sum(dead_experts_per_step(result.final["usage_test"], dead_share)) for result in results],
        "test_accuracy": [result.final["test_accuracy"] for result in results],
    }


def init_scale(ctx: ClaimContext, baseline: str = INIT_SCALE_BASELINE) -> ClaimRecord:
    """Compare the default router init sqrt(N_e + 1) with `baseline`, paired by seed.

    Two checks: higher first-epoch usage entropy (training usage of epoch 1,
    so before routing could settle), and final test accuracy not lower by more
    than `init_scale.accuracy_margin`. The details list every MRE init scale
    of the grid for the ablation figure.
    """
    entropy_gain = Threshold(NO_EFFECT, 0.0, "first-epoch entropy difference", strict=True)
    margin = ctx.tolerances["init_scale"]["accuracy_margin"]
    accuracy = Threshold("init_scale.accuracy_margin", -margin, "accuracy difference", tolerance_value=margin)
    seeds, default, other = ctx.runs.paired("mre", baseline)
    if not seeds:
        reason = f"no paired mre and {baseline} runs"
        return ctx.unavailable("init-scale", _comparison(baseline), [entropy_gain, accuracy], reason)

    dead_share = ctx.tolerances["load_balance"]["dead_share"]
    early = [[usage_entropy(result.history[0]["usage_train"]) for result in runs] for runs in (default, other)]
    test_accuracy = [[result.final["test_accuracy"] for result in runs] for runs in (default, other)]
    entropy_interval = ctx.bootstrap.paired(*early)
    accuracy_interval = ctx.bootstrap.paired(*test_accuracy)

    entropy_differences, accuracy_differences = np.subtract(*early), np.subtract(*test_accuracy)
    roles = sorted(ctx.runs.init_scales, key=ctx.runs.init_scales.__getitem__)
    details = {
        "seeds": seeds,
        "entropy_differences": _floats(entropy_differences),
        "accuracy_differences": _floats(accuracy_differences),
        "accuracy_difference": {"estimate": float(accuracy_differences.mean()), "interval": _interval_dict(accuracy_interval)},
        "scales": [_init_scale_summary(ctx, role, dead_share) for role in roles],
    }
    outcome = ctx.decide([(entropy_gain, entropy_interval), (accuracy, accuracy_interval)], len(seeds))
    return ctx.record(
        "init-scale", _comparison(baseline), outcome, estimate=float(entropy_differences.mean()), interval=entropy_interval,
        n=len(seeds), thresholds=[entropy_gain, accuracy], run_ids=_run_ids(default, other), details=details,
    )


# Claim 6: a prediction at every step, more accurate with each -----------------


def anytime(ctx: ClaimContext, comparison: None = None) -> ClaimRecord:
    """Check the final MRE's test accuracy per routing step: last step above the first, no step dropping much.

    The estimate is the mean paired difference last - first step over seeds.
    A drop of the mean accuracy from one step to the next by more than
    `anytime.step_drop_margin` makes the claim not reproduced.
    """
    gain = Threshold(NO_EFFECT, 0.0, "last-minus-first step accuracy", strict=True)
    drop_margin = ctx.tolerances["anytime"]["step_drop_margin"]
    extra_rule = (
        f"no step's mean accuracy is more than {drop_margin:g} below the previous step's",
        f"some step's mean accuracy is more than {drop_margin:g} below the previous step's",
    )
    mre = ctx.runs.results("mre")
    per_seed = np.array([result.final["test_accuracy_per_step"] for result in mre], dtype=float).reshape(len(mre), -1)
    if per_seed.shape[0] == 0 or per_seed.shape[1] < 2:
        return ctx.unavailable("anytime", None, [gain], "needs mre runs with at least 2 routing steps")

    interval = ctx.bootstrap.paired(per_seed[:, -1], per_seed[:, 0])
    step_mean = per_seed.mean(axis=0)
    drops = step_mean[:-1] - step_mean[1:]
    worst = int(np.argmax(drops))
    failures = []
    if drops[worst] > drop_margin:
        failures.append(
            f"mean test accuracy drops by {drops[worst]:.3g} from step {worst + 1} to step {worst + 2}, "
            f"more than the margin {drop_margin:g}"
        )

    details = {
        "seeds": ctx.runs.seeds("mre"),
        "per_step_mean": _floats(step_mean),
        "per_seed": per_seed.tolist(),
        "max_step_drop": float(drops[worst]),
        "max_drop_after_step": worst + 1,
        "step_drop_margin": drop_margin,
    }
    outcome = ctx.decide([(gain, interval)], len(mre), failures=failures)
    return ctx.record(
        "anytime", None, outcome, estimate=float(np.mean(per_seed[:, -1] - per_seed[:, 0])), interval=interval,
        n=len(mre), thresholds=[gain], run_ids=_run_ids(mre), details=details, extra_rule=extra_rule,
    )


# Evaluating a grid ------------------------------------------------------------

ClaimFunction = Callable[[ClaimContext, Any], ClaimRecord]

# Claims evaluated per data set, each with the roles it compares the MRE
# against (None: the claim reads the MRE, or the MRE and the dense difficulty
# reference, alone).
DATASET_CLAIMS: tuple[tuple[str, ClaimFunction, tuple[str | None, ...]], ...] = (
    ("epoch-reduction", epoch_reduction, BASELINE_ROLES),
    ("epoch-convergence", epoch_convergence, BASELINE_ROLES),
    ("accuracy-parity", accuracy_parity, BASELINE_ROLES),
    ("harder-samples", harder_samples, (None,)),
    ("misclassified-more-experts", misclassified_more_experts, (None,)),
    ("load-balance", load_balance, ("topk-moe-balanced",)),
    ("init-scale", init_scale, (INIT_SCALE_BASELINE,)),
    ("anytime", anytime, (None,)),
)


def planned_claims(datasets: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """Keys (claim, data set, comparison) of the records `evaluate_claims` returns for these data sets, in order."""
    keys = [
        (claim, dataset, _comparison(role)) for dataset in datasets for claim, _, roles in DATASET_CLAIMS for role in roles
    ]
    return [*keys, ("cross-dataset-order", CROSS_DATASET, None)]


def evaluate_claims(
    results: Sequence[tuple[GridRun, RunResult]], profile: Profile, reading: str, tolerances: dict[str, Any]
) -> list[ClaimRecord]:
    """Evaluate every claim on every data set of the grid; records in `planned_claims` order."""
    bootstrap = Bootstrap.from_tolerances(tolerances)
    contexts = {
        dataset: ClaimContext(runs, profile.name, reading, tolerances, bootstrap)
        for dataset, runs in group_by_dataset(results).items()
    }
    records = [
        evaluate(ctx, role) for ctx in contexts.values() for _, evaluate, roles in DATASET_CLAIMS for role in roles
    ]
    records.append(cross_dataset_order(contexts, tolerances, profile.name, reading))
    for record in records:
        logger.info(
            "claim=%s dataset=%s comparison=%s verdict=%s", record.claim, record.dataset, record.comparison, record.verdict
        )
    return records


def write_claims(records: Sequence[ClaimRecord], profile: Profile, reading: str, out: Path) -> Path:
    """Write `out/claims.json` (`claims-<reading>.json` for a reading other than the default) atomically."""
    payload = {
        "schema": CLAIMS_SCHEMA,
        "profile": profile.name,
        "reading": reading,
        "generated_at": utc_now(),
        "code_version": code_version(),
        "tolerances_file": TOLERANCES_FILE,
        "records": [record.to_dict() for record in records],
    }
    path = results_file(out, "claims", reading)
    write_json_atomic(path, payload)
    return path


def evaluate_and_write(results: Sequence[tuple[GridRun, RunResult]], profile: Profile, reading: str, out: Path) -> Path:
    """Evaluate the claims on `results` with the pre-registered tolerances and write `out/claims.json`."""
    records = evaluate_claims(results, profile, reading, load_tolerances())
    path = write_claims(records, profile, reading, out)
    logger.info("claim verdicts written to %s:\n%s", path, format_verdict_table(records))
    return path


def evaluate_grid(profile: Profile, reading: str, device: str | None, out: Path, data_options: DataOptions) -> Path:
    """Evaluate the claims on the grid of `profile` stored under `out` and write `out/claims.json`.

    Runs are looked up through `run_grid`, which returns finished runs from
    the store without training; only runs missing from the store are trained.
    """
    results = run_grid(build_grid(profile, reading, device), RunStore(out), data_options)
    return evaluate_and_write(results, profile, reading, out)


# Text output ------------------------------------------------------------------


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _span(interval: tuple[float, float] | None) -> str:
    return "n/a" if interval is None else f"[{interval[0]:.4g}, {interval[1]:.4g}]"


def format_verdict_table(records: Sequence[ClaimRecord]) -> str:
    """Format records as a plain-text table: claim, data set, comparison, estimate, interval, n, verdict."""
    header = ("claim", "data set", "comparison", "estimate", "interval", "n", "verdict")
    rows = [
        (record.claim, record.dataset, record.comparison or "-", _number(record.estimate), _span(record.interval),
         str(record.n), record.verdict)
        for record in records
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def describe_record(record: ClaimRecord) -> str:
    """Describe a record's verdict in one paragraph with its estimate, interval, n and tolerance."""
    where = record.dataset if record.comparison is None else f"{record.dataset}, {record.comparison}"
    tolerance = record.tolerance
    return (
        f"{record.claim} ({where}): {record.verdict} because {record.reason}. "
        f"Estimate {_number(record.estimate)}, {record.confidence:.0%} interval {_span(record.interval)}, "
        f"n={record.n} seeds; "
        f"tolerance {tolerance['name']} = {tolerance['value']}: {tolerance['rule']}. Claim: {record.statement}"
    )
