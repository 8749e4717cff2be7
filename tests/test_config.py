"""Validation, overrides and run ids of the run configuration."""

import math

import pytest

from mre_repro.config import ConfigError, DataConfig, ModelConfig, Reading, RunConfig, TrainConfig
from mre_repro.profiles import PROFILES, build_grid, get_profile
from mre_repro.readings import DEFAULT_READING, READINGS, get_reading


def test_default_router_init_scale_is_sqrt_experts_plus_one():
    assert ModelConfig().resolved_router_init_scale == math.sqrt(9)
    assert ModelConfig(experts=15).resolved_router_init_scale == 4.0
    assert ModelConfig(router_init_scale=1.0).resolved_router_init_scale == 1.0


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: ModelConfig(width=0), "model.width=0"),
        (lambda: ModelConfig(top_k=9), "model.top_k=9"),
        (lambda: ModelConfig(kind="moe"), "model.kind='moe'"),
        (lambda: ModelConfig(gate_threshold=1.5), "model.gate_threshold=1.5"),
        (lambda: Reading(temperature=0.0), "reading.temperature=0.0"),
        (lambda: Reading(activation="softmax"), "reading.activation='softmax'"),
        (lambda: TrainConfig(lr=float("nan")), "train.lr=nan"),
        (lambda: TrainConfig(epochs=0), "train.epochs=0"),
        (lambda: DataConfig(val_fraction=1.0), "data.val_fraction=1.0"),
        (lambda: DataConfig(dataset="svhn"), "data.dataset='svhn'"),
    ],
)
def test_invalid_values_named_in_error(build, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        build()


def test_overrides_coerce_types():
    config = RunConfig().with_overrides(["model.width=128", "train.lr=1e-3", "reading.straight_through=false", "model.router_init_scale=1"])
    assert config.model.width == 128
    assert config.train.lr == 1e-3
    assert config.reading.straight_through is False
    assert config.model.router_init_scale == 1.0


def test_override_none_clears_optional():
    config = RunConfig(data=DataConfig(train_limit=100)).with_overrides(["data.train_limit=none"])
    assert config.data.train_limit is None


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("model.width", "SECTION.KEY=VALUE"),
        ("width=3", "SECTION.KEY=VALUE"),
        ("optimiser.lr=1", "unknown section 'optimiser'"),
        ("model.depth=3", "unknown key 'depth'"),
        ("model.width=wide", "'wide' is not an integer"),
        ("reading.activation=softmax", "'softmax' is not one of 'categorical', 'poisson-window'"),
    ],
)
def test_invalid_overrides_rejected(assignment, fragment):
    with pytest.raises(ConfigError, match=fragment):
        RunConfig().with_overrides([assignment])


def test_run_id_stable_and_sensitive():
    assert RunConfig().run_id == RunConfig().run_id
    assert RunConfig().run_id != RunConfig(train=TrainConfig(seed=1)).run_id
    assert len(RunConfig().run_id) == 12


def test_round_trip_through_dict():
    config = RunConfig(model=ModelConfig(kind="topk-moe", top_k=2), train=TrainConfig(seed=4))
    assert RunConfig.from_dict(config.to_dict()) == config


def test_settings_unused_by_kind_do_not_change_run_id():
    dense = RunConfig(model=ModelConfig(kind="dense"))
    assert RunConfig(model=ModelConfig(kind="dense", top_k=2), reading=get_reading("layered")).run_id == dense.run_id
    mre = RunConfig()
    assert RunConfig(model=ModelConfig(balance_loss_weight=0.0)).run_id == mre.run_id
    assert RunConfig(reading=get_reading("layered")).run_id != mre.run_id


def test_unknown_reading_lists_choices():
    with pytest.raises(ConfigError, match=DEFAULT_READING):
        get_reading("no-such-reading")
    assert all(name == reading.name for name, reading in READINGS.items())


def test_unknown_profile_lists_choices():
    with pytest.raises(ConfigError, match="smoke, cpu, paper"):
        get_profile("laptop")


def test_grid_roles_and_sharing_across_readings():
    profile = PROFILES["cpu"]
    grid = build_grid(profile)
    roles = {run.role for run in grid}
    assert roles == {"mre", "mre-init-1", "topk-moe-balanced", "topk-moe-unbalanced", "threshold-moe", "dense"}
    assert len(grid) == len(roles) * len(profile.seeds) * len(profile.datasets)

    # Another reading changes only the MRE runs: baselines are shared.
    other = build_grid(profile, "categorical-stop")
    baseline_ids = {run.config.run_id for run in grid if not run.role.startswith("mre")}
    assert baseline_ids == {run.config.run_id for run in other if not run.role.startswith("mre")}
    assert not {run.config.run_id for run in grid if run.role == "mre"} & {run.config.run_id for run in other if run.role == "mre"}


def test_paper_profile_sweeps_init_scales():
    roles = {run.role for run in build_grid(PROFILES["paper"])}
    assert {"mre-init-0.5", "mre-init-1", "mre-init-2", "mre-init-5"} <= roles


def test_mre_router_scale_stored_resolved():
    implicit = RunConfig()
    explicit = RunConfig(model=ModelConfig(router_init_scale=3.0))
    assert implicit.model.router_init_scale == 3.0
    assert implicit.run_id == explicit.run_id
    assert RunConfig(model=ModelConfig(kind="topk-moe")).model.router_init_scale is None
