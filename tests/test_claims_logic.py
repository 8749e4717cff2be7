"""Tests for mre_repro.claims on hand-made run records: verdict rules, details and claims.json.

No test trains a model. `make_results` builds one fake `RunResult` per run of
a 3-seed grid. Its numbers make every claim reproduce unless a test overrides
them. The MRE reaches the target accuracy at epoch 2 and the baselines at
epoch 4. The MRE converges (early stopping) at epoch 2, and the baselines do
not converge within the 6 epochs. Activations rise with the dense baseline's
loss, expert usage is uniform, and the accuracy per step rises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import mre_repro
from mre_repro import claims
from mre_repro.profiles import GridRun, Profile, build_grid, get_profile
from mre_repro.stats import Interval
from mre_repro.store import RunResult, RunStore

EPOCHS = 6
STEPS = 4
EXPERTS = 8
N_TEST = 20
MRE_CURVE = [0.80, 0.90, 0.90, 0.90, 0.90, 0.90]
BASELINE_CURVE = [0.60, 0.70, 0.80, 0.90, 0.90, 0.90]
UNIFORM_USAGE = [[1.0 / EXPERTS] * EXPERTS for _ in range(STEPS)]
# Almost every activation on expert 0: normalised entropy near 0.
COLLAPSED_USAGE = [[0.93] + [0.01] * (EXPERTS - 1) for _ in range(STEPS)]
# Test losses of the dense baseline, easiest sample first.
DENSE_LOSS = list(np.linspace(0.1, 2.0, N_TEST))
# The 10 harder samples fire 3 experts, the 10 easier ones 1.
RISING_ACTIVATIONS = [1] * 10 + [3] * 10
# The 5 hardest samples are misclassified.
CORRECT = [1] * 15 + [0] * 5


def grid_profile(name: str = "cpu", seeds: tuple[int, ...] = (0, 1, 2)) -> Profile:
    """A profile's grid with `seeds` and EPOCHS epochs, only for its run configs: nothing here trains."""
    return replace(get_profile(name), seeds=seeds, epochs=EPOCHS)


def fake_result(run: GridRun, overrides: dict) -> RunResult:
    """A run record shaped like the engine's, with the defaults in the module docstring."""
    is_mre = run.config.model.kind == "mre"
    values = {
        "val_curve": MRE_CURVE if is_mre else BASELINE_CURVE,
        "test_accuracy": 0.90 if is_mre else 0.89,
        "usage_test": None if run.role == "dense" else UNIFORM_USAGE,
        "early_usage": COLLAPSED_USAGE if run.role == "mre-init-1" else UNIFORM_USAGE,
        "per_step": [0.6, 0.7, 0.8, 0.9] if is_mre else [0.89],
        "activations": None if run.role == "dense" else RISING_ACTIVATIONS,
        "experts_per_sample": 2.0,
        **overrides.get((run.role, run.seed), {}),
        **overrides.get(run.role, {}),
    }
    history = [
        {"epoch": epoch, "val_accuracy": accuracy, "usage_train": values["early_usage"] if values["usage_test"] else None}
        for epoch, accuracy in enumerate(values["val_curve"], start=1)
    ]
    final = {
        "test_accuracy": values["test_accuracy"],
        "test_accuracy_per_step": values["per_step"],
        "best_val_accuracy": max(values["val_curve"]),
        "experts_per_sample": values["experts_per_sample"],
        "usage_test": values["usage_test"],
        "epochs": EPOCHS,
        "train_seconds": 1.0,
    }
    per_sample = {"correct": CORRECT, "loss": DENSE_LOSS, "activations": values["activations"], "exit_step": [STEPS] * N_TEST}
    return RunResult(run.config.run_id, run.config.to_dict(), {"seed": run.seed}, history, final, per_sample)


def make_results(profile: Profile | None = None, overrides: dict | None = None) -> list[tuple[GridRun, RunResult]]:
    """Fake results of the whole grid; `overrides` maps a role or (role, seed) to replaced values."""
    profile = profile or grid_profile()
    return [(run, fake_result(run, overrides or {})) for run in build_grid(profile)]


def three_seed_tolerances() -> dict:
    """The pre-registered tolerances with min_seeds 3, so the hand examples with 3 seeds reach a verdict."""
    tolerances = claims.load_tolerances()
    return {**tolerances, "statistics": {**tolerances["statistics"], "min_seeds": 3}}


def evaluate(profile: Profile | None = None, overrides: dict | None = None) -> dict[tuple, claims.ClaimRecord]:
    profile = profile or grid_profile()
    records = claims.evaluate_claims(make_results(profile, overrides), profile, "poisson-window", three_seed_tolerances())
    return {record.key: record for record in records}


