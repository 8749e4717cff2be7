"""Tests of the claim badges: verdict aggregation, SVG and shields.io endpoint files."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from mre_repro.badges import (
    Badge,
    aggregate_verdict,
    badge_name,
    build_badges,
    claim_verdicts,
    render_badge_svg,
    text_width,
    write_badges,
)
from mre_repro.figures import verdict_colours

SVG = "{http://www.w3.org/2000/svg}"


def record(claim: str, verdict: str, dataset: str = "mnist") -> dict[str, str]:
    return {"claim": claim, "verdict": verdict, "dataset": dataset}


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["reproduced", "reproduced"], "reproduced"),
        (["reproduced", "inconclusive"], "inconclusive"),
        (["reproduced", "not reproduced", "inconclusive"], "not reproduced"),
        (["inconclusive"], "inconclusive"),
        ([], "inconclusive"),
    ],
)
def test_aggregate_verdict(verdicts: list[str], expected: str) -> None:
    assert aggregate_verdict(verdicts) == expected


def test_claim_verdicts_keep_claim_order() -> None:
    records = [
        record("epoch-reduction", "reproduced", "mnist"),
        record("anytime", "inconclusive"),
        record("epoch-reduction", "not reproduced", "cifar10"),
    ]
    assert list(claim_verdicts(records).items()) == [("epoch-reduction", "not reproduced"), ("anytime", "inconclusive")]


def test_overall_badge_counts_reproduced_claims() -> None:
    records = [record("a", "reproduced"), record("b", "reproduced"), record("c", "inconclusive")]
    overall = build_badges(records)[0]
    assert overall.name == "overall"
    assert overall.message == "2 of 3 reproduced"
    assert overall.colour == verdict_colours()["inconclusive"]


def test_claim_badges_coloured_by_verdict() -> None:
    badges = build_badges([record("load-balance", "not reproduced"), record("anytime", "reproduced")])
    colours = verdict_colours()
    assert [(badge.name, badge.message, badge.colour) for badge in badges[1:]] == [
        ("load-balance", "not reproduced", colours["not reproduced"]),
        ("anytime", "reproduced", colours["reproduced"]),
    ]


def test_badge_name_is_file_safe() -> None:
    assert badge_name("epoch-reduction") == "epoch-reduction"
    assert badge_name("a/b c") == "a-b-c"


def test_endpoint_json_follows_shields_schema() -> None:
    badge = Badge("anytime", "anytime", "reproduced", "#029e73")
    assert badge.endpoint() == {"schemaVersion": 1, "label": "anytime", "message": "reproduced", "color": "029e73"}


def test_svg_is_valid_and_escaped() -> None:
    svg = render_badge_svg(Badge("x", "a<b & c", "reproduced", "#029e73"))
    root = ElementTree.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = [element.text for element in root.iter(f"{SVG}text")]
    assert texts == ["a<b & c", "a<b & c", "reproduced", "reproduced"]
    assert root.find(f"{SVG}title").text == "a<b & c: reproduced"


def test_svg_width_follows_text() -> None:
    short = ElementTree.fromstring(render_badge_svg(Badge("x", "claim", "reproduced", "#000000")))
    long = ElementTree.fromstring(render_badge_svg(Badge("x", "misclassified-more-experts", "reproduced", "#000000")))
    assert float(long.get("width")) > float(short.get("width"))
    assert text_width("iii") < text_width("WWW")
    assert text_width("") == 0.0


def test_write_badges_files(tmp_path: Path) -> None:
    paths = write_badges([record("anytime", "reproduced"), record("init-scale", "inconclusive")], tmp_path)
    assert sorted(path.name for path in paths) == [
        "anytime.json", "anytime.svg", "init-scale.json", "init-scale.svg", "overall.json", "overall.svg",
    ]
    overall = json.loads((tmp_path / "overall.json").read_text())
    assert overall["message"] == "1 of 2 reproduced"
    assert overall["label"] == "MRE claims"


def test_write_badges_is_repeatable(tmp_path: Path) -> None:
    records = [record("anytime", "reproduced")]
    first = [path.read_bytes() for path in write_badges(records, tmp_path / "first")]
    second = [path.read_bytes() for path in write_badges(records, tmp_path / "second")]
    assert first == second
