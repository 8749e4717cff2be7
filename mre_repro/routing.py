"""Routing primitives: sampled activation masks, top-k and threshold gates.

Shape legend, used in every docstring and comment of this package:
    b  samples in the batch
    s  routing steps (MoE layers for the baselines)
    e  experts (N_e)
    o  router outcomes: e, or e + 1 when "stop" is an outcome
    c  classes

Every sampler returns a *hard* mask whose forward value is exactly 0 or 1.
With `straight_through=True` its gradient is the gradient of the relaxed
(soft) sample, the straight-through estimator of Bengio et al. (2013) as used
with Gumbel-softmax by Jang et al. (2017).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# A deterministic Poisson-window expert fires when P(fire) = 1 - exp(-exp(l))
# exceeds 1/2, that is when l > log(log 2).
POISSON_MODE_THRESHOLD = math.log(math.log(2.0))

_EPS = 1e-10


def sample_gumbel(shape: torch.Size | tuple[int, ...], *, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Draw standard Gumbel(0, 1) noise as -log(-log U)."""
    uniform = torch.rand(shape, generator=generator, device=device, dtype=dtype)
    return -torch.log(-torch.log(uniform.clamp(_EPS, 1.0 - _EPS)))


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Return `hard` in the forward pass with the gradient of `soft`.

    `soft - soft.detach()` is exactly zero in floating point, so the forward
    value is exactly `hard`; `hard + soft - soft.detach()` would not be.
    """
    return hard + (soft - soft.detach())


def categorical_mask(
    logits: torch.Tensor,
    *,
    temperature: float,
    generator: torch.Generator | None,
    sample: bool = True,
    hard: bool = True,
) -> torch.Tensor:
    """Sample a one-hot outcome per row with Gumbel-softmax.

    logits: (b, o) router logits. Returns (b, o). With `sample=False` the
    noise is left out, so the mask is the argmax (deterministic evaluation).
    With `hard=False` the relaxed sample itself is returned.
    """
    if sample:
        logits = logits + sample_gumbel(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    soft = F.softmax(logits / temperature, dim=-1)
    if not hard:
        return soft

    one_hot = F.one_hot(soft.argmax(dim=-1), soft.shape[-1]).to(soft.dtype)
    return straight_through(one_hot, soft)


def poisson_window_mask(
    logits: torch.Tensor,
    *,
    temperature: float,
    generator: torch.Generator | None,
    sample: bool = True,
    hard: bool = True,
) -> torch.Tensor:
    """Sample which experts fire within a unit window, independently per expert.

    logits: (b, e), log firing rates. Expert i fires when its exponential
    waiting time E / exp(l_i) is below 1, i.e. when l_i + G > 0 with G = -log E
    a standard Gumbel variable, so P(fire) = 1 - exp(-exp(l_i)). The relaxed
    sample is sigmoid((l_i + G) / temperature). Returns (b, e).
    """
    if sample:
        shifted = logits + sample_gumbel(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    else:
        shifted = logits - POISSON_MODE_THRESHOLD
    soft = torch.sigmoid(shifted / temperature)
    if not hard:
        return soft

    return straight_through((shifted > 0).to(soft.dtype), soft)


def firing_probability(logits: torch.Tensor) -> torch.Tensor:
    """P(fire) = 1 - exp(-exp(logits)) of the Poisson-window reading."""
    return -torch.expm1(-torch.exp(logits))


def top_k_gate(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax router of a top-k MoE layer.

    logits: (b, e). Returns (combine, mask, probs), each (b, e): `combine`
    holds the softmax probability of each selected expert and 0 elsewhere
    (the Switch Transformer weighting, not renormalised), `mask` is the hard
    0/1 selection and `probs` the full softmax, which the load-balancing loss
    reads.
    """
    probs = F.softmax(logits, dim=-1)
    top_index = probs.topk(k, dim=-1).indices
    mask = torch.zeros_like(probs).scatter_(-1, top_index, 1.0)
    return probs * mask, mask, probs


def threshold_gate(logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sigmoid gate that runs every expert whose gate exceeds `threshold`.

    logits: (b, e). Returns (combine, mask), each (b, e): `combine` is the gate
    value where the mask is 1, so the router learns through the gate values.
    """
    gates = torch.sigmoid(logits)
    mask = (gates > threshold).to(gates.dtype)
    return gates * mask, mask


def switch_load_balance_loss(mask: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Switch Transformer load-balancing loss, N_e * sum_i f_i * P_i.

    mask, probs: (b, e). f_i is the share of routing assignments sent to
    expert i and P_i the mean router probability of expert i. The loss is 1
    under a uniform assignment and reaches N_e when one expert takes all.
    """
    experts = probs.shape[-1]
    assignment_share = mask.sum(dim=0) / mask.sum().clamp_min(1.0)
    mean_probability = probs.mean(dim=0)
    return experts * torch.sum(assignment_share * mean_probability)
