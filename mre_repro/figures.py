"""Figures of the report: the tables each figure plots, the plotting functions and the captions.

The first half contains one plotting function per panel kind. Each takes the
table it plots, already aggregated over seeds, and a matplotlib `Axes`,
draws, and returns the Axes. The plotting functions compute no statistic, so
the plotted values are the tabulated ones, and a test can read them back:

* lines carry a label naming what they show (`Line2D.get_label()`), or a gid
  where a label would clutter the legend,
* interval bands are `fill_between` collections with gid "<name> interval",
* heatmap cells are the array of the first `QuadMesh` (`ax.collections[0]`).

The second half builds each figure from a results folder (`build_figures`):
it aggregates the run records, summary.json and claims.json details into
those tables, with the bootstrap settings the claims use, and writes each
caption from the same tables. Figures are written as PNG and SVG with no date
and a fixed SVG hash salt, so the same results give byte-identical files.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless rendering; set before seaborn imports pyplot

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import ListedColormap, to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mre_repro.artifact import Results, ResultsError  # noqa: E402
from mre_repro.claims import Bootstrap, load_tolerances, usage_entropy  # noqa: E402
from mre_repro.report import format_interval, format_number  # noqa: E402
from mre_repro.store import atomic_path  # noqa: E402

# Roles in the order they are listed and coloured; roles not listed here
# (ablation runs "mre-init-<scale>") take the colours after these.
ROLE_ORDER = ("mre", "topk-moe-balanced", "topk-moe-unbalanced", "threshold-moe", "dense")
VERDICTS = ("reproduced", "inconclusive", "not reproduced")

PNG_DPI = 150
# Salt of the ids matplotlib writes into SVG files; fixed so reruns give the same bytes.
SVG_HASH_SALT = "mre-repro"
BAND_ALPHA = 0.2


# Style -----------------------------------------------------------------------


def colour_palette() -> list[tuple[float, float, float]]:
    """Return seaborn's colour-blind palette (10 colours)."""
    return sns.color_palette("colorblind")


def role_colours(roles: Sequence[str]) -> dict[str, str]:
    """Map each role to a hex colour, the same role always to the same colour."""
    palette = colour_palette()
    extra = sorted(role for role in set(roles) if role not in ROLE_ORDER)
    ordered = [*ROLE_ORDER, *extra]
    return {role: to_hex(palette[index % len(palette)]) for index, role in enumerate(ordered)}


def verdict_colours() -> dict[str, str]:
    """Map each verdict to a hex colour of the colour-blind palette (green, grey, vermillion)."""
    palette = colour_palette()
    return {"reproduced": to_hex(palette[2]), "inconclusive": to_hex(palette[7]), "not reproduced": to_hex(palette[3])}


def sort_roles(roles: Sequence[str]) -> list[str]:
    """Order roles as in ROLE_ORDER, other roles after them in name order."""
    known = [role for role in ROLE_ORDER if role in roles]
    return known + sorted(set(roles) - set(ROLE_ORDER))


@contextmanager
def figure_style() -> Iterator[None]:
    """Apply the report's matplotlib style (seaborn "whitegrid", "paper" context) inside the block."""
    style = {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("paper", font_scale=1.1),
        "svg.hashsalt": SVG_HASH_SALT,
        "axes.titleweight": "bold",
    }
    with matplotlib.rc_context(style):
        yield


def style_axes(
    ax: Axes,
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    legend: bool = True,
    legend_location: str = "best",
) -> Axes:
    """Label `ax`, drop its top and right spines, and place a legend when asked and there is one."""
    if title is not None:
        ax.set_title(title)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    sns.despine(ax=ax)

    labelled = [handle for handle in ax.get_legend_handles_labels()[1] if not handle.startswith("_")]
    if legend and labelled:
        ax.legend(frameon=False, fontsize="small", loc=legend_location)
    elif ax.get_legend() is not None:
        ax.get_legend().remove()
    return ax


def new_figure(rows: int, columns: int, panel_size: tuple[float, float] = (4.2, 3.2)) -> tuple[Figure, np.ndarray]:
    """Create a figure of rows x columns panels (inches per panel) and return it with a 2-D array of Axes."""
    width, height = panel_size
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def save_figure(figure: Figure, directory: Path, name: str) -> list[Path]:
    """Write `figure` as `directory/name.png` and `directory/name.svg`, each atomically.

    Neither file carries a creation date, and SVG ids use SVG_HASH_SALT, so
    the bytes depend only on what was drawn and the matplotlib version. The
    layout is computed once, for the PNG, and then frozen, which halves the
    time of the constrained layout and keeps both files' panels in the same
    places.
    """
    paths = []
    for file_format, metadata in (("png", {"Software": None}), ("svg", {"Date": None})):
        path = directory / f"{name}.{file_format}"
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=file_format, dpi=PNG_DPI, metadata=metadata)
        figure.set_layout_engine("none")
        paths.append(path)
    return paths


