"""Progress of a sweep: counts, ETA, a terminal bar, and the metrics the parent run shows.

Knows nothing about MLflow: `metrics()` is what the parent run logs, `render` what the
terminal shows (a tqdm bar on a TTY, a line every ``every_s`` seconds in a log file).
"""

from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm


class Progress:
    """done / total, failures and ETA of one sweep (or shard), updated per evaluation."""

    def __init__(
        self,
        label: str,
        *,
        parallel: int = 1,
        stream: IO[str] | None = None,
        every_s: float = 30.0,
        bar: bool | None = None,
        silent: bool = False,
    ) -> None:
        self.label = label
        self.parallel = max(1, parallel)
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.total = self.finished_before = self.busy = 0
        self.completed = self.failed = 0
        self.eval_s = 0.0
        self.started = time.monotonic()
        self._last_line = 0.0
        self.silent = silent
        use_bar = not silent and (self.stream.isatty() if bar is None else bar)
        self._bar: tqdm | None = None
        if use_bar:
            self._bar = tqdm(total=0, desc=label, file=self.stream, unit="eval", dynamic_ncols=True)

    def plan(self, total: int, finished: int, busy: int) -> None:
        """A (sub-)shard's size: ``finished`` are skipped, ``busy`` run elsewhere."""
        self.total += total
        self.finished_before += finished
        self.busy += busy
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.update(finished)
        self._line(force=True)

    def record(self, status: str, wall_s: float) -> None:
        """One evaluation ended with ``status`` (``failed`` counts as a failure)."""
        if status == "failed":
            self.failed += 1
        else:
            self.completed += 1
        self.eval_s += wall_s
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=self.failed, refresh=False)
        self._line()

    @property
    def done(self) -> int:
        return self.finished_before + self.completed

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done - self.failed - self.busy)

    def eta_s(self) -> float | None:
        attempted = self.completed + self.failed
        if not attempted:
            return None
        return self.remaining * (self.eval_s / attempted) / self.parallel

    def metrics(self) -> dict[str, float]:
        """What the sweep's parent run logs (``sweep/*``)."""
        values = {
            "sweep/total": self.total,
            "sweep/done": self.done,
            "sweep/skipped": self.finished_before,
            "sweep/completed": self.completed,
            "sweep/failed": self.failed,
            "sweep/busy_elsewhere": self.busy,
            "sweep/progress": self.done / self.total if self.total else 1.0,
            "sweep/elapsed_s": time.monotonic() - self.started,
        }
        eta = self.eta_s()
        if eta is not None:
            values["sweep/eta_s"] = eta
        return {k: float(v) for k, v in values.items()}

    def summary(self) -> str:
        eta = self.eta_s()
        parts = [
            f"{self.done}/{self.total} done",
            f"{self.finished_before} skipped (already finished)",
            f"{self.completed} evaluated now",
            f"{self.failed} failed",
        ]
        if self.busy:
            parts.append(f"{self.busy} running elsewhere")
        if eta and self.remaining:
            parts.append(f"eta {_duration(eta)}")
        return (
            f"{self.label}: "
            + ", ".join(parts)
            + f" [{_duration(time.monotonic() - self.started)}]"
        )

    def _line(self, force: bool = False) -> None:
        if self._bar is not None or self.silent:
            return
        now = time.monotonic()
        if force or now - self._last_line >= self.every_s:
            self._last_line = now
            print(self.summary(), file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar; the caller prints `summary()` once."""
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
