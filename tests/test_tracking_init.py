"""Workers started together on a brand-new PostgreSQL tracking database all get in.

MLflow creates its tables on first contact; simultaneous first contacts race (one sees a
unique-key violation). `connect` waits for the winner instead of failing the worker.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.fixtures_services import empty_postgres_database

WORKERS = 4
CONNECT = (
    "import sys, time; from fear_mlflow.tracking import connect, experiment_id;"
    "time.sleep(max(0.0, float(sys.argv[2]) - time.time())); connect(sys.argv[1]);"
    "experiment_id('together'); print('connected')"
)


@pytest.fixture()
def fresh_database() -> Iterator[str]:
    with empty_postgres_database("fear_init") as uri:
        yield uri


def test_simultaneous_first_contact_all_succeed(fresh_database: str) -> None:
    start_at = str(time.time() + 8.0)  # after every interpreter has imported mlflow
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CONNECT, fresh_database, start_at],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=180)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * WORKERS, outputs
    assert all("connected" in out for out in outputs)