def _band(ax: Axes, x: Sequence[float], low: Sequence[float], high: Sequence[float], colour: str, name: str) -> None:
    ax.fill_between(x, low, high, color=colour, alpha=BAND_ALPHA, linewidth=0, label=f"_{name} interval")
    ax.collections[-1].set_gid(f"{name} interval")


# Figure 1: validation accuracy per epoch -------------------------------------


def plot_validation_curves(curves: pd.DataFrame, marks: pd.DataFrame, target: float, ax: Axes) -> Axes:
    """Draw validation accuracy per epoch for each role, its interval band, the target and epochs to target.

    `curves`: one row per (role, epoch) with columns role, epoch (1-based),
    mean, low, high (fractions; mean and interval over seeds). `marks`: one
    row per role with columns role and epochs (mean epochs to target over
    seeds), drawn as a triangle on the target line.
    """
    colours = role_colours(curves["role"].unique())
    for role in sort_roles(curves["role"].unique()):
        curve = curves[curves["role"] == role].sort_values("epoch")
        ax.plot(curve["epoch"], curve["mean"], marker="o", markersize=3, color=colours[role], label=role)
        _band(ax, curve["epoch"], curve["low"], curve["high"], colours[role], role)

    ax.axhline(target, color="0.25", linestyle="--", linewidth=1, label="target")
    for mark in marks.itertuples():
        ax.plot([mark.epochs], [target], marker="v", markersize=9, linestyle="none", color=colours[mark.role],
                markeredgecolor="black", label=f"{mark.role} epochs to target")
    ax.xaxis.get_major_locator().set_params(integer=True)
    return ax


# Figure 2: epochs to target, one point per seed ------------------------------


def plot_epochs_to_target(epochs: pd.DataFrame, roles: Sequence[str], ax: Axes) -> Axes:
    """Draw each seed's epochs to target for two or more roles, the seed's points joined by a line.

    `epochs`: one row per (role, seed) with columns role, seed, epochs and
    reached (bool). `roles` gives the x order. A hollow marker means the run
    never reached the target and counts as its epoch cap. Each seed's line is
    labelled "seed <seed>"; seeds are spread a little along x so equal values
    stay visible.
    """
    colours = role_colours(roles)
    seeds = sorted(epochs["seed"].unique())
    offsets = np.linspace(-0.08, 0.08, len(seeds)) if len(seeds) > 1 else np.zeros(1)
    for seed, offset in zip(seeds, offsets):
        rows = epochs[epochs["seed"] == seed].set_index("role").loc[list(roles)]
        x = np.arange(len(roles)) + offset
        ax.plot(x, rows["epochs"], color="0.6", linewidth=1, zorder=1, label=f"_seed {seed}")
        ax.get_lines()[-1].set_gid(f"seed {seed}")
        for position, role in zip(x, roles):
            filled = bool(rows.loc[role, "reached"])
            ax.scatter([position], [rows.loc[role, "epochs"]], s=40, zorder=2, color=colours[role] if filled else "white",
                       edgecolors=colours[role], linewidths=1.5)

    ax.set_xticks(np.arange(len(roles)), list(roles))
    ax.set_xlim(-0.5, len(roles) - 0.5)
    ax.set_ylim(bottom=0)
    ax.yaxis.get_major_locator().set_params(integer=True)
    return ax


# Figure 3: final test accuracy -----------------------------------------------


def plot_test_accuracy(table: pd.DataFrame, seeds: pd.DataFrame, ax: Axes) -> Axes:
    """Draw each role's mean test accuracy with its interval, and the per-seed values beside it.

    `table`: one row per role with columns role, mean, low, high (fractions).
    `seeds`: one row per (role, seed) with columns role, seed, test_accuracy.
    The means form the line labelled "mean" (markers only), so
    `get_ydata()` returns them in the order of `table`.
    """
    colours = role_colours(table["role"])
    x = np.arange(len(table))
    errors = np.vstack([table["mean"] - table["low"], table["high"] - table["mean"]])
    container = ax.errorbar(x, table["mean"], yerr=errors, fmt="none", ecolor="0.2", capsize=4, label="_interval")
    container.lines[2][0].set_gid("interval")
    ax.plot(x, table["mean"], linestyle="none", marker="o", markersize=7, color="0.2", label="mean", zorder=3)

    for position, role in zip(x, table["role"]):
        values = seeds.loc[seeds["role"] == role, "test_accuracy"]
        ax.scatter(np.full(len(values), position + 0.18), values, s=14, color=colours[role], zorder=2)
    ax.set_xticks(x, list(table["role"]), rotation=30, ha="right")
    return ax


# Figure 4: activations against difficulty ------------------------------------


def plot_activations_by_difficulty(bins: pd.DataFrame, ax: Axes, colour: str) -> Axes:
    """Draw mean activations per sample in each difficulty bin, with its interval over seeds.

    `bins`: one row per bin with columns bin (1 = easiest), mean, low, high
    (activations per sample). The line is labelled "mean activations".
    """
    ax.plot(bins["bin"], bins["mean"], marker="o", markersize=4, color=colour, label="mean activations")
    _band(ax, bins["bin"], bins["low"], bins["high"], colour, "mean activations")
    ax.set_xticks(bins["bin"])
    return ax


