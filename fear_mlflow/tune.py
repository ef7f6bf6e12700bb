"""Optuna studies over FEAR's hyperparameters, scored by rank correlation with ground truth.

Each trial evaluates FEAR with its suggested threshold, freeze batch size, freeze epochs and
number of trainable last cells on a fixed arch subset, one nested MLflow run per arch under
the trial's parent run. Objectives: (Spearman ρ ↑, mean training seconds per arch ↓) by
default, or ρ alone with median pruning on the running ρ. Stage 1 is reused exactly across
trials through a `Stage1Store`, so trials differing only in the threshold (and stage 2)
cost little wall time while ``duration_s`` still reports what a fresh run costs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch
from scipy import stats

from fear_mlflow.benchmark import Benchmark
from fear_mlflow.config import FearSettings, RunContext, default_threshold, last_cells_unfreeze
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.errors import UserError
from fear_mlflow.runner import Evaluation, run_tracked
from fear_mlflow.space.arch import Arch
from fear_mlflow.store_init import first_contact
from fear_mlflow.tracking import redact
from fear_mlflow.train.stage1_store import Stage1Store
from fear_mlflow.trial_slots import TrialSlot
from fear_mlflow.tune_runs import TrialRun

ArchItem = tuple[Arch, int | None]
OBJECTIVES = ("multi", "spearman")
METRIC_NAMES = {"multi": ["spearman", "mean_duration_s"], "spearman": ["spearman"]}
FINISHED_STATES = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


@dataclass(frozen=True)
class SearchSpace:
    """Ranges Optuna searches; a range with equal ends fixes that value."""

    threshold: tuple[float, float]
    freeze_batch_sizes: tuple[int, ...]
    freeze_epochs: tuple[int, int]
    last_cells: tuple[int, int]

    def __post_init__(self) -> None:
        lo, hi = self.threshold
        if not 0 < lo <= hi <= 1:
            raise UserError(f"--threshold-range must satisfy 0 < LO <= HI <= 1, got {lo},{hi}")
        if not self.freeze_batch_sizes or min(self.freeze_batch_sizes) <= 0:
            raise UserError("--freeze-batch-sizes needs positive sizes, e.g. 256,512,1024")
        if not 0 <= self.freeze_epochs[0] <= self.freeze_epochs[1]:
            raise UserError(
                f"--freeze-epochs-range must satisfy 0 <= LO <= HI, got {self.freeze_epochs}"
            )
        if not 0 <= self.last_cells[0] <= self.last_cells[1]:
            raise UserError(f"--last-cells-range must satisfy 0 <= LO <= HI, got {self.last_cells}")


def default_space(dataset: str, total_cells: int) -> SearchSpace:
    """Around the paper's choices: its threshold ± a margin, batches 128-1024, 1-10 epochs."""
    base = default_threshold(dataset)
    return SearchSpace(
        threshold=(round(max(0.05, base - 0.25), 2), round(min(0.95, base + 0.2), 2)),
        freeze_batch_sizes=(128, 256, 512, 1024),
        freeze_epochs=(1, 10),
        last_cells=(1, min(8, total_cells)),
    )


@dataclass
class TuneJob:
    """Everything a study needs; built and validated by the CLI."""

    study_name: str
    storage: str
    n_trials: int | None
    timeout: float | None
    objective: str
    report_every: int
    archs: list[ArchItem]
    ground_truth: dict[Arch, float]
    base: FearSettings
    space: SearchSpace
    context: RunContext
    data: ImageData
    device: torch.device
    precision: str
    experiment: str
    stage1_store: Stage1Store | None
    seed: int = 0
    out_dir: Path | None = None


def ground_truth_for(archs: list[ArchItem], table: Benchmark, dataset: str) -> dict[Arch, float]:
    """Accuracy per arch; every arch of the subset must have one."""
    if dataset not in table.datasets:
        raise UserError(
            f"ground truth {table.source} has no {dataset!r} column (it has "
            f"{', '.join(table.datasets)}); pass a benchmark for this dataset"
        )
    truth = {arch: table.accuracy(arch, dataset) for arch, _ in archs}
    missing = [str(a) for a, v in truth.items() if v is None]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(archs)} archs have no ground truth in {table.source} "
            f"(e.g. {missing[0]}); choose archs the table covers"
        )
    return {a: float(v) for a, v in truth.items() if v is not None}


def rank_quality(scores: list[float], truth: list[float]) -> tuple[float, float]:
    """(Spearman ρ, Kendall τ); NaN when undefined (constant scores)."""
    if len(scores) < 3 or len(set(scores)) < 2:
        return math.nan, math.nan
    return float(stats.spearmanr(scores, truth)[0]), float(stats.kendalltau(scores, truth)[0])


def trial_settings(trial: optuna.Trial, job: TuneJob) -> FearSettings:
    """The trial's FEAR settings: the fixed base with the searched values."""
    space = job.space
    last_cells = trial.suggest_int("unfreeze_last_cells", *space.last_cells)
    return replace(
        job.base,
        threshold=trial.suggest_float("threshold", *space.threshold),
        freeze_batch_size=trial.suggest_categorical(
            "freeze_batch_size", list(space.freeze_batch_sizes)
        ),
        freeze_epochs=trial.suggest_int("freeze_epochs", *space.freeze_epochs),
        unfreeze=last_cells_unfreeze(last_cells, job.context.total_cells),
    )


