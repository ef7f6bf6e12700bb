"""The one training loop every method uses.

SGD (Nesterov, weight decay), gradient-norm clipping, a per-step cosine schedule over a
*nominal* number of epochs (so stopping early does not change the trajectory), and
cross-entropy. Per epoch it records running train top-1 / loss over the epoch's
minibatches (no extra evaluation pass), the lr and the seconds, and hands each record to
a callback so tracking can log it live. Stop rules: accuracy threshold (end of epoch, and
every ``check_every`` steps when asked), maximum epochs, wall-clock budget, divergence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from fear_mlflow.config import OptimSettings
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.device import autocast, synchronize
from fear_mlflow.evaluators.result import EpochRecord

EpochCallback = Callable[[EpochRecord], None]

#: Why a training stage ended.
COMPLETED = "completed"
THRESHOLD_REACHED = "threshold_reached"
DIVERGED = "diverged"
TIME_BUDGET = "time_budget"


@dataclass(frozen=True)
class StopRules:
    """When a stage ends besides running out of epochs."""

    max_epochs: int
    threshold: float | None = None
    check_every: int = 0
    max_seconds: float | None = None


@dataclass
class TrainOutcome:
    """How a stage ended, what it cost, and its per-epoch history."""

    reason: str
    epochs: float
    seconds: float
    last_top1: float
    best_top1: float
    history: list[EpochRecord] = field(default_factory=list)


def cosine_lr(base_lr: float, step: int, total_steps: int) -> float:
    """Cosine annealing from ``base_lr`` to 0 over ``total_steps`` (constant 0 after)."""
    progress = min(step / max(total_steps, 1), 1.0)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: Iterable[nn.Parameter], optim: OptimSettings) -> torch.optim.SGD:
    return torch.optim.SGD(
        list(params),
        lr=optim.lr,
        momentum=optim.momentum,
        nesterov=optim.nesterov and optim.momentum > 0,
        weight_decay=optim.weight_decay,
    )


class Trainer:
    """Trains ``model`` on ``loader`` for one stage.

    ``forward`` defaults to ``model``; FEAR's stage 2 passes a forward that runs the frozen
    prefix under ``no_grad``. The schedule spans ``schedule_epochs`` epochs regardless of
    when training stops.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: DeviceLoader,
        optim: OptimSettings,
        *,
        schedule_epochs: int,
        stage: str,
        device: torch.device,
        params: Iterable[nn.Parameter] | None = None,
        forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
        precision: str = "fp32",
        compile_model: bool = False,
        on_epoch: EpochCallback | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.loader = loader
        self.optim = optim
        self.schedule_epochs = schedule_epochs
        self.stage = stage
        self.device = device
        self.params = [p for p in (params or model.parameters()) if p.requires_grad]
        self.forward = forward or model
        if compile_model:  # pays off on GPUs for long runs; compiling costs tens of seconds
            self.forward = torch.compile(self.forward)
        self.precision = precision
        self.on_epoch = on_epoch
        self.progress = progress
        self.optimizer = make_optimizer(self.params, optim)
        self.loss_fn = nn.CrossEntropyLoss()

    def run(self, rules: StopRules, start_epoch: int = 0) -> TrainOutcome:
        """Train from ``start_epoch`` (with model/optimizer state already restored, resuming is
        exact: data order, augmentation and lr depend only on the epoch and step)."""
        steps_per_epoch = len(self.loader)
        total_steps = self.schedule_epochs * steps_per_epoch
        history: list[EpochRecord] = []
        seconds = 0.0
        step = start_epoch * steps_per_epoch
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(start_epoch)
        last_top1 = best_top1 = 0.0
        reason = COMPLETED
        epochs_done = 0.0
        self.model.train()
        bar = tqdm(
            range(start_epoch, rules.max_epochs),
            desc=self.stage,
            unit="epoch",
            disable=not self.progress,
            leave=False,
        )
        for epoch in bar:
            synchronize(self.device)
            start = time.perf_counter()
            correct = torch.zeros((), device=self.device)
            loss_sum = torch.zeros((), device=self.device)
            seen = 0
            steps_this_epoch = 0
            epoch_lr = cosine_lr(self.optim.lr, step, total_steps)
            stop_reason: str | None = None
            for inputs, targets in self.loader:
                lr = cosine_lr(self.optim.lr, step, total_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                with autocast(self.device, self.precision):
                    logits = self.forward(inputs)
                    loss = self.loss_fn(logits.float(), targets)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.optim.grad_clip > 0:
                    nn.utils.clip_grad_norm_(self.params, self.optim.grad_clip)
                self.optimizer.step()
                step += 1
                steps_this_epoch += 1
                batch = targets.shape[0]
                seen += batch
                correct += (logits.detach().argmax(1) == targets).sum()
                loss_sum += loss.detach() * batch
                if rules.check_every and steps_this_epoch % rules.check_every == 0:
                    stop_reason = self._check(rules, correct, loss_sum, seen, seconds, start)
                    if stop_reason is not None:
                        break
            synchronize(self.device)
            epoch_s = time.perf_counter() - start
            seconds += epoch_s
            top1 = correct.item() / max(seen, 1)
            mean_loss = loss_sum.item() / max(seen, 1)
            last_top1 = top1
            best_top1 = max(best_top1, top1)
            fraction = steps_this_epoch / max(steps_per_epoch, 1)
            epochs_done += fraction
            record = EpochRecord(
                stage=self.stage,
                epoch=epoch,
                metrics={
                    "train_top1": top1,
                    "train_loss": mean_loss,
                    "epoch_s": epoch_s,
                    "lr": epoch_lr,
                    "epoch_fraction": fraction,
                },
            )
            history.append(record)
            if self.on_epoch is not None:
                self.on_epoch(record)
            bar.set_postfix(top1=f"{top1:.3f}", loss=f"{mean_loss:.3f}")
            if stop_reason is None:
                stop_reason = self._end_of_epoch_reason(rules, top1, mean_loss, seconds)
            if stop_reason is not None:
                reason = stop_reason
                break
        bar.close()
        return TrainOutcome(reason, epochs_done, seconds, last_top1, best_top1, history)

    def _check(
        self,
        rules: StopRules,
        correct: torch.Tensor,
        loss_sum: torch.Tensor,
        seen: int,
        seconds_before: float,
        epoch_start: float,
    ) -> str | None:
        """Mid-epoch check (costs one device sync): running top-1, divergence, budget."""
        elapsed = seconds_before + time.perf_counter() - epoch_start
        return self._end_of_epoch_reason(
            rules, correct.item() / max(seen, 1), loss_sum.item() / max(seen, 1), elapsed
        )

    @staticmethod
    def _end_of_epoch_reason(
        rules: StopRules, top1: float, mean_loss: float, seconds: float
    ) -> str | None:
        if not math.isfinite(mean_loss):
            return DIVERGED
        if rules.threshold is not None and top1 >= rules.threshold:
            return THRESHOLD_REACHED
        if rules.max_seconds is not None and seconds >= rules.max_seconds:
            return TIME_BUDGET
        return None


@torch.no_grad()
def evaluate_top1(
    model: nn.Module, loader: DeviceLoader, device: torch.device, precision: str = "fp32"
) -> tuple[float, float]:
    """(top-1, mean loss) over ``loader`` in eval mode; restores the previous mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    for inputs, targets in loader:
        with autocast(device, precision):
            logits = model(inputs)
        correct += (logits.argmax(1) == targets).sum()
        loss_sum += loss_fn(logits.float(), targets)
        seen += targets.shape[0]
    model.train(was_training)
    return correct.item() / max(seen, 1), loss_sum.item() / max(seen, 1)
