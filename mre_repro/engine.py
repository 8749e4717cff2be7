"""Training and evaluation of one run, with checkpoints, resume and provenance.

`train_run(config, store)` is the only entry point the CLI and the claims use:
it returns the stored result when the run already finished, resumes from the
last checkpoint when it was interrupted, and otherwise trains from scratch.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mre_repro.config import RunConfig
from mre_repro.data import SYNTHETIC_MANIFEST, DataSplits, load_splits, write_synthetic_dataset
from mre_repro.models import ModelOutput, build_model, count_parameters
from mre_repro.store import RunResult, RunStore, code_version, device_description, library_versions, utc_now

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 2048
# Size of the generated data sets behind data.source = "synthetic".
SYNTHETIC_TRAIN_SAMPLES = 2000
SYNTHETIC_TEST_SAMPLES = 500
# Folder, in torchvision's layout, where each synthetic data set keeps its manifest.
SYNTHETIC_FOLDERS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py"}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class DeviceUnavailableError(RuntimeError):
    """CUDA was requested but no CUDA device is visible."""


@dataclass(frozen=True)
class DataOptions:
    """Data locations. They are not part of the run id, because the data fingerprint is recorded instead."""

    data_root: Path | None = None
    download: bool = False
    synthetic_root: Path | None = None


# Entry point --------------------------------------------------------------------


def train_run(
    config: RunConfig, store: RunStore, data_options: DataOptions = DataOptions(), progress: bool | None = None
) -> RunResult:
    """Train `config` to the end, or return its finished record from `store`."""
    run_id = config.run_id
    finished = store.load(run_id)
    if finished is not None:
        logger.info("run=%s reused finished record %s", run_id, store.record_path(run_id))
        return finished

    device = resolve_device(config.train.device)
    splits = load_data(config, data_options, str(device))
    seeds = derive_seeds(config.train.seed)
    model = build_model(config.model, config.reading, splits.input_shape, splits.num_classes, torch.Generator().manual_seed(seeds["init"]))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    data_generator = torch.Generator().manual_seed(seeds["data"])
    route_generator = torch.Generator(device=device).manual_seed(seeds["routing"])

    history: list[dict[str, Any]] = []
    started_at = utc_now()
    resumed_after: list[int] = []  # epochs after which an interrupted run was resumed
    checkpoint = store.load_checkpoint(run_id)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        data_generator.set_state(checkpoint["data_generator"])
        route_generator.set_state(checkpoint["route_generator"])
        history, started_at = checkpoint["history"], checkpoint["started_at"]
        resumed_after = [*checkpoint.get("resumed_after", []), len(history)]
        logger.info("run=%s resumed from the checkpoint after epoch %d", run_id, len(history))

    for epoch in range(len(history) + 1, config.train.epochs + 1):
        history.append(run_epoch(config, model, optimizer, splits, epoch, data_generator, route_generator, progress))
        _log_epoch(run_id, config, history[-1])
        store.save_checkpoint(
            run_id,
            {
                "run_id": run_id,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "data_generator": data_generator.get_state(),
                "route_generator": route_generator.get_state(),
                "history": history,
                "started_at": started_at,
                "resumed_after": resumed_after,
            },
        )

    result = finish_run(config, model, splits, history, device, started_at, resumed_after)
    store.save(result)
    store.remove_checkpoint(run_id)
    return result


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(
            "--gpu (train.device=cuda) was requested but torch sees no CUDA device; "
            "run without --gpu to train on the CPU, or install a CUDA build of torch on a machine with a GPU"
        )
    return torch.device(name)


def derive_seeds(seed: int) -> dict[str, int]:
    """Independent seeds for initialisation, batch order and routing noise, all derived from one run seed."""
    children = np.random.SeedSequence(seed).spawn(3)
    names = ("init", "data", "routing")
    return {name: int(child.generate_state(1, dtype=np.uint64)[0] >> 1) for name, child in zip(names, children)}


def load_data(config: RunConfig, options: DataOptions, device: str) -> DataSplits:
    data = config.data
    root = options.data_root
    if data.source == "synthetic":
        root = options.synthetic_root or Path("paper/build/synthetic-data")
        if not (root / SYNTHETIC_FOLDERS[data.dataset] / SYNTHETIC_MANIFEST).exists():
            write_synthetic_dataset(data.dataset, root, n_train=SYNTHETIC_TRAIN_SAMPLES, n_test=SYNTHETIC_TEST_SAMPLES, seed=0)
    return _load_splits_cached(
        data.dataset, str(root) if root else None, options.download, data.val_fraction, data.split_seed, device, data.train_limit, data.test_limit
    )


@functools.lru_cache(maxsize=2)
def _load_splits_cached(dataset, root, download, val_fraction, split_seed, device, train_limit, test_limit) -> DataSplits:
    # A profile trains many runs on the same data: read and normalise it once per process.
    return load_splits(
        dataset,
        data_root=root,
        download=download,
        val_fraction=val_fraction,
        split_seed=split_seed,
        device=device,
        train_limit=train_limit,
        test_limit=test_limit,
    )


# One epoch ------------------------------------------------------------------------


def temperature_at(config: RunConfig, epoch: int) -> float:
    """Gumbel-softmax temperature of `epoch` (1-based)."""
    reading = config.reading
    if reading.temperature_schedule == "fixed" or config.train.epochs == 1:
        return reading.temperature
    fraction = (epoch - 1) / (config.train.epochs - 1)
    return reading.temperature * (reading.temperature_final / reading.temperature) ** fraction


def step_loss(step_logits: torch.Tensor, targets: torch.Tensor, mode: str) -> torch.Tensor:
    """Combine per-step cross-entropies. step_logits: (b, s, c); targets: (b,)."""
    steps = step_logits.shape[1]
    per_step = torch.stack([F.cross_entropy(step_logits[:, t].float(), targets) for t in range(steps)])
    if mode == "last" or steps == 1:
        return per_step[-1]
    if mode == "increasing":
        weights = torch.arange(1, steps + 1, device=per_step.device, dtype=per_step.dtype)
        return (per_step * weights).sum() / weights.sum()
    return per_step.mean()


def run_epoch(config, model, optimizer, splits: DataSplits, epoch, data_generator, route_generator, progress) -> dict[str, Any]:
    """Train one epoch, evaluate on validation and test, and return the epoch's history entry."""
    device = splits.train_x.device
    temperature = temperature_at(config, epoch)
    synchronise(device)
    start = time.perf_counter()
    train = train_epoch(config, model, optimizer, splits, temperature, data_generator, route_generator, progress, epoch)
    synchronise(device)
    train_seconds = time.perf_counter() - start

    validation = evaluate(model, splits.val_x, splits.val_y, config.train.exit_threshold)
    test = evaluate(model, splits.test_x, splits.test_y, config.train.exit_threshold)
    return {
        "epoch": epoch,
        "temperature": temperature,
        **train,
        "val_accuracy": validation.accuracy,
        "val_accuracy_per_step": validation.accuracy_per_step,
        "test_accuracy": test.accuracy,
        "test_accuracy_per_step": test.accuracy_per_step,
        "usage_val": validation.usage,
        "experts_per_sample_val": validation.experts_per_sample,
        "experts_per_sample_test": test.experts_per_sample,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - start - train_seconds,
    }


