"""Tests of `mre-repro report`: loading a results folder, the three reports, deviations and the bundle.

`write_fake_results` builds a small results folder without training: the real
grid of the cpu profile (so run ids, roles and configs are real), with run
records whose numbers come from a seeded generator, and claims.json written
by the real claims evaluation. test_figures.py and test_browser.py import it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mre_repro import claims
from mre_repro.artifact import ResultsError, add_report_arguments, command_badges, command_report, export_bundle, load_results
from mre_repro.profiles import GridRun, build_grid, get_profile
from mre_repro.report import (
    escape_latex,
    escape_markdown_cell,
    format_interval,
    format_number,
    parse_interpretation,
    tolerance_deviations,
)
from mre_repro.reproduce import build_summary
from mre_repro.store import RunResult, RunStore, write_json_atomic

# Fake final accuracy level and learning speed (per epoch) of each role.
QUALITY = {"mre": 0.9, "mre-init-1": 0.88, "topk-moe-balanced": 0.87, "topk-moe-unbalanced": 0.85, "threshold-moe": 0.86, "dense": 0.84}
SPEED = {"mre": 1.4, "mre-init-1": 1.0, "topk-moe-balanced": 0.8, "topk-moe-unbalanced": 0.8, "threshold-moe": 0.9, "dense": 0.7}
READING = "poisson-window"


def _fake_usage(role: str, rng: np.random.Generator, steps: int, experts: int) -> np.ndarray | None:
    """(s, e) share of samples firing each expert: spread for the MRE, one expert per layer for top-k."""
    if role == "dense":
        return None
    if role.startswith("mre"):
        return rng.uniform(0.3, 0.8, (steps, experts))
    if role == "topk-moe-balanced":
        return rng.dirichlet(np.full(experts, 20.0), steps)
    if role == "topk-moe-unbalanced":
        return rng.dirichlet(np.full(experts, 0.5), steps)
    return rng.uniform(0.0, 0.5, (steps, experts))


def _fake_activations(role: str, rng: np.random.Generator, difficulty: np.ndarray, steps: int, experts: int) -> np.ndarray | None:
    if role == "dense":
        return None
    if role.startswith("mre"):
        return rng.poisson(6 + 14 * difficulty).clip(0, steps * experts)
    if role.startswith("topk"):
        return np.full(difficulty.size, steps)
    return rng.integers(2, 12, difficulty.size)


def _history(role: str, rng: np.random.Generator, epochs: int, usage: np.ndarray | None, experts: int) -> list[dict[str, Any]]:
    curve = [QUALITY[role] * (1 - np.exp(-SPEED[role] * epoch)) + rng.normal(0, 0.004) for epoch in range(1, epochs + 1)]
    final_usage = None if usage is None else usage.tolist()
    # First-epoch usage: near uniform for the default init, skewed for init scale 1.
    first_usage = final_usage
    if usage is not None:
        first_usage = rng.dirichlet(np.full(experts, 0.3 if role == "mre-init-1" else 5.0), usage.shape[0]).tolist()

    history = []
    for epoch, value in enumerate(curve, start=1):
        history.append({
            "epoch": epoch, "temperature": 1.0, "train_loss": 1.0 / epoch, "aux_losses": {},
            "usage_train": first_usage if epoch == 1 else final_usage, "experts_per_sample_train": None,
            "val_accuracy": float(value), "val_accuracy_per_step": [float(value)],
            "test_accuracy": float(value), "test_accuracy_per_step": [float(value)],
            "usage_val": final_usage, "experts_per_sample_val": None,
            "experts_per_sample_test": None, "train_seconds": 1.0, "eval_seconds": 0.1,
        })
    return history


def fake_result(run: GridRun, dataset_index: int, samples: int) -> RunResult:
    """A run record of the engine's format with seeded fake numbers; harder samples fire more MRE experts."""
    role, seed, model = run.role, run.seed, run.config.model
    rng = np.random.default_rng([dataset_index, list(QUALITY).index(role), seed])
    difficulty = np.random.default_rng(dataset_index).uniform(0, 1, samples)  # shared by every run of the data set

    usage = _fake_usage(role, rng, model.steps, model.experts)
    activations = _fake_activations(role, rng, difficulty, model.steps, model.experts)
    history = _history(role, rng, run.config.train.epochs, usage, model.experts)
    correct = (rng.uniform(0, 1, samples) > 3.5 * difficulty * (1.1 - QUALITY[role])).astype(int)
    loss = (-np.log(1 - 0.9 * difficulty) + rng.normal(0, 0.05, samples)).clip(0.001)
    accuracy = float(correct.mean())

    curve = [entry["val_accuracy"] for entry in history]
    final = {
        "test_accuracy": accuracy,
        "test_accuracy_per_step": [accuracy - 0.06, accuracy - 0.03, accuracy - 0.01, accuracy] if role.startswith("mre") else [accuracy],
        "best_val_accuracy": max(curve), "best_val_epoch": int(np.argmax(curve)) + 1,
        "experts_per_sample": None if activations is None else float(activations.mean()),
        "usage_test": None if usage is None else usage.tolist(), "mean_exit_step": float(model.steps),
        "epochs": run.config.train.epochs, "parameters": 1000, "flops_per_sample": 2000.0, "train_seconds": 4.0 + seed,
    }
    per_sample = {
        "correct": correct.tolist(), "loss": loss.tolist(), "exit_step": [model.steps] * samples,
        "activations": None if activations is None else activations.astype(int).tolist(),
    }
    provenance = {
        "seed": seed, "git_commit": "f" * 40, "git_dirty": False, "python": "3.11.7", "torch": "2.14.1",
        "torchvision": "0.29.1", "numpy": "2.4.6", "device": "cpu: fake test fixture", "data_fingerprint": "0" * 64,
        "data_files": {}, "data_root": "/nonexistent", "command": "pytest", "started_at": f"2026-01-0{seed + 1}T10:00:00+00:00",
        "finished_at": f"2026-01-0{seed + 1}T10:05:00+00:00",
    }
    return RunResult(run.config.run_id, run.config.to_dict(), provenance, history, final, per_sample)