def record_of(records, claim: str, comparison: str | None = None, dataset: str = "fashion-mnist"):
    return records[(claim, dataset, comparison)]


# Threshold and decide ------------------------------------------------------------


def interval(low: float, high: float, n: int = 3) -> Interval:
    return Interval((low + high) / 2, low, high, 0.95, n, "bootstrap-percentile")


def test_threshold_interval_above_is_reproduced():
    verdict, reason = claims.Threshold("t", 0.1, "reduction").judge(interval(0.12, 0.3))
    assert verdict == claims.REPRODUCED
    assert reason == "reduction interval [0.12, 0.3] is at or above the threshold 0.1"


def test_threshold_interval_below_is_not_reproduced():
    verdict, reason = claims.Threshold("t", 0.1, "reduction").judge(interval(-0.05, 0.04))
    assert verdict == claims.NOT_REPRODUCED
    assert reason == "reduction interval [-0.05, 0.04] is below the threshold 0.1"


def test_threshold_straddling_interval_is_inconclusive():
    verdict, reason = claims.Threshold("t", 0.1, "reduction").judge(interval(0.03, 0.21))
    assert verdict == claims.INCONCLUSIVE
    assert reason == "reduction interval [0.03, 0.21] contains the threshold 0.1"


def test_threshold_bound_on_threshold():
    at_zero = interval(0.0, 0.0)
    assert claims.Threshold("t", 0.0, "gap").judge(at_zero)[0] == claims.REPRODUCED
    assert claims.Threshold("t", 0.0, "gap", strict=True).judge(at_zero)[0] == claims.NOT_REPRODUCED


def test_threshold_without_interval_is_inconclusive():
    assert claims.Threshold("t", 0.1, "reduction").judge(None)[0] == claims.INCONCLUSIVE


def test_decide_too_few_seeds():
    outcome = claims.decide([(claims.REPRODUCED, "fine")], 2, profile="cpu", min_seeds=3)
    assert outcome == (claims.INCONCLUSIVE, "too few seeds: n=2 < 3")


def test_decide_smoke_profile():
    outcome = claims.decide([(claims.REPRODUCED, "fine")], 10, profile="smoke", min_seeds=3)
    assert outcome == (claims.INCONCLUSIVE, "smoke profile")


def test_decide_one_failed_check_fails_the_claim():
    outcomes = [(claims.REPRODUCED, "a"), (claims.NOT_REPRODUCED, "b"), (claims.INCONCLUSIVE, "c")]
    assert claims.decide(outcomes, 3, profile="cpu", min_seeds=3) == (claims.NOT_REPRODUCED, "b")


def test_decide_failure_overrides_intervals():
    outcome = claims.decide([(claims.REPRODUCED, "a")], 3, profile="cpu", min_seeds=3, failures=["constant"])
    assert outcome == (claims.NOT_REPRODUCED, "constant")


# Usage helpers -----------------------------------------------------------------


