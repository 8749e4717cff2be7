"""Tests of the report's figures: the plotted values, read back from the Axes, equal the stored numbers.

Each figure is built from a fake results folder (see test_report.py) and
compared with claims.json details, summary.json and the run records, which
the claims evaluation and the engine wrote independently of the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.lines import Line2D
from test_report import write_fake_results

from mre_repro.artifact import Results, load_results
from mre_repro.figures import (
    ROLE_ORDER,
    BuiltFigure,
    available,
    build_figures,
    interval_settings,
    new_figure,
    panel_title,
    plot_epochs_to_target,
    plot_test_accuracy,
    role_colours,
    sort_roles,
    verdict_colours,
    write_figures,
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    return load_results(write_fake_results(tmp_path_factory.mktemp("results")))


@pytest.fixture(scope="module")
def figures(results: Results) -> dict[str, BuiltFigure]:
    return {built.name: built for built in build_figures(results)}


def line(ax: Axes, label: str) -> Line2D:
    matches = [candidate for candidate in ax.get_lines() if candidate.get_label() == label]
    assert len(matches) == 1, f"expected one line labelled {label!r}, found {[l.get_label() for l in ax.get_lines()]}"
    return matches[0]


def line_by_gid(ax: Axes, gid: str) -> Line2D:
    matches = [candidate for candidate in ax.get_lines() if candidate.get_gid() == gid]
    assert len(matches) == 1, f"expected one line with gid {gid!r}"
    return matches[0]


def band_values_at(ax: Axes, name: str, x: float) -> np.ndarray:
    """y values of the interval band `name` at `x` (its low and high bounds)."""
    bands = [collection for collection in ax.collections if collection.get_gid() == f"{name} interval"]
    assert len(bands) == 1
    vertices = bands[0].get_paths()[0].vertices
    return np.unique(vertices[np.isclose(vertices[:, 0], x), 1])


def records_of(results: Results, *claims: str) -> list[dict[str, Any]]:
    return available([record for claim in claims for record in results.claim_records(claim)])


def test_every_figure_is_drawn(figures: dict[str, BuiltFigure]) -> None:
    assert [name for name, built in figures.items() if built.figure is None] == []
    assert len(figures) == 8


# Figure 1 ---------------------------------------------------------------------


def test_validation_curves_match_claim_details(results: Results, figures: dict[str, BuiltFigure]) -> None:
    records = records_of(results, "epoch-reduction")
    axes = figures["validation-accuracy"].figure.axes
    assert len(axes) == len(records)
    for ax, record in zip(axes, records):
        details = record["details"]
        baseline = record["comparison"].removeprefix("vs ")
        assert ax.get_title() == panel_title(record)
        np.testing.assert_allclose(line(ax, "mre").get_ydata(), np.mean(details["mre_val_accuracy"], axis=0))
        np.testing.assert_allclose(line(ax, baseline).get_ydata(), np.mean(details["baseline_val_accuracy"], axis=0))
        np.testing.assert_allclose(line(ax, "target").get_ydata(), [details["target_accuracy"]] * 2)
        assert line(ax, "mre epochs to target").get_xdata()[0] == pytest.approx(np.mean(details["mre_epochs"]))
        assert line(ax, f"{baseline} epochs to target").get_xdata()[0] == pytest.approx(np.mean(details["baseline_epochs"]))


def test_validation_band_is_bootstrap_interval(results: Results, figures: dict[str, BuiltFigure]) -> None:
    record = records_of(results, "epoch-reduction")[0]
    ax = figures["validation-accuracy"].figure.axes[0]
    first_epoch = [curve[0] for curve in record["details"]["mre_val_accuracy"]]
    interval = interval_settings().mean(first_epoch)
    np.testing.assert_allclose(band_values_at(ax, "mre", 1.0), [interval.low, interval.high])


# Figure 2 ---------------------------------------------------------------------


def test_epochs_per_seed_match_claim_details(results: Results, figures: dict[str, BuiltFigure]) -> None:
    records = records_of(results, "epoch-reduction", "epoch-convergence")
    axes = figures["epochs-to-target"].figure.axes
    assert len(axes) == len(records)
    for ax, record in zip(axes, records):
        details = record["details"]
        for seed, mre, baseline in zip(details["seeds"], details["mre_epochs"], details["baseline_epochs"]):
            np.testing.assert_array_equal(line_by_gid(ax, f"seed {seed}").get_ydata(), [mre, baseline])


def test_unreached_target_has_hollow_marker() -> None:
    epochs = pd.DataFrame(
        {"role": ["mre", "dense"], "seed": [0, 0], "epochs": [2, 5], "reached": [True, False]}
    )
    figure, axes = new_figure(1, 1)
    ax = plot_epochs_to_target(epochs, ["mre", "dense"], axes[0, 0])
    reached, missed = ax.collections
    assert to_hex(reached.get_facecolor()[0]) == role_colours(["mre"])["mre"]
    assert to_hex(missed.get_facecolor()[0]) == "#ffffff"
    np.testing.assert_array_equal(line_by_gid(ax, "seed 0").get_ydata(), [2, 5])


# Figure 3 ---------------------------------------------------------------------


def test_test_accuracy_means_match_summary(results: Results, figures: dict[str, BuiltFigure]) -> None:
    built = figures["test-accuracy"]
    for ax, dataset in zip(built.figure.axes, results.datasets):
        entries = results.entries(dataset=dataset)
        roles = sort_roles(list({entry["role"] for entry in entries}))
        expected = [np.mean([entry["test_accuracy"] for entry in entries if entry["role"] == role]) for role in roles]
        assert [label.get_text() for label in ax.get_xticklabels()] == roles
        np.testing.assert_allclose(line(ax, "mean").get_ydata(), expected)
        tabulated = [row["mean"] for row in built.table if row["dataset"] == dataset]
        np.testing.assert_allclose(tabulated, expected)


def test_mre_accuracy_matches_parity_claim(results: Results, figures: dict[str, BuiltFigure]) -> None:
    for record in records_of(results, "accuracy-parity"):
        ax = figures["test-accuracy"].figure.axes[results.datasets.index(record["dataset"])]
        mre_position = [label.get_text() for label in ax.get_xticklabels()].index("mre")
        assert line(ax, "mean").get_ydata()[mre_position] == pytest.approx(np.mean(record["details"]["mre_test_accuracy"]))


def test_plot_test_accuracy_by_hand() -> None:
    table = pd.DataFrame({"role": ["mre", "dense"], "mean": [0.8, 0.9], "low": [0.7, 0.85], "high": [0.85, 0.95], "n": [2, 2]})
    seeds = pd.DataFrame({"role": ["mre", "mre", "dense", "dense"], "seed": [0, 1, 0, 1], "test_accuracy": [0.75, 0.85, 0.88, 0.92]})
    figure, axes = new_figure(1, 1)
    ax = plot_test_accuracy(table, seeds, axes[0, 0])
    np.testing.assert_allclose(line(ax, "mean").get_ydata(), [0.8, 0.9])
    segments = [collection for collection in ax.collections if collection.get_gid() == "interval"][0].get_segments()
    np.testing.assert_allclose([segment[:, 1] for segment in segments], [[0.7, 0.85], [0.85, 0.95]])


# Figure 4 ---------------------------------------------------------------------


def test_difficulty_bins_match_harder_samples_claim(results: Results, figures: dict[str, BuiltFigure]) -> None:
    axes = figures["difficulty"].figure.axes
    for record in records_of(results, "harder-samples"):
        left = axes[2 * results.datasets.index(record["dataset"])]
        expected = record["details"]["mean_activations_by_difficulty_decile"]
        np.testing.assert_allclose(line(left, "mean activations").get_ydata(), expected)


def test_outcome_means_match_misclassified_claim(results: Results, figures: dict[str, BuiltFigure]) -> None:
    axes = figures["difficulty"].figure.axes
    for record in records_of(results, "misclassified-more-experts"):
        right = axes[2 * results.datasets.index(record["dataset"]) + 1]
        details = record["details"]
        assert line(right, "mean (correct)").get_xdata()[0] == pytest.approx(np.mean(details["mean_activations_correct"]))
        assert line(right, "mean (misclassified)").get_xdata()[0] == pytest.approx(np.mean(details["mean_activations_misclassified"]))


# Figure 5 ---------------------------------------------------------------------


def test_usage_heatmaps_are_mean_test_usage(results: Results, figures: dict[str, BuiltFigure]) -> None:
    panels = {ax.get_title(): ax for ax in figures["expert-usage"].figure.axes if ax.get_title()}
    for dataset in results.datasets:
        for role in ("mre", "topk-moe-balanced", "topk-moe-unbalanced"):
            usage = np.mean([record["final"]["usage_test"] for record in results.run_records(dataset=dataset, role=role)], axis=0)
            cells = np.asarray(panels[f"{dataset}, {role}"].collections[0].get_array()).reshape(usage.shape)
            np.testing.assert_allclose(cells, usage)


def test_usage_entropy_table_matches_load_balance_claim(results: Results, figures: dict[str, BuiltFigure]) -> None:
    table = figures["expert-usage"].table
    for record in records_of(results, "load-balance"):
        row = next(row for row in table if row["dataset"] == record["dataset"] and row["role"] == "mre")
        assert row["usage entropy"] == pytest.approx(record["estimate"])


# Figure 6 ---------------------------------------------------------------------


@pytest.mark.parametrize(("column", "metric"), [(0, "early_entropy"), (1, "final_entropy"), (2, "test_accuracy")])
def test_init_scale_means_match_claim_details(results: Results, figures: dict[str, BuiltFigure], column: int, metric: str) -> None:
    axes = figures["init-scale"].figure.axes
    for row, record in enumerate(records_of(results, "init-scale")):
        scales = sorted(record["details"]["scales"], key=lambda entry: entry["scale"])
        mean = line(axes[3 * row + column], "mean")
        np.testing.assert_allclose(mean.get_xdata(), [entry["scale"] for entry in scales])
        np.testing.assert_allclose(mean.get_ydata(), [np.mean(entry[metric]) for entry in scales])


# Figure 7 ---------------------------------------------------------------------


def test_step_accuracy_matches_anytime_claim(results: Results, figures: dict[str, BuiltFigure]) -> None:
    ax = figures["step-accuracy"].figure.axes[0]
    for record in records_of(results, "anytime"):
        per_step = line(ax, record["dataset"])
        np.testing.assert_allclose(per_step.get_ydata(), record["details"]["per_step_mean"])
        np.testing.assert_array_equal(per_step.get_xdata(), np.arange(1, len(record["details"]["per_step_mean"]) + 1))


# Figure 8 ---------------------------------------------------------------------


def test_verdict_matrix_shows_every_record(results: Results, figures: dict[str, BuiltFigure]) -> None:
    ax = figures["verdicts"].figure.axes[0]
    records = results.claims["records"]
    texts = [text.get_text() for text in ax.texts]
    assert sorted(texts) == sorted(record["verdict"] for record in records)
    columns = [label.get_text() for label in ax.get_xticklabels()]
    assert columns == list(dict.fromkeys(record["dataset"] for record in records))


def test_verdict_cells_coloured_by_verdict(figures: dict[str, BuiltFigure]) -> None:
    ax = figures["verdicts"].figure.axes[0]
    mesh = ax.collections[0]
    colours = verdict_colours()
    drawn = [to_hex(colour) for colour, value in zip(mesh.get_facecolors(), np.ma.getmaskarray(mesh.get_array()).ravel()) if not value]
    assert sorted(drawn) == sorted(colours[text.get_text()] for text in ax.texts)


# Files ------------------------------------------------------------------------


def test_figures_are_byte_identical(results: Results, tmp_path: Path) -> None:
    first = write_figures(build_figures(results), tmp_path / "first")
    second = write_figures(build_figures(results), tmp_path / "second")
    assert [path.name for path in first] == [path.name for path in second]
    for one, other in zip(first, second):
        assert one.read_bytes() == other.read_bytes(), one.name


def test_files_carry_no_date(results: Results, tmp_path: Path) -> None:
    paths = write_figures([next(built for built in build_figures(results) if built.name == "verdicts")], tmp_path)
    svg = next(path for path in paths if path.suffix == ".svg").read_text()
    png = next(path for path in paths if path.suffix == ".png").read_bytes()
    assert "<dc:date>" not in svg
    assert png.startswith(b"\x89PNG")
    assert b"tIME" not in png


def test_role_colours_are_stable() -> None:
    assert role_colours(["dense"])["dense"] == role_colours(list(ROLE_ORDER))["dense"]
    assert len(set(role_colours(list(ROLE_ORDER)).values())) == len(ROLE_ORDER)