def plot_activations_by_outcome(samples: pd.DataFrame, means: pd.DataFrame, ax: Axes) -> Axes:
    """Draw the distribution of activations per sample for correct and misclassified samples.

    `samples`: one row per (seed, test sample) with columns activations (int)
    and outcome ("correct" or "misclassified"). Each outcome's histogram is
    normalised to 1 on its own. `means`: one row per outcome with columns
    outcome and mean, drawn as a vertical line labelled "mean (<outcome>)".
    """
    palette = colour_palette()
    colours = {"correct": to_hex(palette[0]), "misclassified": to_hex(palette[3])}
    present = [outcome for outcome in colours if outcome in set(samples["outcome"])]
    sns.histplot(data=samples, x="activations", hue="outcome", hue_order=present, palette=colours, stat="probability",
                 common_norm=False, discrete=True, element="step", ax=ax)
    for row in means.itertuples():
        ax.axvline(row.mean, color=colours[row.outcome], linestyle="--", linewidth=1.2, label=f"mean ({row.outcome})")
    return ax


# Figure 5: expert usage heatmaps ---------------------------------------------


def plot_usage_heatmap(usage: np.ndarray, ax: Axes, vmax: float, colourbar: bool) -> Axes:
    """Draw expert usage as a step x expert heatmap.

    `usage` has shape (s, e): the share of test samples that fire each
    expert at each step (MRE) or MoE layer (baselines), mean over seeds.
    Steps run top to bottom, step 1 first; the colour scale is [0, vmax].
    """
    steps, experts = usage.shape
    sns.heatmap(usage, ax=ax, vmin=0.0, vmax=vmax, cmap="mako", annot=True, fmt=".2f", annot_kws={"fontsize": 6},
                cbar=colourbar, cbar_kws={"label": "share of samples"}, linewidths=0.5, linecolor="white",
                xticklabels=[str(expert + 1) for expert in range(experts)], yticklabels=[str(step + 1) for step in range(steps)])
    ax.tick_params(axis="y", rotation=0)
    return ax


# Figure 6: router init-scale ablation ----------------------------------------


def plot_init_scale(table: pd.DataFrame, seeds: pd.DataFrame, default_scale: float, ax: Axes, colour: str) -> Axes:
    """Draw one metric against the router init scale: mean with interval over seeds, and each seed.

    `table`: one row per scale with columns scale, mean, low, high. `seeds`:
    one row per (scale, seed) with columns scale and value. The default
    scale sqrt(N_e + 1) is marked by a dotted vertical line. The x axis is
    logarithmic because the scales span a factor of ten.
    """
    table = table.sort_values("scale")
    ax.plot(table["scale"], table["mean"], marker="o", color=colour, label="mean")
    _band(ax, table["scale"], table["low"], table["high"], colour, "mean")
    ax.scatter(seeds["scale"], seeds["value"], s=12, color="0.4", zorder=3, label="_seeds")
    ax.axvline(default_scale, color="0.3", linestyle=":", label=f"sqrt(N_e + 1) = {default_scale:g}")
    ax.set_xscale("log")
    ax.set_xticks(table["scale"], [f"{scale:g}" for scale in table["scale"]])
    ax.minorticks_off()
    return ax


# Figure 7: accuracy at each step ---------------------------------------------


def plot_step_accuracy(table: pd.DataFrame, ax: Axes) -> Axes:
    """Draw MRE test accuracy after each step, one line per data set with its interval over seeds.

    `table`: one row per (dataset, step) with columns dataset, step
    (1-based), mean, low, high (fractions). Lines are labelled by data set.
    """
    palette = colour_palette()
    for index, (dataset, rows) in enumerate(table.groupby("dataset", sort=True)):
        rows = rows.sort_values("step")
        colour = to_hex(palette[index % len(palette)])
        ax.plot(rows["step"], rows["mean"], marker="o", markersize=4, color=colour, label=dataset)
        _band(ax, rows["step"], rows["low"], rows["high"], colour, dataset)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return ax


# Figure 8: verdict matrix ----------------------------------------------------


def plot_verdict_matrix(matrix: pd.DataFrame, ax: Axes) -> Axes:
    """Draw a claim x column matrix of verdicts, one coloured and labelled cell per evaluated pair.

    `matrix`: index = row labels (claim and comparison), columns = column
    labels (data set, and reading where several were evaluated), values =
    a verdict from VERDICTS or None where the pair was not evaluated (blank
    cell). Each cell's text is its verdict.
    """
    colours = verdict_colours()
    codes = matrix.apply(lambda column: column.map(lambda verdict: np.nan if verdict is None else VERDICTS.index(verdict)))
    labels = matrix.fillna("").to_numpy(dtype=object)
    colour_map = ListedColormap([colours[verdict] for verdict in VERDICTS])
    sns.heatmap(codes.astype(float), ax=ax, cmap=colour_map, vmin=-0.5, vmax=len(VERDICTS) - 0.5, cbar=False,
                annot=labels, fmt="", annot_kws={"fontsize": 8, "color": "black"}, linewidths=1, linecolor="white")
    ax.tick_params(axis="y", rotation=0)
    ax.tick_params(axis="x", rotation=0)
    ax.grid(False)
    ax.set_xlabel("")
    ax.set_ylabel("")
    return ax


