"""A large square `torch.mm`: the machine's measured matmul peak, in the same session as the other cases."""

from __future__ import annotations

import pytest
import torch
from workloads import scoped

# 8192 takes tens of seconds per call on a few CPU cores, so it runs on GPUs only.
SIZES = (1024, 2048, 4096, 8192)
QUICK_SIZES = (2048, 8192)
CPU_MAX_SIZE = 4096


@pytest.mark.parametrize("size", [scoped(size, id=f"n{size}", quick=size in QUICK_SIZES) for size in SIZES])
def test_matmul_peak(benchmark, measure, device, size):
    if device == "cpu" and size > CPU_MAX_SIZE:
        pytest.skip(f"a {size}x{size} matmul is measured on GPUs only")
    # The models train in float32 on the CPU and under bfloat16 autocast on a GPU.
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    benchmark.extra_info.update(
        kind="matmul_peak", model=None, reading=None, size=size, dtype=str(dtype).removeprefix("torch."), flops=2 * size**3, device=device
    )

    measure(lambda: torch.mm(a, b, out=out))
