"""Properties of the routing primitives."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mre_repro.routing import (
    POISSON_MODE_THRESHOLD,
    categorical_mask,
    firing_probability,
    poisson_window_mask,
    straight_through,
    switch_load_balance_loss,
    threshold_gate,
    top_k_gate,
)

shapes = st.tuples(st.integers(1, 16), st.integers(2, 9))
temperatures = st.floats(0.05, 10.0)
seeds = st.integers(0, 2**31 - 1)


def random_logits(shape, seed, scale=3.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


@settings(max_examples=40, deadline=None)
@given(shape=shapes, temperature=temperatures, seed=seeds)
def test_categorical_mask_is_one_hot(shape, temperature, seed):
    generator = torch.Generator().manual_seed(seed)
    mask = categorical_mask(random_logits(shape, seed), temperature=temperature, generator=generator)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask.sum(dim=-1), torch.ones(shape[0]))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, temperature=temperatures, seed=seeds)
def test_poisson_window_mask_is_binary(shape, temperature, seed):
    generator = torch.Generator().manual_seed(seed)
    mask = poisson_window_mask(random_logits(shape, seed), temperature=temperature, generator=generator)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}


@settings(max_examples=30, deadline=None)
@given(shape=shapes, temperature=temperatures, seed=seeds, sampler=st.sampled_from([categorical_mask, poisson_window_mask]))
def test_straight_through_forward_hard_gradient_soft(shape, temperature, seed, sampler):
    """The forward value is the hard sample; the gradient is the relaxation's, for the same noise."""
    logits = random_logits(shape, seed).requires_grad_()
    weights = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))

    hard = sampler(logits, temperature=temperature, generator=torch.Generator().manual_seed(seed))
    (hard * weights).sum().backward()
    hard_grad = logits.grad.clone()
    logits.grad = None

    soft = sampler(logits, temperature=temperature, generator=torch.Generator().manual_seed(seed), hard=False)
    (soft * weights).sum().backward()

    if sampler is categorical_mask:
        assert torch.equal(hard.detach(), torch.nn.functional.one_hot(soft.argmax(-1), shape[1]).float())
    else:
        assert torch.equal(hard.detach(), (soft > 0.5).float())
    torch.testing.assert_close(hard_grad, logits.grad)


def test_straight_through_identity():
    soft = torch.tensor([0.2, 0.7], requires_grad=True)
    hard = torch.tensor([0.0, 1.0])
    out = straight_through(hard, soft)
    out.sum().backward()
    assert torch.equal(out.detach(), hard)
    assert torch.equal(soft.grad, torch.ones(2))


def test_low_temperature_relaxation_approaches_hard():
    logits = random_logits((64, 5), seed=3)
    soft = categorical_mask(logits, temperature=1e-3, generator=torch.Generator().manual_seed(0), hard=False)
    hard = categorical_mask(logits, temperature=1e-3, generator=torch.Generator().manual_seed(0))

    # Rows whose two largest perturbed logits are nearly tied stay soft at any
    # temperature; compare the rows with a gap of at least 0.05.
    perturbed = categorical_mask(logits, temperature=1.0, generator=torch.Generator().manual_seed(0), hard=False).log()
    top_two = perturbed.topk(2, dim=-1).values
    clear = (top_two[:, 0] - top_two[:, 1]) >= 0.05
    assert clear.sum() > 50
    torch.testing.assert_close(soft[clear], hard.detach()[clear], atol=1e-3, rtol=0)


def test_high_temperature_relaxation_approaches_uniform():
    logits = random_logits((64, 5), seed=4)
    soft = categorical_mask(logits, temperature=1e4, generator=torch.Generator().manual_seed(0), hard=False)
    torch.testing.assert_close(soft, torch.full_like(soft, 0.2), atol=1e-3, rtol=0)


def test_categorical_sampling_frequencies_match_softmax():
    """Gumbel-max samples outcome i with probability softmax(logits)_i."""
    logits = torch.tensor([[0.0, 1.0, 2.0]]).expand(20000, 3)
    mask = categorical_mask(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    expected = torch.softmax(logits[0], -1)
    torch.testing.assert_close(mask.mean(0), expected, atol=0.015, rtol=0)


def test_poisson_window_frequencies_match_firing_probability():
    logits = torch.tensor([[-2.0, 0.0, 1.0]]).expand(20000, 3)
    mask = poisson_window_mask(logits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mask.mean(0), firing_probability(logits[0]), atol=0.015, rtol=0)


def test_poisson_mode_fires_above_half():
    threshold = POISSON_MODE_THRESHOLD
    logits = torch.tensor([[threshold - 0.01, threshold + 0.01]])
    mask = poisson_window_mask(logits, temperature=1.0, generator=None, sample=False)
    assert mask.tolist() == [[0.0, 1.0]]
    assert math.isclose(firing_probability(torch.tensor(threshold)).item(), 0.5, abs_tol=1e-6)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=seeds, k=st.integers(1, 2))
def test_top_k_gate_selects_k(shape, seed, k):
    combine, mask, probs = top_k_gate(random_logits(shape, seed), k)
    assert torch.equal(mask.sum(-1), torch.full((shape[0],), float(k)))
    torch.testing.assert_close(combine, probs * mask)


def test_threshold_gate_hand_example():
    logits = torch.tensor([[0.0, 2.0, -1.0]])  # sigmoid: 0.5, 0.881, 0.269
    combine, mask = threshold_gate(logits, 0.5)
    assert mask.tolist() == [[0.0, 1.0, 0.0]]
    torch.testing.assert_close(combine, torch.tensor([[0.0, torch.sigmoid(torch.tensor(2.0)).item(), 0.0]]))


def test_switch_loss_uniform_is_one_and_collapsed_is_experts():
    experts = 4
    uniform_mask = torch.eye(experts).repeat(2, 1)
    uniform_probs = torch.full((2 * experts, experts), 1 / experts)
    assert math.isclose(switch_load_balance_loss(uniform_mask, uniform_probs).item(), 1.0, rel_tol=1e-6)

    collapsed_mask = torch.zeros(8, experts)
    collapsed_mask[:, 0] = 1
    collapsed_probs = collapsed_mask.clone()
    assert math.isclose(switch_load_balance_loss(collapsed_mask, collapsed_probs).item(), experts, rel_tol=1e-6)