def write_fake_results(
    root: Path, datasets: tuple[str, ...] = ("mnist", "fashion-mnist"), seeds: tuple[int, ...] = (0, 1, 2), epochs: int = 4, samples: int = 80
) -> Path:
    """Write runs/, summary.json and claims.json of a fake cpu-profile grid under `root`; return `root`."""
    profile = replace(get_profile("cpu"), datasets=datasets, seeds=seeds, epochs=epochs)
    store = RunStore(root)
    results = []
    for run in build_grid(profile, READING):
        result = fake_result(run, datasets.index(run.dataset), samples)
        store.save(result)
        results.append((run, result))

    write_json_atomic(root / "summary.json", build_summary(profile, READING, results, wall_seconds=12.5))
    records = claims.evaluate_claims(results, profile, READING, claims.load_tolerances())
    claims.write_claims(records, profile, READING, root)
    return root


def report_args(results: Path, out: Path | None = None) -> argparse.Namespace:
    return argparse.Namespace(results=results, out=out)


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fake_results(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def report_dir(fake_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert command_report(report_args(fake_results, out)) == 0
    return out


@pytest.fixture(scope="module")
def edited_report(fake_results: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report, written into its results folder, from claims.json edited to hold markup, LaTeX specials and no anytime records."""
    results = shutil.copytree(fake_results, tmp_path_factory.mktemp("edited") / "results")
    payload = json.loads((results / "claims.json").read_text())
    payload["records"] = [record for record in payload["records"] if record["claim"] != "anytime"]
    payload["records"][0]["reason"] = "interval <script>alert(1)</script> & more"
    payload["records"][0]["title"] = "50% of_epochs & {more} #1 $x$ ~ ^"
    (results / "claims.json").write_text(json.dumps(payload))
    assert command_report(report_args(results)) == 0
    return results


# Loading and errors -----------------------------------------------------------


def test_report_arguments_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser.add_subparsers(dest="command"))
    report = parser.parse_args(["report"])
    assert report.results == Path("paper/build")
    assert report.out is None
    badges = parser.parse_args(["badges", "--results", "paper/results/cpu", "--out", "site"])
    assert badges.results == Path("paper/results/cpu")
    assert badges.out == Path("site")


def test_report_writes_every_output(report_dir: Path) -> None:
    for name in ("report.html", "report.md", "claims_table.tex", "badges/overall.svg", "badges/overall.json"):
        assert (report_dir / name).is_file(), name
    assert len(list((report_dir / "figures").glob("*.png"))) == 8
    assert len(list((report_dir / "figures").glob("*.svg"))) == 8


def test_missing_results_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert command_report(report_args(tmp_path / "absent")) == 2
    error = capsys.readouterr().err
    assert str(tmp_path / "absent") in error
    assert "mre-repro reproduce" in error
    assert len(error.strip().splitlines()) == 1


def test_missing_summary_names_file(fake_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = shutil.copytree(fake_results, tmp_path / "results")
    (results / "summary.json").unlink()
    assert command_report(report_args(results)) == 2
    error = capsys.readouterr().err
    assert str(results / "summary.json") in error
    assert "not found" in error
    assert "mre-repro reproduce" in error


def test_malformed_claims_names_file(fake_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = shutil.copytree(fake_results, tmp_path / "results")
    (results / "claims.json").write_text('{"records": [')
    assert command_report(report_args(results)) == 2
    error = capsys.readouterr().err
    assert str(results / "claims.json") in error
    assert "not valid JSON" in error


def test_claims_without_records_key(fake_results: Path, tmp_path: Path) -> None:
    results = shutil.copytree(fake_results, tmp_path / "results")
    payload = json.loads((results / "claims.json").read_text())
    del payload["records"]
    (results / "claims.json").write_text(json.dumps(payload))
    with pytest.raises(ResultsError, match="lacks records"):
        load_results(results)


def test_missing_run_record_names_file(fake_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = shutil.copytree(fake_results, tmp_path / "results")
    victim = sorted((results / "runs").glob("*.json"))[0]
    victim.unlink()
    assert command_report(report_args(results)) == 2
    error = capsys.readouterr().err
    assert str(victim) in error
    assert "--profile cpu" in error


def test_badges_command_without_claims(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert command_badges(report_args(tmp_path)) == 2
    assert str(tmp_path / "claims.json") in capsys.readouterr().err


def test_badges_command_writes_badges(fake_results: Path, tmp_path: Path) -> None:
    assert command_badges(report_args(fake_results, tmp_path)) == 0
    assert (tmp_path / "badges" / "epoch-reduction.svg").is_file()
    assert not (tmp_path / "report.html").exists()


# Report contents --------------------------------------------------------------


def test_markdown_lists_every_claim_record(fake_results: Path, report_dir: Path) -> None:
    records = json.loads((fake_results / "claims.json").read_text())["records"]
    text = (report_dir / "report.md").read_text()
    claims_section = text.split("## Claims", 1)[1].split("## Figures", 1)[0]
    rows = [line for line in claims_section.splitlines() if line.startswith("| ") and "(`" in line]
    assert len(rows) == len(records)
    for row, record in zip(rows, records):
        assert f"(`{record['claim']}`)" in row
        assert f"**{record['verdict']}**" in row
        assert f"| {format_number(record['estimate'])} |" in row
        assert f"| {format_interval(record['interval'])} |" in row


def test_html_header_shows_provenance(fake_results: Path, report_dir: Path) -> None:
    claims_payload = json.loads((fake_results / "claims.json").read_text())
    html = (report_dir / "report.html").read_text()
    assert "arXiv 2507.12419" in html
    assert claims_payload["code_version"]["git_commit"] in html
    assert "cpu: fake test fixture" in html
    assert claims_payload["generated_at"] in html
    assert f"mre-repro reproduce --profile cpu --reading {READING} --out {fake_results}" in html
    assert f"mre-repro report --results {fake_results}" in html


def test_html_lists_every_run(fake_results: Path, report_dir: Path) -> None:
    html = (report_dir / "report.html").read_text()
    summary = json.loads((fake_results / "summary.json").read_text())
    for entry in summary["runs"]:
        assert f"<code>{entry['run_id']}</code>" in html


def test_html_escapes_record_text(edited_report: Path) -> None:
    html = (edited_report / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_latex_table_escapes_specials(edited_report: Path) -> None:
    table = (edited_report / "claims_table.tex").read_text()
    records = json.loads((edited_report / "claims.json").read_text())["records"]
    assert r"50\% of\_epochs \& \{more\} \#1 \$x\$ \textasciitilde{} \textasciicircum{}" in table
    assert table.count(r"\\") == len(records) + 1  # header row and one row per record


def test_figure_captions_are_in_both_reports(report_dir: Path, fake_results: Path) -> None:
    records = json.loads((fake_results / "claims.json").read_text())["records"]
    target = next(record for record in records if record["claim"] == "epoch-reduction")["details"]["target_accuracy"]
    for name in ("report.html", "report.md"):
        text = (report_dir / name).read_text()
        assert f"target {target:.3g}" in text
        assert "figures/validation-accuracy.png" in text


def test_omitted_figure_is_explained(edited_report: Path) -> None:
    html = (edited_report / "report.html").read_text()
    assert "Test accuracy at each step: claims.json holds no anytime record computed from runs." in html
    assert not (edited_report / "figures" / "step-accuracy.png").exists()


def test_report_defaults_out_to_results(edited_report: Path) -> None:
    assert (edited_report / "report.html").is_file()
    assert (edited_report / "figures" / "verdicts.png").is_file()


# Formatting filters -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "n/a"), (0.123456, "0.123"), (3, "3"), (1234.5, "1.23e+03"), (["mnist", "cifar10"], "mnist, cifar10"), (True, "True")],
)
def test_format_number(value: Any, expected: str) -> None:
    assert format_number(value) == expected


def test_format_interval() -> None:
    assert format_interval([0.0312, 0.2101]) == "[0.0312, 0.21]"
    assert format_interval(None) == "n/a"


def test_escape_latex_backslash() -> None:
    assert escape_latex(r"a\b") == r"a\textbackslash{}b"


def test_escape_markdown_cell() -> None:
    assert escape_markdown_cell("a | b\nc") == r"a \| b c"


# Interpretation table ---------------------------------------------------------

INTERPRETATION = """# Interpretation

Some text.

| question | default | alternatives | reason | measurement |
|---|---|---|---|---|
| Router input | state | `embedding` | keeps depth | ablation \\| readings |
| Stop outcome | yes | no |

After the table.
"""


def test_interpretation_rows_parsed(tmp_path: Path) -> None:
    path = tmp_path / "INTERPRETATION.md"
    path.write_text(INTERPRETATION)
    parsed = parse_interpretation(path)
    assert parsed["rows"] == [
        {"question": "Router input", "default": "state", "alternatives": "`embedding`", "reason": "keeps depth", "measurement": "ablation | readings"},
        {"question": "Stop outcome", "default": "yes", "alternatives": "no", "reason": "", "measurement": ""},
    ]


def test_interpretation_missing_file(tmp_path: Path) -> None:
    parsed = parse_interpretation(tmp_path / "INTERPRETATION.md")
    assert parsed["rows"] is None
    assert "not found" in parsed["message"]


def test_interpretation_without_table(tmp_path: Path) -> None:
    path = tmp_path / "INTERPRETATION.md"
    path.write_text("# Interpretation\n\n| a | b |\n|---|---|\n")
    parsed = parse_interpretation(path)
    assert parsed["rows"] is None
    assert "| question | default | alternatives | reason | measurement |" in parsed["message"]


# Deviations -------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repository: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(repository), "-c", "user.name=Test", "-c", "user.email=test@example.invalid", *args],
        check=True, capture_output=True,
    )


def _commit_tolerances(repository: Path, text: str, subject: str) -> None:
    (repository / "claims").mkdir(exist_ok=True)
    (repository / "claims" / "tolerances.toml").write_text(text)
    _git(repository, "add", "claims/tolerances.toml")
    _git(repository, "commit", "-q", "-m", subject)


@needs_git
def test_deviations_list_later_commits(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _commit_tolerances(tmp_path, "[anytime]\nstep_drop_margin = 0.005\n", "Pre-register the claim tolerances")
    _commit_tolerances(tmp_path, "[anytime]\nstep_drop_margin = 0.01\n", "Widen the step drop margin")
    deviations = tolerance_deviations(tmp_path)
    assert deviations["available"]
    assert [commit["subject"] for commit in deviations["commits"]] == ["Widen the step drop margin"]
    assert deviations["commits"][0]["changes"] == ["-step_drop_margin = 0.005", "+step_drop_margin = 0.01"]
    assert not deviations["uncommitted"]


@needs_git
def test_deviations_none_after_first_commit(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _commit_tolerances(tmp_path, "[anytime]\nstep_drop_margin = 0.005\n", "Pre-register the claim tolerances")
    (tmp_path / "claims" / "tolerances.toml").write_text("[anytime]\nstep_drop_margin = 0.5\n")
    deviations = tolerance_deviations(tmp_path)
    assert deviations["available"]
    assert deviations["commits"] == []
    assert deviations["uncommitted"]


@needs_git
def test_deviations_outside_git(tmp_path: Path) -> None:
    deviations = tolerance_deviations(tmp_path)
    assert not deviations["available"]
    assert deviations["message"].startswith("git history unavailable")


# Regeneration bundle ----------------------------------------------------------


def test_bundle_is_compact_and_complete(fake_results: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export_bundle(fake_results, bundle)
    for name in ("summary.json", "claims.json"):
        text = (bundle / name).read_text()
        assert "\n " not in text
        assert json.loads(text) == json.loads((fake_results / name).read_text())
    original = sorted(path.name for path in (fake_results / "runs").glob("*.json"))
    assert sorted(path.name for path in (bundle / "runs").glob("*.json")) == original
    record = original[0]
    assert json.loads((bundle / "runs" / record).read_text()) == json.loads((fake_results / "runs" / record).read_text())


def test_bundle_drops_stale_records(fake_results: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "runs").mkdir(parents=True)
    (bundle / "runs" / "000000000000.json").write_text("{}")
    export_bundle(fake_results, bundle)
    assert not (bundle / "runs" / "000000000000.json").exists()


def test_bundle_rejects_results_folder(fake_results: Path) -> None:
    with pytest.raises(ValueError, match="is the results folder"):
        export_bundle(fake_results, fake_results / ".." / fake_results.name)


def test_bundle_regenerates_same_figures(fake_results: Path, report_dir: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    export_bundle(fake_results, bundle)
    assert command_report(report_args(bundle, tmp_path / "out")) == 0
    for figure in sorted((report_dir / "figures").iterdir()):
        assert (tmp_path / "out" / "figures" / figure.name).read_bytes() == figure.read_bytes(), figure.name


def test_verdict_matrix_includes_other_readings(fake_results: Path, tmp_path: Path) -> None:
    from mre_repro.artifact import load_results
    from mre_repro.figures import verdict_matrix

    folder = tmp_path / "results"
    shutil.copytree(fake_results, folder)
    claims = json.loads((folder / "claims.json").read_text())
    other = {**claims, "reading": "layered", "records": [{**record, "reading": "layered"} for record in claims["records"]]}
    (folder / "claims-layered.json").write_text(json.dumps(other))

    results = load_results(folder)
    assert len(results.other_reading_records) == len(claims["records"])
    matrix = verdict_matrix([*results.claims["records"], *results.other_reading_records])
    assert any("layered" in str(column) for column in matrix.columns)


def test_bundle_keeps_runs_of_other_readings(fake_results: Path, tmp_path: Path) -> None:
    from mre_repro.artifact import export_bundle

    folder = tmp_path / "results"
    shutil.copytree(fake_results, folder)
    extra = json.loads(next((folder / "runs").glob("*.json")).read_text())
    extra["run_id"] = "0123456789ab"
    (folder / "runs" / "0123456789ab.json").write_text(json.dumps(extra))
    claims = json.loads((folder / "claims.json").read_text())
    records = [{**record, "reading": "layered", "run_ids": ["0123456789ab"]} for record in claims["records"]]
    (folder / "claims-layered.json").write_text(json.dumps({**claims, "reading": "layered", "records": records}))

    export_bundle(folder, tmp_path / "bundle")
    assert (tmp_path / "bundle" / "claims-layered.json").is_file()
    assert (tmp_path / "bundle" / "runs" / "0123456789ab.json").is_file()
