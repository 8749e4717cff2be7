"""Typed run configuration: one frozen dataclass tree, validated on creation.

"The paper" in this module is Perin, Lagomarsini, Gallicchio and Nuti,
*Mixture of Raytraced Experts*, arXiv 2507.12419 (2025).

A run is fully described by a `RunConfig`. Its canonical JSON form is written
whole into every run record and hashed into the run id, so two runs with the
same resolved configuration are the same run.

The MRE method leaves many choices open; each is a field of `Reading`, and
named readings live in `mre_repro.readings`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

DatasetName = Literal["mnist", "fashion-mnist", "cifar10"]
ModelKind = Literal["mre", "topk-moe", "threshold-moe", "dense"]

DATASET_NAMES: tuple[str, ...] = typing.get_args(DatasetName)
MODEL_KINDS: tuple[str, ...] = typing.get_args(ModelKind)


class ConfigError(ValueError):
    """An invalid configuration value; the message names the key and the fix."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _require_choice(key: str, value: object, choices: tuple[object, ...]) -> None:
    _require(value in choices, f"invalid {key}={value!r}: choose one of {', '.join(map(repr, choices))}")


def _literal_choices(cls: type, name: str) -> tuple[object, ...]:
    return typing.get_args(typing.get_type_hints(cls)[name])


@dataclass(frozen=True)
class Reading:
    """One reading of the MRE method: every choice the paper leaves open.

    `paper/INTERPRETATION.md` gives each field's alternatives and the reason
    for its default.
    """

    name: str = "poisson-window"
    # "categorical": each step fires one expert or "stop" (a race of Poisson
    # clocks, sampled with Gumbel-softmax over N_e + 1 outcomes).
    # "poisson-window": each expert fires independently when its Poisson clock
    # (rate exp(logit)) ticks within a unit window, p = 1 - exp(-exp(logit)).
    activation: Literal["categorical", "poisson-window"] = "poisson-window"
    # Categorical only: whether "stop" is one of the outcomes.
    allow_stop: bool = True
    # Sampled paths per input during training; their per-step logits are averaged.
    rays: int = 1
    # "state": input embedding plus the running sum of expert outputs.
    # "concat": [input embedding, last output of each expert], N_e + 1 blocks.
    router_input: Literal["state", "concat"] = "state"
    # "experts": the output layer reads the running sum of expert outputs only.
    # "experts+embedding": it also reads the input embedding.
    output_input: Literal["experts", "experts+embedding"] = "experts"
    # "shared": one pool of N_e experts used at every step.
    # "per-step": a separate pool of N_e experts for each step.
    expert_pool: Literal["shared", "per-step"] = "shared"
    # How the per-step cross-entropies combine into the training loss.
    step_loss: Literal["mean", "last", "increasing"] = "mean"
    # Gumbel-softmax temperature; "anneal" decays it geometrically per epoch
    # from `temperature` to `temperature_final`.
    temperature: float = 1.0
    temperature_schedule: Literal["fixed", "anneal"] = "fixed"
    temperature_final: float = 0.5
    straight_through: bool = True

    def __post_init__(self) -> None:
        for key in ("activation", "router_input", "output_input", "expert_pool", "step_loss", "temperature_schedule"):
            _require_choice(f"reading.{key}", getattr(self, key), _literal_choices(Reading, key))
        _require(self.rays >= 1, f"invalid reading.rays={self.rays}: use 1 or more sampled paths per input")
        for key in ("temperature", "temperature_final"):
            value = getattr(self, key)
            _require(
                math.isfinite(value) and value > 0,
                f"invalid reading.{key}={value}: the Gumbel-softmax temperature must be a positive number",
            )


