"""NATS-Bench's `TinyNetwork`, module-for-module, so parameter names and counts match.

Layout (C=16, N=5): stem conv3x3+BN; ``cells.0-4`` (C) ; ``cells.5`` residual reduction;
``cells.6-10`` (2C); ``cells.11`` reduction; ``cells.12-16`` (4C); ``lastact`` BN+ReLU;
global average pool; ``classifier``. State-dict keys equal xautodl's, so weights copy across.

Speed: ``forward`` skips edges whose result is exactly zero (`none`, or skip/pool of a node
that is exactly zero) and edges that cannot reach the output, so outputs and gradients
are unchanged. (A conv of an all-zero node is *not* zero: its BatchNorm adds a constant.)

``edge_conv_bias=True`` gives the convs of the cell edges a bias, as in the network of the
zero-cost reference code (Abdelfattah et al.'s ``nasbench2``, whose cell ops are built with
``affine=False`` and hence ``bias=True``). Only the zero-cost evaluator asks for it; those
biases are not NATS-Bench parameters, so `count_parameters` / `count_flops` leave them out.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from fear_mlflow.space.arch import NUM_NODES, Arch


class ReLUConvBN(nn.Module):
    def __init__(
        self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, bias: bool = False
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias),
            nn.BatchNorm2d(c_out),
        )
        if bias:
            self.op[1].bias.reference_only = True  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)

    def conv_bn(self, relu_x: torch.Tensor) -> torch.Tensor:
        """The op after its ReLU, for a caller that already holds ``relu(x)``."""
        return self.op[2](self.op[1](relu_x))

    def shares_relu(self) -> bool:
        """True when skipping this module's own ReLU is unobservable (nothing hooks it)."""
        relu = self.op[0]
        return not (
            self._forward_hooks or self._forward_pre_hooks or relu._forward_hooks
            or relu._forward_pre_hooks
        )  # fmt: skip


