"""One training step and one inference pass of every model across batch size, width and expert count.

A training step is forward, loss, backward and Adam step, as in
`engine.train_epoch`; inference is a deterministic-routing forward pass
without gradients, as in `engine.evaluate`.
"""

from __future__ import annotations

import pytest
from workloads import (
    BATCH_SIZES,
    EXPERT_COUNTS,
    MODEL_CASES,
    QUICK_BATCH,
    QUICK_EXPERTS,
    QUICK_WIDTH,
    WIDTHS,
    build,
    make_inference,
    make_train_step,
    random_batch,
    routing_info,
    scoped,
)


def step_grid() -> list:
    params = []
    for case in MODEL_CASES:
        for batch_size in BATCH_SIZES:
            for width in WIDTHS:
                for experts in EXPERT_COUNTS if case.has_experts else (None,):
                    quick = case.quick and (batch_size, width) == (QUICK_BATCH, QUICK_WIDTH) and experts in (QUICK_EXPERTS, None)
                    case_id = f"{case.id}-b{batch_size}-w{width}" + (f"-e{experts}" if experts else "")
                    params.append(scoped(case, batch_size, width, experts, id=case_id, quick=quick))
    return params


GRID = step_grid()


@pytest.mark.parametrize(("case", "batch_size", "width", "experts"), GRID)
def test_train_step(benchmark, measure, device, case, batch_size, width, experts):
    model = build(case, width, experts, device)
    images, targets = random_batch(batch_size, device)
    benchmark.extra_info.update(case.extra_info(width, experts, batch_size, device), kind="train_step")
    benchmark.extra_info.update(routing_info(model, images, train=True))

    measure(make_train_step(model, case, images, targets))


@pytest.mark.parametrize(("case", "batch_size", "width", "experts"), GRID)
def test_inference(benchmark, measure, device, case, batch_size, width, experts):
    model = build(case, width, experts, device)
    images, _ = random_batch(batch_size, device)
    benchmark.extra_info.update(case.extra_info(width, experts, batch_size, device), kind="inference")
    benchmark.extra_info.update(routing_info(model, images, train=False))

    measure(make_inference(model, images))
