"""A sweep's plan: archs x grid points as evaluations, its identity, and its shards.

The plan is a pure function of the command line (and the benchmark table), so every
restart and every shard of the same command sees the same ordered list of evaluations.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fear_mlflow.cli_methods import settings_from
from fear_mlflow.config import RunContext
from fear_mlflow.errors import UserError
from fear_mlflow.runner import Evaluation
from fear_mlflow.sweep_archs import ArchItem
from fear_mlflow.tracking import config_hash

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Shard:
    """Slice ``index`` of ``count``: position p of the plan belongs to it iff p % count == index.

    Round-robin (not contiguous blocks) so every shard gets a similar mix of grid points.
    """

    index: int = 0
    count: int = 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def take(self, items: Sequence[Any]) -> list[Any]:
        return list(items[self.index :: self.count])

    def split(self, k: int) -> list[Shard]:
        """``k`` disjoint shards whose union is this one (for ``--workers k``)."""
        return [Shard(self.index + self.count * j, self.count * k) for j in range(k)]


def parse_shard(text: str | None) -> Shard:
    """``i/N`` with 0 <= i < N."""
    if text is None or not text.strip():
        return Shard()
    match = _SHARD.fullmatch(text)
    if not match:
        raise UserError(f"--shard must look like i/N (e.g. 0/4), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 0 <= index < count:
        raise UserError(f"--shard {text}: need 0 <= i < N, e.g. 0/4 .. 3/4")
    return Shard(index, count)


@dataclass(frozen=True)
class SweepItem:
    """One planned evaluation and the ``fear.config_hash`` its run will carry."""

    evaluation: Evaluation
    config_hash: str


def build_items(
    method: str,
    kw: dict[str, Any],
    context: RunContext,
    grid: list[dict[str, Any]],
    archs: list[ArchItem],
    precision: str,
) -> list[SweepItem]:
    """Validate every grid point like the single command would, then arch-major order."""
    settings = [settings_from(method, dict(kw, **point), context) for point in grid]
    items: list[SweepItem] = []
    seen: set[str] = set()
    for arch, index in archs:
        for setting in settings:
            evaluation = Evaluation(method, setting, context, arch, index, precision)
            key = config_hash(method, evaluation.params(), str(arch), context.dataset, context.seed)
            if key not in seen:  # grid points that resolve to the same settings
                seen.add(key)
                items.append(SweepItem(evaluation, key))
    return items


def sweep_id(method: str, items: Sequence[SweepItem], name: str | None) -> str:
    """The sweep's identity: ``--sweep-name``, else a hash of everything it evaluates."""
    if name:
        if not _NAME.fullmatch(name):
            raise UserError(
                f"--sweep-name {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
                "(starting with a letter or digit)"
            )
        return name
    payload = json.dumps([method, [item.config_hash for item in items]])
    return f"{method}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"