class Pooling(nn.Module):
    """3x3 average pool, stride 1, padding not counted (NATS-Bench `POOLING`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.preprocess = None if c_in == c_out else ReLUConvBN(c_in, c_out, 1, 1, 0)
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.op(x)


class Zero(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, c: int, conv_bias: bool = False) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0, conv_bias)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1, conv_bias)
    if name == "avg_pool_3x3":
        return Pooling(c, c)
    raise ValueError(f"unknown op {name!r}")


#: Ops that map an all-zero input to an all-zero output.
ZERO_PRESERVING = ("none", "skip_connect", "avg_pool_3x3")


def edges_to_compute(arch: Arch) -> set[tuple[int, int]]:
    """Edges whose result is not identically zero and that feed the output node."""
    zero_nodes: set[int] = set()
    useful: set[tuple[int, int]] = set()
    for j in range(1, NUM_NODES):
        incoming = [
            (i, op)
            for op, i in arch.node_inputs(j)
            if op != "none" and not (i in zero_nodes and op in ZERO_PRESERVING)
        ]
        useful.update((j, i) for i, _ in incoming)
        if not incoming:
            zero_nodes.add(j)
    needed = {NUM_NODES - 1}
    for j in range(NUM_NODES - 1, 0, -1):
        if j in needed:
            needed.update(i for (t, i) in useful if t == j)
    return {(t, i) for (t, i) in useful if t in needed}


class SearchCell(nn.Module):
    """One NATS-Bench cell (`InferCell`): node j sums an op over every earlier node."""

    def __init__(self, arch: Arch, channels: int, conv_bias: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.layers = nn.ModuleList(make_op(op, channels, conv_bias) for op in arch.ops)
        live = edges_to_compute(arch)
        #: per node 1..3: (layer index, source node) of the edges worth computing
        self.plan: list[list[tuple[int, int]]] = [
            [(k, i) for k, ((t, i), _) in enumerate(arch.edges) if t == j and (t, i) in live]
            for j in range(1, NUM_NODES)
        ]
        self.full_plan: list[list[tuple[int, int]]] = [
            [(k, i) for k, ((t, i), _) in enumerate(arch.edges) if t == j]
            for j in range(1, NUM_NODES)
        ]
        self.skip_dead_edges = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = self.plan if self.skip_dead_edges else self.full_plan
        # Without autograd (stage 2's frozen prefix, evaluation, the feature cache) a node that
        # feeds several convs gets its ReLU once instead of once per conv: the same values,
        # ~10 % faster on CPU; node sums then accumulate in place into a tensor the cell made.
        # With autograd every edge keeps its own ReLU, so gradients are summed exactly as
        # NATS-Bench's network sums them.
        share = not torch.is_grad_enabled()
        relu_of: dict[int, torch.Tensor] = {}
        nodes: list[torch.Tensor | None] = [x]
        for inputs in plan:
            total, owned = None, False
            for k, i in inputs:
                source = nodes[i]
                if source is None:  # an all-zero node that feeds a conv (BN adds a constant)
                    source = torch.zeros_like(x)
                layer = self.layers[k]
                if share and isinstance(layer, ReLUConvBN) and layer.shares_relu():
                    if i not in relu_of:
                        relu_of[i] = torch.relu(source)
                    out = layer.conv_bn(relu_of[i])
                else:
                    out = layer(source)
                if total is None:  # a skip edge hands back its source node itself
                    total, owned = out, not isinstance(layer, nn.Identity)
                elif share and owned:
                    total.add_(out)  # same sums, one fewer activation-sized buffer
                else:
                    total, owned = total + out, True
            nodes.append(total)
        result = nodes[-1]
        return torch.zeros_like(x) if result is None else result


class ResNetBasicBlock(nn.Module):
    """The fixed reduction cell: two ReLU-Conv-BN 3x3 plus an avg-pool + 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class TinyNetwork(nn.Module):
    """NATS-Bench topology network; ``forward`` returns logits."""

    def __init__(
        self,
        arch: Arch,
        num_classes: int,
        channels: int = 16,
        cells_per_stage: int = 5,
        edge_conv_bias: bool = False,
    ):
        super().__init__()
        self.arch = arch
        self.num_classes = num_classes
        c, n = channels, cells_per_stage
        self.stem = nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        widths = [c] * n + [2 * c] + [2 * c] * n + [4 * c] + [4 * c] * n
        reductions = [False] * n + [True] + [False] * n + [True] + [False] * n
        cells: list[nn.Module] = []
        c_prev = c
        for width, reduction in zip(widths, reductions):
            cells.append(
                ResNetBasicBlock(c_prev, width)
                if reduction
                else SearchCell(arch, width, edge_conv_bias)
            )
            c_prev = width
        self.cells = nn.ModuleList(cells)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features before the classifier."""
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x)
        return self.global_pooling(self.lastact(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def set_skip_dead_edges(self, skip: bool) -> None:
        for cell in self.cells:
            if isinstance(cell, SearchCell):
                cell.skip_dead_edges = skip


def build_model(
    arch: Arch,
    num_classes: int,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
    device: torch.device | str = "cpu",
    channels_last: bool = True,
    edge_conv_bias: bool = False,
) -> TinyNetwork:
    """The network for ``arch`` on ``device``, channels-last by default (≈2× faster on CPU)."""
    model = TinyNetwork(arch, num_classes, channels, cells_per_stage, edge_conv_bias).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _reference_only(bias: torch.Tensor | None) -> bool:
    return bias is not None and getattr(bias, "reference_only", False)


def count_parameters(model: nn.Module) -> int:
    """Exact NATS-Bench parameter count (the benchmark's numbers are this total)."""
    return sum(p.numel() for p in model.parameters() if not _reference_only(p))


def count_flops(model: TinyNetwork, image_size: int) -> float:
    """Multiply-accumulates of one image in millions, xautodl's convention.

    Counts conv and linear multiply-adds (incl. bias) over every edge, dead ones too, and
    no pooling, exactly as NATS-Bench's `get_model_infos` sums them.
    """
    return sum(macs_by_module(model, image_size).values()) / 1e6


def macs_by_module(model: TinyNetwork, image_size: int) -> dict[str, float]:
    """`count_flops`'s multiply-accumulates of one image per conv / linear module name.

    Split by module so a benchmark can count a part of the net (stage 2's frozen prefix).
    """
    macs: dict[str, float] = {}

    def conv_hook(name: str, module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        per_position = kh * kw * module.in_channels // module.groups * module.out_channels
        positions = out.shape[2] * out.shape[3]
        total = per_position * positions
        if module.bias is not None and not _reference_only(module.bias):
            total += module.out_channels * positions
        macs[name] = macs.get(name, 0.0) + total

    def linear_hook(name: str, module: nn.Linear, _inp, _out) -> None:
        total = module.in_features * module.out_features
        if module.bias is not None:
            total += module.out_features
        macs[name] = macs.get(name, 0.0) + total

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(partial(conv_hook, name)))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(partial(linear_hook, name)))
    was_training = model.training
    device = next(model.parameters()).device
    model.eval()
    model.set_skip_dead_edges(False)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        model.set_skip_dead_edges(True)
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return macs
