"""A real MLflow sqlite store per test, cloned from one migrated template (migrations are slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fear_mlflow.tracking import connect


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, fully migrated MLflow database, created once per test session."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture()
def mlflow_store(
    mlflow_template_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> MlflowClient:
    """A fresh store at ``tmp_path/mlflow.db``, set as this process's tracking URI."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    path = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template_db, path)
    uri = f"sqlite:///{path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    connect(uri)
    return MlflowClient(uri)
