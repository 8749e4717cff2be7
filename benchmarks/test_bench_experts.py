"""Expert execution both ways: `ExpertBank.forward_dense` against `forward_sparse`.

The combine weights come from the two router kinds of the MRE with
deterministic routing: a categorical router fires one expert per sample, a
Poisson-window router fires each expert independently. The "train" pass adds
the backward pass through the experts, the input and the straight-through
combine weights, as a training step runs it. On a GPU the experts run under
bfloat16 autocast, like the models.
"""

from __future__ import annotations

import math

import pytest
import torch
from workloads import BATCH_SIZES, EXPERT_COUNTS, WIDTHS, scoped

from mre_repro.experts import ExpertBank
from mre_repro.routing import POISSON_MODE_THRESHOLD, categorical_mask, poisson_window_mask

ROUTERS = ("categorical", "poisson-window")
PATHS = ("dense-masked", "sparse-dispatch")
PASSES = ("forward", "train")
# Poisson-window logits are drawn around the firing threshold, so each
# expert fires for about half of the samples.
POISSON_LOGIT_STD = 1.0
QUICK_BATCHES = (512, 2048)
QUICK_WIDTH = 64


def expert_grid() -> list:
    params = []
    for batch_size in BATCH_SIZES:
        for experts in EXPERT_COUNTS:
            for width in WIDTHS:
                for router in ROUTERS:
                    for path in PATHS:
                        for pass_name in PASSES:
                            quick = batch_size in QUICK_BATCHES and width == QUICK_WIDTH
                            case_id = f"b{batch_size}-e{experts}-w{width}-{router}-{path}-{pass_name}"
                            params.append(scoped(batch_size, experts, width, router, path, pass_name, id=case_id, quick=quick))
    return params


def router_logits(router: str, batch_size: int, experts: int, generator: torch.Generator) -> torch.Tensor:
    logits = torch.randn(batch_size, experts, generator=generator)
    if router == "poisson-window":
        logits = POISSON_MODE_THRESHOLD + POISSON_LOGIT_STD * logits
    return logits


def combine_weights(router: str, logits: torch.Tensor) -> torch.Tensor:
    """Hard 0/1 combine weights (b, e) with the straight-through gradient of the relaxed sample."""
    sampler = categorical_mask if router == "categorical" else poisson_window_mask
    return sampler(logits, temperature=1.0, generator=None, sample=False)


@pytest.mark.parametrize(("batch_size", "experts", "width", "router", "path", "pass_name"), expert_grid())
def test_expert_execution(benchmark, measure, device, batch_size, experts, width, router, path, pass_name):
    generator = torch.Generator().manual_seed(0)
    bank = ExpertBank(1, experts, width, width)
    bank.reset_parameters(generator)
    bank.to(device)
    x = torch.randn(batch_size, width, generator=generator).to(device).requires_grad_(pass_name == "train")
    logits = router_logits(router, batch_size, experts, generator).to(device).requires_grad_(pass_name == "train")
    upstream = torch.randn(batch_size, width, generator=generator).to(device)
    path_function = bank.forward_dense if path == "dense-masked" else bank.forward_sparse

    def run_experts(x: torch.Tensor, combine: torch.Tensor, pool: int) -> torch.Tensor:
        # bfloat16 on a GPU, as the models train there.
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            return path_function(x, combine, pool)

    benchmark.extra_info.update(expert_case_info(bank, combine_weights(router, logits).detach(), path, pass_name))
    benchmark.extra_info.update(
        kind="expert_execution", model=None, reading=None, router=router, path=path, batch_size=batch_size, experts=experts, width=width, device=device
    )

    @torch.no_grad()
    def forward() -> None:
        run_experts(x, combine_weights(router, logits), 0)

    def forward_backward() -> None:
        for tensor in (x, logits, *bank.parameters()):
            tensor.grad = None
        run_experts(x, combine_weights(router, logits), 0).backward(upstream)

    measure(forward if pass_name == "forward" else forward_backward)


def expert_case_info(bank: ExpertBank, combine: torch.Tensor, path: str, pass_name: str) -> dict:
    """FLOPs of the case: those of the fired (sample, expert) pairs, and those the path executes.

    A backward pass costs two matmuls per forward matmul, so "train" counts 3x
    the forward FLOPs. Sparse dispatch executes every slot of its padded
    (e, capacity, d) batch, including the padding.
    """
    batch_size, experts = combine.shape
    fired = combine.count_nonzero(dim=0)
    passes = 3 if pass_name == "train" else 1
    per_expert = bank.flops_per_expert() * passes
    executed_pairs = batch_size * experts if path == "dense-masked" else experts * int(fired.max())
    return {
        "pass": pass_name,
        "experts_per_sample": fired.sum().item() / batch_size,
        "active_flops": fired.sum().item() * per_expert,
        "executed_flops": executed_pairs * per_expert,
        "load_imbalance": fired.max().item() / max(math.ceil(fired.sum().item() / experts), 1),
    }
