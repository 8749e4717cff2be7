"""The paper artifact, rebuilt from a results folder without training: `mre-repro report` and `mre-repro badges`.

"The paper" in this module is Perin, Lagomarsini, Gallicchio and Nuti,
*Mixture of Raytraced Experts*, arXiv 2507.12419 (2025).

A results folder contains what `mre-repro reproduce` wrote:

    summary.json        one entry per run of the grid (role, data set, seed, run id)
    claims.json         one verdict record per claim, data set and comparison
    runs/<run_id>.json  the run records listed in summary.json

`write_artifact` turns it into `figures/` (PNG and SVG), `report.html`,
`report.md`, `claims_table.tex` and `badges/` under an output folder. Every
number in those files is read from the results folder; none is typed into a
template. `export_bundle` copies a results folder into a compact bundle that
is small enough to commit and from which the same artifact can be rebuilt.

This module imports only the standard library at import time, so that the
command line stays quick for commands that draw nothing; the figure and
template code is imported when an artifact is written.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mre_repro.store import atomic_path

logger = logging.getLogger(__name__)

DEFAULT_RESULTS = Path("paper/build")
SUMMARY_FILE = "summary.json"
CLAIMS_FILE = "claims.json"
RUNS_DIR = "runs"

# Keys each input must have for the artifact to be built. They are checked on
# load, so a malformed file fails with its name instead of deep inside a figure.
SUMMARY_KEYS = ("profile", "reading", "runs")
SUMMARY_RUN_KEYS = ("role", "model", "dataset", "seed", "run_id", "test_accuracy", "epochs", "train_seconds")
CLAIMS_KEYS = ("profile", "reading", "generated_at", "code_version", "records")
CLAIM_RECORD_KEYS = ("claim", "title", "dataset", "comparison", "verdict", "reason", "estimate", "interval", "n", "tolerance", "details")
RUN_RECORD_KEYS = ("run_id", "config", "provenance", "history", "final", "per_sample")


class ResultsError(RuntimeError):
    """A results folder with a missing or malformed file; the message names the file and the fix."""


@dataclass(frozen=True)
class Results:
    """The contents of one results folder, as parsed JSON."""

    root: Path
    summary: dict[str, Any]
    claims: dict[str, Any]
    records: dict[str, dict[str, Any]]  # run id -> run record
    # Claim records of other readings evaluated in the same folder
    # (claims-<reading>.json); only the verdict matrix shows them.
    other_reading_records: tuple[dict[str, Any], ...] = ()

    @property
    def profile(self) -> str:
        return self.summary["profile"]

    @property
    def datasets(self) -> list[str]:
        """Data sets of the grid, in the order summary.json first lists them."""
        return list(dict.fromkeys(entry["dataset"] for entry in self.summary["runs"]))

    def entries(self, *, dataset: str | None = None, role: str | None = None) -> list[dict[str, Any]]:
        """Summary entries of one data set and/or role, in seed order."""
        selected = [
            entry
            for entry in self.summary["runs"]
            if (dataset is None or entry["dataset"] == dataset) and (role is None or entry["role"] == role)
        ]
        return sorted(selected, key=lambda entry: entry["seed"])

    def run_records(self, *, dataset: str, role: str) -> list[dict[str, Any]]:
        """Run records of one data set and role, in seed order."""
        return [self.records[entry["run_id"]] for entry in self.entries(dataset=dataset, role=role)]

    def claim_records(self, claim: str) -> list[dict[str, Any]]:
        """Records of `claim` in claims.json order, including those marked unavailable."""
        return [record for record in self.claims["records"] if record["claim"] == claim]


# Loading ----------------------------------------------------------------------


def load_results(root: str | Path) -> Results:
    """Read and check summary.json, claims.json and every run record summary.json lists.

    Raises ResultsError naming the first missing or malformed file and how to
    produce it.
    """
    root = Path(root)
    reproduce = f"run `mre-repro reproduce --out {root}` first"
    if not root.is_dir():
        raise ResultsError(f"results folder {root} not found; {reproduce}, or pass --results with the folder it wrote")

    summary_path = root / SUMMARY_FILE
    summary = _read_json(summary_path, f"{reproduce}; it writes {SUMMARY_FILE} after training")
    _require_keys(summary, SUMMARY_KEYS, summary_path, reproduce)
    for index, entry in enumerate(summary["runs"]):
        _require_keys(entry, SUMMARY_RUN_KEYS, summary_path, reproduce, where=f"runs[{index}]")

    claims_path = root / CLAIMS_FILE
    claims = _read_json(claims_path, f"{reproduce}; it evaluates the claims and writes {CLAIMS_FILE} after training")
    _require_keys(claims, CLAIMS_KEYS, claims_path, reproduce)
    for index, record in enumerate(claims["records"]):
        _require_keys(record, CLAIM_RECORD_KEYS, claims_path, reproduce, where=f"records[{index}]")

    records = {}
    for entry in summary["runs"]:
        path = root / RUNS_DIR / f"{entry['run_id']}.json"
        fix = f"run `mre-repro reproduce --profile {summary['profile']} --out {root}` to train the missing run again"
        record = _read_json(path, fix)
        _require_keys(record, RUN_RECORD_KEYS, path, fix)
        records[entry["run_id"]] = record
    return Results(root, summary, claims, records, _other_reading_records(root, reproduce))


def _other_reading_records(root: Path, fix: str) -> tuple[dict[str, Any], ...]:
    records: list[dict[str, Any]] = []
    for path in sorted(root.glob("claims-*.json")):
        other = _read_json(path, fix)
        _require_keys(other, CLAIMS_KEYS, path, fix)
        records.extend(other["records"])
    return tuple(records)


def _read_json(path: Path, fix: str) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ResultsError(f"{path} not found; {fix}") from None
    except OSError as err:
        raise ResultsError(f"{path} cannot be read ({err.strerror}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ResultsError(f"{path} is not valid JSON ({err}); {fix}") from None


def _require_keys(payload: Any, keys: tuple[str, ...], path: Path, fix: str, where: str = "top level") -> None:
    if not isinstance(payload, dict):
        raise ResultsError(f"{path} is malformed: expected a JSON object at {where}, got {type(payload).__name__}; {fix}")
    missing = [key for key in keys if key not in payload]
    if missing:
        raise ResultsError(f"{path} is malformed: {where} lacks {', '.join(missing)}; {fix}")


# Writing the artifact ---------------------------------------------------------


def write_artifact(results_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Rebuild every figure, both reports, the LaTeX claims table and the badges; return the written paths.

    `out_dir` defaults to `results_dir`. Figures go to `out_dir/figures/`,
    badges to `out_dir/badges/`. Nothing is trained and nothing is read
    besides the results folder, the templates, `claims/tolerances.toml`
    (interval settings) and `paper/INTERPRETATION.md`, and git's history of
    the tolerances file.
    """
    from mre_repro.badges import write_badges
    from mre_repro.figures import build_figures, write_figures
    from mre_repro.report import build_report_context, write_reports

    results = load_results(results_dir)
    out = Path(results_dir if out_dir is None else out_dir)
    built = build_figures(results)
    figure_paths = write_figures(built, out / "figures")
    badge_paths = write_badges(results.claims["records"], out / "badges")
    context = build_report_context(results, built, out, results_argument=Path(results_dir))
    report_paths = write_reports(context, out)
    return [*figure_paths, *badge_paths, *report_paths]


