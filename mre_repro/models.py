"""The Mixture of Raytraced Experts and its baselines.

Every model maps images (b, C, H, W) to a `ModelOutput`. Shapes follow the
legend of `mre_repro.routing`. All weights are drawn from an explicit
`torch.Generator` by `reset_parameters`, so a seed fully fixes a model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mre_repro.config import ModelConfig, Reading
from mre_repro.experts import ExpertBank, use_sparse_dispatch
from mre_repro.routing import (
    categorical_mask,
    poisson_window_mask,
    switch_load_balance_loss,
    threshold_gate,
    top_k_gate,
)


class ModelOutput(NamedTuple):
    """Result of a forward pass, logged by the engine and read by the claims."""

    step_logits: torch.Tensor  # (b, s, c): a prediction after every step; (b, 1, c) for baselines
    mask: torch.Tensor | None  # (b, s, e) hard 0/1 activation mask; None for the dense model
    load: torch.Tensor | None  # (s, e) activations per expert, summed over the batch
    aux_losses: dict[str, torch.Tensor]  # unweighted auxiliary losses, by name


class RayState(NamedTuple):
    """Per-sample state that the MRE carries from one step to the next."""

    embedding: torch.Tensor  # (b, d) output of the input block
    expert_sum: torch.Tensor  # (b, d) running sum of the outputs of fired experts
    last_outputs: torch.Tensor  # (b, e * d) last output of each expert; read by the "concat" router
    alive: torch.Tensor  # (b, 1) 1 until the ray chooses "stop"

    def select(self, index: torch.Tensor) -> RayState:
        """Keep only the samples at `index`, e.g. those that have not exited yet."""
        return RayState(*(tensor[index] for tensor in self))


# Leaf modules ---------------------------------------------------------------


class InputBlock(nn.Module):
    """Flatten the image and embed it: Linear(C*H*W, d) then GELU."""

    def __init__(self, input_dim: int, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_dim, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.linear(images.flatten(1)))


class OutputHead(nn.Module):
    """LayerNorm then Linear(d, c): class logits from a state."""

    def __init__(self, width: int, classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, classes)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(state))


def reset_module_parameters(module: nn.Module, generator: torch.Generator) -> None:
    """Initialise every parameter of `module` from `generator`.

    Linear layers use PyTorch's default bounds U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    LayerNorms start as the identity.
    """
    for child in module.modules():
        if isinstance(child, nn.Linear):
            bound = 1.0 / math.sqrt(child.in_features)
            with torch.no_grad():
                child.weight.uniform_(-bound, bound, generator=generator)
                child.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(child, nn.LayerNorm):
            nn.init.ones_(child.weight)
            nn.init.zeros_(child.bias)
        elif isinstance(child, ExpertBank):
            child.reset_parameters(generator)


def scale_router_weights(routers: nn.ModuleList, scale: float) -> None:
    with torch.no_grad():
        for router in routers:
            router.weight.mul_(scale)


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


# The MRE --------------------------------------------------------------------


class MixtureOfRaytracedExperts(nn.Module):
    """Stacked MoE whose router samples a sequence of experts.

    At each of s steps the router reads the current state, samples which
    experts fire (Gumbel-softmax, straight-through), the fired experts update
    the state, and the output head makes a prediction. A sample whose ray
    chooses "stop" keeps its last prediction for the remaining steps.
    """

    def __init__(self, config: ModelConfig, reading: Reading, input_dim: int, classes: int) -> None:
        super().__init__()
        self.config, self.reading = config, reading
        experts, width = config.experts, config.width
        pools = config.steps if reading.expert_pool == "per-step" else 1
        has_stop = reading.activation == "categorical" and reading.allow_stop
        router_width = width * (experts + 1) if reading.router_input == "concat" else width

        self.input_block = InputBlock(input_dim, width)
        self.router_norm = nn.LayerNorm(router_width)
        self.routers = nn.ModuleList(nn.Linear(router_width, experts + int(has_stop)) for _ in range(pools))
        self.expert_norm = nn.LayerNorm(width)
        self.experts = ExpertBank(pools, experts, width, config.expert_hidden)
        self.head = OutputHead(width, classes)

    def reset_parameters(self, generator: torch.Generator) -> None:
        reset_module_parameters(self, generator)
        scale_router_weights(self.routers, self.config.resolved_router_init_scale)

    def forward(
        self,
        images: torch.Tensor,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        sample: bool = True,
    ) -> ModelOutput:
        """Route a batch through s steps. `sample=False` routes deterministically (evaluation)."""
        rays = self.reading.rays if sample else 1
        batch = images.shape[0]
        if rays > 1:
            images = images.repeat(rays, *([1] * (images.dim() - 1)))

        step_logits, mask = self._unfold(self.input_block(images), temperature, generator, sample)

        # Several rays per input: average their predictions; an expert counts
        # as active for a sample at a step when any of its rays fired it.
        step_logits = step_logits.view(rays, batch, *step_logits.shape[1:]).mean(dim=0)
        load = mask.sum(dim=0)
        mask = mask.view(rays, batch, *mask.shape[1:]).amax(dim=0)
        return ModelOutput(step_logits, mask, load, {})

    def _unfold(
        self, embedding: torch.Tensor, temperature: float, generator: torch.Generator | None, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unfold the sequence like a recurrent network. Returns (b, s, c) logits and the (b, s, e) mask."""
        state = self.initial_state(embedding)
        step_logits, masks = [], []
        for step in range(self.config.steps):
            state, logits, hard = self.step(state, step, temperature=temperature, generator=generator, sample=sample)
            step_logits.append(logits)
            masks.append(hard)
        return torch.stack(step_logits, dim=1), torch.stack(masks, dim=1)

    def initial_state(self, embedding: torch.Tensor) -> RayState:
        batch, width = embedding.shape
        return RayState(
            embedding=embedding,
            expert_sum=torch.zeros_like(embedding),
            last_outputs=embedding.new_zeros(batch, self.config.experts * width),
            alive=embedding.new_ones(batch, 1),
        )

    def step(
        self,
        state: RayState,
        step: int,
        *,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        sample: bool = True,
    ) -> tuple[RayState, torch.Tensor, torch.Tensor]:
        """Advance every ray by one step. Returns the new state, (b, c) logits and the (b, e) hard mask."""
        experts = self.config.experts
        pool = step if self.reading.expert_pool == "per-step" else 0
        embedding, expert_sum, alive = state.embedding, state.expert_sum, state.alive
        residual = embedding + expert_sum

        router_input = residual if self.reading.router_input == "state" else torch.cat([embedding, state.last_outputs], -1)
        combine, hard = self._route(self.routers[pool](self.router_norm(router_input)), temperature, generator, sample)
        if combine.shape[-1] > experts:  # the last outcome is "stop"
            combine, stop = combine[:, :experts] * alive, combine[:, experts:]
            hard = hard[:, :experts] * alive.detach()
            alive = alive * (1.0 - stop)

        expert_input = self.expert_norm(residual)
        last_outputs = state.last_outputs
        if self.reading.router_input == "concat":
            outputs = self.experts.forward_all(expert_input, pool)  # (b, e, d)
            expert_sum = expert_sum + torch.einsum("be,bed->bd", combine, outputs)
            fired = hard.unsqueeze(-1)
            last_outputs = (fired * outputs + (1 - fired) * last_outputs.view_as(outputs)).flatten(1)
        else:
            sparse = use_sparse_dispatch(self.config, residual.shape[0], one_per_sample=self._one_per_step)
            expert_sum = expert_sum + self.experts(expert_input, combine, pool, sparse=sparse)

        head_input = expert_sum if self.reading.output_input == "experts" else embedding + expert_sum
        return RayState(embedding, expert_sum, last_outputs, alive), self.head(head_input), hard

    @property
    def _one_per_step(self) -> bool:
        return self.reading.activation == "categorical"

    def _route(
        self, logits: torch.Tensor, temperature: float, generator: torch.Generator | None, sample: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (combine weights, hard 0/1 mask), each (b, o)."""
        sampler = categorical_mask if self.reading.activation == "categorical" else poisson_window_mask
        use_hard = self.reading.straight_through or not sample
        combine = sampler(logits, temperature=temperature, generator=generator, sample=sample, hard=use_hard)
        if use_hard:
            return combine, combine.detach()

        # Without straight-through the relaxed sample itself weights the
        # experts; the logged mask is its rounding.
        if self.reading.activation == "categorical":
            hard = F.one_hot(combine.argmax(-1), combine.shape[-1]).to(combine.dtype)
        else:
            hard = (combine > 0.5).to(combine.dtype)
        return combine, hard.detach()

    def flops_per_sample(self, experts_per_sample: float | None = None) -> float:
        """Matmul FLOPs of one sample; `experts_per_sample` defaults to one expert per step."""
        steps = self.config.steps
        active = steps if experts_per_sample is None else experts_per_sample
        router = 2 * self.routers[0].in_features * self.routers[0].out_features
        head = 2 * self.head.linear.in_features * self.head.linear.out_features
        return 2 * self.input_block.linear.in_features * self.config.width + steps * (router + head) + active * self.experts.flops_per_expert()


# Baselines --------------------------------------------------------------------


class StackedMoE(nn.Module):
    """s residual MoE layers with a pool of N_e experts each, then the output head.

    gate="top-k": softmax router, the k most probable experts run, with the
    Switch load-balancing loss reported (unweighted) as "load_balance".
    gate="threshold": sigmoid router, every expert whose gate exceeds the
    threshold runs.
    """

    def __init__(self, config: ModelConfig, input_dim: int, classes: int, gate: str) -> None:
        super().__init__()
        self.config, self.gate = config, gate
        self.input_block = InputBlock(input_dim, config.width)
        self.norms = nn.ModuleList(nn.LayerNorm(config.width) for _ in range(config.steps))
        self.routers = nn.ModuleList(nn.Linear(config.width, config.experts) for _ in range(config.steps))
        self.experts = ExpertBank(config.steps, config.experts, config.width, config.expert_hidden)
        self.head = OutputHead(config.width, classes)

    def reset_parameters(self, generator: torch.Generator) -> None:
        reset_module_parameters(self, generator)
        if self.config.router_init_scale is not None:
            scale_router_weights(self.routers, self.config.router_init_scale)

    def forward(self, images: torch.Tensor, **_: object) -> ModelOutput:
        state = self.input_block(images)
        one_per_sample = self.gate == "top-k" and self.config.top_k == 1
        sparse = use_sparse_dispatch(self.config, state.shape[0], one_per_sample=one_per_sample)
        masks, balance_losses = [], []

        for layer in range(self.config.steps):
            normed = self.norms[layer](state)
            logits = self.routers[layer](normed)
            if self.gate == "top-k":
                combine, mask, probs = top_k_gate(logits, self.config.top_k)
                balance_losses.append(switch_load_balance_loss(mask, probs))
            else:
                combine, mask = threshold_gate(logits, self.config.gate_threshold)
            state = state + self.experts(normed, combine, layer, sparse=sparse)
            masks.append(mask)

        mask = torch.stack(masks, dim=1)
        aux = {"load_balance": torch.stack(balance_losses).mean()} if balance_losses else {}
        return ModelOutput(self.head(state).unsqueeze(1), mask, mask.sum(dim=0), aux)

    def flops_per_sample(self, experts_per_sample: float | None = None) -> float:
        """Matmul FLOPs of one sample; `experts_per_sample` defaults to top_k per layer."""
        config = self.config
        active = config.steps * config.top_k if experts_per_sample is None else experts_per_sample
        router = 2 * config.width * config.experts
        head = 2 * self.head.linear.in_features * self.head.linear.out_features
        return 2 * self.input_block.linear.in_features * config.width + config.steps * router + head + active * self.experts.flops_per_expert()


class DenseMLP(nn.Module):
    """s residual MLP blocks d -> h * factor -> d, then the output head.

    With factor 1 each block has the parameters of one expert, matching the
    active expert parameters of an MRE or top-1 MoE that fires one expert per step.
    """

    def __init__(self, config: ModelConfig, input_dim: int, classes: int) -> None:
        super().__init__()
        self.config = config
        hidden = config.expert_hidden * config.dense_width_factor
        self.input_block = InputBlock(input_dim, config.width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(config.width), nn.Linear(config.width, hidden), nn.GELU(), nn.Linear(hidden, config.width))
            for _ in range(config.steps)
        )
        self.head = OutputHead(config.width, classes)

    def reset_parameters(self, generator: torch.Generator) -> None:
        reset_module_parameters(self, generator)

    def forward(self, images: torch.Tensor, **_: object) -> ModelOutput:
        state = self.input_block(images)
        for block in self.blocks:
            state = state + block(state)
        return ModelOutput(self.head(state).unsqueeze(1), None, None, {})

    def flops_per_sample(self, experts_per_sample: float | None = None) -> float:
        config = self.config
        hidden = config.expert_hidden * config.dense_width_factor
        head = 2 * self.head.linear.in_features * self.head.linear.out_features
        return 2 * self.input_block.linear.in_features * config.width + config.steps * 4 * config.width * hidden + head


def build_model(
    config: ModelConfig, reading: Reading, input_shape: tuple[int, ...], classes: int, generator: torch.Generator
) -> nn.Module:
    """Build the model `config.kind` and initialise it from `generator`."""
    input_dim = math.prod(input_shape)
    if config.kind == "mre":
        model: nn.Module = MixtureOfRaytracedExperts(config, reading, input_dim, classes)
    elif config.kind == "topk-moe":
        model = StackedMoE(config, input_dim, classes, gate="top-k")
    elif config.kind == "threshold-moe":
        model = StackedMoE(config, input_dim, classes, gate="threshold")
    else:
        model = DenseMLP(config, input_dim, classes)
    model.reset_parameters(generator)
    return model
