"""Early-exit inference latency per sample against exit depth and confidence threshold.

Does the sequential expert selection of the MRE limit inference latency?
`inference.early_exit_predict` drops samples from the batch once they exit,
so its time falls with earlier exits. Each case also stores the test accuracy
and the mean experts used at its setting, for the accuracy-versus-compute curve
of `plot_early_exit.py`.

The model is a small MRE (the `cpu` profile's sizes) trained briefly through
`engine.train_run`: on real Fashion-MNIST when it loads, else on the
synthetic stand-in, and `extra_info["data"]` records which.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from workloads import QUICK_READINGS, build_from_config, scoped

from mre_repro.config import DataConfig, RunConfig, TrainConfig
from mre_repro.data import DataCorruptError, DataNotFoundError, DataSplits
from mre_repro.engine import DataOptions, load_data, train_run
from mre_repro.inference import early_exit_predict
from mre_repro.profiles import get_profile
from mre_repro.readings import DEFAULT_READING, get_reading
from mre_repro.store import RunStore

PROFILE = get_profile("cpu")
STEPS = PROFILE.model.steps
THRESHOLDS = (0.5, 0.7, 0.9, 0.99, None)
BATCH_SIZES = (1, 512)
# Test images timed per case: enough batches of each size for a stable median.
TIMED_SAMPLES = {1: 64, 512: 2048}
# Training budget per scope: (epochs, training images or None for all, test images or None for all).
TRAINING = {"quick": (1, None, None), "full": (2, None, None)}
EVAL_CHUNK = 2048

# (exit_threshold, max_steps): a threshold sweep over the full depth, and
# fixed depths 1 .. s - 1 without a threshold (depth s is threshold None).
EXIT_SETTINGS = [(threshold, None) for threshold in THRESHOLDS] + [(None, depth) for depth in range(1, STEPS)]


def setting_id(exit_threshold: float | None, max_steps: int | None) -> str:
    if max_steps is not None:
        return f"depth{max_steps}"
    return "no-exit" if exit_threshold is None else f"t{exit_threshold:g}"


class CheckpointKeepingStore(RunStore):
    """A run store that keeps the last checkpoint of a finished run, so its trained weights can be loaded."""

    def remove_checkpoint(self, run_id: str) -> None:
        pass


@dataclass
class TrainedMRE:
    model: torch.nn.Module
    splits: DataSplits
    config: RunConfig
    data: str  # "fashion-mnist (real)" or "fashion-mnist (synthetic: ...)"
    qualities: dict[tuple, dict[str, float]] = field(default_factory=dict)

    def quality(self, exit_threshold: float | None, max_steps: int | None) -> dict[str, float]:
        """Test accuracy, mean experts used and mean exit step at one exit setting."""
        key = (exit_threshold, max_steps)
        if key not in self.qualities:
            self.qualities[key] = self._evaluate(exit_threshold, max_steps)
        return self.qualities[key]

    def _evaluate(self, exit_threshold: float | None, max_steps: int | None) -> dict[str, float]:
        results = [
            early_exit_predict(self.model, chunk, exit_threshold=exit_threshold, max_steps=max_steps)
            for chunk in self.splits.test_x.split(EVAL_CHUNK)
        ]
        predictions = torch.cat([result.predictions for result in results])
        return {
            "accuracy": (predictions == self.splits.test_y).float().mean().item(),
            "experts_per_sample": torch.cat([result.activations for result in results]).float().mean().item(),
            "mean_exit_step": torch.cat([result.exit_step for result in results]).float().mean().item(),
        }


def train_mre(reading_name: str, scope: str, device: str, root: Path) -> TrainedMRE:
    epochs, train_limit, test_limit = TRAINING[scope]
    config = RunConfig(
        data=DataConfig(dataset="fashion-mnist", source="real", train_limit=train_limit, test_limit=test_limit),
        model=replace(PROFILE.model, kind="mre"),
        reading=get_reading(reading_name),
        train=TrainConfig(epochs=epochs, batch_size=PROFILE.batch_size, device=device),
    )
    options = DataOptions(synthetic_root=root / "synthetic")
    store = CheckpointKeepingStore(root / "store")
    data = "fashion-mnist (real)"
    try:
        train_run(config, store, options, progress=False)
    except (DataNotFoundError, DataCorruptError) as error:
        data = f"fashion-mnist (synthetic: real files did not load: {type(error).__name__})"
        config = replace(config, data=replace(config.data, source="synthetic", train_limit=None, test_limit=None))
        train_run(config, store, options, progress=False)

    model = build_from_config(config, device)
    model.load_state_dict(store.load_checkpoint(config.run_id)["model"])
    return TrainedMRE(model.eval(), load_data(config, options, device), config, data)


@pytest.fixture(scope="session")
def trained_mre(request, tmp_path_factory, device):
    """Return `get(reading_name)`, which trains each reading's MRE once per session."""
    scope = request.config.getoption("--bench-scope")
    trained: dict[str, TrainedMRE] = {}

    def get(reading_name: str) -> TrainedMRE:
        if reading_name not in trained:
            trained[reading_name] = train_mre(reading_name, scope, device, tmp_path_factory.mktemp(f"early-exit-{reading_name}"))
        return trained[reading_name]

    return get


@pytest.mark.parametrize(
    ("reading_name", "batch_size", "exit_threshold", "max_steps"),
    [
        scoped(reading, batch, threshold, depth, id=f"{reading}-b{batch}-{setting_id(threshold, depth)}", quick=reading == DEFAULT_READING)
        for reading in QUICK_READINGS
        for batch in BATCH_SIZES
        for threshold, depth in EXIT_SETTINGS
    ],
)
def test_early_exit_latency(benchmark, measure, device, trained_mre, reading_name, batch_size, exit_threshold, max_steps):
    trained = trained_mre(reading_name)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else contextlib.nullcontext()
    with autocast:
        quality = trained.quality(exit_threshold, max_steps)
    chunks = trained.splits.test_x[: TIMED_SAMPLES[batch_size]].split(batch_size)
    benchmark.extra_info.update(
        kind="early_exit",
        model="mre",
        reading=reading_name,
        batch_size=batch_size,
        experts=trained.config.model.experts,
        width=trained.config.model.width,
        device=device,
        exit_threshold=exit_threshold,
        max_steps=max_steps,
        timed_samples=sum(chunk.shape[0] for chunk in chunks),
        data=trained.data,
        train_epochs=trained.config.train.epochs,
        train_samples=trained.splits.train_x.shape[0],
        test_samples=trained.splits.test_x.shape[0],
        **quality,
    )

    def predict_timed_samples() -> None:
        with autocast:
            for chunk in chunks:
                early_exit_predict(trained.model, chunk, exit_threshold=exit_threshold, max_steps=max_steps)

    measure(predict_timed_samples)
