"""One training epoch of `engine.train_epoch` on random tensors shaped like Fashion-MNIST's training split.

Model sizes and batch size are those of the `cpu` profile. The quick scope
trains on a tenth of the 54,000 training images, the full scope on all of them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from workloads import CLASSES, FASHION_MNIST_TRAIN_SAMPLES, IMAGE_SHAPE, MODEL_CASES, build_from_config, scoped

from mre_repro.config import RunConfig, TrainConfig
from mre_repro.data import DataSplits
from mre_repro.engine import train_epoch
from mre_repro.profiles import get_profile

PROFILE = get_profile("cpu")
EPOCH_CASES = [case for case in MODEL_CASES if case.quick and case.dense_width_factor == 1 and case.expert_execution == "auto"]
FRACTIONS = (0.1, 1.0)
QUICK_FRACTION = 0.1
ROUNDS = 3
# Batches of the extra epoch that counts host synchronisations on a GPU.
SYNC_CHECK_BATCHES = 8


def random_splits(samples: int, device: str) -> DataSplits:
    """Random standard-normal images and uniform labels in the layout `train_epoch` reads."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(samples, *IMAGE_SHAPE, generator=generator).to(device)
    labels = torch.randint(0, CLASSES, (samples,), generator=generator).to(device)
    return DataSplits(
        dataset="fashion-mnist",
        train_x=images,
        train_y=labels,
        val_x=images[:0],
        val_y=labels[:0],
        test_x=images[:0],
        test_y=labels[:0],
        num_classes=CLASSES,
        input_shape=IMAGE_SHAPE,
        root=Path("random"),
        files={},
        fingerprint="random",
    )


def epoch_config(case, device: str) -> RunConfig:
    model = case.model_config(PROFILE.model.width, PROFILE.model.experts)
    train = TrainConfig(epochs=1, batch_size=PROFILE.batch_size, device=device)
    return RunConfig(model=model, reading=case.reading_config(), train=train)


@pytest.mark.parametrize(
    ("case", "fraction"),
    [scoped(case, fraction, id=f"{case.id}-{fraction:g}", quick=fraction == QUICK_FRACTION) for case in EPOCH_CASES for fraction in FRACTIONS],
)
def test_train_epoch(benchmark, measure, device, case, fraction):
    config = epoch_config(case, device)
    model = build_from_config(config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    samples = round(fraction * FASHION_MNIST_TRAIN_SAMPLES)
    splits = random_splits(samples, device)
    data_generator = torch.Generator().manual_seed(1)
    route_generator = torch.Generator(device=device).manual_seed(2)
    benchmark.extra_info.update(
        kind="epoch",
        model=case.kind,
        case=case.id,
        reading=case.reading,
        batch_size=config.train.batch_size,
        experts=config.model.experts if case.has_experts else None,
        width=config.model.width,
        device=device,
        samples=samples,
        fraction_of_fashion_mnist=fraction,
    )
    if device == "cuda":
        benchmark.extra_info["host_syncs"] = count_host_syncs(config, model, optimizer, random_splits(SYNC_CHECK_BATCHES * config.train.batch_size, device))
        benchmark.extra_info["host_sync_batches"] = SYNC_CHECK_BATCHES

    def epoch() -> None:
        train_epoch(config, model, optimizer, splits, 1.0, data_generator, route_generator, False, 1)

    measure(epoch, rounds=ROUNDS, warmup_rounds=0)


def count_host_syncs(config: RunConfig, model, optimizer, splits: DataSplits) -> int:
    """Count the host synchronisations of a short `train_epoch` with CUDA's sync debug mode.

    The reads of the epoch's sums after the loop count too, so a loop free of
    per-batch synchronisation gives a small constant, not one per batch.
    """
    generators = torch.Generator().manual_seed(1), torch.Generator(device="cuda").manual_seed(2)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            train_epoch(config, model, optimizer, splits, 1.0, *generators, False, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)