def write_badges_only(results_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write the claim badges of `results_dir/claims.json` to `out_dir/badges/`; return the written paths."""
    from mre_repro.badges import write_badges

    results_dir = Path(results_dir)
    claims_path = results_dir / CLAIMS_FILE
    fix = f"run `mre-repro reproduce --out {results_dir}` first; it evaluates the claims and writes {CLAIMS_FILE}"
    claims = _read_json(claims_path, fix)
    _require_keys(claims, CLAIMS_KEYS, claims_path, fix)
    for index, record in enumerate(claims["records"]):
        _require_keys(record, ("claim", "verdict"), claims_path, fix, where=f"records[{index}]")
    out = results_dir if out_dir is None else Path(out_dir)
    return write_badges(claims["records"], out / "badges")


# Regeneration bundle ----------------------------------------------------------


def _other_reading_runs(results_dir: Path, claims_path: Path) -> dict[str, dict[str, Any]]:
    """Run records behind another reading's claims, so its verdicts can be traced in the bundle."""
    run_ids = {run_id for record in json.loads(claims_path.read_text())["records"] for run_id in record["run_ids"]}
    fix = f"evaluate that reading again with `mre-repro reproduce --reading ... --out {results_dir}`"
    return {run_id: _read_json(results_dir / RUNS_DIR / f"{run_id}.json", fix) for run_id in sorted(run_ids)}


def export_bundle(results_dir: str | Path, bundle_dir: str | Path) -> list[Path]:
    """Copy summary.json, claims.json, other readings' claims and every run they cite into `bundle_dir` as compact JSON.

    The bundle leaves out checkpoints, synthetic data and run records that
    summary.json does not list, and its JSON has no indentation. Every field
    of the copied files is kept, so `mre-repro report --results bundle_dir`
    draws the same figures as from `results_dir`. Files of an
    earlier bundle that the new one does not list are removed, which is why
    `bundle_dir` must not be the results folder itself. Returns the written
    paths.
    """
    bundle = Path(bundle_dir)
    if bundle.resolve() == Path(results_dir).resolve():
        raise ValueError(f"bundle folder {bundle} is the results folder; export to another folder, e.g. paper/results/cpu")
    results = load_results(results_dir)
    written = [_write_compact(bundle / SUMMARY_FILE, results.summary), _write_compact(bundle / CLAIMS_FILE, results.claims)]
    records = dict(results.records)
    for other in sorted(Path(results_dir).glob("claims-*.json")):
        written.append(_write_compact(bundle / other.name, json.loads(other.read_text())))
        records |= _other_reading_runs(Path(results_dir), other)
    for run_id, record in sorted(records.items()):
        written.append(_write_compact(bundle / RUNS_DIR / f"{run_id}.json", record))

    kept = set(written)
    for stale in sorted((bundle / RUNS_DIR).glob("*.json")):
        if stale not in kept:
            stale.unlink()
    load_results(bundle)
    return written


def _write_compact(path: Path, payload: Any) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, separators=(",", ":"), sort_keys=True) + "\n")
    return path