def train_epoch(config, model, optimizer, splits, temperature, data_generator, route_generator, progress, epoch) -> dict[str, Any]:
    """Train one pass over the training split in a seeded order.

    Sums stay on the device and are read once at the end, so the loop has no
    host synchronisation per batch.
    """
    model.train()
    device = splits.train_x.device
    samples = splits.train_x.shape[0]
    order = torch.randperm(samples, generator=data_generator).to(device)
    aux_weights = {"load_balance": config.model.balance_loss_weight}
    loss_sum = torch.zeros((), device=device)
    aux_sums: dict[str, torch.Tensor] = {}
    load_sum: torch.Tensor | None = None
    batches = range(0, samples, config.train.batch_size)
    show = sys.stderr.isatty() if progress is None else progress

    for start in tqdm(batches, desc=f"epoch {epoch}/{config.train.epochs}", leave=False, disable=not show, unit="batch"):
        index = order[start : start + config.train.batch_size]
        output, loss = train_step(
            model, optimizer, splits.train_x[index], splits.train_y[index],
            temperature=temperature, generator=route_generator, step_loss_mode=config.reading.step_loss, aux_weights=aux_weights,
        )

        loss_sum += loss.detach() * index.numel()
        for name, value in output.aux_losses.items():
            aux_sums[name] = aux_sums.get(name, torch.zeros((), device=device)) + value.detach() * index.numel()
        if output.load is not None:
            load_sum = output.load.detach().float() if load_sum is None else load_sum + output.load.detach().float()

    train_loss = loss_sum.item() / samples
    if not math.isfinite(train_loss):
        kept = f"the checkpoint of epoch {epoch - 1} is kept" if epoch > 1 else "no epoch had finished"
        raise NonFiniteLossError(
            f"training loss became {train_loss} in epoch {epoch}; {kept}. "
            f"Lower the learning rate (now train.lr={config.train.lr}, e.g. --set train.lr={config.train.lr / 5:g}) "
            "or raise the Gumbel temperature, then run again"
        )
    usage = None if load_sum is None else (load_sum / samples).tolist()
    return {
        "train_loss": train_loss,
        "aux_losses": {name: value.item() / samples for name, value in aux_sums.items()},
        "usage_train": usage,
        "experts_per_sample_train": None if load_sum is None else load_sum.sum().item() / samples,
    }


