"""Tests for mre_repro.inference: early exit agrees with engine.evaluate."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mre_repro.config import ModelConfig
from mre_repro.engine import evaluate
from mre_repro.inference import early_exit_predict
from mre_repro.models import build_model
from mre_repro.readings import DEFAULT_READING, READINGS

INPUT_SHAPE = (1, 6, 6)
CLASSES = 10
SAMPLES = 96
# A random head gives confidences near 1 / CLASSES. Scaling its weights
# spreads them over (0, 1), so a threshold splits the samples across steps.
HEAD_SCALE = 6.0
# Batch-size-dependent matmul rounding moves logits by about 1e-6, so a
# threshold this close to a confidence may change a sample's exit step.
ROUNDING_MARGIN = 1e-5


def make_model(reading_name: str, expert_execution: str = "auto"):
    config = ModelConfig(width=16, expert_hidden=16, experts=4, steps=4, expert_execution=expert_execution)
    model = build_model(config, READINGS[reading_name], INPUT_SHAPE, CLASSES, torch.Generator().manual_seed(3))
    with torch.no_grad():
        model.head.linear.weight.mul_(HEAD_SCALE)
    return model.eval()


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    images = torch.randn(SAMPLES, *INPUT_SHAPE, generator=generator)
    targets = torch.randint(0, CLASSES, (SAMPLES,), generator=generator)
    return images, targets


def step_confidences(model, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.softmax(model(images, sample=False).step_logits.float(), dim=-1).amax(dim=-1)


def assert_agrees_with_evaluate(model, images, targets, threshold) -> None:
    expected = evaluate(model, images, targets, threshold)
    result = early_exit_predict(model, images, exit_threshold=threshold)

    assert torch.equal(result.exit_step, expected.exit_step.long())
    assert torch.equal(result.activations, expected.activations.long())
    assert torch.equal(result.predictions == targets, expected.correct)


@pytest.mark.parametrize("reading_name", list(READINGS))
@pytest.mark.parametrize("threshold", [None, 0.2, 0.5, 0.9, 1.0])
def test_early_exit_matches_evaluate(reading_name, threshold):
    model = make_model(reading_name)
    images, targets = make_data()
    margin = (step_confidences(model, images) - (threshold or 0.0)).abs().min()
    assert threshold is None or margin > ROUNDING_MARGIN, "a confidence lies on the threshold; pick another seed"

    assert_agrees_with_evaluate(model, images, targets, threshold)


@pytest.mark.parametrize("expert_execution", ["dense-masked", "sparse-dispatch"])
def test_early_exit_matches_evaluate_per_execution_path(expert_execution):
    model = make_model("categorical-stop", expert_execution)
    images, targets = make_data()

    assert_agrees_with_evaluate(model, images, targets, 0.5)


@pytest.mark.parametrize("reading_name", [DEFAULT_READING, "categorical-stop"])
@settings(max_examples=40, deadline=None)
@given(threshold=st.floats(min_value=0.05, max_value=1.0))
def test_early_exit_matches_evaluate_any_threshold(reading_name, threshold):
    model = make_model(reading_name)
    images, targets = make_data()
    assume(bool((step_confidences(model, images) - threshold).abs().min() > ROUNDING_MARGIN))

    assert_agrees_with_evaluate(model, images, targets, threshold)


def test_thresholds_spread_exit_steps():
    # Guards the other tests: with this model a middle threshold must send
    # samples out at several different steps, or agreement would be trivial.
    model = make_model(DEFAULT_READING)
    images, _ = make_data()

    exit_step = early_exit_predict(model, images, exit_threshold=0.5).exit_step

    assert exit_step.unique().numel() >= 2


def test_max_steps_caps_depth():
    model = make_model(DEFAULT_READING)
    images, _ = make_data()
    with torch.no_grad():
        output = model(images, sample=False)

    result = early_exit_predict(model, images, exit_threshold=None, max_steps=2)

    assert torch.equal(result.exit_step, torch.full((SAMPLES,), 2))
    assert torch.equal(result.predictions, output.step_logits[:, 1].argmax(dim=-1))
    assert torch.equal(result.activations, output.mask[:, :2].sum(dim=(1, 2)).long())


def test_no_threshold_runs_every_step():
    model = make_model(DEFAULT_READING)
    images, _ = make_data()

    result = early_exit_predict(model, images, exit_threshold=None)

    assert torch.equal(result.exit_step, torch.full((SAMPLES,), model.config.steps))


def test_empty_batch():
    model = make_model(DEFAULT_READING)

    result = early_exit_predict(model, torch.zeros(0, *INPUT_SHAPE), exit_threshold=0.5)

    assert result.predictions.shape == (0,)
    assert result.exit_step.shape == (0,)


@pytest.mark.parametrize(("kwargs", "message"), [({"exit_threshold": 0.0}, "exit_threshold"), ({"exit_threshold": None, "max_steps": 5}, "max_steps")])
def test_invalid_arguments(kwargs, message):
    model = make_model(DEFAULT_READING)

    with pytest.raises(ValueError, match=message):
        early_exit_predict(model, torch.zeros(2, *INPUT_SHAPE), **kwargs)


def test_rejects_baseline():
    baseline = build_model(ModelConfig(kind="dense", width=8, expert_hidden=8), READINGS[DEFAULT_READING], INPUT_SHAPE, CLASSES, torch.Generator().manual_seed(0))

    with pytest.raises(TypeError, match="MixtureOfRaytracedExperts"):
        early_exit_predict(baseline, torch.zeros(2, *INPUT_SHAPE), exit_threshold=0.5)
