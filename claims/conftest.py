"""Fixtures behind the claim specs: train a profile's grid once, evaluate every claim, write claims.json.

`pytest claims/` builds the grid of the chosen profile and trains the runs
that the run store in `--out` does not contain yet. Finished runs are reused,
so `pytest claims/` and `mre-repro reproduce` with the same folder share runs.
It then evaluates the claims with the pre-registered tolerances and writes
`summary.json` and `claims.json` there. Each spec module marks its tests with
`@pytest.mark.claim(NAME)`, which parametrises them over that claim's records
(data set x comparison). A test's outcome mirrors the verdict: reproduced
passes, not reproduced fails with the numbers, inconclusive is an xfail.

    pytest claims/ --profile smoke --out /tmp/claims-smoke   # pipeline check, generated data
    pytest claims/                                           # cpu profile: real Fashion-MNIST
    pytest claims/ --gpu                                     # paper profile on CUDA
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from mre_repro import claims
from mre_repro.cli import DEFAULT_OUT, USER_ERRORS
from mre_repro.config import ConfigError
from mre_repro.engine import DataOptions, NonFiniteLossError
from mre_repro.profiles import PROFILES, Profile, build_grid, get_profile
from mre_repro.readings import DEFAULT_READING, get_reading
from mre_repro.reproduce import build_summary, results_file, run_grid
from mre_repro.store import RunStore, write_json_atomic

RECORDS_KEY = pytest.StashKey[list[claims.ClaimRecord]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mre-repro claims")
    group.addoption("--gpu", action="store_true", help="train on CUDA; without --profile this selects the paper profile")
    group.addoption(
        "--profile",
        choices=list(PROFILES),
        default=None,
        help="grid to train and judge: smoke (generated data, verdicts inconclusive), cpu (default), paper (default with --gpu)",
    )
    group.addoption(
        "--reading", default=DEFAULT_READING, help=f"reading of the MRE method for the MRE runs (default: {DEFAULT_READING})"
    )
    group.addoption(
        "--out", type=Path, default=DEFAULT_OUT, help=f"run store and output folder for claims.json (default: {DEFAULT_OUT})"
    )
    group.addoption("--data-root", type=Path, default=None, help="folder holding the data sets in torchvision's layout")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "claim(name): parametrise the test over the records of one claim of claims.json")
    try:
        get_reading(config.getoption("--reading"))
    except ConfigError as err:
        raise pytest.UsageError(str(err)) from None


@dataclass(frozen=True)
class ClaimSettings:
    """The command-line choices of one `pytest claims/` session."""

    profile: Profile
    reading: str
    device: str | None  # None: the profile's device
    out: Path
    data_root: Path | None

    @classmethod
    def from_config(cls, config: pytest.Config) -> ClaimSettings:
        gpu = config.getoption("--gpu")
        profile = config.getoption("--profile") or ("paper" if gpu else "cpu")
        return cls(
            profile=get_profile(profile),
            reading=config.getoption("--reading"),
            device="cuda" if gpu else None,
            out=config.getoption("--out"),
            data_root=config.getoption("--data-root"),
        )


def _record_id(key: tuple[str, str, str | None]) -> str:
    _, dataset, comparison = key
    return dataset if comparison is None else f"{dataset}-{comparison.removeprefix('vs ')}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("claim")
    if marker is None or "claim_key" not in metafunc.fixturenames:
        return
    settings = ClaimSettings.from_config(metafunc.config)
    keys = [key for key in claims.planned_claims(settings.profile.datasets) if key[0] == marker.args[0]]
    metafunc.parametrize("claim_key", keys, ids=[_record_id(key) for key in keys])


@pytest.fixture(scope="session")
def claim_records(request: pytest.FixtureRequest) -> dict[tuple[str, str, str | None], claims.ClaimRecord]:
    """Train what is missing from `--out`, evaluate every claim and write summary.json and claims.json."""
    settings = ClaimSettings.from_config(request.config)
    options = DataOptions(data_root=settings.data_root, synthetic_root=settings.out / "synthetic-data")
    grid = build_grid(settings.profile, settings.reading, settings.device)
    started = time.perf_counter()
    try:
        results = run_grid(grid, RunStore(settings.out), options)
    except USER_ERRORS as err:
        pytest.exit(f"pytest claims/: {err}", returncode=2)
    except NonFiniteLossError as err:
        pytest.exit(f"pytest claims/: {err}", returncode=1)

    summary = build_summary(settings.profile, settings.reading, results, time.perf_counter() - started)
    write_json_atomic(results_file(settings.out, "summary", settings.reading), summary)
    records = claims.evaluate_claims(results, settings.profile, settings.reading, claims.load_tolerances())
    claims.write_claims(records, settings.profile, settings.reading, settings.out)
    request.config.stash[RECORDS_KEY] = records
    return {record.key: record for record in records}


@pytest.fixture
def claim_record(claim_records, claim_key) -> claims.ClaimRecord:
    return claim_records[claim_key]


def require_reproduced(record: claims.ClaimRecord) -> None:
    """Pass on "reproduced", fail with the numbers on "not reproduced", xfail on "inconclusive"."""
    if record.verdict == claims.INCONCLUSIVE:
        pytest.xfail(f"inconclusive ({record.reason})")
    assert record.verdict == claims.REPRODUCED, claims.describe_record(record)


@pytest.fixture
def check_claim():
    """The verdict check every claim spec ends with (see `require_reproduced`)."""
    return require_reproduced


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    records = config.stash.get(RECORDS_KEY, None)
    if not records:
        return
    settings = ClaimSettings.from_config(config)
    terminalreporter.write_sep("=", f"claim verdicts ({settings.profile.name} profile, reading {settings.reading})")
    terminalreporter.write_line(claims.format_verdict_table(records))
    terminalreporter.write_line(f"written to {results_file(settings.out, 'claims', settings.reading)}")
