"""FEAR stage 2: freeze everything but named modules, and skip autograd for the frozen prefix."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from fear_mlflow.errors import UserError
from fear_mlflow.space.model import TinyNetwork


def name_matches(name: str, identifier: str) -> bool:
    """True when ``identifier``'s dotted parts occur as whole parts of ``name``.

    ``cells.1`` matches ``cells.1.layers.0.op.1.weight`` but not ``cells.13...``, unlike the
    plain substring test, which would also unfreeze cells 10-16.
    """
    parts, wanted = name.split("."), identifier.split(".")
    return any(parts[i : i + len(wanted)] == wanted for i in range(len(parts) - len(wanted) + 1))


def freeze_all_but(model: nn.Module, unfreeze: Sequence[str]) -> list[nn.Parameter]:
    """Set ``requires_grad`` so only parameters named by ``unfreeze`` train; return those.

    An identifier must name a module; that module may own no parameter (a cell of only
    skip/pool/none ops), which simply adds nothing trainable.
    """
    modules = [name for name, _ in model.named_modules() if name]
    unknown = [i for i in unfreeze if not any(name_matches(m, i) for m in modules)]
    if unknown:
        raise UserError(
            f"--unfreeze names {', '.join(unknown)} match no module of this network "
            "(valid: classifier, lastact, stem, cells.0 .. cells.N)"
        )
    trainable: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        keep = any(name_matches(name, ident) for ident in unfreeze)
        param.requires_grad_(keep)
        if keep:
            trainable.append(param)
    return trainable


def unfreeze_all(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(True)


def stages(model: TinyNetwork) -> list[nn.Module]:
    """The sequential body: stem, then every cell (lastact/pool/classifier form the head)."""
    return [model.stem, *model.cells]


def frozen_prefix_length(model: TinyNetwork) -> int:
    """How many leading body stages have no trainable parameter."""
    prefix = 0
    for module in stages(model):
        if any(p.requires_grad for p in module.parameters()):
            break
        prefix += 1
    return prefix


def run_prefix(model: TinyNetwork, prefix: int, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        for module in stages(model)[:prefix]:
            x = module(x)
    return x


def run_suffix(model: TinyNetwork, prefix: int, x: torch.Tensor) -> torch.Tensor:
    for module in stages(model)[prefix:]:
        x = module(x)
    return model.classifier(model.global_pooling(model.lastact(x)).flatten(1))


def frozen_prefix_forward(model: TinyNetwork) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward that runs the leading fully-frozen modules under ``no_grad``.

    Frozen modules before the first trainable one need neither activations kept for
    backward nor gradients, so this saves memory and time without changing any result
    (BatchNorm still updates its running statistics, as in the paper's stage 2).
    """
    prefix = frozen_prefix_length(model)
    return lambda x: run_suffix(model, prefix, run_prefix(model, prefix, x))
