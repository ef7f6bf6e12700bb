"""Pick the torch device and numeric precision for a run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from fear_mlflow.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → first CUDA GPU when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto")
    return torch.device(name)


def prepare_device(device: torch.device) -> None:
    """Process-wide settings that make ``device`` faster without changing any result."""
    if device.type == "cpu":
        from fear_mlflow.host_memory import keep_freed_memory

        keep_freed_memory()


def environment_tags(device: torch.device) -> dict[str, str]:
    """Where a run ran. On a CPU the thread count changes float reductions, which training
    can amplify into another threshold epoch, so a run says how many threads it had; tags,
    not params, so the configuration hash (resume, skip) does not depend on the machine."""
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        where = device.type
    return {
        "fear.device": where,
        "fear.torch_threads": str(torch.get_num_threads()),
        "fear.torch": torch.__version__,
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast when asked (CUDA and CPU: a run recorded as bf16 really is); else none."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` → bf16 on CUDA (tensor cores), fp32 elsewhere.

    On a CPU, bf16 is opt-in: it pays only where the CPU has native bf16 (AVX512-BF16, AMX;
    ~1.6× for the all-3×3 cell on a Zen 4 core) and is slower than fp32 elsewhere.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise UserError(f"--precision bf16 is supported on CUDA and CPU, not {device.type}")
    return precision
