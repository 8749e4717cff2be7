"""Training step with one CPU thread against all of them, at the `cpu` profile's batch size.

torch runs intra-op work on as many threads as the machine has cores. Small
matmuls gain little from more threads, and on a CPU shared with other work a
multi-threaded kernel waits for every one of its threads, so this case
measures whether the default helps the models of this suite.
"""

from __future__ import annotations

import os

import pytest
import torch
from workloads import MODEL_CASES, QUICK_EXPERTS, QUICK_WIDTH, build, make_train_step, random_batch, routing_info, scoped

from mre_repro.profiles import get_profile

THREAD_CASES = [case for case in MODEL_CASES if case.id in ("mre-poisson-window", "top1-moe", "dense-x1")]
ALL_THREADS = os.cpu_count() or 1
BATCH_SIZES = (get_profile("cpu").batch_size, 512)


@pytest.mark.parametrize(
    ("case", "batch_size", "threads"),
    [
        scoped(case, batch_size, threads, id=f"{case.id}-b{batch_size}-threads{threads}", quick=batch_size == BATCH_SIZES[0])
        for case in THREAD_CASES
        for batch_size in BATCH_SIZES
        for threads in sorted({1, ALL_THREADS})
    ],
)
def test_train_step_threads(benchmark, measure, device, case, batch_size, threads):
    if device != "cpu":
        pytest.skip("CPU threads matter only for CPU runs")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build(case, QUICK_WIDTH, QUICK_EXPERTS, device)
        images, targets = random_batch(batch_size, device)
        benchmark.extra_info.update(case.extra_info(QUICK_WIDTH, QUICK_EXPERTS, batch_size, device), kind="threads", threads=threads)
        benchmark.extra_info.update(routing_info(model, images, train=True))
        measure(make_train_step(model, case, images, targets))
    finally:
        torch.set_num_threads(previous)