@dataclass(frozen=True)
class ModelConfig:
    """Architecture sizes shared by the MRE and its baselines."""

    kind: ModelKind = "mre"
    width: int = 64  # d: width of the residual state
    expert_hidden: int = 64  # h: hidden width of each 2-layer expert MLP
    experts: int = 8  # N_e, the paper's value
    steps: int = 4  # routing steps of the MRE; MoE layers and dense blocks of the baselines
    # Router weights are multiplied by this at initialisation. None means the
    # paper's sqrt(N_e + 1).
    router_init_scale: float | None = None
    top_k: int = 1  # top-k MoE only
    balance_loss_weight: float = 0.01  # top-k MoE only: weight of the Switch load-balancing loss
    gate_threshold: float = 0.5  # threshold MoE only: an expert runs when its sigmoid gate exceeds this
    # Dense baseline: hidden width of each block as a multiple of expert_hidden.
    # 1 matches the active expert parameters of a top-1 MoE layer.
    dense_width_factor: int = 1
    # Expert execution: "auto" picks per shape from benchmark measurements.
    expert_execution: Literal["auto", "dense-masked", "sparse-dispatch"] = "auto"

    def __post_init__(self) -> None:
        _require_choice("model.kind", self.kind, MODEL_KINDS)
        _require_choice("model.expert_execution", self.expert_execution, _literal_choices(ModelConfig, "expert_execution"))
        for key in ("width", "expert_hidden", "experts", "steps", "dense_width_factor"):
            _require(getattr(self, key) >= 1, f"invalid model.{key}={getattr(self, key)}: must be at least 1")
        _require(
            1 <= self.top_k <= self.experts,
            f"invalid model.top_k={self.top_k}: must be between 1 and model.experts={self.experts}",
        )
        _require(
            self.balance_loss_weight >= 0,
            f"invalid model.balance_loss_weight={self.balance_loss_weight}: must be 0 or more",
        )
        _require(
            0 < self.gate_threshold < 1,
            f"invalid model.gate_threshold={self.gate_threshold}: must lie strictly between 0 and 1",
        )
        if self.router_init_scale is not None:
            _require(
                math.isfinite(self.router_init_scale) and self.router_init_scale > 0,
                f"invalid model.router_init_scale={self.router_init_scale}: must be a positive number",
            )

    @property
    def resolved_router_init_scale(self) -> float:
        if self.router_init_scale is None:
            return math.sqrt(self.experts + 1)
        return self.router_init_scale


@dataclass(frozen=True)
class DataConfig:
    dataset: DatasetName = "fashion-mnist"
    # "real": the published files; "synthetic": small generated files written
    # in the real on-disk formats (smoke profile and tests).
    source: Literal["real", "synthetic"] = "real"
    val_fraction: float = 0.1
    split_seed: int = 0
    train_limit: int | None = None  # None uses the whole training split
    test_limit: int | None = None

    def __post_init__(self) -> None:
        _require_choice("data.dataset", self.dataset, DATASET_NAMES)
        _require_choice("data.source", self.source, ("real", "synthetic"))
        _require(
            0 < self.val_fraction < 1,
            f"invalid data.val_fraction={self.val_fraction}: must lie strictly between 0 and 1",
        )
        for key in ("train_limit", "test_limit"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"invalid data.{key}={value}: use a positive count or leave it unset")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-3  # the paper's MNIST learning rate, used for every data set
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    # Evaluation exits early once the softmax confidence of a step's prediction
    # reaches this; None runs every step.
    exit_threshold: float | None = None

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, f"invalid train.epochs={self.epochs}: train for at least 1 epoch")
        _require(self.batch_size >= 1, f"invalid train.batch_size={self.batch_size}: must be at least 1")
        _require(
            math.isfinite(self.lr) and self.lr > 0,
            f"invalid train.lr={self.lr}: the learning rate must be a positive number",
        )
        _require(self.seed >= 0, f"invalid train.seed={self.seed}: seeds are non-negative integers")
        _require_choice("train.device", self.device, ("cpu", "cuda"))
        if self.exit_threshold is not None:
            _require(
                0 < self.exit_threshold <= 1,
                f"invalid train.exit_threshold={self.exit_threshold}: a softmax confidence in (0, 1], or unset",
            )


