"""Exact reuse of FEAR stage 1 across thresholds (Optuna trials, sweeps over thresholds).

Stage 1's trajectory does not depend on the threshold: the cosine schedule spans the
nominal epochs and training just stops at the first epoch whose running train top-1
reaches the threshold. So for one (arch, data, seed, stage-1 settings) we keep on disk
the per-epoch trajectory, and the model + optimizer state at the epochs where the
running top-1 first crossed each level of a grid (and at every epoch training stopped).
A later threshold that crosses at a stored epoch starts stage 2 from that state; one
that crosses later resumes training from the last stored state before it. Resumed
training is exact: the loader's draws depend only on (seed, epoch) and the lr only on
the step.

Entries are guarded by a per-key file lock (several workers on one machine may share the
store), written atomically, and evicted least-recently-used beyond a size bound.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fear_mlflow.evaluators.result import EpochRecord

DEFAULT_MAX_MB = 4096
DEFAULT_LEVEL_STEP = 0.05


def default_root() -> Path:
    """``$FEAR_CACHE/stage1`` or ``~/.cache/fear-mlflow/stage1``."""
    return Path(os.environ.get("FEAR_CACHE") or "~/.cache/fear-mlflow").expanduser() / "stage1"


def stage1_key(identity: Mapping[str, object]) -> str:
    """Digest of everything stage 1's trajectory depends on (never the threshold)."""
    text = json.dumps({k: str(v) for k, v in sorted(identity.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _atomic_write_bytes(path: Path, write: object) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)  # type: ignore[operator]
    os.replace(tmp, path)


@dataclass
class Stage1Record:
    """What is known about one stage-1 trajectory; changes are saved by `Stage1Store`."""

    directory: Path
    trajectory: list[EpochRecord] = field(default_factory=list)
    complete_reason: str | None = None  # set when training ran to its end (cap, divergence)

    @property
    def saved_epochs(self) -> list[int]:
        return sorted(int(p.stem.split("_")[1]) for p in self.directory.glob("epoch_*.pt"))

    def crossing_epoch(self, threshold: float) -> int | None:
        """First known epoch whose running train top-1 reaches ``threshold``."""
        for record in self.trajectory:
            if record.metrics["train_top1"] >= threshold:
                return record.epoch
        return None

    def load_state(self, epoch: int) -> dict[str, object]:
        path = self.directory / f"epoch_{epoch}.pt"
        os.utime(path)  # recently used: evicted last
        return torch.load(path, map_location="cpu", weights_only=True)

    def save_state(self, epoch: int, state: dict[str, object]) -> None:
        _atomic_write_bytes(self.directory / f"epoch_{epoch}.pt", lambda p: torch.save(state, p))

    def truncate_after(self, epoch: int) -> None:
        """Forget everything after ``epoch`` (training resumes from there)."""
        self.trajectory = [r for r in self.trajectory if r.epoch <= epoch]
        self.complete_reason = None
        for saved in self.saved_epochs:
            if saved > epoch:
                (self.directory / f"epoch_{saved}.pt").unlink(missing_ok=True)

    def save_trajectory(self) -> None:
        payload = {
            "complete_reason": self.complete_reason,
            "trajectory": [{"epoch": r.epoch, "metrics": r.metrics} for r in self.trajectory],
        }
        _atomic_write_bytes(
            self.directory / "trajectory.json", lambda p: Path(p).write_text(json.dumps(payload))
        )


class Stage1Store:
    """A bounded on-disk store of stage-1 trajectories and states, keyed by `stage1_key`."""

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        max_mb: float = DEFAULT_MAX_MB,
        level_step: float = DEFAULT_LEVEL_STEP,
    ) -> None:
        self.root = Path(root).expanduser() if root else default_root()
        self.max_bytes = int(max_mb * 1024 * 1024)
        self.level_step = level_step

    @contextlib.contextmanager
    def session(self, key: str) -> Iterator[Stage1Record]:
        """Exclusive access to one key's record; saves the trajectory and evicts on exit."""
        directory = self.root / key
        with _locked(directory / ".lock"):
            record = self._load(directory)
            yield record
            record.save_trajectory()
        self.evict()

    def _load(self, directory: Path) -> Stage1Record:
        path = directory / "trajectory.json"
        if not path.exists():
            return Stage1Record(directory)
        payload = json.loads(path.read_text())
        trajectory = [
            EpochRecord("stage1", r["epoch"], r["metrics"]) for r in payload["trajectory"]
        ]
        return Stage1Record(directory, trajectory, payload.get("complete_reason"))

    def levels_crossed(self, before: float, after: float) -> bool:
        """Did the running top-1 pass a new grid level between two epochs?"""
        step = self.level_step
        return int(after / step + 1e-9) > int(before / step + 1e-9)

    def evict(self) -> None:
        """Delete least-recently-used states until the store fits its bound.

        Keys another worker is using right now (lock held) are left alone.
        """
        with _locked(self.root / ".evict.lock"):
            states = sorted(self.root.glob("*/epoch_*.pt"), key=_mtime)
            total = sum(_size(p) for p in states)
            for path in states:
                if total <= self.max_bytes:
                    break
                with _try_locked(path.parent / ".lock") as mine:
                    if mine:
                        total -= _size(path)
                        path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@contextlib.contextmanager
def _try_locked(path: Path) -> Iterator[bool]:
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
