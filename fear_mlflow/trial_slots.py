"""Exactly ``--n-trials`` trials over several `tune` processes sharing one Optuna storage.

"Count the study's trials, then create one if there is room" is a race: two processes
that both see N-1 trials both start one. `TrialSlot` makes the pair atomic across
processes: the lock is taken before counting and let go once `study.optimize` has
created its trial (the objective's first act). PostgreSQL storages use a session-level
advisory lock keyed by the study name (works across machines); SQLite storages a file
lock beside the database file (one machine is all SQLite supports anyway); any other
storage (e.g. MySQL) goes unlocked, where the rare overshoot is one trial.
"""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url


def _lock_key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key from the study name (stable across processes)."""
    digest = hashlib.sha256(f"fear-mlflow trial slot {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class TrialSlot:
    """Cross-process lock around "count trials, then create one"; `release` is idempotent."""

    def __init__(self, storage_url: str, study_name: str) -> None:
        url = make_url(storage_url)
        self.kind = url.get_backend_name()
        self.storage_url = storage_url
        self.key = _lock_key(study_name)
        self.database = url.database
        self._held: Any = None  # the open connection or file while the lock is held

    def acquire(self) -> None:
        if self._held is not None:
            return
        if self.kind == "postgresql":
            from sqlalchemy import create_engine, text

            engine = create_engine(self.storage_url, poolclass=_null_pool())
            connection = engine.connect()
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": self.key})
            self._held = (engine, connection)
        elif self.kind == "sqlite" and self.database and self.database != ":memory:":
            path = Path(self.database).with_name(Path(self.database).name + ".trial-slot.lock")
            handle = open(path, "a+")  # noqa: SIM115  (held until release)
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = handle
        else:
            self._held = False  # nothing to lock with

    def release(self) -> None:
        held, self._held = self._held, None
        if not held:
            return
        if isinstance(held, tuple):
            from sqlalchemy import text

            engine, connection = held
            try:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
            finally:
                connection.close()  # closing the session frees the lock in any case
                engine.dispose()
        else:
            fcntl.flock(held, fcntl.LOCK_UN)
            held.close()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool
