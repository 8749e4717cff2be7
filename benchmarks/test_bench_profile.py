"""Operator profiles of one training step, the evidence behind the README's explanation of the ratios.

Each case runs a few training steps under `torch.profiler` and stores the
operators with the largest self time in `extra_info["operators"]`.
"""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from workloads import MODEL_CASES, QUICK_BATCH, QUICK_EXPERTS, QUICK_WIDTH, build, make_train_step, random_batch, routing_info, scoped

PROFILED_STEPS = 5
TOP_OPERATORS = 12
# aten operators that run matrix multiplications.
MATMUL_OPERATORS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul", "aten::einsum"})
# The three models behind the README ratios: the default MRE, the top-1 MoE and the dense model.
PROFILE_CASES = [case for case in MODEL_CASES if case.id in ("mre-poisson-window", "top1-moe", "dense-x1")]


@pytest.mark.parametrize("case", [scoped(case, id=case.id, quick=True) for case in PROFILE_CASES])
def test_profile_train_step(benchmark, device, case):
    model = build(case, QUICK_WIDTH, QUICK_EXPERTS, device)
    images, targets = random_batch(QUICK_BATCH, device)
    train_step = make_train_step(model, case, images, targets)
    benchmark.extra_info.update(case.extra_info(QUICK_WIDTH, QUICK_EXPERTS, QUICK_BATCH, device), kind="profile")
    benchmark.extra_info.update(routing_info(model, images, train=True))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])

    def profile_steps() -> None:
        train_step()  # warm-up, outside the profile
        with profile(activities=activities) as profiler:
            for _ in range(PROFILED_STEPS):
                train_step()
            if device == "cuda":
                torch.cuda.synchronize()
        benchmark.extra_info.update(operator_table(profiler, device))

    benchmark.pedantic(profile_steps, rounds=1)


def operator_table(profiler, device: str) -> dict:
    """The operators with the largest self time, in milliseconds per step, and the matmul share of all self time."""
    attribute = "self_device_time_total" if device == "cuda" else "self_cpu_time_total"
    events = [event for event in profiler.key_averages() if getattr(event, attribute) > 0]
    total_us = sum(getattr(event, attribute) for event in events)
    matmul_us = sum(getattr(event, attribute) for event in events if event.key in MATMUL_OPERATORS)
    events.sort(key=lambda event: getattr(event, attribute), reverse=True)
    operators = [
        {
            "name": event.key,
            "calls_per_step": event.count / PROFILED_STEPS,
            "self_ms_per_step": getattr(event, attribute) / 1e3 / PROFILED_STEPS,
            "share": getattr(event, attribute) / total_us,
        }
        for event in events[:TOP_OPERATORS]
    ]
    return {
        "profiled_steps": PROFILED_STEPS,
        "time_attribute": attribute,
        "self_ms_per_step": total_us / 1e3 / PROFILED_STEPS,
        "matmul_share": matmul_us / total_us,
        "operators": operators,
    }
