"""A bank of 2-layer MLP experts stored as stacked weights.

All experts of a pool run as batched matmuls: there is no Python loop over
samples or experts. Two execution paths give the same result:

- dense-masked: every expert runs on every sample and the outputs are
  weighted by the (mostly zero) combine weights;
- sparse-dispatch: only the (sample, expert) pairs with a non-zero weight
  run, grouped per expert into a padded (e, capacity, d) batch.

Shapes follow the legend of `mre_repro.routing`; d is the state width, h the
expert hidden width, p the number of pools (1 when shared, s when per step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mre_repro.config import ModelConfig


class ExpertBank(nn.Module):
    """`pools` pools of `experts` MLPs d -> h -> d with a GELU between."""

    def __init__(self, pools: int, experts: int, width: int, hidden: int) -> None:
        super().__init__()
        self.experts = experts
        self.w_in = nn.Parameter(torch.empty(pools, experts, width, hidden))
        self.b_in = nn.Parameter(torch.empty(pools, experts, hidden))
        self.w_out = nn.Parameter(torch.empty(pools, experts, hidden, width))
        self.b_out = nn.Parameter(torch.empty(pools, experts, width))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Draw weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as nn.Linear does."""
        for weight, bias in ((self.w_in, self.b_in), (self.w_out, self.b_out)):
            bound = 1.0 / math.sqrt(weight.shape[-2])
            with torch.no_grad():
                weight.uniform_(-bound, bound, generator=generator)
                bias.uniform_(-bound, bound, generator=generator)

    def forward_all(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        """Run every expert of `pool` on every sample: x (b, d) -> (b, e, d)."""
        hidden = torch.einsum("bd,edh->beh", x, self.w_in[pool]) + self.b_in[pool]
        return torch.einsum("beh,ehd->bed", F.gelu(hidden), self.w_out[pool]) + self.b_out[pool]

    def forward_dense(self, x: torch.Tensor, combine: torch.Tensor, pool: int) -> torch.Tensor:
        """Run every expert on every sample and weight the outputs.

        x: (b, d); combine: (b, e) combine weights. Returns (b, d), the
        weighted sum of expert outputs.
        """
        return torch.einsum("be,bed->bd", combine, self.forward_all(x, pool))

    def forward_sparse(self, x: torch.Tensor, combine: torch.Tensor, pool: int) -> torch.Tensor:
        """Run only the (sample, expert) pairs whose combine weight is non-zero.

        x: (b, d); combine: (b, e). Returns (b, d), equal to `forward_dense`.
        """
        sample_index, expert_index = combine.detach().nonzero(as_tuple=True)
        if sample_index.numel() == 0:
            return torch.zeros_like(x)

        # Each pair's slot within its expert's group: rank among the pairs of
        # the same expert. nonzero() returns pairs sorted by sample, so a
        # stable sort by expert keeps that order within a group.
        order = torch.argsort(expert_index, stable=True)
        sample_index, expert_index = sample_index[order], expert_index[order]
        group_sizes = torch.bincount(expert_index, minlength=self.experts)
        group_start = torch.cumsum(group_sizes, 0) - group_sizes
        slot = torch.arange(expert_index.numel(), device=x.device) - group_start[expert_index]

        # NOTE: sizing the padded batch reads the largest group on the host,
        # one device synchronisation per call.
        capacity = int(group_sizes.max())
        grouped = x.new_zeros(self.experts, capacity, x.shape[-1])
        grouped[expert_index, slot] = x[sample_index]

        hidden = torch.baddbmm(self.b_in[pool].unsqueeze(1), grouped, self.w_in[pool])
        out = torch.baddbmm(self.b_out[pool].unsqueeze(1), F.gelu(hidden), self.w_out[pool])  # (e, capacity, d)

        weighted = out[expert_index, slot] * combine[sample_index, expert_index].unsqueeze(-1)
        return torch.zeros_like(x).index_add_(0, sample_index, weighted)

    def forward(self, x: torch.Tensor, combine: torch.Tensor, pool: int, sparse: bool = False) -> torch.Tensor:
        if sparse:
            return self.forward_sparse(x, combine, pool)
        return self.forward_dense(x, combine, pool)

    def parameters_per_expert(self) -> int:
        width, hidden = self.w_in.shape[-2:]
        return 2 * width * hidden + hidden + width

    def flops_per_expert(self) -> int:
        """Floating-point operations of one expert on one sample (2 per multiply-add)."""
        width, hidden = self.w_in.shape[-2:]
        return 2 * 2 * width * hidden


def use_sparse_dispatch(config: ModelConfig, batch: int, *, one_per_sample: bool) -> bool:
    """Pick the expert execution path for a forward pass.

    An explicit `config.expert_execution` wins. "auto" never changes what is
    computed. Sparse dispatch gives the combine weight of every unfired expert
    a zero gradient, which changes the straight-through router gradient of an
    MRE, so an MRE keeps dense-masked execution while gradients are on. The
    top-k and threshold gates mask that gradient anyway. Otherwise "auto" picks
    sparse dispatch once the dense-masked work (batch x experts x width x
    expert_hidden multiply-adds per matmul) outweighs the fixed cost of
    grouping: from 2**21 when each sample fires at most one expert, and from
    2**24 when it may fire several (CPU measurements in benchmarks/README.md).
    NOTE: measured on CPUs only. On a GPU sparse dispatch reads its largest
    group size on the host, one device synchronisation per call.
    """
    if config.expert_execution != "auto":
        return config.expert_execution == "sparse-dispatch"
    if config.kind == "mre" and torch.is_grad_enabled():
        return False
    dense_work = batch * config.experts * config.width * config.expert_hidden
    return dense_work >= (2**21 if one_per_sample else 2**24)
