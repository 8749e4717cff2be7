"""Models, inputs and timed steps shared by the benchmark modules.

Inputs are random tensors shaped like Fashion-MNIST: (b, 1, 28, 28) images and
10 classes. Speed does not depend on the pixel values, so no data set is read,
except by the early-exit benchmark, which needs accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
import torch
from torch import nn

from mre_repro.config import ModelConfig, Reading, RunConfig
from mre_repro.engine import train_step
from mre_repro.models import build_model
from mre_repro.readings import DEFAULT_READING, READINGS

IMAGE_SHAPE = (1, 28, 28)
CLASSES = 10
# Fashion-MNIST training split after the default 10% validation cut.
FASHION_MNIST_TRAIN_SAMPLES = 54_000
BATCH_SIZES = (128, 512, 2048)
WIDTHS = (64, 256)
EXPERT_COUNTS = (8, 32)
# Quick scope: one representative shape; the ratios in the README use it.
QUICK_BATCH, QUICK_WIDTH, QUICK_EXPERTS = 512, 64, 8
QUICK_READINGS = (DEFAULT_READING, "categorical-stop")
# Dense baselines: hidden width of each block as a multiple of expert_hidden.
# Factor 1 has the active FLOPs of one expert per step. Larger factors match
# an MRE that fires several experts per step: a freshly initialised
# Poisson-window MRE fires about 5 of 8 experts per step, and about half of 32.
DENSE_WIDTH_FACTORS = (1, 2, 4, 5, 8, 16)
QUICK_DENSE_WIDTH_FACTORS = (1, 4, 5)
# Same value as the top-k MoE roles of the profiles (Switch Transformer alpha).
BALANCE_LOSS_WEIGHT = 0.01


@dataclass(frozen=True)
class ModelCase:
    """One benchmarked model: a `ModelConfig.kind` and the settings that tell its variants apart."""

    kind: str
    reading: str | None = None  # MRE only
    top_k: int = 1  # top-k MoE only
    dense_width_factor: int = 1  # dense only
    # "auto" leaves the choice to `use_sparse_dispatch`; the MRE variants that
    # force sparse dispatch measure what its exact straight-through gradient costs.
    expert_execution: str = "auto"

    @property
    def id(self) -> str:
        if self.kind == "mre":
            forced = "" if self.expert_execution == "auto" else f"-{self.expert_execution}"
            return f"mre-{self.reading}{forced}"
        if self.kind == "topk-moe":
            return f"top{self.top_k}-moe"
        if self.kind == "dense":
            return f"dense-x{self.dense_width_factor}"
        return self.kind

    @property
    def has_experts(self) -> bool:
        return self.kind != "dense"

    @property
    def quick(self) -> bool:
        """Whether the quick scope runs this model."""
        if self.kind == "dense":
            return self.dense_width_factor in QUICK_DENSE_WIDTH_FACTORS
        return self.kind != "mre" or self.reading in QUICK_READINGS

    def model_config(self, width: int, experts: int | None) -> ModelConfig:
        config = ModelConfig(
            kind=self.kind, width=width, expert_hidden=width, experts=experts or ModelConfig().experts, expert_execution=self.expert_execution
        )
        if self.kind == "topk-moe":
            return replace(config, top_k=self.top_k, balance_loss_weight=BALANCE_LOSS_WEIGHT)
        if self.kind == "dense":
            return replace(config, dense_width_factor=self.dense_width_factor)
        return config

    def reading_config(self) -> Reading:
        return READINGS[self.reading] if self.reading else Reading()

    def extra_info(self, width: int, experts: int | None, batch_size: int, device: str) -> dict[str, Any]:
        """Return the identifying fields that every model benchmark stores in `benchmark.extra_info`."""
        return {
            "model": self.kind,
            "case": self.id,
            "reading": self.reading,
            "top_k": self.top_k if self.kind == "topk-moe" else None,
            "dense_width_factor": self.dense_width_factor if self.kind == "dense" else None,
            "forced_execution": None if self.expert_execution == "auto" else self.expert_execution,
            "batch_size": batch_size,
            "experts": experts if self.has_experts else None,
            "width": width,
            "device": device,
        }


def scoped(*values: object, id: str, quick: bool):
    """Return a `pytest.param` marked for the quick scope when `quick`; the full scope runs every one."""
    return pytest.param(*values, id=id, marks=pytest.mark.quick if quick else ())


MODEL_CASES: tuple[ModelCase, ...] = (
    *(ModelCase("mre", reading=name) for name in READINGS),
    *(ModelCase("mre", reading=name, expert_execution="sparse-dispatch") for name in QUICK_READINGS),
    ModelCase("topk-moe", top_k=1),
    ModelCase("topk-moe", top_k=2),
    ModelCase("threshold-moe"),
    *(ModelCase("dense", dense_width_factor=factor) for factor in DENSE_WIDTH_FACTORS),
)


def build(case: ModelCase, width: int, experts: int | None, device: str, seed: int = 0) -> nn.Module:
    """Build and initialise `case` on `device`."""
    config = case.model_config(width, experts)
    model = build_model(config, case.reading_config(), IMAGE_SHAPE, CLASSES, torch.Generator().manual_seed(seed))
    return model.to(device)


def build_from_config(config: RunConfig, device: str, seed: int = 0) -> nn.Module:
    """Build and initialise the model of a whole `RunConfig` on `device`."""
    model = build_model(config.model, config.reading, IMAGE_SHAPE, CLASSES, torch.Generator().manual_seed(seed))
    return model.to(device)


def random_batch(batch_size: int, device: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return standard-normal images (b, 1, 28, 28) and uniform labels (b,), as normalised data would look."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, *IMAGE_SHAPE, generator=generator)
    targets = torch.randint(0, CLASSES, (batch_size,), generator=generator)
    return images.to(device), targets.to(device)


def make_train_step(
    model: nn.Module, case: ModelCase, images: torch.Tensor, targets: torch.Tensor, compiled: nn.Module | None = None
) -> Callable[[], None]:
    """Return one training step as `engine.train_epoch` runs it (`engine.train_step`): forward, loss, backward, Adam step.

    `compiled` (a `torch.compile` wrapper of `model`) runs the forward pass
    when given. The step reads nothing back to the host.
    """
    device = images.device
    forward = model if compiled is None else compiled
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    route_generator = torch.Generator(device=device).manual_seed(1)
    step_loss_mode = case.reading_config().step_loss
    aux_weights = {"load_balance": model.config.balance_loss_weight}

    def run_step() -> None:
        train_step(
            forward, optimizer, images, targets,
            temperature=1.0, generator=route_generator, step_loss_mode=step_loss_mode, aux_weights=aux_weights,
        )

    model.train()
    return run_step


def make_inference(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    """Return a deterministic-routing forward pass without gradients, as `engine.evaluate` runs it."""
    device = images.device

    @torch.no_grad()
    def inference() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            model(images, sample=False)

    model.eval()
    return inference


def routing_info(model: nn.Module, images: torch.Tensor, *, train: bool) -> dict[str, Any]:
    """Measure, in one forward pass, the experts fired per sample and the expert execution path.

    `train=True` samples the routing as training does and keeps gradients on,
    so `use_sparse_dispatch` gets the same grad mode as in the timed step.
    """
    paths: set[str] = set()

    def record_path(_module, _args, kwargs) -> None:
        paths.add("sparse-dispatch" if kwargs.get("sparse") else "dense-masked")

    experts = getattr(model, "experts", None)
    hook = experts.register_forward_pre_hook(record_path, with_kwargs=True) if experts is not None else None
    model.train(train)
    with torch.set_grad_enabled(train):
        output = model(images, generator=torch.Generator(device=images.device).manual_seed(2), sample=train)
    if hook is not None:
        hook.remove()

    experts_per_sample = None if output.mask is None else output.mask.float().sum(dim=(1, 2)).mean().item()
    if experts is not None and not paths:
        paths.add("all experts")  # the concat router reads every expert's output
    executed = experts_per_sample
    if experts is not None and paths != {"sparse-dispatch"}:
        executed = model.config.steps * model.config.experts  # every expert runs on every sample at every step
    return {
        "experts_per_sample": experts_per_sample,
        "flops_per_sample": model.flops_per_sample(experts_per_sample),
        "expert_flops_per_sample": expert_flops_per_sample(model, experts_per_sample),
        "executed_expert_flops_per_sample": expert_flops_per_sample(model, executed),
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "expert_execution": ", ".join(sorted(paths)) or None,
    }


def expert_flops_per_sample(model: nn.Module, experts_per_sample: float | None) -> float:
    """Return the forward FLOPs of the expert MLPs (dense blocks for the dense model) of one sample."""
    if experts_per_sample is None:
        config = model.config
        return config.steps * 4 * config.width * config.expert_hidden * config.dense_width_factor
    return experts_per_sample * model.experts.flops_per_expert()
