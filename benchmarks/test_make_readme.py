"""make_readme.py renders a README and the early-exit curve from a small hand-made benchmark JSON.

The JSON mimics what pytest-benchmark writes, with round medians, so each
ratio in the README can be checked by hand.
"""

from __future__ import annotations

import json

import pytest
from make_readme import main

pytestmark = pytest.mark.quick

SHAPE = {"batch_size": 512, "width": 64, "experts": 8, "device": "cpu"}


def step(case: str, model: str, seconds: float, **info) -> dict:
    fields = {"kind": "train_step", "case": case, "model": model, "reading": None, **SHAPE, "expert_execution": "dense-masked", **info}
    return {"name": f"test_train_step[{case}]", "stats": {"median": seconds}, "extra_info": fields}


def expert(path: str, seconds: float) -> dict:
    fields = {"kind": "expert_execution", "pass": "train", "router": "poisson-window", "path": path, **SHAPE, "batch_size": 2048}
    fields.update(experts_per_sample=4.0, active_flops=2.0e9, executed_flops=4.0e9)
    return {"name": f"test_expert_execution[{path}]", "stats": {"median": seconds}, "extra_info": fields}


def early_exit(threshold: float | None, seconds: float, accuracy: float, experts: float) -> dict:
    fields = {"kind": "early_exit", "model": "mre", "reading": "poisson-window", **SHAPE, "exit_threshold": threshold, "max_steps": None}
    fields.update(timed_samples=2048, accuracy=accuracy, experts_per_sample=experts, mean_exit_step=2.0, data="fashion-mnist (real)")
    fields.update(train_epochs=1, train_samples=54000, test_samples=10000)
    return {"name": f"test_early_exit_latency[{threshold}]", "stats": {"median": seconds}, "extra_info": fields}


def benchmark_json() -> dict:
    mre = {"reading": "poisson-window", "experts_per_sample": 16.0, "flops_per_sample": 400_000.0, "expert_flops_per_sample": 262_144.0, "executed_expert_flops_per_sample": 524_288.0}
    top1 = {"experts_per_sample": 4.0, "flops_per_sample": 170_000.0, "expert_flops_per_sample": 65_536.0, "executed_expert_flops_per_sample": 65_536.0}
    dense = {"experts": None, "experts_per_sample": None, "expert_execution": None}
    return {
        "datetime": "2026-01-02T03:04:05+00:00",
        "command": "pytest benchmarks/",
        "bench_scope": "quick",
        "machine_info": {"device_description": "cpu: test machine", "torch": "2.14.1", "torch_threads": 1, "torch_startup_threads": 1},
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "benchmarks": [
            step("mre-poisson-window", "mre", 0.030, **mre),
            step("top1-moe", "topk-moe", 0.020, top_k=1, **top1),
            step("dense-x1", "dense", 0.005, dense_width_factor=1, flops_per_sample=170_000.0, **dense),
            step("dense-x4", "dense", 0.010, dense_width_factor=4, flops_per_sample=400_000.0, **dense),
            {"name": "test_matmul_peak[n2048]", "stats": {"median": 0.5}, "extra_info": {"kind": "matmul_peak", "size": 2048, "dtype": "float32", "flops": 1.0e10}},
            expert("dense-masked", 0.5),
            expert("sparse-dispatch", 0.25),
            early_exit(None, 0.2048, accuracy=0.80, experts=20.0),
            early_exit(0.5, 0.1024, accuracy=0.79, experts=8.0),
        ],
    }


def test_readme_ratios_by_hand(tmp_path):
    results = tmp_path / "results.json"
    results.write_text(json.dumps(benchmark_json()))
    out = tmp_path / "README.md"

    assert main([str(results), "--out", str(out)]) == 0

    readme = out.read_text()
    # 0.030 s / 0.020 s against the 1.25x goal: missed by 1.5 / 1.25 = 1.2.
    assert "| 1.50x |" in readme
    assert "missed by a factor of 1.2 |" in readme
    # Dense x4 has the MRE's FLOPs: 0.030 s / 0.010 s = 3.00x.
    assert "| 3.00x |" in readme
    # Peak 1e10 / 0.5 s = 20 GFLOP/s; dense-masked reaches 2e9 / 0.5 s = 4 GFLOP/s, 20% of it.
    assert "ran at 20 GFLOP/s" in readme
    assert "| 20.0% |" in readme
    # Early exit at 0.5 halves the time per sample: 0.1024 s / 2048 = 50 µs.
    assert "| 50 µs | 2.00x |" in readme
    assert "not measured: no `--summary` was given" in readme
    assert (tmp_path / "early_exit.png").stat().st_size > 0


def test_missing_json_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "absent.json"), "--out", str(tmp_path / "README.md")]) == 2
    assert "not found" in capsys.readouterr().err
