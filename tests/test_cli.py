"""The mre-repro command line, end to end on small generated data."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mre_repro.cli import main

TINY = ["--set", "data.source=synthetic", "--set", "data.train_limit=300", "--set", "data.test_limit=100", "--set", "model.width=16", "--set", "model.expert_hidden=16"]


def test_train_prints_run_id_and_writes_record(tmp_path, capsys):
    status = main(["train", "--dataset", "fashion-mnist", "--model", "mre", "--epochs", "1", "--seed", "3", *TINY, "--out", str(tmp_path)])
    assert status == 0
    run_id = capsys.readouterr().out.strip()
    record = json.loads((tmp_path / "runs" / f"{run_id}.json").read_text())
    assert record["run_id"] == run_id
    assert record["config"]["train"]["seed"] == 3
    assert set(record["final"]) >= {"test_accuracy", "best_val_accuracy", "experts_per_sample"}
    assert len(record["history"]) == 1


def test_train_twice_reuses_run(tmp_path, capsys):
    arguments = ["train", "--model", "dense", "--epochs", "1", *TINY, "--out", str(tmp_path)]
    main(arguments)
    first = capsys.readouterr().out
    main(arguments)
    assert capsys.readouterr().out == first
    assert len(list((tmp_path / "runs").glob("*.json"))) == 1


@pytest.mark.parametrize(
    "arguments, fragment",
    [
        (["train", "--epochs", "many"], "invalid int value: 'many'"),
        (["train", "--model", "moe"], "invalid choice: 'moe'"),
        (["train", "--set", "model.width=-1"], "invalid model.width=-1"),
        (["train", "--set", "model.depth=2"], "unknown key 'depth'"),
        (["train", "--reading", "nope"], "unknown reading 'nope'"),
        (["reproduce", "--profile", "laptop"], "invalid choice: 'laptop'"),
    ],
)
def test_bad_argument_one_line_exit_2(arguments, fragment, tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        status = main([*arguments, "--out", str(tmp_path)])
        raise SystemExit(status)
    assert raised.value.code == 2
    error = capsys.readouterr().err.strip()
    assert fragment in error
    assert len(error.splitlines()) == 1


def test_missing_data_offline_exit_2(tmp_path, capsys):
    status = main(["train", "--dataset", "mnist", "--epochs", "1", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path)])
    assert status == 2
    error = capsys.readouterr().err
    assert "mnist" in error.lower()
    assert "--download" in error
    assert "--data-root" in error


def test_help_states_units():
    completed = subprocess.run([sys.executable, "-m", "mre_repro.cli", "train", "--help"], capture_output=True, text=True, check=True)
    assert "training epochs" in completed.stdout
    assert "--gpu" in completed.stdout


def test_console_script_reproduce_smoke(tmp_path):
    """The installed console script runs the smoke profile and writes the summary and report."""
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "mre-repro"), "reproduce", "--profile", "smoke", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["profile"] == "smoke"
    entry_keys = {"model", "dataset", "seed", "reading", "run_id", "test_accuracy", "best_val_accuracy", "experts_per_sample", "epochs"}
    assert all(entry_keys <= set(entry) for entry in summary["runs"])
    assert {entry["model"] for entry in summary["runs"]} == {"mre", "topk-moe", "threshold-moe", "dense"}
    assert len({entry["run_id"] for entry in summary["runs"]}) == len(summary["runs"])
    report = (tmp_path / "report.md").read_text()
    for role, model in [("mre", "mre"), ("mre-init-1", "mre"), ("topk-moe-balanced", "topk-moe"), ("threshold-moe", "threshold-moe"), ("dense", "dense")]:
        assert f"| fashion-mnist | {role} | {model} | 2 |" in report
    assert (tmp_path / "report.html").is_file()
    assert list((tmp_path / "figures").glob("*.png"))
    assert list((tmp_path / "badges").glob("*.svg"))
    assert "epoch=2/2" in completed.stderr
    claims = json.loads((tmp_path / "claims.json").read_text())
    assert claims["profile"] == "smoke"
    assert {record["verdict"] for record in claims["records"]} == {"inconclusive"}


def test_help_lists_settings_and_readings():
    completed = subprocess.run([sys.executable, "-m", "mre_repro.cli", "train", "--help"], capture_output=True, text=True, check=True)
    assert "model: kind [mre], width [64]" in completed.stdout
    assert "layered: activation=categorical, allow_stop=False, expert_pool=per-step" in completed.stdout


def test_sigterm_reports_resume(tmp_path):
    """SIGTERM, as schedulers send it, ends like Ctrl-C: a resume hint and exit status 130."""
    import signal
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "mre_repro.cli", "train", "--epochs", "50", *TINY, "--out", str(tmp_path)],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "checkpoints").glob("*.pt")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "run the same command again to resume" in stderr
