"""Generate benchmarks/README.md and the early-exit curve from one saved pytest-benchmark JSON.

    python benchmarks/make_readme.py benchmarks/results/latest.json --summary paper/build/summary.json

Every number in the README comes from the JSON (or from the summary.json of
`mre-repro reproduce`); every ratio divides two medians of the same run. The
text around the numbers is `README.md.j2` in this folder.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import statistics
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import torch

from mre_repro import engine
from mre_repro.config import ModelConfig
from mre_repro.experts import use_sparse_dispatch
from mre_repro.profiles import build_grid, get_profile
from mre_repro.readings import DEFAULT_READING
from mre_repro.store import atomic_path

HERE = Path(__file__).resolve().parent
TEMPLATE = "README.md.j2"
PLOT_NAME = "early_exit.png"

# Goals the README reports against; measured, never asserted.
GOAL_MRE_OVER_TOP1 = 1.25  # MRE training step / top-1 MoE training step, batch 512
GOAL_MRE_OVER_DENSE = 2.0  # MRE training step / dense training step of equal active FLOPs, batch 512
GOAL_MATMUL_SHARE_OF_PEAK = 0.40  # expert matmul FLOP/s / measured matmul peak, batch 2048
GOAL_PROFILE_MINUTES = 15.0  # wall time of `mre-repro reproduce --profile cpu`
GOAL_BATCH, FLOPS_BATCH = 512, 2048
# The shape of the `cpu` profile, used for the goal rows.
GOAL_WIDTH, GOAL_EXPERTS = 64, 8
# A compiled step must be at least this much faster than the eager one to
# count as a gain, a margin for run-to-run noise on a shared machine.
COMPILE_GAIN_MARGIN = 0.10
# Calls that copy a tensor to the host, forcing a device synchronisation.
HOST_READ_METHODS = frozenset({"item", "tolist", "cpu", "numpy"})
HOST_READ_BUILTINS = frozenset({"float", "int", "bool"})


@dataclass(frozen=True)
class Case:
    """One benchmark of the JSON: its name, `extra_info` and median seconds per call."""

    name: str
    info: dict[str, Any]
    seconds: float

    def __getitem__(self, key: str) -> Any:
        return self.info.get(key)


def load_cases(raw: dict[str, Any]) -> list[Case]:
    """Read every benchmark; GPU cases use the median of their CUDA-event timings."""
    cases = []
    for bench in raw["benchmarks"]:
        info = bench["extra_info"]
        seconds = statistics.median(info["cuda_seconds"]) if info.get("cuda_seconds") else bench["stats"]["median"]
        cases.append(Case(bench["name"], info, seconds))
    return cases


def select(cases: list[Case], **fields: Any) -> list[Case]:
    return [case for case in cases if all(case[key] == value for key, value in fields.items())]


# Header --------------------------------------------------------------------------


def run_header(raw: dict[str, Any], json_path: Path) -> dict[str, Any]:
    machine = raw.get("machine_info", {})
    commit = raw.get("commit_info", {})
    date = raw.get("datetime")
    return {
        "date": "unknown" if date is None else datetime.fromisoformat(date).strftime("%Y-%m-%d %H:%M UTC"),
        "command": raw.get("command", "unknown"),
        "scope": raw.get("bench_scope", "unknown"),
        "machine": machine.get("device_description") or machine.get("cpu", {}).get("brand_raw", "unknown"),
        "torch": machine.get("torch", "unknown"),
        "threads": machine.get("torch_threads", "unknown"),
        "startup_threads": machine.get("torch_startup_threads", "unknown"),
        "omp_num_threads": machine.get("omp_num_threads"),
        "load_start": machine.get("load_average_at_start"),
        "load_end": machine.get("load_average_at_end"),
        "python": machine.get("python_version", "unknown"),
        "commit": (commit.get("id") or "unknown")[:12],
        "dirty": commit.get("dirty"),
        "json_path": json_path.as_posix(),
    }


# Ratios -----------------------------------------------------------------------------


def step_cases(cases: list[Case], kind: str = "train_step") -> list[Case]:
    return [case for case in select(cases, kind=kind) if not case["compiled"]]


def mre_over_top1(cases: list[Case]) -> list[dict[str, Any]]:
    """MRE training step / top-1 MoE training step at the same batch size, width and expert count."""
    steps = step_cases(cases)
    rows = []
    for mre in select(steps, model="mre"):
        for top1 in select(steps, case="top1-moe", batch_size=mre["batch_size"], width=mre["width"], experts=mre["experts"]):
            rows.append({"mre": mre, "baseline": top1, "ratio": mre.seconds / top1.seconds})
    return rows


def mre_over_dense(cases: list[Case]) -> list[dict[str, Any]]:
    """MRE training step / dense training step whose FLOPs per sample are nearest the MRE's.

    `equal_factor` is the dense width factor of exactly equal FLOPs, found by
    linear interpolation: dense FLOPs grow linearly with the factor.
    """
    steps = step_cases(cases)
    rows = []
    for mre in select(steps, model="mre"):
        dense = sorted(select(steps, model="dense", batch_size=mre["batch_size"], width=mre["width"]), key=lambda case: case["dense_width_factor"])
        if not dense:
            continue
        nearest = min(dense, key=lambda case: abs(math.log(case["flops_per_sample"] / mre["flops_per_sample"])))
        rows.append(
            {
                "mre": mre,
                "baseline": nearest,
                "ratio": mre.seconds / nearest.seconds,
                "flops_ratio": mre["flops_per_sample"] / nearest["flops_per_sample"],
                "equal_factor": equal_flops_factor(mre["flops_per_sample"], dense),
            }
        )
    return rows


def equal_flops_factor(flops: float, dense: list[Case]) -> float | None:
    if len(dense) < 2:
        return None
    low, high = dense[0], dense[-1]
    per_factor = (high["flops_per_sample"] - low["flops_per_sample"]) / (high["dense_width_factor"] - low["dense_width_factor"])
    return low["dense_width_factor"] + (flops - low["flops_per_sample"]) / per_factor


def matmul_peak(cases: list[Case]) -> dict[str, Any] | None:
    """Return the square matmul case with the highest FLOP/s, or None when the run has none."""
    peaks = [{"case": case, "flops_per_second": case["flops"] / case.seconds} for case in select(cases, kind="matmul_peak")]
    return max(peaks, key=lambda peak: peak["flops_per_second"], default=None)


def expert_flops_rows(cases: list[Case], peak: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Achieved FLOP/s of the expert matmuls at batch 2048, as a share of the matmul peak."""
    if peak is None:
        return []
    rows = []
    for case in select(cases, kind="expert_execution", batch_size=FLOPS_BATCH):
        active = case["active_flops"] / case.seconds
        executed = case["executed_flops"] / case.seconds
        rows.append({"case": case, "active": active, "executed": executed, "active_share": active / peak["flops_per_second"], "executed_share": executed / peak["flops_per_second"]})
    return sorted(rows, key=lambda row: (row["case"]["pass"], row["case"]["router"], row["case"]["experts"], row["case"]["width"], row["case"]["path"]))