_UNUSED_MODEL_FIELDS: dict[str, tuple[str, ...]] = {
    "mre": ("top_k", "balance_loss_weight", "gate_threshold", "dense_width_factor"),
    "topk-moe": ("gate_threshold", "dense_width_factor"),
    "threshold-moe": ("top_k", "balance_loss_weight", "dense_width_factor"),
    "dense": ("experts", "router_init_scale", "top_k", "balance_loss_weight", "gate_threshold", "expert_execution"),
}


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    reading: Reading = field(default_factory=Reading)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Settings that do not apply to the model kind are reset to their
        # defaults, so they cannot split one run into several run ids.
        if self.model.kind != "mre" and self.reading != Reading():
            object.__setattr__(self, "reading", Reading())
        unused = {name: getattr(ModelConfig(), name) for name in _UNUSED_MODEL_FIELDS[self.model.kind]}
        if any(getattr(self.model, name) != value for name, value in unused.items()):
            object.__setattr__(self, "model", dataclasses.replace(self.model, **unused))

        # The MRE's router init scale is stored resolved, so the record shows
        # the scale used and "unset" and sqrt(N_e + 1) are one run id. The
        # baselines keep None: it means no scaling there.
        if self.model.kind == "mre" and self.model.router_init_scale is None:
            resolved = dataclasses.replace(self.model, router_init_scale=self.model.resolved_router_init_scale)
            object.__setattr__(self, "model", resolved)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(sections)
        _require(not unknown, f"unknown config sections {sorted(unknown)}: use {sorted(sections)}")
        hints = typing.get_type_hints(cls)
        return cls(**{name: _build_section(hints[name], raw.get(name, {}), name) for name in sections})

    @property
    def run_id(self) -> str:
        """Hash of the canonical JSON of the whole configuration (12 hex digits)."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def with_overrides(self, assignments: list[str] | tuple[str, ...]) -> RunConfig:
        """Apply `section.key=value` assignments, as given to `--set`."""
        raw = self.to_dict()
        for assignment in assignments:
            section, key, value = _parse_assignment(assignment, raw)
            raw[section][key] = value
        return RunConfig.from_dict(raw)


def _build_section(section_type: type, values: dict[str, Any], section: str) -> Any:
    names = {f.name for f in dataclasses.fields(section_type)}
    unknown = set(values) - names
    _require(not unknown, f"unknown keys {sorted(f'{section}.{k}' for k in unknown)}: valid keys are {sorted(names)}")
    return section_type(**values)


def _parse_assignment(assignment: str, raw: dict[str, Any]) -> tuple[str, str, Any]:
    target, sep, text = assignment.partition("=")
    section, dot, key = target.strip().partition(".")
    _require(
        bool(sep) and bool(dot),
        f"invalid --set {assignment!r}: write SECTION.KEY=VALUE, for example model.width=128",
    )
    _require(section in raw, f"invalid --set {assignment!r}: unknown section {section!r}, use one of {sorted(raw)}")
    _require(
        key in raw[section],
        f"invalid --set {assignment!r}: unknown key {key!r}, valid keys of {section} are {sorted(raw[section])}",
    )
    section_type = typing.get_type_hints(RunConfig)[section]
    field_type = typing.get_type_hints(section_type)[key]
    return section, key, _coerce(text.strip(), field_type, assignment)


def _coerce(text: str, field_type: Any, assignment: str) -> Any:
    """Convert `--set` text to the field's declared type."""
    options = typing.get_args(field_type) if _is_union(field_type) else (field_type,)
    if type(None) in options and text.lower() in ("none", "null", ""):
        return None
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is Literal:
            if text in typing.get_args(option):
                return text
            continue
        try:
            return _coerce_scalar(text, option)
        except ValueError:
            continue
    raise ConfigError(f"invalid --set {assignment!r}: {text!r} is not {_describe_type(field_type)}")


def _describe_type(field_type: Any) -> str:
    """Name a field type for an error message, e.g. "one of 'a', 'b'" or "an integer"."""
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "none"}
    options = typing.get_args(field_type) if _is_union(field_type) else (field_type,)
    described = []
    for option in options:
        if typing.get_origin(option) is Literal:
            described.append("one of " + ", ".join(map(repr, typing.get_args(option))))
        else:
            described.append(names.get(option, str(option)))
    return " or ".join(described)


def _coerce_scalar(text: str, option: Any) -> Any:
    if option is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if option is int:
        return int(text)
    if option is float:
        return float(text)
    if option is str:
        return text
    raise ValueError(text)


def _is_union(field_type: Any) -> bool:
    return typing.get_origin(field_type) in (typing.Union, types.UnionType)
