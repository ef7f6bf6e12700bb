"""Which cells a sweep evaluates: a list, a file, or a seeded uniform sample.

Every source yields the same thing, (Arch, benchmark index or None), in a fixed order,
so the same command always plans the same evaluations and shards stay disjoint.
"""

from __future__ import annotations

import random
from pathlib import Path

from fear_mlflow.benchmark import Benchmark, resolve_arch
from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import NUM_CELLS, Arch, arch_from_enumeration

ArchItem = tuple[Arch, int | None]


def archs_from_specs(specs: list[str], benchmark: Benchmark | None, origin: str) -> list[ArchItem]:
    """Resolve index/string specs; an error names where the bad one came from."""
    items = []
    for number, spec in enumerate(specs, start=1):
        try:
            items.append(resolve_arch(spec, benchmark))
        except UserError as exc:
            raise UserError(f"{origin} entry {number} ({spec[:60]!r}): {exc}") from None
    return items


def read_archs_file(path: str) -> list[str]:
    """One index or arch string a line; blank lines and ``#`` comments are skipped."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"--archs-file {path}: {exc.strerror or exc}") from None
    specs = [line.split("#", 1)[0].strip() for line in lines]
    specs = [spec for spec in specs if spec]
    if not specs:
        raise UserError(f"--archs-file {path} lists no archs (one index or arch string a line)")
    return specs


def sample_archs(n: int, seed: int, benchmark: Benchmark | None) -> list[ArchItem]:
    """``n`` cells uniformly without replacement: benchmark indices, else the enumeration."""
    population = benchmark.indices() if benchmark is not None else range(NUM_CELLS)
    if benchmark is not None and not population:
        raise UserError(f"--sample: benchmark {benchmark.source} lists no indices to sample")
    if not 0 < n <= len(population):
        raise UserError(f"--sample must be in 1..{len(population)}, got {n}")
    picked = random.Random(seed).sample(list(population), n)
    if benchmark is not None:
        return [(benchmark.arch(i), i) for i in picked]
    return [(arch_from_enumeration(i), None) for i in picked]


def select_archs(
    *,
    archs: str | None,
    archs_file: str | None,
    sample: int | None,
    sample_seed: int,
    benchmark: Benchmark | None,
) -> list[ArchItem]:
    """Exactly one of --archs, --archs-file, --sample; duplicates are dropped (first wins)."""
    given = [
        name
        for name, v in (("--archs", archs), ("--archs-file", archs_file), ("--sample", sample))
        if v
    ]
    if len(given) != 1:
        raise UserError(
            "give exactly one of --archs 1,2,3, --archs-file FILE or --sample N"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if archs:
        specs = [part.strip() for part in archs.split(",") if part.strip()]
        items = archs_from_specs(specs, benchmark, "--archs")
    elif archs_file:
        items = archs_from_specs(
            read_archs_file(archs_file), benchmark, f"--archs-file {archs_file}"
        )
    else:
        items = sample_archs(int(sample or 0), sample_seed, benchmark)
    seen: set[str] = set()
    unique = []
    for arch, index in items:
        if str(arch) not in seen:
            seen.add(str(arch))
            unique.append((arch, index))
    return unique
