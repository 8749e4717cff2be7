"""Tests for mre_repro.experts: both execution paths agree, and the rule that picks one."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mre_repro.config import ModelConfig
from mre_repro.experts import ExpertBank, use_sparse_dispatch

TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@st.composite
def expert_problems(draw):
    """A small bank, its input and combine weights with a random 0/1 pattern (all zeros included)."""
    pools = draw(st.integers(1, 3))
    experts = draw(st.integers(1, 6))
    width = draw(st.integers(1, 8))
    hidden = draw(st.integers(1, 8))
    batch = draw(st.integers(1, 10))
    fire_probability = draw(st.sampled_from([0.0, 0.2, 0.5, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    pool = draw(st.integers(0, pools - 1))

    generator = torch.Generator().manual_seed(seed)
    bank = ExpertBank(pools, experts, width, hidden)
    bank.reset_parameters(generator)
    x = torch.randn(batch, width, generator=generator)
    fired = torch.rand(batch, experts, generator=generator) < fire_probability
    combine = fired * torch.rand(batch, experts, generator=generator).add(0.5)
    upstream = torch.randn(batch, width, generator=generator)
    return bank, x, combine, upstream, pool


def run_with_gradients(bank: ExpertBank, x, combine, upstream, pool: int, sparse: bool) -> dict[str, torch.Tensor]:
    """Output and the gradients of <output, upstream> with respect to every input, as zeros where unconnected."""
    x = x.clone().requires_grad_(True)
    combine = combine.clone().requires_grad_(True)
    inputs = {"x": x, "combine": combine, **dict(bank.named_parameters())}
    output = bank(x, combine, pool, sparse=sparse)
    if output.requires_grad:
        gradients = torch.autograd.grad(output, list(inputs.values()), upstream, allow_unused=True)
    else:  # nothing fired: sparse dispatch returns a constant zero tensor
        gradients = (None,) * len(inputs)
    result = {name: torch.zeros_like(tensor) if grad is None else grad for (name, tensor), grad in zip(inputs.items(), gradients)}
    result["output"] = output.detach()
    return result


@settings(max_examples=150, deadline=None)
@given(problem=expert_problems())
def test_paths_same_output_and_gradients(problem):
    bank, x, combine, upstream, pool = problem

    dense = run_with_gradients(bank, x, combine, upstream, pool, sparse=False)
    sparse = run_with_gradients(bank, x, combine, upstream, pool, sparse=True)

    for name in ("output", "x", "w_in", "b_in", "w_out", "b_out"):
        torch.testing.assert_close(sparse[name], dense[name], **TOLERANCE, msg=lambda message, name=name: f"{name}: {message}")
    fired = combine != 0
    torch.testing.assert_close(sparse["combine"][fired], dense["combine"][fired], **TOLERANCE)


@settings(max_examples=50, deadline=None)
@given(problem=expert_problems())
def test_sparse_zero_gradient_for_unfired(problem):
    # Sparse dispatch never runs an unfired expert, so the gradient of a zero
    # combine weight is 0, while dense-masked execution gives <upstream, expert output>.
    # For a straight-through router that gradient reaches the router logits.
    bank, x, combine, upstream, pool = problem

    sparse = run_with_gradients(bank, x, combine, upstream, pool, sparse=True)
    dense_outputs = bank.forward_all(x, pool).detach()

    unfired = combine == 0
    assert torch.count_nonzero(sparse["combine"][unfired]) == 0
    expected_dense = torch.einsum("bd,bed->be", upstream, dense_outputs)
    dense = run_with_gradients(bank, x, combine, upstream, pool, sparse=False)
    torch.testing.assert_close(dense["combine"], expected_dense, **TOLERANCE)


def test_paths_agree_on_one_hot_batch():
    # A hand-sized case: 3 samples, one expert each, expert 1 used twice.
    bank = ExpertBank(1, 3, 4, 5)
    bank.reset_parameters(torch.Generator().manual_seed(0))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    combine = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    expected = torch.stack([bank.forward_all(x, 0)[sample, expert] for sample, expert in ((0, 1), (1, 0), (2, 1))])

    torch.testing.assert_close(bank.forward_dense(x, combine, 0), expected)
    torch.testing.assert_close(bank.forward_sparse(x, combine, 0), expected)


@pytest.mark.parametrize("kind", ["mre", "topk-moe", "threshold-moe"])
@pytest.mark.parametrize("batch", [1, 128, 512, 2048, 8192])
@pytest.mark.parametrize("experts", [8, 32, 128])
@pytest.mark.parametrize("one_per_sample", [True, False])
@pytest.mark.parametrize(("execution", "expected"), [("dense-masked", False), ("sparse-dispatch", True)])
def test_rule_returns_forced_path(kind, batch, experts, one_per_sample, execution, expected):
    config = ModelConfig(kind=kind, experts=experts, expert_execution=execution)

    assert use_sparse_dispatch(config, batch, one_per_sample=one_per_sample) is expected


@pytest.mark.parametrize("batch", [1, 512, 8192])
@pytest.mark.parametrize("one_per_sample", [True, False])
def test_auto_rule_keeps_mre_training_gradients(batch, one_per_sample):
    config = ModelConfig(kind="mre", experts=128, width=256, expert_hidden=256)

    with torch.enable_grad():
        assert use_sparse_dispatch(config, batch, one_per_sample=one_per_sample) is False


def test_auto_rule_returns_bool_for_every_shape():
    config = ModelConfig()
    for kind in ("mre", "topk-moe", "threshold-moe"):
        for experts in (1, 8, 32):
            for batch in (0, 1, 512, 4096):
                for grad in (True, False):
                    with torch.set_grad_enabled(grad):
                        choice = use_sparse_dispatch(replace(config, kind=kind, experts=experts), batch, one_per_sample=True)
                    assert isinstance(choice, bool)


@pytest.mark.parametrize(
    ("one_per_sample", "batch", "expected"),
    # 8 experts x 64 x 64 = 2**15 multiply-adds per sample: the one-expert
    # threshold 2**21 falls at batch 64, the several-experts threshold 2**24 at 512.
    [(True, 63, False), (True, 64, True), (False, 511, False), (False, 512, True)],
)
@pytest.mark.parametrize("kind", ["topk-moe", "threshold-moe", "mre"])
def test_auto_rule_thresholds_without_gradients(kind, one_per_sample, batch, expected):
    config = ModelConfig(kind=kind, experts=8, width=64, expert_hidden=64)

    with torch.no_grad():
        assert use_sparse_dispatch(config, batch, one_per_sample=one_per_sample) is expected


def test_auto_rule_baselines_same_with_gradients():
    config = ModelConfig(kind="topk-moe", experts=8, width=64, expert_hidden=64)

    with torch.enable_grad():
        assert use_sparse_dispatch(config, 64, one_per_sample=True) is True
        assert use_sparse_dispatch(config, 63, one_per_sample=True) is False