def train_step(
    model, optimizer, images: torch.Tensor, targets: torch.Tensor, *, temperature: float,
    generator: torch.Generator, step_loss_mode: str, aux_weights: dict[str, float],
) -> tuple[ModelOutput, torch.Tensor]:
    """Run one optimisation step: forward, loss, backward, optimiser step.

    Returns the model output and the unweighted step loss, both still on the
    device: nothing is read back to the host.
    """
    device = images.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        output: ModelOutput = model(images, temperature=temperature, generator=generator)
        loss = step_loss(output.step_logits, targets, step_loss_mode)
        total = loss + sum(aux_weights.get(name, 0.0) * value for name, value in output.aux_losses.items())

    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return output, loss


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Deterministic-routing evaluation of one split.

    Per-sample tensors have one entry per sample (n,); with early exit the
    prediction, loss and activation count are those of the exit step.
    """

    accuracy: float
    accuracy_per_step: list[float]  # (s,), every step run to its end
    usage: list[list[float]] | None  # (s, e): share of samples that fire each expert at each step
    experts_per_sample: float | None
    correct: torch.Tensor  # (n,) bool
    loss: torch.Tensor  # (n,) cross-entropy in nats
    activations: torch.Tensor | None  # (n,) experts fired up to the exit step
    exit_step: torch.Tensor  # (n,) 1-based step of the prediction used


@torch.no_grad()
def evaluate(model, images: torch.Tensor, targets: torch.Tensor, exit_threshold: float | None) -> Evaluation:
    """Evaluate with deterministic routing, optionally exiting at the first confident step."""
    model.eval()
    outputs = [model(images[start : start + EVAL_BATCH_SIZE], sample=False) for start in range(0, images.shape[0], EVAL_BATCH_SIZE)]
    step_logits = torch.cat([output.step_logits.float() for output in outputs])  # (n, s, c)
    mask = None if outputs[0].mask is None else torch.cat([output.mask.float() for output in outputs])  # (n, s, e)

    steps = step_logits.shape[1]
    if exit_threshold is None:
        exit_index = torch.full((step_logits.shape[0],), steps - 1, device=step_logits.device)
    else:
        confident = F.softmax(step_logits, dim=-1).amax(dim=-1) >= exit_threshold  # (n, s)
        confident[:, -1] = True
        exit_index = confident.int().argmax(dim=1)

    exit_logits = step_logits.gather(1, exit_index.view(-1, 1, 1).expand(-1, 1, step_logits.shape[2])).squeeze(1)
    correct = exit_logits.argmax(dim=-1) == targets
    per_step_correct = step_logits.argmax(dim=-1) == targets.unsqueeze(1)

    activations = usage = experts_per_sample = None
    if mask is not None:
        fired_per_step = mask.sum(dim=-1)  # (n, s)
        if steps > 1:
            activations = fired_per_step.cumsum(dim=1).gather(1, exit_index.view(-1, 1)).squeeze(1)
        else:
            activations = fired_per_step.sum(dim=1)  # baselines: every layer of the single prediction
        usage = mask.mean(dim=0).tolist()
        experts_per_sample = activations.mean().item()

    return Evaluation(
        accuracy=correct.float().mean().item(),
        accuracy_per_step=per_step_correct.float().mean(dim=0).tolist(),
        usage=usage,
        experts_per_sample=experts_per_sample,
        correct=correct,
        loss=F.cross_entropy(exit_logits, targets, reduction="none"),
        activations=activations,
        exit_step=exit_index + 1,
    )


# Finishing --------------------------------------------------------------------------


def finish_run(config: RunConfig, model, splits: DataSplits, history, device, started_at: str, resumed_after: list[int]) -> RunResult:
    """Evaluate the final model per test sample and assemble the run record."""
    test = evaluate(model, splits.test_x, splits.test_y, config.train.exit_threshold)
    best = max(history, key=lambda entry: entry["val_accuracy"])
    final = {
        "test_accuracy": test.accuracy,
        "test_accuracy_per_step": test.accuracy_per_step,
        "best_val_accuracy": best["val_accuracy"],
        "best_val_epoch": best["epoch"],
        "experts_per_sample": test.experts_per_sample,
        "usage_test": test.usage,
        "mean_exit_step": test.exit_step.float().mean().item(),
        "epochs": len(history),
        "parameters": count_parameters(model),
        "flops_per_sample": model.flops_per_sample(test.experts_per_sample),
        "train_seconds": sum(entry["train_seconds"] for entry in history),
    }
    per_sample = {
        "correct": test.correct.int().tolist(),
        "loss": [round(value, 5) for value in test.loss.tolist()],
        "activations": None if test.activations is None else test.activations.int().tolist(),
        "exit_step": test.exit_step.int().tolist(),
    }
    provenance = {
        "seed": config.train.seed,
        **code_version(),
        **library_versions(),
        "device": device_description(device),
        "data_fingerprint": splits.fingerprint,
        "data_files": splits.files,
        "data_root": str(splits.root),
        "command": " ".join(sys.argv),
        "started_at": started_at,
        "finished_at": utc_now(),
        "resumed_after_epochs": resumed_after,
    }
    return RunResult(config.run_id, config.to_dict(), provenance, history, final, per_sample)


def _log_epoch(run_id: str, config: RunConfig, entry: dict[str, Any]) -> None:
    experts = entry["experts_per_sample_val"]
    logger.info(
        "run=%s epoch=%d/%d train_loss=%.4f val_acc=%.4f test_acc=%.4f experts_per_sample=%s train_s=%.1f",
        run_id,
        entry["epoch"],
        config.train.epochs,
        entry["train_loss"],
        entry["val_accuracy"],
        entry["test_accuracy"],
        "n/a" if experts is None else f"{experts:.2f}",
        entry["train_seconds"],
    )
