"""Training runs on small generated data: determinism, resume, reuse, errors, records."""

import json

import pytest
import torch

from mre_repro import engine
from mre_repro.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from mre_repro.engine import DataOptions, DeviceUnavailableError, NonFiniteLossError, evaluate, train_run
from mre_repro.store import RunStore, atomic_path, write_json_atomic

TIMING_KEYS = ("train_seconds", "eval_seconds")


def tiny_config(kind="mre", epochs=2, seed=0, **train):
    return RunConfig(
        data=DataConfig(dataset="fashion-mnist", source="synthetic", train_limit=600, test_limit=200),
        model=ModelConfig(kind=kind, width=16, expert_hidden=16, experts=4, steps=3),
        train=TrainConfig(epochs=epochs, batch_size=64, seed=seed, **train),
    )


@pytest.fixture
def options(tmp_path_factory):
    return DataOptions(synthetic_root=tmp_path_factory.mktemp("synthetic"))


def without_timings(history):
    return [{key: value for key, value in entry.items() if key not in TIMING_KEYS} for entry in history]


@pytest.mark.parametrize("kind", ["mre", "topk-moe", "threshold-moe", "dense"])
def test_record_contents(kind, tmp_path, options):
    store = RunStore(tmp_path)
    result = train_run(tiny_config(kind), store, options, progress=False)
    record = json.loads(store.record_path(result.run_id).read_text())

    assert set(record) >= {"run_id", "config", "provenance", "history", "final", "per_sample"}
    assert record["config"] == tiny_config(kind).to_dict()
    assert set(record["provenance"]) >= {"seed", "git_commit", "torch", "torchvision", "device", "data_fingerprint", "started_at", "finished_at"}
    assert [entry["epoch"] for entry in record["history"]] == [1, 2]
    assert set(record["final"]) >= {"test_accuracy", "best_val_accuracy", "experts_per_sample"}
    assert len(record["per_sample"]["correct"]) == 200
    if kind == "dense":
        assert record["final"]["experts_per_sample"] is None
    else:
        assert len(record["per_sample"]["activations"]) == 200
        assert record["final"]["experts_per_sample"] == pytest.approx(sum(record["per_sample"]["activations"]) / 200)
    assert not store.checkpoint_path(result.run_id).exists()


def test_same_seed_same_metrics_on_cpu(tmp_path, options):
    first = train_run(tiny_config(), RunStore(tmp_path / "a"), options, progress=False)
    second = train_run(tiny_config(), RunStore(tmp_path / "b"), options, progress=False)
    assert without_timings(first.history) == without_timings(second.history)
    assert first.per_sample == second.per_sample


def test_different_seed_different_metrics(tmp_path, options):
    first = train_run(tiny_config(seed=0), RunStore(tmp_path), options, progress=False)
    second = train_run(tiny_config(seed=1), RunStore(tmp_path), options, progress=False)
    assert first.history[-1]["train_loss"] != second.history[-1]["train_loss"]


def test_resume_after_interruption_matches_uninterrupted(tmp_path, options, monkeypatch):
    config = tiny_config(epochs=3)
    uninterrupted = train_run(config, RunStore(tmp_path / "whole"), options, progress=False)

    store = RunStore(tmp_path / "interrupted")
    real_run_epoch = engine.run_epoch

    def interrupt_in_epoch_three(*args):
        if args[4] == 3:
            raise KeyboardInterrupt
        return real_run_epoch(*args)

    monkeypatch.setattr(engine, "run_epoch", interrupt_in_epoch_three)
    with pytest.raises(KeyboardInterrupt):
        train_run(config, store, options, progress=False)
    assert store.checkpoint_path(config.run_id).exists()
    assert store.load(config.run_id) is None

    monkeypatch.setattr(engine, "run_epoch", real_run_epoch)
    resumed = train_run(config, store, options, progress=False)
    assert without_timings(resumed.history) == without_timings(uninterrupted.history)
    assert resumed.per_sample == uninterrupted.per_sample
    assert resumed.final["test_accuracy"] == uninterrupted.final["test_accuracy"]
    assert resumed.provenance["resumed_after_epochs"] == [2]
    assert uninterrupted.provenance["resumed_after_epochs"] == []