def step_flops_rows(cases: list[Case], peak: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Expert FLOP/s inside whole training steps at batch 2048 (3x the forward FLOPs for the backward pass)."""
    if peak is None:
        return []
    rows = []
    for case in select(step_cases(cases), batch_size=FLOPS_BATCH):
        achieved = 3 * case["expert_flops_per_sample"] * case["batch_size"] / case.seconds
        rows.append({"case": case, "active": achieved, "active_share": achieved / peak["flops_per_second"]})
    return rows


# Expert execution rule -------------------------------------------------------------------


def rule_choice(kind: str, case: Case) -> str:
    """Return the path that `use_sparse_dispatch` picks under "auto" for the case's shape and pass."""
    return auto_path(kind, case["experts"], case["width"], case["batch_size"], train=case["pass"] == "train", one_per_sample=case["router"] == "categorical")


def auto_path(kind: str, experts: int, width: int, batch_size: int, *, train: bool, one_per_sample: bool) -> str:
    config = ModelConfig(kind=kind, experts=experts, width=width, expert_hidden=width)
    with torch.set_grad_enabled(train):
        sparse = use_sparse_dispatch(config, batch_size, one_per_sample=one_per_sample)
    return "sparse-dispatch" if sparse else "dense-masked"


def rule_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """Dense-masked against sparse dispatch per shape, the faster path and the rule's choices."""
    grouped: dict[tuple, dict[str, Case]] = defaultdict(dict)
    for case in select(cases, kind="expert_execution"):
        grouped[(case["pass"], case["router"], case["experts"], case["width"], case["batch_size"])][case["path"]] = case
    rows = []
    for key in sorted(grouped):
        paths = grouped[key]
        if len(paths) < 2:
            continue
        dense, sparse = paths["dense-masked"], paths["sparse-dispatch"]
        faster = "sparse-dispatch" if sparse.seconds < dense.seconds else "dense-masked"
        choice = {kind: rule_choice(kind, dense) for kind in ("mre", "topk-moe")}
        rows.append({"dense": dense, "sparse": sparse, "speedup": dense.seconds / sparse.seconds, "faster": faster, "choice": choice})
    return rows


def rule_agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Count how often the rule picks the faster path for the baselines, and the cost where it does not."""
    missed = [row for row in rows if row["choice"]["topk-moe"] != row["faster"]]
    slowdowns = [max(row["speedup"], 1 / row["speedup"]) for row in missed]
    return {"agreed": len(rows) - len(missed), "total": len(rows), "worst_slowdown": max(slowdowns, default=None)}


def rule_docstring() -> str:
    return inspect.getdoc(use_sparse_dispatch) or ""


# Other sections -------------------------------------------------------------------------


def compile_rows(cases: list[Case]) -> list[dict[str, Any]]:
    rows = []
    for compiled in select(cases, kind="train_step", compiled=True):
        for eager in select(step_cases(cases), case=compiled["case"], batch_size=compiled["batch_size"], width=compiled["width"], experts=compiled["experts"]):
            ratio = compiled.seconds / eager.seconds
            rows.append({"compiled": compiled, "eager": eager, "ratio": ratio, "helps": ratio < 1 - COMPILE_GAIN_MARGIN})
    return rows


def thread_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """Training step with all CPU threads / with one thread, per model and batch size."""
    grouped: dict[tuple, dict[int, Case]] = defaultdict(dict)
    for case in select(cases, kind="threads"):
        grouped[(case["case"], case["batch_size"])][case["threads"]] = case
    rows = []
    for (name, batch_size), by_threads in sorted(grouped.items()):
        single, multiple = by_threads.get(1), by_threads[max(by_threads)]
        if single is None or single is multiple:
            continue
        rows.append({"case": name, "batch_size": batch_size, "one": single, "all": multiple, "ratio": multiple.seconds / single.seconds})
    return rows


def early_exit_rows(cases: list[Case]) -> list[dict[str, Any]]:
    """Latency per sample and quality per exit setting, relative to running every step at the same batch size."""
    rows = []
    for case in select(cases, kind="early_exit"):
        full_depth = select(cases, kind="early_exit", reading=case["reading"], batch_size=case["batch_size"], exit_threshold=None, max_steps=None)
        per_sample = case.seconds / case["timed_samples"]
        baseline = full_depth[0].seconds / full_depth[0]["timed_samples"] if full_depth else None
        rows.append({"case": case, "latency": per_sample, "speedup": None if baseline is None else baseline / per_sample})
    return sorted(rows, key=lambda row: (row["case"]["reading"], row["case"]["batch_size"], row["case"]["max_steps"] or 99, -(row["case"]["exit_threshold"] or 2)))


def epoch_rows(cases: list[Case]) -> list[dict[str, Any]]:
    rows = [{"case": case, "full_epoch_seconds": case.seconds / case["fraction_of_fashion_mnist"]} for case in select(cases, kind="epoch")]
    return sorted(rows, key=lambda row: (row["case"]["samples"], row["case"]["case"]))


def host_reads_in_training_loop() -> list[str]:
    """Lines of the batch loop of `engine.train_epoch` that copy a tensor to the host (a static check)."""
    source = textwrap.dedent(inspect.getsource(engine.train_epoch))
    loop = next(node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.For))
    found = []
    for node in ast.walk(loop):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if (isinstance(function, ast.Attribute) and function.attr in HOST_READ_METHODS) or (isinstance(function, ast.Name) and function.id in HOST_READ_BUILTINS):
            found.append(ast.get_source_segment(source, node))
    return found


def profile_wall_seconds(summary_path: Path | None) -> float | None:
    """Return the training wall time of a summary.json of the `cpu` profile, or None without one.

    `training_span_seconds` (first run's start to last run's end) is used,
    because `wall_seconds` of a summary rebuilt from finished runs is only the
    time to look them up.
    """
    if summary_path is None or not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    if summary.get("profile") != "cpu":
        return None
    span = summary.get("training_span_seconds")
    return float(span if span is not None else summary["wall_seconds"])


# Goals ------------------------------------------------------------------------------------


def goal_row(name: str, measured: float | None, target: float, unit: str, higher_is_better: bool = False) -> dict[str, Any]:
    """Build one goal row with its status; `unit` is "x" for ratios, "%" for shares, "min" for minutes."""
    if measured is None:
        return {"name": name, "target": target, "measured": None, "unit": unit, "met": None, "miss_factor": None}
    if higher_is_better:
        met, miss_factor = measured >= target, target / measured
    else:
        met, miss_factor = measured <= target, measured / target
    if met:
        miss_factor = None
    return {"name": name, "target": target, "measured": measured, "unit": unit, "met": met, "miss_factor": miss_factor}


def goal_shape(row: dict[str, Any], forced: str | None) -> bool:
    """Whether the row's MRE has the goal shape, with `forced` execution (None: the "auto" default)."""
    mre = row["mre"]
    shape = (mre["batch_size"], mre["width"], mre["experts"]) == (GOAL_BATCH, GOAL_WIDTH, GOAL_EXPERTS)
    return shape and mre["forced_execution"] == forced and (forced is not None or mre["reading"] == DEFAULT_READING)


def goal_evidence(context: dict[str, Any]) -> dict[str, Any]:
    """Pick the rows behind each goal: the default MRE at the goal shape and what it is compared with."""
    top1 = [row for row in context["mre_over_top1"] if goal_shape(row, forced=None)]
    forced = [row for row in context["mre_over_top1"] if goal_shape(row, forced="sparse-dispatch")]
    dense = [row for row in context["mre_over_dense"] if goal_shape(row, forced=None)]
    mre_training_path = auto_path("mre", GOAL_EXPERTS, GOAL_WIDTH, FLOPS_BATCH, train=True, one_per_sample=False)
    flops = [
        row
        for row in context["expert_flops"]
        if (row["case"]["pass"], row["case"]["router"], row["case"]["experts"], row["case"]["width"], row["case"]["path"])
        == ("train", "poisson-window", GOAL_EXPERTS, GOAL_WIDTH, mre_training_path)
    ]
    return {
        "top1": top1[0] if top1 else None,
        "top1_forced_sparse": forced,
        "dense": dense[0] if dense else None,
        "flops": flops[0] if flops else None,
    }


def goal_rows(context: dict[str, Any]) -> list[dict[str, Any]]:
    evidence = context["evidence"]
    top1 = None if evidence["top1"] is None else evidence["top1"]["ratio"]
    dense = None if evidence["dense"] is None else evidence["dense"]["ratio"]
    share = None if evidence["flops"] is None else evidence["flops"]["active_share"]
    wall = context["profile_wall_seconds"]
    return [
        goal_row(f"MRE ({DEFAULT_READING}) training step / top-1 MoE training step, batch {GOAL_BATCH}", top1, GOAL_MRE_OVER_TOP1, "x"),
        goal_row(f"MRE ({DEFAULT_READING}) training step / dense training step of equal active FLOPs, batch {GOAL_BATCH}", dense, GOAL_MRE_OVER_DENSE, "x"),
        goal_row(f"expert matmul FLOP/s / matmul peak, batch {FLOPS_BATCH}", share, GOAL_MATMUL_SHARE_OF_PEAK, "%", higher_is_better=True),
        goal_row("wall time of `mre-repro reproduce --profile cpu`", None if wall is None else wall / 60, GOAL_PROFILE_MINUTES, "min"),
    ]


def profile_training_estimate(epochs: list[dict[str, Any]]) -> float | None:
    """Estimate the training seconds of the `cpu` profile from the full-epoch medians of this run.

    Every grid run costs its epochs x the epoch median of its model; the
    router-init ablation counts as the default MRE. Evaluation is left out.
    Returns None when a model of the grid has no epoch case.
    """
    seconds_per_epoch = {row["case"]["case"]: row["full_epoch_seconds"] for row in epochs}
    total = 0.0
    for run in build_grid(get_profile("cpu")):
        model = run.config.model
        case_id = {"mre": f"mre-{run.config.reading.name}", "topk-moe": f"top{model.top_k}-moe", "dense": f"dense-x{model.dense_width_factor}"}.get(model.kind, model.kind)
        if case_id not in seconds_per_epoch:
            return None
        total += run.config.train.epochs * seconds_per_epoch[case_id]
    return total


# Rendering ----------------------------------------------------------------------------------


def build_context(raw: dict[str, Any], json_path: Path, summary_path: Path | None) -> dict[str, Any]:
    cases = load_cases(raw)
    peak = matmul_peak(cases)
    rules = rule_rows(cases)
    context = {
        "run": run_header(raw, json_path),
        "default_reading": DEFAULT_READING,
        "goal_batch": GOAL_BATCH,
        "flops_batch": FLOPS_BATCH,
        "mre_over_top1": mre_over_top1(cases),
        "mre_over_dense": mre_over_dense(cases),
        "peak": peak,
        "expert_flops": expert_flops_rows(cases, peak),
        "step_flops": step_flops_rows(cases, peak),
        "rule_rows": rules,
        "rule_agreement": rule_agreement(rules),
        "rule_docstring": rule_docstring(),
        "compile_rows": compile_rows(cases),
        "thread_rows": thread_rows(cases),
        "compile_gain_margin": COMPILE_GAIN_MARGIN,
        "profiles": sorted(select(cases, kind="profile"), key=lambda case: case["case"]),
        "early_exit": early_exit_rows(cases),
        "plot_name": PLOT_NAME,
        "epochs": epoch_rows(cases),
        "train_steps": sorted(step_cases(cases), key=step_sort_key),
        "inference_steps": sorted(step_cases(cases, "inference"), key=step_sort_key),
        "host_reads": host_reads_in_training_loop(),
        "gpu_sync_counts": [case for case in select(cases, kind="epoch") if case["host_syncs"] is not None],
        "profile_wall_seconds": profile_wall_seconds(summary_path),
        "summary_path": None if summary_path is None else summary_path.as_posix(),
    }
    context["evidence"] = goal_evidence(context)
    context["goals"] = goal_rows(context)
    context["profile_training_estimate"] = profile_training_estimate(context["epochs"])
    return context


def step_sort_key(case: Case) -> tuple:
    return (case["batch_size"], case["width"], case["experts"] or 0, case["case"])


def template_environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(ms=format_milliseconds, ratio=lambda value: f"{value:.2f}x", percent=lambda value: f"{100 * value:.1f}%", sig=format_significant)
    return environment


def format_milliseconds(seconds: float) -> str:
    return f"{format_significant(seconds * 1e3)} ms"


def format_significant(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if value == 0 or abs(value) >= 10 ** digits:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Generate benchmarks/README.md and the early-exit curve from a pytest-benchmark JSON.")
    parser.add_argument("json", type=Path, help="JSON written by pytest benchmarks/ --benchmark-json=PATH")
    parser.add_argument("--summary", type=Path, default=None, help="summary.json of `mre-repro reproduce --profile cpu`, for its wall time")
    parser.add_argument("--out", type=Path, default=HERE / "README.md", help="README to write (default: benchmarks/README.md)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from plot_early_exit import plot_early_exit

    arguments = parse_arguments(argv)
    if not arguments.json.is_file():
        print(f"error: benchmark JSON {arguments.json} not found; run pytest benchmarks/ --benchmark-json={arguments.json} first", file=sys.stderr)
        return 2
    raw = json.loads(arguments.json.read_text())
    context = build_context(raw, arguments.json, arguments.summary)
    context["plot_written"] = plot_early_exit([row for row in context["early_exit"]], arguments.out.parent / PLOT_NAME)

    text = template_environment().get_template(TEMPLATE).render(**context)
    with atomic_path(arguments.out) as temporary:
        temporary.write_text(text)
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
