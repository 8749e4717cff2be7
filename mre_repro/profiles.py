"""Profiles: the run grids behind `mre-repro reproduce` and `pytest claims/`.

A profile fixes the data sets, seeds, epochs and model sizes; `build_grid`
turns it into one `GridRun` per (role, data set, seed). Both entry points
build the grid here, so a run trained by one is found by the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from mre_repro.config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from mre_repro.readings import DEFAULT_READING, get_reading

# Top-k MoE balancing weight: the Switch Transformer's alpha = 1e-2.
SWITCH_BALANCE_WEIGHT = 0.01


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    epochs: int
    source: str  # "real" or "synthetic"
    device: str  # "cpu" or "cuda"
    model: ModelConfig
    batch_size: int
    # Router init scales of the MRE ablation besides the default sqrt(N_e + 1).
    ablation_init_scales: tuple[float, ...]
    train_limit: int | None = None
    test_limit: int | None = None


PROFILES: dict[str, Profile] = {
    profile.name: profile
    for profile in (
        Profile(
            name="smoke",
            description="seconds: generated data in the real file formats, tiny models; checks the pipeline, not the claims",
            datasets=("fashion-mnist",),
            seeds=(0, 1),
            epochs=2,
            source="synthetic",
            device="cpu",
            model=ModelConfig(width=32, expert_hidden=32),
            batch_size=64,
            ablation_init_scales=(1.0,),
        ),
        Profile(
            name="cpu",
            description="real Fashion-MNIST on the CPU, every model, 5 seeds",
            datasets=("fashion-mnist",),
            # 5 seeds: the pre-registered minimum for a decided verdict.
            seeds=(0, 1, 2, 3, 4),
            epochs=10,
            source="real",
            device="cpu",
            model=ModelConfig(width=64, expert_hidden=64),
            batch_size=128,
            ablation_init_scales=(1.0,),
        ),
        Profile(
            name="paper",
            description="GPU: MNIST, Fashion-MNIST and CIFAR-10, 10 seeds, init-scale sweep",
            datasets=("mnist", "fashion-mnist", "cifar10"),
            seeds=tuple(range(10)),
            epochs=30,
            source="real",
            device="cuda",
            model=ModelConfig(width=128, expert_hidden=128),
            batch_size=128,
            ablation_init_scales=(0.5, 1.0, 2.0, 5.0),
        ),
    )
}


@dataclass(frozen=True)
class GridRun:
    """One run of a profile's grid and the role the claims read it in."""

    role: str  # "mre", "mre-init-<scale>", "topk-moe-balanced", "topk-moe-unbalanced", "threshold-moe", "dense"
    config: RunConfig

    @property
    def dataset(self) -> str:
        return self.config.data.dataset

    @property
    def seed(self) -> int:
        return self.config.train.seed


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}") from None


def build_grid(profile: Profile, reading_name: str = DEFAULT_READING, device: str | None = None) -> list[GridRun]:
    """Build every run of `profile`, with the MRE runs under the reading `reading_name`."""
    reading = get_reading(reading_name)
    default_scale = math.sqrt(profile.model.experts + 1)
    roles = [
        ("mre", replace(profile.model, kind="mre")),
        *(
            (f"mre-init-{scale:g}", replace(profile.model, kind="mre", router_init_scale=scale))
            for scale in profile.ablation_init_scales
            if not math.isclose(scale, default_scale)
        ),
        ("topk-moe-balanced", replace(profile.model, kind="topk-moe", top_k=1, balance_loss_weight=SWITCH_BALANCE_WEIGHT)),
        ("topk-moe-unbalanced", replace(profile.model, kind="topk-moe", top_k=1, balance_loss_weight=0.0)),
        ("threshold-moe", replace(profile.model, kind="threshold-moe")),
        ("dense", replace(profile.model, kind="dense")),
    ]
    grid = []
    for dataset in profile.datasets:
        for seed in profile.seeds:
            data = DataConfig(dataset=dataset, source=profile.source, train_limit=profile.train_limit, test_limit=profile.test_limit)
            train = TrainConfig(epochs=profile.epochs, batch_size=profile.batch_size, seed=seed, device=device or profile.device)
            grid.extend(GridRun(role, RunConfig(data=data, model=model, reading=reading, train=train)) for role, model in roles)
    return grid
