"""First contact with a database that other processes may be initialising at the same moment.

MLflow and Optuna both create their tables on first contact. Workers started together on a
new database race to do so; the losers see a unique-key violation or a lock. `first_contact`
makes them wait and look again: by then the winner has made the tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

INIT_TRIES = 6
INIT_WAIT_S = 2.0
_INIT_RACE_TEXT = ("duplicate key", "already exists", "UniqueViolation", "database is locked")


def another_process_initialises(exc: BaseException) -> bool:
    """True for the errors a store shows while another process is still creating its tables."""
    return any(text in str(exc) for text in _INIT_RACE_TEXT)


def first_contact(open_store: Callable[[], T]) -> T:
    """``open_store()``, retried with a growing wait while another process creates tables;
    any other error (or the last try's) propagates unchanged."""
    for attempt in range(1, INIT_TRIES):
        try:
            return open_store()
        except Exception as exc:  # the stores' error types vary by backend and driver
            if not another_process_initialises(exc):
                raise
            time.sleep(INIT_WAIT_S * attempt)
    return open_store()
