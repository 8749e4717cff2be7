"""Run store: finished run records, per-epoch checkpoints and provenance.

Layout under a store root:
    runs/<run_id>.json         one finished run (`RunResult.to_dict()`)
    checkpoints/<run_id>.pt    state after the last finished epoch of an unfinished run

Every file is written to a temporary file in the same folder and moved into
place with `os.replace`, so a reader sees either the old file or the whole new
one, never half of it.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch

RECORD_SCHEMA = 1


@dataclass(frozen=True)
class RunResult:
    """Everything a finished run produced; the JSON record's top level."""

    run_id: str
    config: dict[str, Any]
    provenance: dict[str, Any]
    history: list[dict[str, Any]]  # one entry per epoch, epoch 1 first
    final: dict[str, Any]
    per_sample: dict[str, Any] = field(default_factory=dict)  # test set, one value per sample
    schema: int = RECORD_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunResult:
        return cls(**raw)


class RunStoreError(RuntimeError):
    """A run record or checkpoint that cannot be read; the message names the file and the fix."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        # mkstemp creates the file readable by its owner only; give the result
        # the permissions any new file gets under the current umask.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, payload: Any) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n")


class RunStore:
    """Finished runs and checkpoints under one root folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.checkpoints_dir = self.root / "checkpoints"

    def record_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def checkpoint_path(self, run_id: str) -> Path:
        return self.checkpoints_dir / f"{run_id}.pt"

    def load(self, run_id: str) -> RunResult | None:
        """Return the finished run `run_id`, or None when it has not finished."""
        path = self.record_path(run_id)
        if not path.exists():
            return None
        try:
            return RunResult.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise RunStoreError(f"run record {path} cannot be read ({err}); delete it to train the run again") from err

    def save(self, result: RunResult) -> Path:
        path = self.record_path(result.run_id)
        write_json_atomic(path, result.to_dict())
        return path

    def all_results(self) -> list[RunResult]:
        return [self.load(path.stem) for path in sorted(self.runs_dir.glob("*.json"))]  # type: ignore[misc]

    def save_checkpoint(self, run_id: str, state: dict[str, Any]) -> None:
        with atomic_path(self.checkpoint_path(run_id)) as temporary:
            torch.save(state, temporary)

    def load_checkpoint(self, run_id: str) -> dict[str, Any] | None:
        path = self.checkpoint_path(run_id)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError) as err:
            raise RunStoreError(f"checkpoint {path} cannot be read ({err}); delete it to restart the run from epoch 1") from err

    def remove_checkpoint(self, run_id: str) -> None:
        self.checkpoint_path(run_id).unlink(missing_ok=True)


# Provenance --------------------------------------------------------------------


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def code_version() -> dict[str, Any]:
    """Git commit of the package's checkout and whether it had uncommitted changes."""
    package_dir = Path(__file__).resolve().parent
    try:
        commit = _git(package_dir, "rev-parse", "HEAD")
        dirty = bool(_git(package_dir, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": "unknown", "git_dirty": None}
    return {"git_commit": commit, "git_dirty": dirty}


def _git(directory: Path, *args: str) -> str:
    completed = subprocess.run(
        ["git", "-C", str(directory), *args], check=True, capture_output=True, text=True, timeout=10
    )
    return completed.stdout.strip()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {_cpu_model()} ({os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
    }
