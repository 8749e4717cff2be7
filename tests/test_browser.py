"""Open the generated report.html in headless Chromium: it renders, every image loads, no relative link is broken.

Needs /usr/bin/chromium (Debian package `chromium`); skipped without it.
report.html carries a small script that, on the load event, writes the
number of images and of images that decoded (naturalWidth > 0) into
`data-images-total` and `data-images-loaded` on <body>; `--dump-dom` prints
the DOM after that event.
"""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from test_report import report_args, write_fake_results

from mre_repro.artifact import command_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
BROWSER_TIMEOUT_SECONDS = 60

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} not found: install the Debian package chromium")


class LinkCollector(HTMLParser):
    """HTML parser that collects every href and src attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("href", "src") and value]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = write_fake_results(tmp_path_factory.mktemp("results"))
    assert command_report(report_args(results)) == 0
    return results / "report.html"


def run_chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *arguments],
        capture_output=True, text=True, timeout=BROWSER_TIMEOUT_SECONDS, check=True,
    )


def test_every_image_loads(report: Path, tmp_path: Path) -> None:
    dom = run_chromium(tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body is not None
    total = re.search(r'data-images-total="(\d+)"', body.group())
    loaded = re.search(r'data-images-loaded="(\d+)"', body.group())
    assert total is not None, "the load script did not run"
    assert loaded is not None
    assert int(total.group(1)) > 8  # 8 figures and the badges
    assert loaded.group(1) == total.group(1)


def screenshot(page: Path, profile: Path, shot: Path) -> bytes:
    run_chromium(profile, f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri())
    return shot.read_bytes()


def test_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    blank_page = tmp_path / "blank.html"
    blank_page.write_text("<!DOCTYPE html><html><body></body></html>")
    shot = screenshot(report, tmp_path / "profile", tmp_path / "shot.png")
    blank = screenshot(blank_page, tmp_path / "profile", tmp_path / "blank.png")
    assert shot.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(shot) > 2 * len(blank)  # text and figures compress far worse than an empty page


def test_relative_links_resolve(report: Path) -> None:
    collector = LinkCollector()
    collector.feed(report.read_text())
    relative = [link for link in collector.links if not urlsplit(link).scheme and not link.startswith("#")]
    assert relative, "the report links no local files"
    missing = [link for link in relative if not (report.parent / unquote(urlsplit(link).path)).is_file()]
    assert missing == []


def test_anchor_links_resolve(report: Path) -> None:
    html = report.read_text()
    collector = LinkCollector()
    collector.feed(html)
    anchors = [link[1:] for link in collector.links if link.startswith("#")]
    assert anchors, "the report has no table of contents"
    assert [anchor for anchor in anchors if f'id="{anchor}"' not in html] == []
