"""The `Arch` value type: one cell of the NATS-Bench topology space (15,625 cells).

A cell has 4 nodes; node j (1..3) sums one op applied to every earlier node i < j,
so there are 6 edges. The string form is NATS-Bench's:
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from fear_mlflow.errors import UserError

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
#: (target node, source node) for each of the 6 edges, in string order.
EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))
NUM_CELLS = len(OPS) ** len(EDGES)


@dataclass(frozen=True, order=True)
class Arch:
    """A NATS-Bench topology cell: the op on each of the 6 edges, in string order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise UserError(f"a cell has {len(EDGES)} edges, got {len(self.ops)} ops")
        for op in self.ops:
            if op not in OPS:
                raise UserError(f"unknown op {op!r}; allowed ops: {', '.join(OPS)}")

    @classmethod
    def parse(cls, text: str) -> Arch:
        return parse_arch(text)

    def __str__(self) -> str:
        return self.canonical

    @property
    def canonical(self) -> str:
        """The NATS-Bench string, e.g. ``|nor_conv_3x3~0|+|...|``."""
        parts = []
        for j in range(1, NUM_NODES):
            parts.append("|" + "|".join(f"{op}~{i}" for (t, i), op in self.edges if t == j) + "|")
        return "+".join(parts)

    @property
    def edges(self) -> tuple[tuple[tuple[int, int], str], ...]:
        """((target, source), op) for every edge."""
        return tuple(zip(EDGES, self.ops))

    def node_inputs(self, node: int) -> list[tuple[str, int]]:
        """(op, source) pairs that feed ``node`` (1..3)."""
        return [(op, i) for (t, i), op in self.edges if t == node]

    def live_edges(self) -> set[tuple[int, int]]:
        """Edges on some non-`none` path from the input node to the output node.

        Only these influence the cell's output; everything else multiplies by zero.
        """
        reach_from_input = {0}
        for j in range(1, NUM_NODES):
            if any(op != "none" and i in reach_from_input for op, i in self.node_inputs(j)):
                reach_from_input.add(j)
        reach_output = {NUM_NODES - 1}
        for j in range(NUM_NODES - 1, 0, -1):
            if j not in reach_output:
                continue
            for op, i in self.node_inputs(j):
                if op != "none":
                    reach_output.add(i)
        return {
            (t, i)
            for (t, i), op in self.edges
            if op != "none" and i in reach_from_input and t in reach_output
        }

    @property
    def is_degenerate(self) -> bool:
        """True when no non-`none` path joins input to output: the cell outputs zeros."""
        return not self.live_edges()

    def to_index_in_enumeration(self) -> int:
        """Position of this cell in `all_archs()` (not the NATS-Bench index)."""
        index = 0
        for op in self.ops:
            index = index * len(OPS) + OPS.index(op)
        return index


def parse_arch(text: str) -> Arch:
    """Parse a NATS-Bench cell string; errors name the bad token and the allowed form."""
    raw = text.strip()
    nodes = raw.split("+")
    form = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|"
    if len(nodes) != NUM_NODES - 1:
        raise UserError(
            f"arch string {raw!r} has {len(nodes)} node groups, expected 3 separated by '+' ({form})"
        )
    ops: list[str] = []
    for j, group in enumerate(nodes, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise UserError(f"node group {group!r} in {raw!r} must start and end with '|' ({form})")
        tokens = [tok for tok in group[1:-1].split("|")]
        if len(tokens) != j:
            raise UserError(f"node {j} in {raw!r} needs {j} inputs, got {len(tokens)} ({form})")
        for i, token in enumerate(tokens):
            op, sep, src = token.partition("~")
            if op not in OPS:
                raise UserError(
                    f"unknown op {op!r} in token {token!r}; allowed ops: {', '.join(OPS)}"
                )
            if sep != "~" or src != str(i):
                raise UserError(f"token {token!r} in {raw!r} should read '{op}~{i}' ({form})")
            ops.append(op)
    return Arch(tuple(ops))


def all_archs() -> Iterator[Arch]:
    """All 15,625 cells in a fixed order (ops in `OPS` order, first edge most significant)."""
    for ops in itertools.product(OPS, repeat=len(EDGES)):
        yield Arch(tuple(ops))


def arch_from_enumeration(index: int) -> Arch:
    """The cell at ``index`` of `all_archs()`."""
    if not 0 <= index < NUM_CELLS:
        raise UserError(f"cell number {index} is out of range 0..{NUM_CELLS - 1}")
    ops = []
    for _ in EDGES:
        index, r = divmod(index, len(OPS))
        ops.append(OPS[r])
    return Arch(tuple(reversed(ops)))
