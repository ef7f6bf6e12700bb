"""Several processes racing to fill one study end with exactly N trials (SQLite and PostgreSQL).

Each worker does what `run_study` does: take the slot, count, create a trial if there is
room, let the slot go, "train" a moment. Without the slot, workers released at the same
instant overshoot N; with it they never do.
"""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import optuna
import pytest

from fear_mlflow.trial_slots import TrialSlot

WORKERS = 4
N_TRIALS = 6


def _fill(storage: str, study_name: str, start_at: float, use_slot: bool) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=storage)
    slot = TrialSlot(storage, study_name)
    created = 0
    time.sleep(max(0.0, start_at - time.time()))  # all workers count at the same moment
    while True:
        if use_slot:
            slot.acquire()
        try:
            if len(study.get_trials(deepcopy=False)) >= N_TRIALS:
                return created
            time.sleep(0.05)  # widen the window between counting and creating
            trial = study.ask()
        finally:
            slot.release()
        created += 1
        study.tell(trial, trial.suggest_float("x", 0, 1))


def _race(storage: str, use_slot: bool) -> list[int]:
    name = f"race-{use_slot}"
    optuna.create_study(study_name=name, storage=storage)
    start_at = time.time() + 3.0
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(WORKERS) as pool:
        created = pool.starmap(_fill, [(storage, name, start_at, use_slot)] * WORKERS)
    study = optuna.load_study(study_name=name, storage=storage)
    assert sum(created) == len(study.trials)
    return sorted(t.number for t in study.trials)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("optuna_postgres")


def test_slot_gives_exactly_n_trials(storage: str) -> None:
    assert _race(storage, use_slot=True) == list(range(N_TRIALS))


def test_without_the_slot_the_race_is_real(tmp_path: Path, optuna_postgres: str) -> None:
    """The test above can fail: unguarded workers released together overshoot."""
    assert len(_race(optuna_postgres, use_slot=False)) > N_TRIALS
