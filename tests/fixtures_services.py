"""Real PostgreSQL and `mlflow server` for the scale-out tests, found or started here.

Outside CI a missing service skips the test with the reason; with ``CI=true`` it fails,
so a broken CI machine cannot pass by skipping. Nothing here mocks MLflow or PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
#: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3; psycopg2 is what we ship.
PG_SCHEME = "postgresql+psycopg2"
SERVER_START_S = 180.0


def require_service(reason: str) -> None:
    """Skip (or, under CI, fail) a test whose service is absent."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and a required service is missing: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """A fresh, MLflow-migrated PostgreSQL database for this test session (dropped after)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require_service("psycopg2 is not installed (pip install psycopg2-binary)")
    name = f"fear_test_{uuid.uuid4().hex[:10]}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except Exception as exc:
        require_service(f"PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}) unusable: {exc}")
    uri = f"{PG_SCHEME}://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments(max_results=1)  # runs MLflow's migrations once
    yield uri
    try:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    except Exception as exc:  # leave it rather than fail the session over clean-up
        print(f"could not drop test database {name}: {exc}", file=sys.stderr)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with a PostgreSQL backend; can be stopped and restarted."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path) -> None:
        self.backend_uri = backend_uri
        self.artifacts = artifacts
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        mlflow_bin = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow_bin), "server", "--backend-store-uri", self.backend_uri,
            "--default-artifact-root", str(self.artifacts), "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                require_service(f"mlflow server exited with {self.proc.returncode}: {tail}")
            if self.healthy():
                return
            time.sleep(0.3)
        self.stop()
        require_service(f"mlflow server did not answer /health within {SERVER_START_S:.0f} s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server and its worker processes (its own process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(
    postgres_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """One `mlflow server` backed by the session's PostgreSQL database."""
    root = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(postgres_uri, root / "artifacts", root / "server.log")
    server.start()
    yield server
    server.stop()


@contextlib.contextmanager
def empty_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database (no tables yet), dropped afterwards."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        require_service("psycopg2 is not installed")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        _admin(f"CREATE DATABASE {name}")
    except Exception as exc:
        require_service(f"PostgreSQL at {PG_HOST}:{PG_PORT} unusable: {exc}")
    try:
        yield f"{PG_SCHEME}://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture()
def optuna_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database for one Optuna storage (dropped after)."""
    with empty_postgres_database("fear_optuna") as uri:
        yield uri


@contextlib.contextmanager
def optuna_dashboard(storage: str, log: Path) -> Iterator[str]:
    """`optuna-dashboard STORAGE` on a free 127.0.0.1 port; yields its base URL."""
    binary = Path(sys.executable).with_name("optuna-dashboard")
    if not binary.exists():
        require_service("optuna-dashboard is not installed (make venv installs it)")
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(binary), storage, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                require_service(f"optuna-dashboard exited: {log.read_text()[-1500:]}")
            try:
                with urllib.request.urlopen(url + "/api/studies", timeout=2):
                    break
            except OSError:
                time.sleep(0.3)
        else:
            require_service(f"optuna-dashboard did not answer within {SERVER_START_S:.0f} s")
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