def make_objective(job: TuneJob) -> Callable[[optuna.Trial], float | tuple[float, float]]:
    def objective(trial: optuna.Trial) -> float | tuple[float, float]:
        settings = trial_settings(trial, job)
        with TrialRun(job.experiment, job.study_name, trial.number, trial.params) as parent:
            scores: list[float] = []
            durations: list[float] = []
            truth: list[float] = []
            statuses: dict[str, int] = {}
            for i, (arch, index) in enumerate(job.archs):
                evaluation = Evaluation("fear", settings, job.context, arch, index, job.precision)
                _, result = run_tracked(
                    evaluation,
                    job.data,
                    job.device,
                    experiment=job.experiment,
                    tags={"fear.study": job.study_name, "fear.trial": str(trial.number)},
                    parent_run_id=parent.run_id,
                    attach=False,
                    stage1_store=job.stage1_store,
                )
                scores.append(result.score)
                durations.append(result.duration_s)
                truth.append(job.ground_truth[arch])
                statuses[result.status] = statuses.get(result.status, 0) + 1
                rho, _ = rank_quality(scores, truth)
                parent.log_metrics({"running_spearman": rho, "done": i + 1}, step=i + 1)
                if job.objective == "spearman" and (i + 1) % job.report_every == 0:
                    if not math.isnan(rho):
                        trial.report(rho, step=i + 1)
                        if trial.should_prune():
                            raise optuna.TrialPruned(f"running rho {rho:.3f} after {i + 1} archs")
            rho, tau = rank_quality(scores, truth)
            mean_s = sum(durations) / len(durations)
            parent.log_metrics(
                {
                    "spearman": rho,
                    "kendall": tau,
                    "mean_duration_s": mean_s,
                    **{f"n_{status}": count for status, count in statuses.items()},
                }
            )
            trial.set_user_attr("kendall", tau)
            trial.set_user_attr("mlflow_run_id", parent.run_id)
            if math.isnan(rho):
                parent.status = "FAILED"
                parent.set_tag("fear.trial_state", "failed")
                raise RuntimeError(
                    f"trial {trial.number}: Spearman rho undefined (scores constant: "
                    f"{statuses}); recorded as failed"
                )
        return rho if job.objective == "spearman" else (rho, mean_s)

    return objective


def open_study(job: TuneJob) -> optuna.Study:
    """Create or continue ``job.study_name`` in ``job.storage`` (shared by many processes)."""
    if job.objective == "spearman":
        directions = ["maximize"]
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
            n_startup_trials=3, n_warmup_steps=job.report_every
        )
    else:
        directions = ["maximize", "minimize"]
        pruner = optuna.pruners.NopPruner()
    sampler = optuna.samplers.TPESampler(seed=job.seed, n_startup_trials=5)
    # heartbeats and metric names are "experimental" in Optuna: say nothing about it to users
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return first_contact(lambda: _create_or_load(job, directions, sampler, pruner))
    except ValueError as exc:
        raise UserError(f"study {job.study_name!r}: {exc}") from None
    except Exception as exc:  # connection / driver errors vary by backend
        hint = "fix --storage"
        if isinstance(exc, ImportError) and job.storage.startswith("postgresql://"):
            hint = "write postgresql+psycopg2://... (the driver `pip install -e .[postgres]` ships)"
        raise UserError(
            f"cannot open Optuna storage {redact(job.storage)}: "
            f"{redact(str(exc).splitlines()[0])}; {hint}"
        ) from None


def _create_or_load(
    job: TuneJob,
    directions: list[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> optuna.Study:
    storage = optuna.storages.RDBStorage(job.storage, heartbeat_interval=60, grace_period=180)
    study = optuna.create_study(
        study_name=job.study_name,
        storage=storage,
        directions=directions,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if len(study.directions) == len(METRIC_NAMES[job.objective]):
        study.set_metric_names(METRIC_NAMES[job.objective])
    return study


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def run_study(
    job: TuneJob, on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None
) -> optuna.Study:
    """Run trials until the study holds ``n_trials`` (counted across every process) or timeout."""
    study = open_study(job)
    objective = make_objective(job)
    slot = TrialSlot(job.storage, job.study_name)

    def slotted(trial: optuna.Trial) -> float | tuple[float, float]:
        slot.release()  # the trial exists now: other processes may count and create
        return objective(trial)

    deadline = time.monotonic() + job.timeout if job.timeout else math.inf
    callbacks = [on_trial] if on_trial else []
    while time.monotonic() < deadline:
        slot.acquire()
        try:
            if job.n_trials is not None and len(study.get_trials(deepcopy=False)) >= job.n_trials:
                break
            study.optimize(
                slotted, n_trials=1, catch=(Exception,), callbacks=callbacks, gc_after_trial=True
            )
        finally:
            slot.release()
    return study