def test_finished_run_is_reused_not_retrained(tmp_path, options, monkeypatch):
    store = RunStore(tmp_path)
    first = train_run(tiny_config(), store, options, progress=False)

    def fail(*args):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(engine, "run_epoch", fail)
    assert train_run(tiny_config(), store, options, progress=False) == first


def test_nan_loss_raises_and_keeps_last_checkpoint(tmp_path, options, monkeypatch):
    store = RunStore(tmp_path)
    config = tiny_config(epochs=3)
    real_step_loss = engine.step_loss
    calls = {"count": 0}
    batches_per_epoch = -(-600 // 64)  # train_limit 600, batch 64

    def nan_in_epoch_two(step_logits, targets, mode):
        calls["count"] += 1
        loss = real_step_loss(step_logits, targets, mode)
        return loss * float("nan") if calls["count"] > batches_per_epoch else loss

    monkeypatch.setattr(engine, "step_loss", nan_in_epoch_two)
    with pytest.raises(NonFiniteLossError, match=r"became nan in epoch 2; the checkpoint of epoch 1 is kept.*train\.lr"):
        train_run(config, store, options, progress=False)
    checkpoint = store.load_checkpoint(config.run_id)
    assert len(checkpoint["history"]) == 1
    assert store.load(config.run_id) is None


def test_cuda_request_without_cuda_is_clear(tmp_path, options):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(DeviceUnavailableError, match="run without --gpu"):
        train_run(tiny_config(device="cuda"), RunStore(tmp_path), options, progress=False)


def test_epoch_log_line(tmp_path, options, caplog):
    caplog.set_level("INFO", logger="mre_repro.engine")
    result = train_run(tiny_config(), RunStore(tmp_path), options, progress=False)
    lines = [record.getMessage() for record in caplog.records if "epoch=" in record.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith(f"run={result.run_id} epoch=1/2 train_loss=")


def test_step_loss_modes():
    logits = torch.zeros(2, 3, 4)
    logits[:, 2, 1] = 10.0  # the last step is confident and right
    targets = torch.tensor([1, 1])
    uniform = torch.log(torch.tensor(4.0)).item()
    last = engine.step_loss(logits, targets, "last").item()
    mean = engine.step_loss(logits, targets, "mean").item()
    increasing = engine.step_loss(logits, targets, "increasing").item()
    assert last < 1e-3
    assert mean == pytest.approx((2 * uniform + last) / 3, rel=1e-5)
    assert increasing == pytest.approx((1 * uniform + 2 * uniform + 3 * last) / 6, rel=1e-5)


def test_early_exit_counts_activations_up_to_exit():
    class FixedModel(torch.nn.Module):
        def forward(self, images, **_):
            # Sample 0 is confident at step 1, sample 1 only at step 3.
            logits = torch.tensor([[[9.0, 0.0], [9.0, 0.0], [9.0, 0.0]], [[0.1, 0.0], [0.2, 0.0], [9.0, 0.0]]])
            mask = torch.tensor([[[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
            from mre_repro.models import ModelOutput

            return ModelOutput(logits[: images.shape[0]], mask[: images.shape[0]], mask.sum(0), {})

    targets = torch.tensor([0, 0])
    fixed = evaluate(FixedModel(), torch.zeros(2, 1), targets, exit_threshold=None)
    early = evaluate(FixedModel(), torch.zeros(2, 1), targets, exit_threshold=0.9)
    assert fixed.activations.tolist() == [4.0, 4.0]
    assert early.exit_step.tolist() == [1, 3]
    assert early.activations.tolist() == [2.0, 4.0]
    assert early.experts_per_sample == 3.0


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "record.json"
    write_json_atomic(path, {"value": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(path) as temporary:
            temporary.write_text('{"value": 2, "half')
            raise RuntimeError("interrupted mid-write")
    assert json.loads(path.read_text()) == {"value": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_unreadable_record_names_file(tmp_path):
    store = RunStore(tmp_path)
    store.record_path("abc").parent.mkdir(parents=True)
    store.record_path("abc").write_text("{ not json")
    with pytest.raises(Exception, match="abc.json.*delete it"):
        store.load("abc")
