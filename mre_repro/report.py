"""Reports rendered from stored results through Jinja templates.

Templates live in `paper/templates/`. They render with `StrictUndefined`, so
a value missing from the results fails the render instead of leaving a blank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

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
        autoescape=jinja2.select_autoescape(["html"]),
    )


def render_to_file(environment: jinja2.Environment, template: str, path: Path, context: dict[str, Any]) -> Path:
    text = environment.get_template(template).render(**context)
    with atomic_path(path) as temporary:
        temporary.write_text(text)
    return path


def write_first_report(summary: dict[str, Any], out: Path) -> Path:
    """Write `out/report.md`: models x data sets, mean and standard deviation over seeds."""
    context = {"summary": summary, "rows": aggregate_by_role(summary)}
    return render_to_file(template_environment(), "summary.md.j2", out / "report.md", context)