def panel_grid_shape(panels: int, max_columns: int = 3) -> tuple[int, int]:
    """Return (rows, columns) for `panels` panels, at most `max_columns` per row."""
    columns = min(panels, max_columns)
    return math.ceil(panels / columns), columns


def remove_unused_axes(axes: np.ndarray, used: int) -> None:
    """Remove the panels after the first `used` ones (row-major) from their figure."""
    for ax in axes.flat[used:]:
        ax.remove()


# Building the report's figures from a results folder --------------------------
#
# Each builder below reads one figure's data from `Results`, aggregates it
# over seeds into the tables the plotting functions take, draws, and writes
# the caption from the same tables. Claim records whose details mark them
# "unavailable" (their runs are not in the grid) are skipped. A figure with
# nothing to draw is returned with `omitted` set to the reason.

# Equal-count bins of per-sample difficulty; deciles, as the harder-samples
# claim bins them.
DIFFICULTY_BINS = 10
# Roles of the expert usage heatmaps: the MRE and the top-k MoE with and without the balancing loss.
USAGE_ROLES = ("mre", "topk-moe-balanced", "topk-moe-unbalanced")
INIT_SCALE_METRICS = (
    ("early_entropy", "first-epoch usage entropy"),
    ("final_entropy", "final usage entropy"),
    ("test_accuracy", "final test accuracy"),
)


@dataclass
class BuiltFigure:
    """One figure of the report: its file stem, title and caption, and the drawn Figure (None when omitted)."""

    name: str
    title: str
    caption: str
    figure: Figure | None = None
    omitted: str | None = None  # why nothing was drawn
    table: list[dict[str, Any]] = field(default_factory=list)  # the plotted numbers, one dict per row, for the report

    @property
    def files(self) -> dict[str, str]:
        """Paths of the written files relative to the output folder, by format."""
        return {} if self.figure is None else {file_format: f"figures/{self.name}.{file_format}" for file_format in ("png", "svg")}


def interval_settings() -> Bootstrap:
    """Return the bootstrap settings of the claims (`[statistics]` of the tolerances), used for every band and error bar."""
    try:
        return Bootstrap.from_tolerances(load_tolerances())
    except FileNotFoundError as err:
        raise ResultsError(str(err)) from None


def seed_interval(values: Sequence[float], bootstrap: Bootstrap) -> dict[str, float]:
    """Mean over seeds of `values` (one per seed) with its bootstrap interval.

    Fewer than 2 seeds, or values the bootstrap rejects, give a zero-width
    interval at the mean, drawn as no band.
    """
    values = [float(value) for value in values]
    mean = float(np.mean(values)) if values else float("nan")
    interval = bootstrap.mean(values) if len(values) >= 2 else None
    low, high = (mean, mean) if interval is None else (interval.low, interval.high)
    return {"mean": mean, "low": low, "high": high, "n": len(values)}


def summarise(frame: pd.DataFrame, keys: list[str], value: str, bootstrap: Bootstrap) -> pd.DataFrame:
    """Summarise `value` over the rows (seeds) of each group of `keys`: one row per group with mean, low, high and n."""
    rows = [
        {**dict(zip(keys, group if isinstance(group, tuple) else (group,))), **seed_interval(values[value], bootstrap)}
        for group, values in frame.groupby(keys, sort=True)
    ]
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high", "n"])


