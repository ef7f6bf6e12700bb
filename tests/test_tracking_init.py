"""Workers started together on a brand-new PostgreSQL database all get in.

MLflow and Optuna both create their tables on first contact; simultaneous first contacts
race (one sees a unique-key violation). `connect` and `open_study` wait for the winner
instead of failing the worker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.fixtures_services import empty_postgres_database

WORKERS = 6
CONNECT = (
    "import sys, time; from fear_mlflow.tracking import connect, experiment_id;"
    "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); connect(sys.argv[1]);"
    "experiment_id('together'); print('connected')"
)
OPEN_STUDY = (
    "import sys, time, types; from fear_mlflow.tune import open_study;"
    "job = types.SimpleNamespace(study_name='together', storage=sys.argv[1],"
    " objective='multi', report_every=1, seed=0);"
    "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); open_study(job);"
    "print('connected')"
)


@pytest.fixture()
def fresh_database() -> Iterator[str]:
    with empty_postgres_database("fear_init") as uri:
        yield uri


@pytest.mark.parametrize("first_contact", [CONNECT, OPEN_STUDY], ids=["mlflow", "optuna"])
def test_simultaneous_first_contact_all_succeed(fresh_database: str, first_contact: str) -> None:
    start_at = str(time.time() + 8.0)  # after every interpreter has imported mlflow/optuna
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", first_contact, fresh_database, start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=180)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * WORKERS, outputs
    assert all("connected" in out for out in outputs)
