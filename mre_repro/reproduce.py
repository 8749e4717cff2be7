"""Run a profile's grid and summarise it: the `mre-repro reproduce` job."""

from __future__ import annotations

import logging
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mre_repro.engine import DataOptions, train_run
from mre_repro.profiles import GridRun, Profile, build_grid
from mre_repro.readings import DEFAULT_READING
from mre_repro.store import RunResult, RunStore, write_json_atomic

logger = logging.getLogger(__name__)


def results_file(out: Path, stem: str, reading: str) -> Path:
    """Path of `<stem>.json` for the default reading, `<stem>-<reading>.json` for any other.

    Runs are shared in one store, so evaluating another reading in the same
    folder adds its summary and claims beside the default's instead of
    replacing them.
    """
    name = f"{stem}.json" if reading == DEFAULT_READING else f"{stem}-{reading}.json"
    return Path(out) / name


def run_grid(grid: list[GridRun], store: RunStore, data_options: DataOptions) -> list[tuple[GridRun, RunResult]]:
    """Train every run of `grid` that has not finished yet; return all results in grid order."""
    results = []
    show = sys.stderr.isatty()
    started = time.perf_counter()
    for run in tqdm(grid, desc="runs", unit="run", disable=not show):
        logger.info("grid run %s dataset=%s seed=%d run=%s", run.role, run.dataset, run.seed, run.config.run_id)
        results.append((run, train_run(run.config, store, data_options, progress=show)))
    logger.info("grid of %d runs done in %.1f s", len(grid), time.perf_counter() - started)
    return results


def summary_entry(run: GridRun, result: RunResult) -> dict[str, Any]:
    final = result.final
    return {
        "role": run.role,
        "model": run.config.model.kind,
        "dataset": run.dataset,
        "seed": run.seed,
        "reading": run.config.reading.name if run.config.model.kind == "mre" else None,
        "router_init_scale": run.config.model.resolved_router_init_scale if run.config.model.kind != "dense" else None,
        "run_id": result.run_id,
        "test_accuracy": final["test_accuracy"],
        "best_val_accuracy": final["best_val_accuracy"],
        "experts_per_sample": final["experts_per_sample"],
        "epochs": final["epochs"],
        "train_seconds": final["train_seconds"],
    }


def build_summary(profile: Profile, reading: str, results: list[tuple[GridRun, RunResult]], wall_seconds: float) -> dict[str, Any]:
    """Summarise a grid. `wall_seconds` is this invocation's; `training_span_seconds` spans the runs' own timestamps."""
    return {
        "profile": profile.name,
        "reading": reading,
        "wall_seconds": wall_seconds,
        "training_span_seconds": training_span_seconds([result for _, result in results]),
        "runs": [summary_entry(run, result) for run, result in results],
    }


def training_span_seconds(results: list[RunResult]) -> float | None:
    """Seconds from the first run's start to the last run's end.

    This is the grid's training wall time when it was trained in one go, even
    if the summary is rebuilt later from finished runs. None without runs or
    when a run lacks its timestamps.
    """
    started = [result.provenance.get("started_at") for result in results]
    finished = [result.provenance.get("finished_at") for result in results]
    if not results or None in started or None in finished:
        return None
    span = max(map(datetime.fromisoformat, finished)) - min(map(datetime.fromisoformat, started))
    return span.total_seconds()


def aggregate_by_role(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each (data set, role)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in summary["runs"]:
        groups[(entry["dataset"], entry["role"])].append(entry)

    rows = []
    for (dataset, role), entries in groups.items():
        row: dict[str, Any] = {"dataset": dataset, "role": role, "model": entries[0]["model"], "n": len(entries)}
        for metric in ("test_accuracy", "best_val_accuracy", "experts_per_sample"):
            values = [entry[metric] for entry in entries if entry[metric] is not None]
            row[metric] = _mean_sd(values)
        rows.append(row)
    return rows


def _mean_sd(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def reproduce(
    profile: Profile, reading: str, device: str | None, out: Path, data_options: DataOptions
) -> tuple[dict[str, Any], list[tuple[GridRun, RunResult]]]:
    """Train the grid of `profile` under `out` and write its summary; return the summary and the results."""
    store = RunStore(out)
    grid = build_grid(profile, reading, device)
    started = time.perf_counter()
    results = run_grid(grid, store, data_options)
    summary = build_summary(profile, reading, results, time.perf_counter() - started)
    write_json_atomic(results_file(out, "summary", reading), summary)
    return summary, results