def test_usage_entropy_uniform_and_collapsed():
    assert claims.usage_entropy(UNIFORM_USAGE) == pytest.approx(1.0)
    assert claims.usage_entropy([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(0.0)


def test_usage_entropy_skips_unreached_steps():
    assert claims.usage_entropy([[0.5, 0.5], [0.0, 0.0]]) == pytest.approx(1.0)


def test_dead_experts_per_step():
    usage = [[0.995, 0.005, 0.0], [0.0, 0.0, 0.0]]
    assert claims.dead_experts_per_step(usage, 0.01) == [2, 0]


# Claims on fake grids -------------------------------------------------------------


def test_evaluate_returns_planned_records():
    records = evaluate()
    assert list(records) == claims.planned_claims(["fashion-mnist"])


def test_default_grid_reproduces_every_dataset_claim():
    records = evaluate()
    verdicts = {key: record.verdict for key, record in records.items() if key[0] != "cross-dataset-order"}
    assert set(verdicts.values()) == {claims.REPRODUCED}, verdicts


def test_epoch_reduction_reproduced_numbers():
    record = record_of(evaluate(), "epoch-reduction", "vs topk-moe-balanced")
    assert record.estimate == pytest.approx(0.5)  # 1 - 2 / 4 epochs
    assert record.interval == (pytest.approx(0.5), pytest.approx(0.5))
    assert record.n == 3
    assert record.details["target_accuracy"] == pytest.approx(0.98 * 0.90)
    assert record.details["mre_epochs"] == [2, 2, 2]
    assert record.details["baseline_epochs"] == [4, 4, 4]


def test_epoch_reduction_slower_mre_not_reproduced():
    records = evaluate(overrides={"mre": {"val_curve": BASELINE_CURVE}, "topk-moe-balanced": {"val_curve": MRE_CURVE}})
    record = record_of(records, "epoch-reduction", "vs topk-moe-balanced")
    assert record.verdict == claims.NOT_REPRODUCED
    assert record.estimate == pytest.approx(-1.0)  # 1 - 4 / 2 epochs
    assert "below the threshold 0.1" in record.reason


def test_epoch_reduction_straddling_interval_inconclusive():
    slow = {"val_curve": BASELINE_CURVE}
    records = evaluate(overrides={("mre", 1): slow, ("mre", 2): slow})
    record = record_of(records, "epoch-reduction", "vs topk-moe-balanced")
    assert record.details["mre_epochs"] == [2, 4, 4]
    assert record.verdict == claims.INCONCLUSIVE
    assert record.interval[0] < 0.1 < record.interval[1]
    assert "contains the threshold 0.1" in record.reason


def test_epoch_reduction_unreached_target_counts_at_cap():
    records = evaluate(overrides={("mre", 0): {"val_curve": [0.5] * EPOCHS}})
    record = record_of(records, "epoch-reduction", "vs topk-moe-balanced")
    assert record.details["mre_epochs"] == [EPOCHS, 2, 2]
    assert record.details["mre_reached"] == [False, True, True]
    assert record.details["never_reached"] == {"mre": 1, "topk-moe-balanced": 0}
    assert "1 of 6 runs never reached the target and count at the cap of 6 epochs" in record.reason


def test_epoch_convergence_reports_unconverged_runs():
    record = record_of(evaluate(), "epoch-convergence", "vs threshold-moe")
    # Patience 3: the MRE stops after epoch 5 with its best at epoch 2; the
    # baselines improve until epoch 4 and end before 3 epochs without improvement.
    assert record.details["mre_epochs"] == [2, 2, 2]
    assert record.details["never_reached"] == {"mre": 0, "threshold-moe": 3}
    assert record.estimate == pytest.approx(1 - 2 / 6)
    assert "3 of 6 runs never converged and count at the cap of 6 epochs" in record.reason


def test_too_few_seeds_inconclusive_with_numbers():
    records = evaluate(grid_profile(seeds=(0, 1)))
    record = record_of(records, "accuracy-parity", "vs threshold-moe")
    assert record.verdict == claims.INCONCLUSIVE
    assert record.reason == "too few seeds: n=2 < 3"
    assert record.estimate == pytest.approx(0.01)


def test_accuracy_parity_not_reproduced_below_margin():
    records = evaluate(overrides={"mre": {"test_accuracy": 0.85}})
    record = record_of(records, "accuracy-parity", "vs topk-moe-balanced")
    assert record.verdict == claims.NOT_REPRODUCED
    assert record.estimate == pytest.approx(-0.04)
    assert record.tolerance == {
        "name": "accuracy_parity.non_inferiority_margin",
        "value": 0.01,
        "rule": "reproduced when the accuracy difference interval's low end >= -0.01; "
        "not reproduced when the accuracy difference interval's high end < -0.01; otherwise inconclusive",
    }


def test_harder_samples_positive_correlation():
    record = record_of(evaluate(), "harder-samples")
    # Ranks 1..20 against tied ranks 5.5 and 15.5: covariance sum 500, squared
    # deviations 665 (ranks) and 500 (ties), so rho = sqrt(500 / 665).
    assert record.estimate == pytest.approx(np.sqrt(500 / 665))
    assert record.details["mean_activations_by_difficulty_decile"] == [1.0] * 5 + [3.0] * 5


def test_constant_activations_not_reproduced():
    records = evaluate(overrides={"mre": {"activations": [2] * N_TEST}})
    for claim in ("harder-samples", "misclassified-more-experts"):
        record = record_of(records, claim)
        assert record.verdict == claims.NOT_REPRODUCED, claim
        assert "same number of experts for every test sample in seed(s) 0, 1, 2" in record.reason
        assert record.estimate == 0.0


def test_misclassified_effect_size_and_pvalues():
    record = record_of(evaluate(), "misclassified-more-experts")
    # Every misclassified sample fires 3 experts; of the correct ones 5 fire 3 and 10 fire 1.
    assert record.estimate == pytest.approx(2 * (5 * 10 + 0.5 * 5 * 5) / (5 * 15) - 1)
    assert len(record.details["pvalues"]) == 3


def test_load_balance_collapsed_mre_not_reproduced():
    records = evaluate(overrides={"mre": {"usage_test": COLLAPSED_USAGE}})
    record = record_of(records, "load-balance", "vs topk-moe-balanced")
    assert record.verdict == claims.NOT_REPRODUCED
    assert record.estimate < 0.9
    assert set(record.details["differences"]) == {"topk-moe-balanced", "topk-moe-unbalanced"}
    assert record.details["usage"]["mre"]["dead_experts"] == [0, 0, 0]


def test_init_scale_details_list_every_scale():
    record = record_of(evaluate(grid_profile("paper", seeds=(0, 1, 2))), "init-scale", "vs mre-init-1", dataset="mnist")
    assert record.verdict == claims.REPRODUCED
    scales = [entry["scale"] for entry in record.details["scales"]]
    assert scales == [0.5, 1.0, 2.0, pytest.approx(3.0), 5.0]
    assert record.details["scales"][1]["early_entropy"][0] < 0.5


def test_init_scale_without_entropy_gain_not_reproduced():
    records = evaluate(overrides={"mre-init-1": {"early_usage": UNIFORM_USAGE}, "mre": {"early_usage": COLLAPSED_USAGE}})
    assert record_of(records, "init-scale", "vs mre-init-1").verdict == claims.NOT_REPRODUCED


def test_anytime_step_drop_not_reproduced():
    records = evaluate(overrides={"mre": {"per_step": [0.6, 0.8, 0.7, 0.9]}})
    record = record_of(records, "anytime")
    assert record.verdict == claims.NOT_REPRODUCED
    assert "drops by 0.1 from step 2 to step 3" in record.reason
    assert record.details["per_step_mean"] == pytest.approx([0.6, 0.8, 0.7, 0.9])


def test_cross_dataset_needs_three_datasets():
    record = record_of(evaluate(), "cross-dataset-order", dataset="all")
    assert record.verdict == claims.INCONCLUSIVE
    assert record.reason == "needs mnist, fashion-mnist and cifar10 runs (paper profile)"


def test_cross_dataset_order_reproduced():
    profile = grid_profile("paper", seeds=(0, 1, 2))
    results = make_results(profile)
    # Seeds add 0, 0.1, 0.2, so each data set's interval is [mean - 0.1, mean + 0.1] at most.
    per_dataset = {"mnist": 1.0, "fashion-mnist": 2.0, "cifar10": 3.0}
    results = [
        (run, replace(result, final=result.final | {"experts_per_sample": per_dataset[run.dataset] + 0.1 * run.seed}))
        for run, result in results
    ]
    records = claims.evaluate_claims(results, profile, "poisson-window", three_seed_tolerances())
    record = records[-1]
    assert record.claim == "cross-dataset-order"
    assert record.verdict == claims.REPRODUCED
    assert record.estimate == pytest.approx(1.0)


def test_smoke_profile_inconclusive_with_numbers():
    records = evaluate(grid_profile("smoke", seeds=(0, 1)))
    assert {record.verdict for record in records.values()} == {claims.INCONCLUSIVE}
    assert {record.reason for record in records.values()} == {"smoke profile"}
    dataset_records = [record for key, record in records.items() if key[0] != "cross-dataset-order"]
    assert all(record.estimate is not None for record in dataset_records)
    assert all(record.interval is not None for record in dataset_records)


def test_result_order_does_not_change_intervals():
    profile = grid_profile()
    slow = {("mre", 1): {"val_curve": BASELINE_CURVE}}
    results = make_results(profile, slow)
    tolerances = claims.load_tolerances()
    forward = claims.evaluate_claims(results, profile, "poisson-window", tolerances)
    backward = claims.evaluate_claims(results[::-1], profile, "poisson-window", tolerances)
    assert [record.interval for record in forward] == [record.interval for record in backward]


# claims.json ------------------------------------------------------------------


def test_claims_json_structure(tmp_path: Path):
    profile = grid_profile()
    records = claims.evaluate_claims(make_results(profile), profile, "poisson-window", claims.load_tolerances())
    path = claims.write_claims(records, profile, "poisson-window", tmp_path)

    def reject_constant(name: str):
        raise ValueError(f"claims.json contains {name}")

    payload = json.loads(path.read_text(), parse_constant=reject_constant)
    assert path == tmp_path / "claims.json"
    assert set(payload) == {"schema", "profile", "reading", "generated_at", "code_version", "tolerances_file", "records"}
    assert payload["tolerances_file"] == "claims/tolerances.toml"
    assert set(payload["code_version"]) == {"git_commit", "git_dirty"}
    assert len(payload["records"]) == len(records)
    first = payload["records"][0]
    assert set(first) == {
        "claim", "title", "statement", "dataset", "reading", "comparison", "verdict", "reason", "estimate",
        "interval", "confidence", "n", "tolerance", "run_ids", "details",
    }
    assert set(first["tolerance"]) == {"name", "value", "rule"}
    assert len(first["interval"]) == 2


def test_load_tolerances_reads_statistics():
    tolerances = claims.load_tolerances()
    assert tolerances["statistics"]["min_seeds"] == 5


def test_verdict_table_has_a_row_per_record():
    records = list(evaluate().values())
    table = claims.format_verdict_table(records).splitlines()
    assert table[0].split() == ["claim", "data", "set", "comparison", "estimate", "interval", "n", "verdict"]
    assert len(table) == len(records) + 1


def test_describe_record_quotes_the_numbers():
    record = record_of(evaluate(), "epoch-reduction", "vs topk-moe-balanced")
    text = claims.describe_record(record)
    assert "Estimate 0.5, 95% interval [0.5, 0.5], n=3 seeds" in text
    assert "epoch_reduction.min_reduction = 0.1" in text


# pytest claims/ on a prepared run store -------------------------------------------


def test_claim_specs_mirror_verdicts(tmp_path: Path):
    """`pytest claims/` reuses the stored runs: passes, fails with numbers, or xfails per verdict."""
    store = RunStore(tmp_path)
    for _, result in make_results(get_profile("cpu"), {"mre": {"test_accuracy": 0.85}}):
        store.save(result)

    specs = Path(mre_repro.__file__).resolve().parents[1] / "claims"
    command = [sys.executable, "-m", "pytest", str(specs), "--profile", "cpu", "--out", str(tmp_path), "-p", "no:cacheprovider", "-rfx"]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    output = completed.stdout

    assert completed.returncode == 1, output + completed.stderr
    # The lower MRE accuracy fails accuracy parity against both baselines and
    # the accuracy check of init-scale, whose mre-init-1 runs keep 0.90.
    assert "3 failed, 8 passed, 1 xfailed" in output
    assert "accuracy-parity (fashion-mnist, vs threshold-moe): not reproduced" in output
    assert "Estimate -0.04, 95% interval [-0.04, -0.04], n=5 seeds" in output
    assert "inconclusive (needs mnist, fashion-mnist and cifar10 runs (paper profile))" in output
    assert "claim verdicts (cpu profile, reading poisson-window)" in output
    assert (tmp_path / "claims.json").exists()
    assert (tmp_path / "summary.json").exists()


def test_other_reading_written_beside_default(tmp_path: Path):
    profile = grid_profile()
    results = make_results(profile)
    default = claims.write_claims(claims.evaluate_claims(results, profile, "poisson-window", claims.load_tolerances()), profile, "poisson-window", tmp_path)
    other = claims.write_claims(claims.evaluate_claims(results, profile, "layered", claims.load_tolerances()), profile, "layered", tmp_path)
    assert default == tmp_path / "claims.json"
    assert other == tmp_path / "claims-layered.json"
    assert json.loads(default.read_text())["reading"] == "poisson-window"
    assert {record["reading"] for record in json.loads(other.read_text())["records"]} == {"layered"}


def test_censored_baseline_blocks_not_reproduced():
    """A baseline run counted at the cap shortens the baseline, so a slow MRE is not yet "not reproduced"."""
    never = {"val_curve": [0.5] * EPOCHS}
    records = evaluate(overrides={("mre", 0): never, ("mre", 1): never, ("mre", 2): never, ("topk-moe-balanced", 0): never})
    record = record_of(records, "epoch-reduction", "vs topk-moe-balanced")
    # Epochs: MRE [6, 6, 6] at the cap, baseline [6 at the cap, 2, 2].
    assert record.details["never_reached"] == {"mre": 3, "topk-moe-balanced": 1}
    assert record.interval[1] < 0.1
    assert record.verdict == claims.INCONCLUSIVE
    assert "baseline run(s) counted at the cap make the reduction a lower bound" in record.reason


def test_guard_censoring_rules():
    reproduced = (claims.REPRODUCED, "fine")
    not_reproduced = (claims.NOT_REPRODUCED, "slow")
    assert claims._guard_censoring(reproduced, 0, 2) == reproduced
    assert claims._guard_censoring(reproduced, 1, 0)[0] == claims.INCONCLUSIVE
    assert claims._guard_censoring(not_reproduced, 2, 0) == not_reproduced
    assert claims._guard_censoring(not_reproduced, 0, 1)[0] == claims.INCONCLUSIVE
