"""pytest-benchmark setup: benchmark scope, device, timers and the header of the saved JSON.

Run `pytest benchmarks/` for the quick scope on the CPU, `--bench-scope full`
for the whole grid, `--gpu` to run every case on the first CUDA device, and
`--benchmark-disable` to run each case once without timing.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable

from pathlib import Path

import pytest
import torch

from mre_repro.store import device_description

# Load averages over 1, 5 and 15 minutes at start-up: other work on the machine skews timings.
STARTUP_LOAD_AVERAGE = os.getloadavg() if hasattr(os, "getloadavg") else None
# torch's thread count at start-up (from OMP_NUM_THREADS, else the core
# count), read before --bench-threads changes it.
STARTUP_TORCH_THREADS = torch.get_num_threads()

# GPU timing: every round times CUDA_STEPS_PER_ROUND back-to-back calls between two
# CUDA events, so the host waits once per round, never inside a step.
CUDA_STEPS_PER_ROUND = 20
CUDA_ROUNDS = 10
CUDA_WARMUP_ROUNDS = 3


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mre-repro benchmarks")
    group.addoption(
        "--bench-scope",
        choices=("quick", "full"),
        default="quick",
        help="quick: batch 512, width 64, 8 experts, every model, readings poisson-window and categorical-stop; "
        "full: every batch size, width, expert count and reading (default: quick)",
    )
    group.addoption("--gpu", action="store_true", help="run every case on the first CUDA device, timed with CUDA events")
    group.addoption(
        "--bench-threads",
        type=int,
        default=None,
        help="CPU threads for torch (torch.set_num_threads); on a CPU shared with other work, 1 avoids "
        "stalls of multi-threaded kernels waiting for a descheduled thread (default: torch's choice)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: the case belongs to the quick benchmark scope")
    threads = config.getoption("--bench-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"invalid --bench-threads={threads}: use 1 or more threads")
        torch.set_num_threads(threads)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the cases outside the quick scope unless `--bench-scope full` was given."""
    if config.getoption("--bench-scope") == "full":
        return
    # This hook receives every collected item, also those outside benchmarks/
    # when several folders run in one session; only benchmark cases are scoped.
    benchmarks_dir = Path(__file__).resolve().parent
    deselected = [item for item in items if benchmarks_dir in item.path.parents and not item.get_closest_marker("quick")]
    in_scope = [item for item in items if item not in deselected]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = in_scope


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    if not request.config.getoption("--gpu"):
        return "cpu"
    if not torch.cuda.is_available():
        pytest.skip("--gpu was given but torch sees no CUDA device")
    return "cuda"


@pytest.fixture
def measure(benchmark, device: str) -> Callable[..., None]:
    """Return `run(fn, rounds=None, warmup_rounds=1)`, which times `fn` on the benchmark's device.

    On the CPU, `rounds=None` lets pytest-benchmark calibrate the number of
    rounds, after one untimed warm-up call. On a GPU, CUDA events time
    batches of calls, and the seconds per call go to
    `extra_info["cuda_seconds"]`, which the README reads instead of the host timer.
    """

    def run(fn: Callable[[], object], rounds: int | None = None, warmup_rounds: int = 1) -> None:
        benchmark.extra_info["timer"] = "cuda-events" if device == "cuda" else "host"
        if device == "cuda":
            time_with_cuda_events(benchmark, fn, rounds)
        elif rounds is not None:
            benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds)
        else:
            if not benchmark.disabled:
                for _ in range(warmup_rounds):
                    fn()
            benchmark(fn)

    return run


def time_with_cuda_events(benchmark, fn: Callable[[], object], rounds: int | None) -> None:
    """Time `fn` with CUDA events; `rounds` given means one call per round (slow cases such as an epoch)."""
    steps = CUDA_STEPS_PER_ROUND if rounds is None else 1
    seconds_per_call: list[float] = []

    def timed_round() -> None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            fn()
        end.record()
        end.synchronize()
        seconds_per_call.append(start.elapsed_time(end) / 1e3 / steps)

    timed_rounds = rounds or CUDA_ROUNDS
    benchmark.pedantic(timed_round, rounds=timed_rounds, warmup_rounds=0 if rounds else CUDA_WARMUP_ROUNDS)
    benchmark.extra_info["cuda_seconds"] = seconds_per_call[-timed_rounds:]
    benchmark.extra_info["calls_per_round"] = steps


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    on_gpu = config.getoption("--gpu") and torch.cuda.is_available()
    machine_info["device_description"] = device_description(torch.device("cuda" if on_gpu else "cpu"))
    machine_info["torch_threads"] = torch.get_num_threads()
    machine_info["torch_startup_threads"] = STARTUP_TORCH_THREADS
    machine_info["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
    machine_info["load_average_at_start"] = STARTUP_LOAD_AVERAGE
    machine_info["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    machine_info["torch"] = torch.__version__


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    output_json["command"] = shlex.join(["pytest", *config.invocation_params.args])
    output_json["bench_scope"] = config.getoption("--bench-scope")
