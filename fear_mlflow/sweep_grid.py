"""``--grid KEY=V1,V2``: expand method settings into a product of overrides.

Keys are the method's own option names (``batch-size`` or ``batch_size``); values are
converted by that option's click type, so ``--grid epochs=ten`` fails like ``--epochs ten``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import click

from fear_mlflow.cli_methods import method_options
from fear_mlflow.errors import UserError


def method_params(method: str) -> dict[str, click.Parameter]:
    """The click parameters of ``method``'s options, by Python name."""

    def probe() -> None:
        """Never called: only carries the options."""

    decorated: Callable[..., Any] = method_options(method)(probe)
    params: list[click.Parameter] = getattr(decorated, "__click_params__", [])
    return {p.name: p for p in params if p.name}


def parse_grid(specs: Sequence[str], method: str) -> list[tuple[str, list[Any]]]:
    """``KEY=V1,V2`` (``;`` separates values that hold commas) → [(name, values)]."""
    params = method_params(method)
    axes: dict[str, list[Any]] = {}
    for spec in (part for text in specs for part in text.split()):
        key, sep, values_text = spec.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if not sep or not name:
            raise UserError(f"--grid {spec!r}: expected KEY=V1,V2 (e.g. batch-size=256,512)")
        param = params.get(name)
        if param is None:
            known = ", ".join(sorted(n.replace("_", "-") for n in params))
            raise UserError(f"--grid {spec!r}: {method} has no option {key!r}; options: {known}")
        if name in axes:
            raise UserError(f"--grid names {key!r} twice; list all its values once")
        splitter = ";" if ";" in values_text else ","
        raw = [v.strip() for v in values_text.split(splitter) if v.strip()]
        if not raw:
            raise UserError(f"--grid {spec!r} gives no values")
        try:
            values = [param.type.convert(v, param, None) for v in raw]
        except click.BadParameter as exc:
            raise UserError(f"--grid {spec!r}: {exc.format_message()}") from None
        axes[name] = list(dict.fromkeys(values))
    return list(axes.items())


def expand_grid(axes: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination, first axis slowest; one empty override when there is no grid."""
    names = [name for name, _ in axes]
    return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in axes))]
