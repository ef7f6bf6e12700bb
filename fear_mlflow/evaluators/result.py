"""What every evaluator returns: plain data, nothing about MLflow."""

from __future__ import annotations

from dataclasses import dataclass, field

#: Statuses a run can end with (tag ``fear.status``).
STATUSES = ("ok", "threshold_not_reached", "degenerate", "diverged", "failed")


@dataclass
class EpochRecord:
    """Metrics of one epoch of one stage (``stage1``, ``stage2``, ``train``)."""

    stage: str
    epoch: int
    metrics: dict[str, float]


@dataclass
class EvalResult:
    """Outcome of evaluating one architecture with one method.

    ``duration_s`` is the cost the method is charged (training-loop seconds);
    ``wall_s`` is what the evaluation actually took end to end.
    """

    method: str
    status: str
    score: float
    duration_s: float
    wall_s: float
    summary: dict[str, float] = field(default_factory=dict)
    history: list[EpochRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}")