# Command line -----------------------------------------------------------------


def add_report_arguments(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` and `badges` subcommands to the `mre-repro` subparsers."""
    report = subparsers.add_parser("report", help="rebuild figures, report.html, report.md, claims_table.tex and badges from stored results")
    badges = subparsers.add_parser("badges", help="write one SVG badge and shields.io endpoint JSON per claim, and one overall")
    for parser in (report, badges):
        parser.add_argument(
            "--results", type=Path, default=DEFAULT_RESULTS,
            help=f"results folder holding summary.json, claims.json and runs/ (default: {DEFAULT_RESULTS})",
        )
        parser.add_argument("--out", type=Path, default=None, help="output folder (default: the results folder)")


def command_report(args: argparse.Namespace) -> int:
    return _run_results_command("report", lambda: write_artifact(args.results, args.out), (args.out or args.results) / "report.html")


def command_badges(args: argparse.Namespace) -> int:
    return _run_results_command("badges", lambda: write_badges_only(args.results, args.out), (args.out or args.results) / "badges")


def _run_results_command(command: str, write: Callable[[], list[Path]], result: Path) -> int:
    """Run `write`; print `result` on success, or one error line and return exit status 2."""
    try:
        paths = write()
    except ResultsError as err:
        print(f"mre-repro {command}: error: {err}", file=sys.stderr)
        return 2
    logger.info("wrote %d files", len(paths))
    print(result)
    return 0