def available(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Claim records computed from runs, leaving out those whose runs were not in the grid."""
    return [record for record in records if "unavailable" not in record["details"]]


def baseline_role(record: dict[str, Any]) -> str:
    """Return the compared role of a record whose comparison reads "vs <role>"."""
    return record["comparison"].removeprefix("vs ")


def panel_title(record: dict[str, Any]) -> str:
    return record["dataset"] if not record["comparison"] else f"{record['dataset']}, {record['comparison']}"


def verdict_phrase(record: dict[str, Any] | None) -> str:
    """'estimate E, interval [L, H], n=N: VERDICT' for a claim record, or a note when there is none."""
    if record is None:
        return "no claim record"
    return f"estimate {format_number(record['estimate'])}, interval {format_interval(record['interval'])}, n={record['n']}: {record['verdict']}"


def _confidence(bootstrap: Bootstrap) -> str:
    return f"{bootstrap.confidence:.0%}"


# Figure 1 ---------------------------------------------------------------------


def validation_tables(record: dict[str, Any], bootstrap: Bootstrap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validation curves (mean and interval per role and epoch) and mean epochs to target of one epoch-reduction record."""
    details, baseline = record["details"], baseline_role(record)
    rows = [
        (role, seed, epoch, value)
        for role, key in (("mre", "mre_val_accuracy"), (baseline, "baseline_val_accuracy"))
        for seed, curve in zip(details["seeds"], details[key])
        for epoch, value in enumerate(curve, start=1)
    ]
    curves = summarise(pd.DataFrame(rows, columns=["role", "seed", "epoch", "value"]), ["role", "epoch"], "value", bootstrap)
    marks = pd.DataFrame({
        "role": ["mre", baseline],
        "epochs": [float(np.mean(details["mre_epochs"])), float(np.mean(details["baseline_epochs"]))],
    })
    return curves, marks


def validation_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Validation accuracy per epoch"
    records = available(results.claim_records("epoch-reduction"))
    if not records:
        return BuiltFigure("validation-accuracy", title, "", omitted="claims.json holds no epoch-reduction record computed from runs")

    comparisons = len({record["comparison"] for record in records})
    figure, axes = new_figure(*panel_grid_shape(len(records), max_columns=comparisons))
    sentences = []
    for ax, record in zip(axes.flat, records):
        curves, marks = validation_tables(record, bootstrap)
        target = record["details"]["target_accuracy"]
        plot_validation_curves(curves, marks, target, ax)
        style_axes(ax, title=panel_title(record), xlabel="epoch", ylabel="validation accuracy", legend_location="lower right")
        mre_epochs, base_epochs = marks["epochs"]
        sentences.append(
            f"{panel_title(record)}: target {format_number(target)}; mean epochs to target MRE {format_number(mre_epochs)}, "
            f"{baseline_role(record)} {format_number(base_epochs)}; reduction {verdict_phrase(record)}."
        )
    remove_unused_axes(axes, len(records))
    fraction = records[0]["details"]["target_fraction"]
    caption = (
        f"Validation accuracy per epoch, mean over seeds with its {_confidence(bootstrap)} bootstrap interval (band). "
        f"Dashed line: the target, {format_number(fraction)} times the baseline's mean best validation accuracy; "
        f"triangles: mean epochs to reach it. " + " ".join(sentences)
    )
    return BuiltFigure("validation-accuracy", title, caption, figure)


# Figure 2 ---------------------------------------------------------------------


def epochs_table(record: dict[str, Any]) -> pd.DataFrame:
    """Epochs per (role, seed) of an epoch-reduction or epoch-convergence record, with whether the run got there."""
    details, baseline = record["details"], baseline_role(record)
    rows = [
        (role, seed, epochs, reached)
        for role, prefix in (("mre", "mre"), (baseline, "baseline"))
        for seed, epochs, reached in zip(details["seeds"], details[f"{prefix}_epochs"], details[f"{prefix}_reached"])
    ]
    return pd.DataFrame(rows, columns=["role", "seed", "epochs", "reached"])


def epochs_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Epochs to target and to convergence per seed"
    records = available(results.claim_records("epoch-reduction") + results.claim_records("epoch-convergence"))
    if not records:
        return BuiltFigure("epochs-to-target", title, "", omitted="claims.json holds no epoch record computed from runs")

    comparisons = len({record["comparison"] for record in records})
    figure, axes = new_figure(*panel_grid_shape(len(records), max_columns=comparisons), panel_size=(4.0, 3.0))
    sentences = []
    for ax, record in zip(axes.flat, records):
        table = epochs_table(record)
        roles = ["mre", baseline_role(record)]
        plot_epochs_to_target(table, roles, ax)
        criterion = "target" if record["claim"] == "epoch-reduction" else "convergence"
        style_axes(ax, title=panel_title(record), ylabel=f"epochs to {criterion}")
        means = table.groupby("role")["epochs"].mean()
        capped = int((~table["reached"].astype(bool)).sum())
        sentences.append(
            f"{record['claim']} ({panel_title(record)}): mean MRE {format_number(means['mre'])}, {roles[1]} {format_number(means[roles[1]])} epochs, "
            f"{capped} run(s) at the cap; reduction {verdict_phrase(record)}."
        )
    remove_unused_axes(axes, len(records))
    caption = (
        "Epochs each seed needed, MRE against each MoE baseline; lines join the two runs of one seed. "
        "A hollow marker is a run that never reached the criterion and counts at its epoch cap. " + " ".join(sentences)
    )
    return BuiltFigure("epochs-to-target", title, caption, figure)


# Figure 3 ---------------------------------------------------------------------


def final_accuracy_tables(results: Results, dataset: str, bootstrap: Bootstrap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean test accuracy with interval per role (rows in role order) and the per-seed values, from summary.json."""
    entries = results.entries(dataset=dataset)
    seeds = pd.DataFrame(
        [(entry["role"], entry["seed"], entry["test_accuracy"]) for entry in entries], columns=["role", "seed", "test_accuracy"]
    )
    table = summarise(seeds, ["role"], "test_accuracy", bootstrap)
    table = table.set_index("role").loc[sort_roles(list(table["role"]))].reset_index()
    return table, seeds


def final_accuracy_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Final test accuracy"
    datasets = results.datasets
    if not datasets:
        return BuiltFigure("test-accuracy", title, "", omitted="summary.json lists no runs")

    figure, axes = new_figure(1, len(datasets), panel_size=(5.0, 3.6))
    sentences, rows = [], []
    for ax, dataset in zip(axes.flat, datasets):
        table, seeds = final_accuracy_tables(results, dataset, bootstrap)
        rows += [{"dataset": dataset, **row} for row in table.to_dict("records")]
        plot_test_accuracy(table, seeds, ax)
        style_axes(ax, title=dataset, ylabel="test accuracy", legend=False)
        listed = ", ".join(f"{row.role} {format_number(row.mean)} {format_interval((row.low, row.high))}" for row in table.itertuples())
        sentences.append(f"{dataset} (n={int(table['n'].max())} seeds): {listed}.")
    caption = (
        f"Final test accuracy per model: mean over seeds (black) with its {_confidence(bootstrap)} bootstrap interval, "
        "each seed beside it. " + " ".join(sentences)
    )
    return BuiltFigure("test-accuracy", title, caption, figure, table=rows)


# Figure 4 ---------------------------------------------------------------------


def _per_sample(record: dict[str, Any], key: str) -> np.ndarray:
    values = record["per_sample"].get(key)
    if values is None:
        raise ResultsError(f"run record {record['run_id']} has no per_sample.{key}; run `mre-repro reproduce` again to rewrite it")
    return np.asarray(values, dtype=float)


def difficulty_tables(results: Results, dataset: str, bootstrap: Bootstrap) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables of figure 4 for one data set: activations per difficulty bin, per-sample activations and outcome, group means.

    Difficulty is the dense baseline's test loss per sample (nats), mean over
    its seeds. Bins hold equal counts of test samples (ties kept in test-set
    order), bin 1 the easiest. Group means are the mean over MRE seeds of each
    seed's mean activations on its correct or misclassified samples.
    """
    dense = results.run_records(dataset=dataset, role="dense")
    mre = results.run_records(dataset=dataset, role="mre")
    difficulty = np.mean([_per_sample(record, "loss") for record in dense], axis=0)
    bins = np.array_split(np.argsort(difficulty, kind="stable"), DIFFICULTY_BINS)

    binned, samples, group_means = [], [], []
    for entry, record in zip(results.entries(dataset=dataset, role="mre"), mre):
        activations, correct = _per_sample(record, "activations"), _per_sample(record, "correct").astype(bool)
        if activations.size != difficulty.size:
            raise ResultsError(
                f"run record {record['run_id']} has {activations.size} per-sample activations but the dense runs have "
                f"{difficulty.size} test samples; the runs were not evaluated on the same test set"
            )
        binned += [(number_of_bin, entry["seed"], activations[index].mean()) for number_of_bin, index in enumerate(bins, start=1) if index.size]
        outcome = np.where(correct, "correct", "misclassified")
        samples.append(pd.DataFrame({"seed": entry["seed"], "activations": activations.astype(int), "outcome": outcome}))
        group_means += [(name, activations[outcome == name].mean()) for name in ("correct", "misclassified") if (outcome == name).any()]

    bin_table = summarise(pd.DataFrame(binned, columns=["bin", "seed", "value"]), ["bin"], "value", bootstrap)
    means = pd.DataFrame(group_means, columns=["outcome", "value"]).groupby("outcome", sort=True)["value"].mean()
    return bin_table, pd.concat(samples, ignore_index=True), means.rename("mean").reset_index()


def _record_for(results: Results, claim: str, dataset: str) -> dict[str, Any] | None:
    records = [record for record in available(results.claim_records(claim)) if record["dataset"] == dataset]
    return records[0] if records else None


def difficulty_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Activations per sample against difficulty"
    datasets = [dataset for dataset in results.datasets if results.entries(dataset=dataset, role="mre") and results.entries(dataset=dataset, role="dense")]
    if not datasets:
        return BuiltFigure("difficulty", title, "", omitted="the grid has no data set with both mre and dense runs")

    figure, axes = new_figure(len(datasets), 2)
    colour = role_colours(["mre"])["mre"]
    sentences = []
    for (left, right), dataset in zip(axes, datasets):
        bin_table, samples, means = difficulty_tables(results, dataset, bootstrap)
        plot_activations_by_difficulty(bin_table, left, colour)
        style_axes(left, title=dataset, xlabel="difficulty bin (1 = easiest)", ylabel="activations per sample")
        plot_activations_by_outcome(samples, means, right)
        style_axes(right, title=dataset, xlabel="activations per sample", ylabel="share of samples")
        first, last = bin_table["mean"].iloc[0], bin_table["mean"].iloc[-1]
        group = dict(zip(means["outcome"], means["mean"]))
        sentences.append(
            f"{dataset}: {format_number(first)} activations in the easiest bin and {format_number(last)} in the hardest; "
            f"Spearman correlation {verdict_phrase(_record_for(results, 'harder-samples', dataset))}. "
            f"Mean activations correct {format_number(group.get('correct'))}, misclassified {format_number(group.get('misclassified'))}; "
            f"rank-biserial correlation {verdict_phrase(_record_for(results, 'misclassified-more-experts', dataset))}."
        )
    caption = (
        f"Left: MRE activations per test sample (experts fired, summed over steps) in {DIFFICULTY_BINS} equal-count bins of "
        "difficulty, the dense baseline's test loss per sample averaged over its seeds; band: "
        f"{_confidence(bootstrap)} bootstrap interval over MRE seeds. Right: distribution of activations per sample over test "
        "samples and seeds, correct and misclassified samples each normalised to 1; dashed lines: each group's mean. "
        + " ".join(sentences)
    )
    return BuiltFigure("difficulty", title, caption, figure)


# Figure 5 ---------------------------------------------------------------------


def usage_maps(results: Results, dataset: str) -> dict[str, np.ndarray]:
    """Mean over seeds of `final.usage_test`, (s, e), for each role of USAGE_ROLES that the data set has."""
    maps = {}
    for role in USAGE_ROLES:
        records = results.run_records(dataset=dataset, role=role)
        if records:
            maps[role] = np.mean([np.asarray(record["final"]["usage_test"], dtype=float) for record in records], axis=0)
    return maps


def usage_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Expert usage per step"
    maps = {dataset: usage_maps(results, dataset) for dataset in results.datasets}
    maps = {dataset: by_role for dataset, by_role in maps.items() if by_role}
    if not maps:
        return BuiltFigure("expert-usage", title, "", omitted="the grid has no mre or top-k MoE runs")

    columns = max(len(by_role) for by_role in maps.values())
    figure, axes = new_figure(len(maps), columns, panel_size=(4.4, 2.6))
    vmax = max(float(usage.max()) for by_role in maps.values() for usage in by_role.values())
    sentences, rows = [], []
    for row, (dataset, by_role) in zip(axes, maps.items()):
        for index, (ax, (role, usage)) in enumerate(zip(row, by_role.items())):
            plot_usage_heatmap(usage, ax, vmax, colourbar=index == len(by_role) - 1)
            style_axes(ax, title=f"{dataset}, {role}", xlabel="expert", ylabel="step" if role.startswith("mre") else "MoE layer", legend=False)
        remove_unused_axes(row, len(by_role))
        entropies = {
            role: float(np.mean([usage_entropy(record["final"]["usage_test"]) for record in results.run_records(dataset=dataset, role=role)]))
            for role in by_role
        }
        rows += [{"dataset": dataset, "role": role, "usage entropy": value} for role, value in entropies.items()]
        listed = ", ".join(f"{role} {format_number(value)}" for role, value in entropies.items())
        sentences.append(f"{dataset}: normalised usage entropy, mean over seeds (1 = uniform): {listed}.")
    caption = (
        "Share of test samples that fire each expert at each MRE step or MoE layer, mean over seeds, for the MRE and the "
        "top-k MoE trained with and without the Switch load-balancing loss. " + " ".join(sentences)
    )
    return BuiltFigure("expert-usage", title, caption, figure, table=rows)


# Figure 6 ---------------------------------------------------------------------


def init_scale_tables(record: dict[str, Any], metric: str, bootstrap: Bootstrap) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tabulate one metric of the init-scale record's `scales`: mean and interval per scale, and the per-seed values."""
    rows = [(entry["scale"], seed, value) for entry in record["details"]["scales"] for seed, value in zip(entry["seeds"], entry[metric])]
    seeds = pd.DataFrame(rows, columns=["scale", "seed", "value"])
    return summarise(seeds, ["scale"], "value", bootstrap), seeds


def init_scale_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Router init-scale ablation"
    records = [record for record in available(results.claim_records("init-scale")) if record["details"].get("scales")]
    if not records:
        return BuiltFigure("init-scale", title, "", omitted="claims.json holds no init-scale record computed from runs")

    figure, axes = new_figure(len(records), len(INIT_SCALE_METRICS), panel_size=(3.6, 3.0))
    colour = role_colours(["mre"])["mre"]
    sentences = []
    for row, record in zip(axes, records):
        default_scale = next(entry["scale"] for entry in record["details"]["scales"] if entry["role"] == "mre")
        means = {}
        for ax, (metric, label) in zip(row, INIT_SCALE_METRICS):
            table, seeds = init_scale_tables(record, metric, bootstrap)
            plot_init_scale(table, seeds, default_scale, ax, colour)
            style_axes(ax, title=record["dataset"], xlabel="router init scale", ylabel=label, legend=metric == "early_entropy")
            means[label] = dict(zip(table["scale"], table["mean"]))
        per_scale = "; ".join(
            f"scale {scale:g}: " + ", ".join(f"{label} {format_number(values[scale])}" for label, values in means.items())
            for scale in sorted(means[INIT_SCALE_METRICS[0][1]])
        )
        accuracy = record["details"]["accuracy_difference"]
        sentences.append(
            f"{panel_title(record)}: {per_scale}. First-epoch entropy difference {verdict_phrase(record)}; "
            f"accuracy difference {format_number(accuracy['estimate'])}."
        )
    caption = (
        f"Usage entropy after the first epoch and at the end, and final test accuracy, against the router init scale; mean over "
        f"seeds with its {_confidence(bootstrap)} bootstrap interval, grey dots per seed, dotted line the default sqrt(N_e + 1). "
        + " ".join(sentences)
    )
    return BuiltFigure("init-scale", title, caption, figure)


# Figure 7 ---------------------------------------------------------------------


def step_accuracy_table(records: Sequence[dict[str, Any]], bootstrap: Bootstrap) -> pd.DataFrame:
    """Mean and interval over seeds of MRE test accuracy after each step, per data set, from anytime records."""
    rows = [
        (record["dataset"], seed, step, value)
        for record in records
        for seed, accuracies in zip(record["details"]["seeds"], record["details"]["per_seed"])
        for step, value in enumerate(accuracies, start=1)
    ]
    return summarise(pd.DataFrame(rows, columns=["dataset", "seed", "step", "value"]), ["dataset", "step"], "value", bootstrap)


def step_accuracy_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Test accuracy at each step"
    records = available(results.claim_records("anytime"))
    if not records:
        return BuiltFigure("step-accuracy", title, "", omitted="claims.json holds no anytime record computed from runs")

    figure, axes = new_figure(1, 1, panel_size=(5.0, 3.4))
    table = step_accuracy_table(records, bootstrap)
    plot_step_accuracy(table, axes[0, 0])
    style_axes(axes[0, 0], xlabel="step", ylabel="test accuracy")
    sentences = []
    for record in records:
        rows = table[table["dataset"] == record["dataset"]].sort_values("step")
        sentences.append(
            f"{record['dataset']}: {format_number(rows['mean'].iloc[0])} after step 1, {format_number(rows['mean'].iloc[-1])} after step "
            f"{int(rows['step'].iloc[-1])}; last minus first step {verdict_phrase(record)}."
        )
    caption = (
        f"MRE test accuracy of the prediction after each step, mean over seeds with its {_confidence(bootstrap)} bootstrap "
        "interval. " + " ".join(sentences)
    )
    return BuiltFigure("step-accuracy", title, caption, figure, table=table.to_dict("records"))


# Figure 8 ---------------------------------------------------------------------


def verdict_matrix(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Verdicts with rows "claim [comparison]" and columns data set (data set and reading on two lines when several readings appear)."""
    several_readings = len({record.get("reading") for record in records}) > 1
    cells: dict[str, dict[str, str]] = {}
    columns: list[str] = []
    for record in records:
        row = record["claim"] if not record["comparison"] else f"{record['claim']} {record['comparison']}"
        column = f"{record['dataset']}\n{record.get('reading')}" if several_readings else str(record["dataset"])
        cells.setdefault(row, {})[column] = record["verdict"]
        columns += [column] if column not in columns else []
    matrix = pd.DataFrame.from_dict(cells, orient="index").reindex(columns=columns)
    return matrix.astype(object).where(matrix.notna(), None)


def verdict_figure(results: Results, bootstrap: Bootstrap) -> BuiltFigure:
    title = "Verdicts"
    records = [*results.claims["records"], *results.other_reading_records]
    if not records:
        return BuiltFigure("verdicts", title, "", omitted="claims.json holds no records")

    matrix = verdict_matrix(records)
    figure = Figure(figsize=(3.0 + 1.6 * matrix.shape[1], 0.8 + 0.38 * matrix.shape[0]), layout="constrained")
    ax = figure.subplots()
    plot_verdict_matrix(matrix, ax)
    counts = pd.Series([record["verdict"] for record in records]).value_counts()
    listed = ", ".join(f"{int(counts.get(verdict, 0))} {verdict}" for verdict in VERDICTS)
    caption = f"Verdict of each claim record by data set; {len(records)} records: {listed}. Blank: not evaluated."
    return BuiltFigure("verdicts", title, caption, figure)


FIGURE_BUILDERS = (
    validation_figure,
    epochs_figure,
    final_accuracy_figure,
    difficulty_figure,
    usage_figure,
    init_scale_figure,
    step_accuracy_figure,
    verdict_figure,
)


def build_figures(results: Results) -> list[BuiltFigure]:
    """Draw every figure of the report from `results`, in report order."""
    bootstrap = interval_settings()
    with figure_style():
        return [builder(results, bootstrap) for builder in FIGURE_BUILDERS]


def write_figures(built: Sequence[BuiltFigure], directory: Path) -> list[Path]:
    """Write each drawn figure as PNG and SVG under `directory`; return the paths."""
    paths = []
    with figure_style():
        for entry in built:
            if entry.figure is not None:
                paths += save_figure(entry.figure, directory, entry.name)
    return paths
