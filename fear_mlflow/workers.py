"""``--workers K``: K child processes, each a ``fear-mlflow sweep`` on a finer shard.

Shard i/N splits into i+N*j / N*K for j < K (disjoint by construction, so no two
children ever pick the same evaluation). Children nest their runs under this process's
parent run, report JSON lines on stdout, and die with this process (Linux). The tracking
URI reaches them by environment, never on a command line (``ps`` would show a password).
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import click

from fear_mlflow.sweep_plan import Shard
from fear_mlflow.sweep_progress import Progress

#: Options a child gets from the launcher instead of the user's command line.
LAUNCHER_OWNED = (
    "shard",
    "workers",
    "tracking_uri",
    "device",
    "parent_run_id",
    "report",
    "threads",
)
HEARTBEAT_EVERY_S = 60.0


@dataclass(frozen=True)
class Child:
    """One worker process: its shard, device and torch threads."""

    shard: Shard
    device: str
    threads: int


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_children(
    shard: Shard, workers: int, device: str, threads: int | None = None
) -> list[Child]:
    """K per GPU when ``device`` is auto/cuda and GPUs are visible, else K on this CPU."""
    import torch

    devices = [device]
    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        devices = [f"cuda:{g}" for g in range(torch.cuda.device_count())]
    slots = [d for d in devices for _ in range(workers)]
    threads = threads or max(1, available_cores() // len(slots))
    return [Child(sub, dev, threads) for sub, dev in zip(shard.split(len(slots)), slots)]


def child_args(ctx: click.Context) -> list[str]:
    """The user's options as given (defaults left out), minus those the launcher owns."""
    args: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name in LAUNCHER_OWNED:
            continue
        source = ctx.get_parameter_source(param.name)  # type: ignore[arg-type]
        if source is None or source.name == "DEFAULT":
            continue
        value = ctx.params[param.name]  # type: ignore[index]
        if value is None:
            continue
        if param.is_flag and param.secondary_opts:
            args.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                args += [param.opts[0], str(item)]
        else:
            args += [param.opts[0], str(value)]
    return args


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the launcher dies (Linux only)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(
    method: str, args: list[str], child: Child, parent_id: str, uri: str
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env.update(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS=str(child.threads))
    command = [
        sys.executable, "-m", "fear_mlflow", "sweep", method, *args,
        "--shard", str(child.shard), "--device", child.device,
        "--parent-run-id", parent_id, "--report", "json", "--threads", str(child.threads),
    ]  # fmt: skip
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509
    )


def _read_events(number: int, stream: Iterable[str], events: queue.Queue) -> None:
    for line in stream:
        try:
            events.put((number, json.loads(line)))
        except json.JSONDecodeError:
            print(line, end="", file=sys.stderr)  # stray output of a child: pass it on
    events.put((number, None))


def run_children(
    method: str,
    args: list[str],
    children: list[Child],
    parent_id: str,
    uri: str,
    progress: Progress,
    on_progress: Callable[[bool], None],
) -> list[int]:
    """Run the children to the end, feeding their events to ``progress``; their exit codes."""
    procs = [_spawn(method, args, child, parent_id, uri) for child in children]
    events: queue.Queue = queue.Queue()
    for number, proc in enumerate(procs):
        threading.Thread(
            target=_read_events, args=(number, proc.stdout, events), daemon=True
        ).start()
    open_streams = len(procs)
    try:
        while open_streams:
            try:
                _number, event = events.get(timeout=HEARTBEAT_EVERY_S)
            except queue.Empty:
                on_progress(True)  # heartbeat while children work
                continue
            if event is None:
                open_streams -= 1
            elif event["event"] == "plan":
                progress.plan(event["total"], event["finished"], event["busy"])
                on_progress(True)
            elif event["event"] == "eval":
                progress.record(event["status"], event["wall_s"])
                on_progress(False)
        return [proc.wait() for proc in procs]
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # children mark their open run KILLED
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
