"""Early-exit inference for the MRE: confident samples leave the batch between steps.

`mre_repro.engine.evaluate` runs every step on every sample and picks each
sample's exit step afterwards, so its compute does not depend on the exit
threshold. `early_exit_predict` takes the same decisions step by step and
removes a sample from the batch as soon as it exits, so later steps run on
fewer samples and the time per sample falls with early exits. It measures
whether the sequential expert selection of the MRE limits inference latency.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from mre_repro.models import MixtureOfRaytracedExperts


class EarlyExitResult(NamedTuple):
    """Per-sample outcome of `early_exit_predict`, each (n,) int64 on the images' device."""

    predictions: torch.Tensor  # predicted class at the exit step
    exit_step: torch.Tensor  # 1-based step whose prediction is used
    activations: torch.Tensor  # experts fired up to and including the exit step


@torch.no_grad()
def early_exit_predict(
    model: MixtureOfRaytracedExperts,
    images: torch.Tensor,
    *,
    exit_threshold: float | None,
    max_steps: int | None = None,
) -> EarlyExitResult:
    """Predict with deterministic routing, dropping each sample from the batch once it exits.

    images: (n, C, H, W). A sample exits at the first step whose softmax
    confidence (largest class probability) reaches `exit_threshold`, and at
    step `max_steps` (default: every step of the model) otherwise. With
    `exit_threshold=None` every sample runs `max_steps` steps.

    With `max_steps=None` the decisions are those of
    `engine.evaluate(model, images, targets, exit_threshold)`.
    NOTE: agreement is exact up to float rounding. CPU matmul kernels may round
    differently for a batch of a few rows than for a full batch, by up to about
    1e-6 in the logits (measured with torch 2.14 on x86). A sample whose
    confidence lies that close to the threshold can therefore exit a step apart.
    Each step reads the number of remaining samples on the host, one device
    synchronisation per step.
    """
    if not isinstance(model, MixtureOfRaytracedExperts):
        raise TypeError(f"early exit needs a MixtureOfRaytracedExperts, got {type(model).__name__}")
    steps = _check_arguments(model, exit_threshold, max_steps)

    model.eval()
    samples = images.shape[0]
    device = images.device
    predictions = torch.zeros(samples, dtype=torch.long, device=device)
    exit_step = torch.full((samples,), steps, dtype=torch.long, device=device)
    activations = torch.zeros(samples, dtype=torch.long, device=device)

    remaining = torch.arange(samples, device=device)  # original index of each row still in the batch
    state = model.initial_state(model.input_block(images))
    for step in range(steps):
        state, logits, hard = model.step(state, step, sample=False)
        activations[remaining] += hard.sum(dim=-1).long()

        if step == steps - 1:
            exiting = torch.ones(remaining.shape[0], dtype=torch.bool, device=device)
        elif exit_threshold is None:
            continue
        else:
            exiting = F.softmax(logits.float(), dim=-1).amax(dim=-1) >= exit_threshold

        leaving = remaining[exiting]
        predictions[leaving] = logits[exiting].argmax(dim=-1)
        exit_step[leaving] = step + 1

        staying = (~exiting).nonzero().squeeze(1)
        if staying.numel() == 0:
            break
        remaining = remaining[staying]
        state = state.select(staying)

    return EarlyExitResult(predictions, exit_step, activations)


def _check_arguments(model: MixtureOfRaytracedExperts, exit_threshold: float | None, max_steps: int | None) -> int:
    """Validate the arguments and return the number of steps to run at most."""
    if exit_threshold is not None and not 0 < exit_threshold <= 1:
        raise ValueError(f"invalid exit_threshold={exit_threshold}: use a softmax confidence in (0, 1], or None")
    model_steps = model.config.steps
    if max_steps is None:
        return model_steps
    if not 1 <= max_steps <= model_steps:
        raise ValueError(f"invalid max_steps={max_steps}: the model has {model_steps} steps, use 1 to {model_steps} or None")
    return max_steps
