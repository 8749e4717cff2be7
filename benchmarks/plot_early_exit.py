"""Plot accuracy and latency per sample against compute (mean experts used) for the early-exit cases.

    python benchmarks/plot_early_exit.py benchmarks/results/latest.json --out benchmarks/early_exit.png

`make_readme.py` calls `plot_early_exit` itself, so the curve beside the
README always comes from the same JSON as the README.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

SERIES = {"threshold": ("o", "-"), "depth": ("s", "--")}


def series_of(case: dict[str, Any]) -> str:
    return "depth" if case["max_steps"] is not None else "threshold"


def point_label(case: dict[str, Any]) -> str:
    if case["max_steps"] is not None:
        return f"depth {case['max_steps']}"
    return "full depth" if case["exit_threshold"] is None else f"threshold {case['exit_threshold']:g}"


def plot_early_exit(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Write the two-panel figure to `path`; return None, writing nothing, when there are no early-exit rows.

    Each row is one early-exit case of `make_readme.early_exit_rows`. The
    full-depth case without a threshold belongs to both sweeps.
    """
    if not rows:
        return None
    figure, (accuracy_axes, latency_axes) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for (reading, batch_size, series), points in grouped_points(rows).items():
        marker, line = SERIES[series]
        experts = [row["case"]["experts_per_sample"] for row in points]
        label = f"{reading}, {series} sweep"
        if batch_size == max(row["case"]["batch_size"] for row in rows):
            accuracy_axes.plot(experts, [row["case"]["accuracy"] for row in points], marker=marker, linestyle=line, label=label)
            for row in points:
                accuracy_axes.annotate(point_label(row["case"]), (row["case"]["experts_per_sample"], row["case"]["accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        latency_axes.plot(experts, [1e6 * row["latency"] for row in points], marker=marker, linestyle=line, label=f"{label}, batch {batch_size}")

    accuracy_axes.set(xlabel="mean experts used per sample", ylabel="test accuracy", title="Accuracy against compute")
    latency_axes.set(xlabel="mean experts used per sample", ylabel="latency per sample (µs)", yscale="log", title="Latency against compute")
    for axes in (accuracy_axes, latency_axes):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def grouped_points(rows: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows by (reading, batch size, sweep), each sorted by experts used; full depth joins both sweeps."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        case = row["case"]
        full_depth = case["max_steps"] is None and case["exit_threshold"] is None
        for series in ("threshold", "depth") if full_depth else (series_of(case),):
            groups.setdefault((case["reading"], case["batch_size"], series), []).append(row)
    return {key: sorted(points, key=lambda row: row["case"]["experts_per_sample"]) for key, points in sorted(groups.items())}


def main(argv: list[str] | None = None) -> int:
    from make_readme import HERE, PLOT_NAME, early_exit_rows, load_cases

    parser = argparse.ArgumentParser(description="Plot the early-exit cases of a pytest-benchmark JSON.")
    parser.add_argument("json", type=Path, help="JSON written by pytest benchmarks/ --benchmark-json=PATH")
    parser.add_argument("--out", type=Path, default=HERE / PLOT_NAME, help=f"PNG to write (default: benchmarks/{PLOT_NAME})")
    arguments = parser.parse_args(argv)
    rows = early_exit_rows(load_cases(json.loads(arguments.json.read_text())))
    written = plot_early_exit(rows, arguments.out)
    print(f"wrote {written}" if written else f"no early-exit cases in {arguments.json}; nothing written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
