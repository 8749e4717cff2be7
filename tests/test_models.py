"""Shapes, parameter counts, gradients and a per-sample reference for the models."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mre_repro.config import ModelConfig
from mre_repro.models import DenseMLP, MixtureOfRaytracedExperts, StackedMoE, build_model, count_parameters
from mre_repro.readings import READINGS, get_reading
from mre_repro.routing import POISSON_MODE_THRESHOLD

INPUT_SHAPE = (1, 6, 6)
CLASSES = 5
SMALL = ModelConfig(width=8, expert_hidden=6, experts=4, steps=3)


def make(kind="mre", reading="poisson-window", seed=0, **changes):
    config = ModelConfig(**{**SMALL.__dict__, "kind": kind, **changes})
    return build_model(config, get_reading(reading), INPUT_SHAPE, CLASSES, torch.Generator().manual_seed(seed))


def images(batch, seed=1):
    return torch.randn(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("reading", list(READINGS))
def test_mre_output_shapes(reading):
    output = make(reading=reading)(images(7), generator=torch.Generator().manual_seed(0))
    assert output.step_logits.shape == (7, SMALL.steps, CLASSES)
    assert output.mask.shape == (7, SMALL.steps, SMALL.experts)
    assert output.load.shape == (SMALL.steps, SMALL.experts)
    assert output.aux_losses == {}


@pytest.mark.parametrize("kind", ["topk-moe", "threshold-moe", "dense"])
def test_baseline_output_shapes(kind):
    output = make(kind=kind)(images(7))
    assert output.step_logits.shape == (7, 1, CLASSES)
    if kind == "dense":
        assert output.mask is None
    else:
        assert output.mask.shape == (7, SMALL.steps, SMALL.experts)
    assert ("load_balance" in output.aux_losses) == (kind == "topk-moe")


def test_parameter_counts_by_hand():
    d, h, e, s, c, n_in = SMALL.width, SMALL.expert_hidden, SMALL.experts, SMALL.steps, CLASSES, math.prod(INPUT_SHAPE)
    input_block = n_in * d + d
    head = 2 * d + d * c + c
    expert = d * h + h + h * d + d
    # MRE, shared pool: one router over N_e outcomes, two LayerNorms.
    assert count_parameters(make()) == input_block + 2 * d + (d * e + e) + 2 * d + e * expert + head
    # Categorical with stop: N_e + 1 router outcomes.
    assert count_parameters(make(reading="categorical-stop")) == input_block + 2 * d + (d * (e + 1) + e + 1) + 2 * d + e * expert + head
    # Stacked MoE: per layer a LayerNorm, a router and a pool.
    assert count_parameters(make(kind="topk-moe")) == input_block + s * (2 * d + d * e + e + e * expert) + head
    # Dense: per block a LayerNorm and one expert-shaped MLP.
    assert count_parameters(make(kind="dense")) == input_block + s * (2 * d + expert) + head


def test_router_init_scale_multiplies_weights():
    base = make(router_init_scale=1.0, seed=3)
    scaled = make(seed=3)
    torch.testing.assert_close(scaled.routers[0].weight, base.routers[0].weight * math.sqrt(SMALL.experts + 1))


@pytest.mark.parametrize("reading", ["poisson-window", "categorical-stop", "layered", "concat-router", "multi-ray"])
def test_gradients_reach_router_and_every_expert(reading):
    model = make(reading=reading)
    torch.manual_seed(0)
    output = model(images(64), generator=torch.Generator().manual_seed(0), temperature=1.0)
    F.cross_entropy(output.step_logits.mean(1), torch.arange(64) % CLASSES).backward()

    for router in model.routers:
        assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0
    expert_grad = model.experts.w_in.grad.abs().sum(dim=(-1, -2))  # (pools, e)
    assert (expert_grad > 0).all(), f"experts without gradient: {expert_grad}"


@pytest.mark.parametrize("kind", ["topk-moe", "threshold-moe"])
def test_baseline_router_gets_gradient(kind):
    model = make(kind=kind)
    output = model(images(64))
    loss = F.cross_entropy(output.step_logits[:, -1], torch.arange(64) % CLASSES) + output.aux_losses.get("load_balance", 0)
    loss.backward()
    assert all(router.weight.grad.abs().sum() > 0 for router in model.routers)


def reference_mre(model: MixtureOfRaytracedExperts, batch: torch.Tensor) -> torch.Tensor:
    """Deterministic MRE forward, one sample and one expert at a time, with plain matmuls."""
    reading, config = model.reading, model.config
    logits_per_sample = []
    for image in batch:
        embedding = F.gelu(model.input_block.linear(image.flatten()))
        expert_sum = torch.zeros_like(embedding)
        alive, rows = True, []
        for step in range(config.steps):
            pool = step if reading.expert_pool == "per-step" else 0
            residual = embedding + expert_sum
            router_logits = model.routers[pool](model.router_norm(residual))
            if reading.activation == "categorical":
                choice = int(router_logits.argmax())
                fired = [choice] if alive and choice < config.experts else []
                alive = alive and choice < config.experts
            else:
                fired = [i for i in range(config.experts) if router_logits[i] > POISSON_MODE_THRESHOLD]
            expert_input = model.expert_norm(residual)
            for i in fired:
                hidden = F.gelu(expert_input @ model.experts.w_in[pool, i] + model.experts.b_in[pool, i])
                expert_sum = expert_sum + hidden @ model.experts.w_out[pool, i] + model.experts.b_out[pool, i]
            rows.append(model.head(expert_sum))
        logits_per_sample.append(torch.stack(rows))
    return torch.stack(logits_per_sample)


@pytest.mark.parametrize("reading", ["poisson-window", "categorical-stop", "layered"])
@pytest.mark.parametrize("execution", ["dense-masked", "sparse-dispatch"])
def test_mre_matches_per_sample_reference(reading, execution):
    model = make(reading=reading, expert_execution=execution, seed=5).eval()
    batch = images(9, seed=7)
    with torch.no_grad():
        batched = model(batch, sample=False).step_logits
        reference = reference_mre(model, batch)
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 1000), split=st.integers(1, 11), reading=st.sampled_from(["poisson-window", "categorical-stop"]))
def test_evaluation_independent_of_batch_composition(seed, split, reading):
    """Deterministic routing of a sample does not depend on which other samples share its batch."""
    model = make(reading=reading, seed=seed).eval()
    batch = images(12, seed=seed + 1)
    with torch.no_grad():
        whole = model(batch, sample=False)
        parts = [model(part, sample=False) for part in (batch[:split], batch[split:])]
    torch.testing.assert_close(whole.step_logits, torch.cat([p.step_logits for p in parts]), atol=1e-5, rtol=1e-5)
    assert torch.equal(whole.mask, torch.cat([p.mask for p in parts]))


def test_stopped_ray_keeps_its_prediction():
    model = make(reading="categorical-stop", seed=2).eval()
    with torch.no_grad():
        # Force "stop" at the first step by making the stop logit dominate.
        model.routers[0].bias[-1] = 1e3
        output = model(images(4), sample=False)
    assert output.mask.sum() == 0
    torch.testing.assert_close(output.step_logits[:, 0], output.step_logits[:, -1])


def test_flops_count_active_experts():
    model = make()
    one_per_step = model.flops_per_sample()
    two_more = model.flops_per_sample(SMALL.steps + 2)
    assert two_more - one_per_step == 2 * model.experts.flops_per_expert()
    assert model.experts.flops_per_expert() == 4 * SMALL.width * SMALL.expert_hidden


def test_model_types():
    assert isinstance(make(), MixtureOfRaytracedExperts)
    assert isinstance(make(kind="topk-moe"), StackedMoE)
    assert isinstance(make(kind="dense"), DenseMLP)


def test_same_generator_seed_same_weights():
    first, second = make(seed=11), make(seed=11)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)
