"""Reports rendered from stored results through Jinja templates.

Templates live in `paper/templates/`. They render with `StrictUndefined`, so
a value missing from the results fails the render instead of leaving a blank.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from mre_repro.reproduce import aggregate_by_role
from mre_repro.store import atomic_path

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "paper" / "templates"


def template_environment(templates_dir: Path = TEMPLATES_DIR) -> jinja2.Environment:
    if not templates_dir.is_dir():
        raise FileNotFoundError(
            f"report templates not found in {templates_dir}; run mre-repro from a checkout of the repository "
            "(pip install -e .), where paper/templates/ sits beside the package"
        )
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
    )


def render_to_file(environment: jinja2.Environment, template: str, path: Path, context: dict[str, Any]) -> Path:
    text = environment.get_template(template).render(**context)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


# The paper artifact's reports: report.html, report.md and claims_table.tex ----
#
# `build_report_context` gathers everything the three templates show from a
# loaded results folder and the drawn figures; `write_reports` renders them.

REPOSITORY_ROOT = TEMPLATES_DIR.parent.parent
PAPER_TITLE = "Mixture of Raytraced Experts"
PAPER_AUTHORS = "Perin, Lagomarsini, Gallicchio, Nuti"
ARXIV_ID = "2507.12419"
INTERPRETATION_FILE = "paper/INTERPRETATION.md"
INTERPRETATION_COLUMNS = ("question", "default", "alternatives", "reason", "measurement")
TOLERANCES_FILE = "claims/tolerances.toml"
REPORT_TEMPLATES = {"report.html.j2": "report.html", "report.md.j2": "report.md", "claims_table.tex.j2": "claims_table.tex"}

# Characters LaTeX treats specially, with the text-mode sequence that prints each.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
}


def format_number(value: Any) -> str:
    """Format a number with 3 significant digits (as the claim reasons do); None as "n/a", a list item by item."""
    if value is None:
        return "n/a"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_number(item) for item in value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3g}"


def format_mean_sd(statistic: dict[str, float] | None, scale: float = 1.0) -> str:
    """Format {"mean", "sd"} as "mean ± sd" with 2 decimals after multiplying by `scale`; None as "n/a"."""
    if statistic is None:
        return "n/a"
    return f"{statistic['mean'] * scale:.2f} ± {statistic['sd'] * scale:.2f}"


def format_percent(fraction: float) -> str:
    return f"{fraction:.0%}"


def format_interval(interval: Any) -> str:
    return "n/a" if not interval else f"[{format_number(interval[0])}, {format_number(interval[1])}]"


def escape_latex(text: Any) -> str:
    return re.sub(r"[\\&%$#_{}~^<>]", lambda match: LATEX_ESCAPES[match.group()], str(text))


def escape_markdown_cell(text: Any) -> str:
    """Make `text` safe inside a Markdown table cell: escape pipes, fold line breaks."""
    return " ".join(str(text).replace("|", "\\|").split())


def markdown_code_to_html(text: Any) -> markupsafe.Markup:
    """Escape `text` for HTML and turn its Markdown code spans (`like this`) into <code> elements."""
    escaped = str(markupsafe.escape(text))
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def add_report_filters(environment: jinja2.Environment) -> jinja2.Environment:
    environment.filters.update(
        number=format_number, mean_sd=format_mean_sd, percent=format_percent, interval=format_interval, latex=escape_latex, md_cell=escape_markdown_cell,
        code_spans=markdown_code_to_html,
    )
    return environment


# Interpretation table ----------------------------------------------------------


def parse_interpretation(path: Path) -> dict[str, Any]:
    """Read the Markdown table with header INTERPRETATION_COLUMNS from `path`.

    Returns {"rows": [dict per row] or None, "message": why there are no rows}.
    Cells keep their Markdown text, with escaped pipes unescaped.
    """
    if not path.is_file():
        return {"rows": None, "message": f"{INTERPRETATION_FILE} not found in this checkout, so the interpretation table is missing"}

    lines = path.read_text().splitlines()
    header = next((index for index, line in enumerate(lines) if _is_interpretation_header(line)), None)
    if header is None:
        columns = " | ".join(INTERPRETATION_COLUMNS)
        return {"rows": None, "message": f"{INTERPRETATION_FILE} has no table with the header | {columns} |"}

    rows = []
    for line in lines[header + 2:]:  # header + 1 is the |---| separator
        cells = _table_cells(line)
        if cells is None:
            break
        rows.append(dict(zip(INTERPRETATION_COLUMNS, cells + [""] * (len(INTERPRETATION_COLUMNS) - len(cells)))))
    return {"rows": rows, "message": ""}


def _is_interpretation_header(line: str) -> bool:
    cells = _table_cells(line)
    return cells is not None and [cell.lower() for cell in cells] == list(INTERPRETATION_COLUMNS)


def _table_cells(line: str) -> list[str] | None:
    """Cells of one Markdown table row, or None when `line` is not a table row."""
    stripped = line.strip()
    if not stripped.startswith("|"):
        return None
    cells = re.split(r"(?<!\\)\|", stripped.strip("|"))
    return [cell.strip().replace("\\|", "|") for cell in cells]


# Deviations: changes to the pre-registered tolerances -------------------------


def tolerance_deviations(repository: Path = REPOSITORY_ROOT) -> dict[str, Any]:
    """Commits that changed the tolerances file after the one that first added it, newest first.

    Returns {"available": bool, "message": str, "commits": [{hash, date,
    subject, changes}], "uncommitted": bool}; `changes` are the diff's
    added and removed lines. Without git or outside a git checkout,
    "available" is False and the message explains why.
    """
    separator, field = "\x1e", "\x1f"
    try:
        log = _git_output(repository, "log", "--follow", "-p", f"--format={separator}%H{field}%aI{field}%s", "--", TOLERANCES_FILE)
        status = _git_output(repository, "status", "--porcelain", "--", TOLERANCES_FILE)
    except FileNotFoundError:
        return {"available": False, "message": "git is not installed, so changes to the tolerances cannot be listed", "commits": [], "uncommitted": False}
    except subprocess.CalledProcessError as err:
        reason = (err.stderr or "").strip().splitlines()[:1] or [f"exit status {err.returncode}"]
        return {"available": False, "message": f"git history unavailable ({reason[0]})", "commits": [], "uncommitted": False}

    commits = []
    for chunk in log.split(separator)[1:]:
        header, _, diff = chunk.partition("\n")
        commit, date, subject = header.split(field, 2)
        changes = [line for line in diff.splitlines() if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
        commits.append({"hash": commit, "short_hash": commit[:12], "date": date, "subject": subject, "changes": changes})
    later = commits[:-1]  # the oldest commit is the pre-registration itself
    message = "" if later else f"no commit changed {TOLERANCES_FILE} after the one that added it"
    return {"available": True, "message": message, "commits": later, "uncommitted": bool(status.strip())}


def _git_output(repository: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(repository), *args], check=True, capture_output=True, text=True, timeout=30
    )
    return completed.stdout


# Context ---------------------------------------------------------------------


def build_report_context(results: Any, figures: list[Any], out: Path, results_argument: Path) -> dict[str, Any]:
    """Everything the report templates show, from a loaded results folder and its drawn figures.

    `results` is an `mre_repro.artifact.Results`, `figures` the list from
    `mre_repro.figures.build_figures`. `results_argument` is the results
    folder as the user named it, used in the commands the report prints.
    """
    claims = results.claims
    records = claims["records"]
    return {
        "paper": {"title": PAPER_TITLE, "authors": PAPER_AUTHORS, "arxiv_id": ARXIV_ID, "arxiv_url": f"https://arxiv.org/abs/{ARXIV_ID}"},
        "profile": results.profile,
        "reading": claims["reading"],
        "code_version": claims["code_version"],
        "claims_generated_at": claims["generated_at"],
        "runs_finished": _finished_span(results),
        "confidence": records[0]["confidence"] if records else None,
        "claims": records,
        "model_rows": aggregate_by_role(results.summary),
        "verdict_counts": _verdict_counts(records),
        "figures": [figure for figure in figures if figure.figure is not None],
        "omitted_figures": [figure for figure in figures if figure.figure is None],
        "interpretation": parse_interpretation(REPOSITORY_ROOT / INTERPRETATION_FILE),
        "deviations": tolerance_deviations(),
        "environment": _environments(results),
        "commands": _commands(results, results_argument),
        "runs": _run_rows(results),
        "badges": _badge_files(records),
    }


def _finished_span(results: Any) -> dict[str, str]:
    started = [record["provenance"].get("started_at") for record in results.records.values()]
    finished = [record["provenance"].get("finished_at") for record in results.records.values()]
    started, finished = [value for value in started if value], [value for value in finished if value]
    return {"first_started": min(started, default="unknown"), "last_finished": max(finished, default="unknown")}


def _verdict_counts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record["verdict"]] += 1
    return [{"verdict": verdict, "count": count} for verdict, count in sorted(counts.items())]


def _environments(results: Any) -> list[dict[str, Any]]:
    """Distinct software and device combinations of the runs, each with how many runs used it."""
    keys = ("python", "torch", "torchvision", "numpy", "device")
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for record in results.records.values():
        counts[tuple(str(record["provenance"].get(key, "unknown")) for key in keys)] += 1
    return [{**dict(zip(keys, combination)), "runs": runs} for combination, runs in sorted(counts.items())]


def _commands(results: Any, results_argument: Path) -> dict[str, Any]:
    from mre_repro.profiles import PROFILES

    profile = PROFILES.get(results.profile)
    gpu = " --gpu" if profile is not None and profile.device == "cuda" else ""
    folder = results_argument.as_posix()
    other_readings = sorted({record["reading"] for record in results.other_reading_records})
    return {
        "reproduce": f"mre-repro reproduce --profile {results.profile} --reading {results.claims['reading']}{gpu} --out {folder}",
        "other_readings": [
            f"mre-repro reproduce --profile {results.profile} --reading {reading}{gpu} --out {folder}" for reading in other_readings
        ],
        "report": f"mre-repro report --results {folder}",
        "badges": f"mre-repro badges --results {folder}",
    }


def _run_rows(results: Any) -> list[dict[str, Any]]:
    rows = []
    for entry in sorted(results.summary["runs"], key=lambda entry: (entry["dataset"], entry["role"], entry["seed"])):
        provenance = results.records[entry["run_id"]]["provenance"]
        rows.append({**entry, "finished_at": provenance.get("finished_at", "unknown"), "git_commit": provenance.get("git_commit", "unknown")})
    return rows


def _badge_files(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    from mre_repro.badges import badge_name

    claims = list(dict.fromkeys(record["claim"] for record in records))
    return [{"claim": "overall", "svg": "badges/overall.svg"}] + [{"claim": claim, "svg": f"badges/{badge_name(claim)}.svg"} for claim in claims]


def write_reports(context: dict[str, Any], out: Path) -> list[Path]:
    """Render report.html, report.md and claims_table.tex into `out`, each atomically; return their paths."""
    environment = add_report_filters(template_environment())
    return [render_to_file(environment, template, out / name, context) for template, name in REPORT_TEMPLATES.items()]
