"""Verdict badges of the claims: shields-style SVG files and shields.io endpoint JSON, made locally.

For each claim in claims.json, the verdicts of its records (one per data set
and comparison) are combined into one: "reproduced" only when every record
is, "not reproduced" when any record is, otherwise "inconclusive". An overall
badge combines the claims the same way and counts the reproduced ones.

Files under the badges folder, for each claim and for "overall":
    <name>.svg    a 20 px high badge, label on grey, verdict on the verdict colour
    <name>.json   {"schemaVersion": 1, "label", "message", "color"}, the schema
                  of shields.io's endpoint badges, for README badges served from the repository
Nothing is fetched from the network.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextPath

from mre_repro.store import atomic_path

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
OVERALL = "overall"
OVERALL_LABEL = "MRE claims"

# Geometry of the flat shields style, in px: text size, height, padding either side of each text.
FONT_SIZE = 11
HEIGHT = 20
PADDING = 6
FONT_FAMILY = "DejaVu Sans"  # ships with matplotlib, so widths are measured with the font the SVG names first

BADGE_TEMPLATE = jinja2.Environment(autoescape=True, keep_trailing_newline=True).from_string(
    """<svg xmlns="http://www.w3.org/2000/svg" width="{{ width }}" height="{{ height }}" role="img" aria-label="{{ label }}: {{ message }}">
<title>{{ label }}: {{ message }}</title>
<linearGradient id="shade" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>
<clipPath id="round"><rect width="{{ width }}" height="{{ height }}" rx="3" fill="#fff"/></clipPath>
<g clip-path="url(#round)">
<rect width="{{ label_width }}" height="{{ height }}" fill="#555"/>
<rect x="{{ label_width }}" width="{{ message_width }}" height="{{ height }}" fill="{{ colour }}"/>
<rect width="{{ width }}" height="{{ height }}" fill="url(#shade)"/>
</g>
<g fill="#fff" text-anchor="middle" font-family="{{ font_family }},Verdana,Geneva,sans-serif" font-size="{{ font_size }}">
<text x="{{ label_x }}" y="15" fill="#010101" fill-opacity=".3">{{ label }}</text>
<text x="{{ label_x }}" y="14">{{ label }}</text>
<text x="{{ message_x }}" y="15" fill="#010101" fill-opacity=".3">{{ message }}</text>
<text x="{{ message_x }}" y="14">{{ message }}</text>
</g>
</svg>
"""
)


@dataclass(frozen=True)
class Badge:
    """One badge: file stem, label (left), message (right) and hex colour of the message side."""

    name: str
    label: str
    message: str
    colour: str

    def endpoint(self) -> dict[str, Any]:
        """Return the shields.io endpoint JSON. Shields takes hex colours without the leading '#'."""
        return {"schemaVersion": 1, "label": self.label, "message": self.message, "color": self.colour.removeprefix("#")}


def aggregate_verdict(verdicts: Sequence[str]) -> str:
    """Combine verdicts: reproduced only if all are, not reproduced if any is, else inconclusive (also when empty)."""
    if verdicts and all(verdict == REPRODUCED for verdict in verdicts):
        return REPRODUCED
    if NOT_REPRODUCED in verdicts:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def claim_verdicts(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Combine the verdicts of each claim's records, keeping the order in which claims first appear in `records`."""
    by_claim: dict[str, list[str]] = {}
    for record in records:
        by_claim.setdefault(record["claim"], []).append(record["verdict"])
    return {claim: aggregate_verdict(verdicts) for claim, verdicts in by_claim.items()}


def badge_name(claim: str) -> str:
    """File stem of a claim's badge: the claim id with anything but letters, digits and '-' replaced by '-'."""
    return re.sub(r"[^A-Za-z0-9-]+", "-", claim).strip("-") or "claim"


def build_badges(records: Sequence[dict[str, Any]]) -> list[Badge]:
    """Build the overall badge, then one badge per claim."""
    from mre_repro.figures import verdict_colours

    colours = verdict_colours()
    verdicts = claim_verdicts(records)
    reproduced = sum(verdict == REPRODUCED for verdict in verdicts.values())
    overall = Badge(OVERALL, OVERALL_LABEL, f"{reproduced} of {len(verdicts)} reproduced", colours[aggregate_verdict(list(verdicts.values()))])
    return [overall] + [Badge(badge_name(claim), claim, verdict, colours[verdict]) for claim, verdict in verdicts.items()]


def text_width(text: str) -> float:
    """Width in px of `text` set in FONT_FAMILY at FONT_SIZE px, measured from the glyph outlines."""
    if not text:
        return 0.0
    path = TextPath((0, 0), text, size=FONT_SIZE, prop=FontProperties(family=FONT_FAMILY))
    return float(path.get_extents().width)


def render_badge_svg(badge: Badge) -> str:
    label_width = round(text_width(badge.label)) + 2 * PADDING
    message_width = round(text_width(badge.message)) + 2 * PADDING
    return BADGE_TEMPLATE.render(
        width=label_width + message_width, height=HEIGHT, label=badge.label, message=badge.message, colour=badge.colour,
        label_width=label_width, message_width=message_width, label_x=label_width / 2, message_x=label_width + message_width / 2,
        font_family=FONT_FAMILY, font_size=FONT_SIZE,
    )


def write_badges(records: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """Write `<name>.svg` and `<name>.json` for the overall badge and each claim's; return the paths."""
    paths = []
    for badge in build_badges(records):
        for suffix, text in (("svg", render_badge_svg(badge)), ("json", json.dumps(badge.endpoint(), indent=1) + "\n")):
            path = directory / f"{badge.name}.{suffix}"
            with atomic_path(path) as temporary:
                temporary.write_text(text)
            paths.append(path)
    return paths
