"""Optuna studies read back for the dashboard: every trial, and which are Pareto-optimal.

Works with any Optuna storage URL (``sqlite:///optuna.db``, ``postgresql://...``) and any
study; a multi-objective study's front is `Study.best_trials`, a single-objective study's
"front" is its best trial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fear_mlflow.errors import UserError
from fear_mlflow.tracking import redact


@dataclass
class StudyFront:
    """One study: objective names and directions, its finished trials, the front flagged."""

    name: str
    objectives: list[str]
    directions: list[str]
    trials: pd.DataFrame  # number, value columns (objective names), params..., on_front
    n_trials: int
    n_running: int


def _objective_names(study: object, count: int) -> list[str]:
    names = getattr(study, "metric_names", None)
    if names and len(names) == count:
        return [str(n) for n in names]
    return [f"objective {i}" for i in range(count)]


def load_fronts(storage: str, names: Sequence[str] = ()) -> list[StudyFront]:
    """Every study in ``storage`` (or just ``names``) with its trials and front."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        available = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # backend errors differ (sqlalchemy, file, url)
        detail = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise UserError(f"cannot read Optuna storage {redact(storage)}: {detail}") from None
    missing = [n for n in names if n not in available]
    if missing and not set(names) & set(available):
        raise UserError(
            f"Optuna storage {redact(storage)} has no study {', '.join(missing)}; it has: "
            f"{', '.join(available) or 'none'}"
        )
    chosen = [n for n in available if not names or n in names]
    return [_front(optuna.load_study(study_name=n, storage=storage)) for n in chosen]


def _front(study: object) -> StudyFront:
    import optuna

    directions = [d.name.lower() for d in study.directions]  # type: ignore[attr-defined]
    objectives = _objective_names(study, len(directions))
    all_trials = study.get_trials(deepcopy=False)  # type: ignore[attr-defined]
    complete = [t for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    running = sum(t.state == optuna.trial.TrialState.RUNNING for t in all_trials)
    if len(directions) > 1:
        front = {t.number for t in study.best_trials}  # type: ignore[attr-defined]
    else:
        front = {study.best_trial.number} if complete else set()  # type: ignore[attr-defined]
    rows = []
    for trial in complete:
        row: dict[str, object] = {"number": trial.number}
        row.update(dict(zip(objectives, trial.values)))
        row.update({f"param {k}": v for k, v in trial.params.items()})
        row["on_front"] = trial.number in front
        rows.append(row)
    trials = pd.DataFrame(rows, columns=None if rows else ["number", *objectives, "on_front"])
    return StudyFront(
        study.study_name,  # type: ignore[attr-defined]
        objectives,
        directions,
        trials,
        len(all_trials),
        running,
    )


def front_figure(front: StudyFront) -> Figure | None:
    """The first two objectives of every finished trial; the Pareto front joined, in red."""
    if len(front.objectives) < 2 or front.trials.empty:
        return None
    x_name, y_name = front.objectives[:2]
    fig = Figure(figsize=(6.4, 4.6), layout="constrained")
    ax = fig.subplots()
    rest = front.trials[~front.trials["on_front"]]
    best = front.trials[front.trials["on_front"]].sort_values(x_name)
    ax.scatter(rest[x_name], rest[y_name], s=18, color="0.6", label="trial")
    ax.plot(
        best[x_name],
        best[y_name],
        marker="o",
        color="tab:red",
        label="Pareto front",
    )
    for _, row in best.iterrows():
        ax.annotate(
            f"#{int(row['number'])}",
            (row[x_name], row[y_name]),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set_xlabel(f"{x_name} ({front.directions[0]})")
    ax.set_ylabel(f"{y_name} ({front.directions[1]})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"study {front.name}: {len(front.trials)} finished trials", fontsize=10)
    if np.all(front.trials[x_name] > 0) and front.trials[x_name].max() > 100 * max(
        front.trials[x_name].min(), 1e-12
    ):
        ax.set_xscale("log")
    fig.draw_without_rendering()
    fig.set_layout_engine("none")  # laid out once: embedding redoes no layout
    return fig
