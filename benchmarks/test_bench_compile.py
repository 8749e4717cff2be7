"""`torch.compile` as a setting: the MRE training step with a compiled forward pass.

Compare each case with `test_train_step` of the same model and shape in
`test_bench_steps.py`; the README computes the ratio.
"""

from __future__ import annotations

import time

import pytest
import torch
from workloads import MODEL_CASES, QUICK_BATCH, QUICK_EXPERTS, QUICK_WIDTH, build, make_train_step, random_batch, routing_info, scoped

COMPILE_CASES = [case for case in MODEL_CASES if case.kind == "mre" and case.quick and case.expert_execution == "auto"]


@pytest.mark.parametrize("case", [scoped(case, id=case.id, quick=case.reading == COMPILE_CASES[0].reading) for case in COMPILE_CASES])
def test_compiled_train_step(benchmark, measure, device, case):
    if benchmark.disabled:
        pytest.skip("torch.compile takes about a minute to compile on a 2-core CPU, so this case runs only when timing")
    model = build(case, QUICK_WIDTH, QUICK_EXPERTS, device)
    images, targets = random_batch(QUICK_BATCH, device)
    benchmark.extra_info.update(case.extra_info(QUICK_WIDTH, QUICK_EXPERTS, QUICK_BATCH, device), kind="train_step", compiled=True)
    benchmark.extra_info.update(routing_info(model, images, train=True))
    train_step = make_train_step(model, case, images, targets, compiled=torch.compile(model))

    started = time.perf_counter()
    train_step()  # compiles
    benchmark.extra_info["compile_seconds"] = time.perf_counter() - started

    measure(train_step)
