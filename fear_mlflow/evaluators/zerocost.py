"""Zero-cost proxies: score an untrained network from one minibatch (Abdelfattah et al., 2021).

Definitions follow the authors' reference implementation (`foresight`) on NAS-Bench-201 nets;
every per-layer value is taken over the weights of the Conv2d and Linear layers and summed:

- ``grad_norm``: Σ_l ‖∂L/∂W_l‖₂ of the cross-entropy loss L on the batch.
- ``snip``: Σ |W ⊙ ∂L/∂W| (the reference's |∂L/∂mask| with a mask of ones on every weight).
- ``grasp``: Σ -W ⊙ (H g) with g = ∂L/∂W and H the Hessian of L (a Hessian-gradient product).
- ``fisher``: per output channel k of each layer, ½·mean_n (Σ_hw a·∂L/∂a)² with a the layer's
  output (before BatchNorm); the reference broadcasts that channel value to every weight of the
  channel, so each channel counts fan-in (C_in·kh·kw) times.
- ``jacob_cov``: J = ∂(Σ logits)/∂x per sample; with λ the eigenvalues of corrcoef(J),
  -Σ (log(λ + k) + 1/(λ + k)), k = 1e-5.
- ``synflow``: Σ |W ⊙ ∂R/∂W|, R = Σ logits of an all-ones image, in float64 with |θ| for every
  state tensor. The reference builds its NB201 copy with ``use_bn=False``, which drops the
  BatchNorm of the stem, of every cell op and of ``lastact`` but *keeps* the two BatchNorms of
  each residual reduction block (train mode, batch statistics); we do the same.
- ``naswot`` (Mellor et al., 2021): log|K| with K = Σ_relu c cᵀ + (1-c)(1-c)ᵀ over the binary
  codes c = [x > 0] of every ReLU's input.
- ``params`` / ``flops``: `count_parameters` and `count_flops` (MFLOPs).

Every measure sees the same initial weights and BatchNorm buffers, in train mode, as the
reference's fresh copy of the net per measure does. Instead of copying the net, the state is
snapshotted once and every pass runs on clones of that snapshot through `functional_call`
(the model is never modified, and is reloaded from the snapshot at the end as a safeguard).
One forward of the batch is shared by grad_norm, snip, grasp, fisher, jacob_cov and naswot
(the reference runs one per measure, grasp two): one backward of L gives grad_norm, snip,
fisher and grasp's g, one more gives grasp's H g, and the Jacobian comes from the same graph.
Passes run in NCHW layout (BatchNorm's double backward is ~2x slower channels-last on CPU).
``reference_way=True`` runs the reference's procedure (a fresh copy and own passes per
measure) to check against and to time the baseline.

Seconds: a shared pass is charged to the first measure (in the order asked) that needs it;
work only one measure needs is charged to that measure (e.g. grasp's H g, the Jacobian's
backward, the NASWOT kernel built inside the forward). The charges add up to the total.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fear_mlflow.config import RunContext, ZerocostSettings
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.device import synchronize
from fear_mlflow.evaluators.common import seeded_model
from fear_mlflow.evaluators.result import EvalResult
from fear_mlflow.space.arch import Arch
from fear_mlflow.space.model import ResNetBasicBlock, TinyNetwork, count_flops, count_parameters

log = logging.getLogger(__name__)

#: k in jacob_cov's eigenvalue formula (the reference's value).
JACOB_K = 1e-5
#: Measures computed from the shared forward of the batch.
SHARED_MEASURES = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "naswot")
#: Measures that need ∂L/∂W (and, for fisher, ∂L/∂activation) of the cross-entropy loss.
LOSS_MEASURES = ("grad_norm", "snip", "grasp", "fisher")
#: The score of a zero-cost run, when measured (the best of the six on NATS-Bench).
PRIMARY_MEASURE = "synflow"

Layer = nn.Conv2d | nn.Linear


@dataclass
class MeasureRun:
    """Values and seconds per measure, plus the error text of measures that raised."""

    values: dict[str, tuple[float, float]]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        return sum(seconds for _, seconds in self.values.values())


# ----------------------------------------------------------------------------- entry points


def compute_measures(
    model: TinyNetwork,
    inputs: Tensor,
    targets: Tensor,
    measures: Sequence[str],
    *,
    num_classes: int,
    reference_way: bool = False,
) -> dict[str, tuple[float, float]]:
    """measure → (value, seconds); a measure that raises or is not finite gives NaN."""
    run = run_measures(
        model, inputs, targets, measures, num_classes=num_classes, reference_way=reference_way
    )
    return run.values


def run_measures(
    model: TinyNetwork,
    inputs: Tensor,
    targets: Tensor,
    measures: Sequence[str],
    *,
    num_classes: int,
    reference_way: bool = False,
) -> MeasureRun:
    """Like `compute_measures`, also reporting which measures raised (and why)."""
    unknown = [m for m in measures if m not in _SCORES]
    if unknown:
        raise ValueError(f"unknown zero-cost measure(s): {', '.join(unknown)}")
    _check_targets(targets, num_classes)
    clock = _Clock(inputs.device)
    state = _snapshot(model)
    was_training = model.training
    model.train()
    try:
        if reference_way:
            return _run_reference_way(model, state, inputs, targets, measures, clock)
        return _run_shared(model, state, inputs, targets, measures, clock)
    finally:
        model.load_state_dict(state)
        model.train(was_training)


def evaluate_zerocost(
    arch: Arch,
    data: ImageData,
    settings: ZerocostSettings,
    context: RunContext,
    device: torch.device,
) -> EvalResult:
    """All measures of ``settings`` for ``arch`` at its ``context.seed`` initialisation."""
    start = time.perf_counter()
    model = seeded_model(
        arch, data, context, device, edge_conv_bias=settings.network == "reference"
    )
    inputs, targets = random_minibatch(data, settings.batch_size, seed=context.seed, device=device)
    run = run_measures(model, inputs, targets, settings.measures, num_classes=data.num_classes)
    for name, error in run.errors.items():
        log.warning("zero-cost measure %s failed for %s: %s", name, arch, error)
    failed = len(run.errors) == len(settings.measures)
    summary = _summary(run, model, data.image_size)
    return EvalResult(
        method="zerocost",
        status="failed" if failed else "ok",
        score=_score(run, settings.measures),
        duration_s=run.total_s,
        wall_s=time.perf_counter() - start,
        summary=summary,
    )


def random_minibatch(
    data: ImageData, batch_size: int, *, seed: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """The first batch of a shuffled, augmented, normalised train loader seeded by ``seed``.

    The reference draws its batch from its training loader, whose transform is random crop
    (padding) + horizontal flip + normalise, so the batch is augmented here too.
    """
    loader = DeviceLoader.from_data(
        data, "train", batch_size=batch_size, augment=True, shuffle=True, device=device, seed=seed
    )
    return next(iter(loader))


def _score(run: MeasureRun, measures: Sequence[str]) -> float:
    name = PRIMARY_MEASURE if PRIMARY_MEASURE in run.values else measures[0]
    return run.values[name][0]


def _summary(run: MeasureRun, model: TinyNetwork, image_size: int) -> dict[str, float]:
    """``zc/<m>`` and ``zc/<m>_s`` per measure, ``zc/total_s``, and params/flops always."""
    summary: dict[str, float] = {}
    for name, (value, seconds) in run.values.items():
        summary[f"zc/{name}"] = value
        summary[f"zc/{name}_s"] = seconds
    summary["zc/total_s"] = run.total_s
    params = run.values.get("params", (math.nan, 0.0))[0]
    flops = run.values.get("flops", (math.nan, 0.0))[0]
    summary["params"] = params if math.isfinite(params) else float(count_parameters(model))
    summary["flops"] = flops if math.isfinite(flops) else count_flops(model, image_size)
    return summary


def _check_targets(targets: Tensor, num_classes: int) -> None:
    if targets.numel() and not 0 <= int(targets.min()) <= int(targets.max()) < num_classes:
        raise ValueError(f"targets must be class indices in 0..{num_classes - 1}")


# ----------------------------------------------------------------------------- bookkeeping


class _Clock:
    """Seconds per measure; the measure being computed pays for whatever it triggers."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.active: str | None = None

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def charge(self, measure: str) -> Iterator[None]:
        self.active = measure
        start = self.now()
        try:
            yield
        finally:
            self.seconds[measure] = self.seconds.get(measure, 0.0) + self.now() - start
            self.active = None

    def move(self, seconds: float, to: str) -> None:
        """Re-charge ``seconds`` of the active measure's time to ``to`` (its own work)."""
        if self.active is None or self.active == to:
            return
        self.seconds[self.active] = self.seconds.get(self.active, 0.0) - seconds
        self.seconds[to] = self.seconds.get(to, 0.0) + seconds


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    """Weights and BatchNorm buffers, cloned, to restore the untouched initial state."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else math.nan


def _guarded(name: str, clock: _Clock, fn: Callable[[], float], run: MeasureRun) -> None:
    """Run one measure; an exception or a non-finite value leaves NaN, never a crash."""
    value = math.nan
    with clock.charge(name):
        try:
            value = _finite(fn())
        except Exception as exc:  # one bad measure must not sink the rest
            run.errors[name] = f"{type(exc).__name__}: {exc}"
    run.values[name] = (value, 0.0)


def _finish(run: MeasureRun, clock: _Clock) -> MeasureRun:
    run.values = {m: (v, max(clock.seconds.get(m, 0.0), 0.0)) for m, (v, _) in run.values.items()}
    return run


def _layers(model: nn.Module) -> list[Layer]:
    """The layers every per-weight measure covers (the reference's Conv2d and Linear)."""
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _total(parts: Iterator[Tensor]) -> float:
    """Sum of per-layer values, accumulated in float64."""
    return float(sum((p.double() for p in parts), torch.zeros((), dtype=torch.float64)))


# ----------------------------------------------------------------------------- shared passes


class _Session:
    """One forward of the batch and the backward passes several measures share, run lazily.

    The passes run on a working copy of the initial state (`functional_call`), so the model
    itself is never touched. Each pass runs at most once; a pass that raised re-raises for every
    measure needing it.
    """

    def __init__(
        self,
        model: TinyNetwork,
        state: dict[str, Tensor],
        inputs: Tensor,
        targets: Tensor,
        measures: Sequence[str],
        clock: _Clock,
    ) -> None:
        self.model, self.state, self.targets, self.clock = model, state, targets, clock
        self.wanted = set(measures)
        self.inputs = _nchw(inputs.detach()).requires_grad_("jacob_cov" in self.wanted)
        named = _named_layers(model)
        self.layers = [layer for _, layer in named]
        self.tensors = _working_copy(state)
        self.weights = [self.tensors[f"{name}.weight"].requires_grad_() for name, _ in named]
        self._done: dict[str, object] = {}

    def _once(self, key: str, fn: Callable[[], object]) -> object:
        if key not in self._done:
            try:
                self._done[key] = fn()
            except Exception as exc:
                self._done[key] = exc
                raise
        result = self._done[key]
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def forward(self) -> _Forward:
        return self._once("forward", self._forward)  # type: ignore[return-value]

    @property
    def loss_grads(self) -> _LossGrads:
        return self._once("loss_grads", self._loss_grads)  # type: ignore[return-value]

    @property
    def hessian_grad(self) -> list[Tensor | None]:
        return self._once("hessian_grad", self._hessian_grad)  # type: ignore[return-value]

    @property
    def jacobian(self) -> Tensor:
        return self._once("jacobian", self._jacobian)  # type: ignore[return-value]

    def _forward(self) -> _Forward:
        fwd = _Forward(device=self.inputs.device)
        handles = []
        if "fisher" in self.wanted:
            handles += [layer.register_forward_hook(fwd.keep_output) for layer in self.layers]
        if "naswot" in self.wanted:
            relus = [m for m in self.model.modules() if isinstance(m, nn.ReLU)]
            handles += [relu.register_forward_hook(fwd.add_codes) for relu in relus]
        try:
            fwd.logits = torch.func.functional_call(self.model, self.tensors, (self.inputs,))
        finally:
            for handle in handles:
                handle.remove()
        self.clock.move(fwd.code_seconds, to="naswot")
        return fwd

    def _loss_grads(self) -> _LossGrads:
        """∂L/∂W (and ∂L/∂a for fisher) in one backward; with a graph when grasp needs H g."""
        fwd = self.forward
        loss = F.cross_entropy(fwd.logits, self.targets)
        acts = list(fwd.outputs.values())
        grads = torch.autograd.grad(
            loss,
            self.weights + acts,
            create_graph="grasp" in self.wanted,
            retain_graph=True,
            allow_unused=True,
        )
        n = len(self.weights)
        act_grads = {layer: g for layer, g in zip(fwd.outputs, grads[n:])}
        return _LossGrads(list(grads[:n]), act_grads)

    def _hessian_grad(self) -> list[Tensor | None]:
        """H g as grasp defines it: ∂/∂W of Σ g.detach() ⊙ g."""
        grads = self.loss_grads.weights
        used = [(w, g) for w, g in zip(self.weights, grads) if g is not None]
        z = sum((g.detach() * g).sum() for _, g in used)
        hg = torch.autograd.grad(z, [w for w, _ in used], retain_graph=True, allow_unused=True)
        products = iter(hg)
        return [next(products) if g is not None else None for g in grads]

    def _jacobian(self) -> Tensor:
        """∂(Σ logits)/∂x; zeros when the output ignores the input (a degenerate cell)."""
        logits = self.forward.logits
        ones = torch.ones_like(logits)
        grad = torch.autograd.grad(logits, self.inputs, ones, retain_graph=True, allow_unused=True)
        return torch.zeros_like(self.inputs) if grad[0] is None else grad[0]


def _nchw(x: Tensor) -> Tensor:
    """Plain NCHW layout: BatchNorm's double backward (grasp) is ~2x slower channels-last on CPU."""
    return x.contiguous(memory_format=torch.contiguous_format) if x.dim() == 4 else x.contiguous()


def _working_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fresh NCHW clones of the initial state: the passes may update BatchNorm buffers freely."""
    return {k: v.detach().clone(memory_format=torch.contiguous_format) for k, v in state.items()}


def _named_layers(model: nn.Module) -> list[tuple[str, Layer]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@dataclass
class _Forward:
    """What the shared forward leaves behind: logits, layer outputs, the NASWOT kernel."""

    device: torch.device
    logits: Tensor | None = None
    outputs: dict[nn.Module, Tensor] = field(default_factory=dict)
    kernel: Tensor | None = None
    code_seconds: float = 0.0

    def keep_output(self, module: nn.Module, _inp: object, out: Tensor) -> None:
        self.outputs[module] = out

    def add_codes(self, _module: nn.Module, _inp: object, out: Tensor) -> None:
        """K += c cᵀ + (1-c)(1-c)ᵀ = 2 c cᵀ - r_i - r_j + D, c = [relu input > 0] = [out > 0]."""
        synchronize(self.device)
        start = time.perf_counter()
        codes = (out.detach() > 0).reshape(out.shape[0], -1).float()
        both_on = (codes @ codes.T).double()
        ones = codes.sum(1).double()
        term = 2 * both_on - ones[:, None] - ones[None, :] + codes.shape[1]
        self.kernel = term if self.kernel is None else self.kernel + term
        synchronize(self.device)
        self.code_seconds += time.perf_counter() - start


@dataclass
class _LossGrads:
    weights: list[Tensor | None]
    acts: dict[nn.Module, Tensor | None]


def _run_shared(
    model: TinyNetwork,
    state: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    measures: Sequence[str],
    clock: _Clock,
) -> MeasureRun:
    run = MeasureRun(values={})
    session = _Session(model, state, inputs, targets, measures, clock)
    last_shared = max((i for i, m in enumerate(measures) if m in SHARED_MEASURES), default=-1)
    for i, name in enumerate(measures):
        _guarded(name, clock, lambda name=name, s=session: _SCORES[name](s), run)
        if i == last_shared:
            session = _Session(model, state, inputs, targets, (), clock)  # frees the graph
    return _finish(run, clock)


def _grad_norm(s: _Session) -> float:
    return _total(g.detach().norm() for g in s.loss_grads.weights if g is not None)


def _snip(s: _Session) -> float:
    pairs = zip(s.layers, s.loss_grads.weights)
    return _total(
        (layer.weight.detach() * g.detach()).abs().sum() for layer, g in pairs if g is not None
    )


def _grasp(s: _Session) -> float:
    pairs = zip(s.layers, s.hessian_grad)
    return _total((-layer.weight.detach() * hg).sum() for layer, hg in pairs if hg is not None)


def _fisher(s: _Session) -> float:
    grads = s.loss_grads.acts
    outputs = s.forward.outputs
    return _total(
        _fisher_layer(layer, outputs[layer].detach(), grad.detach())
        for layer, grad in grads.items()
        if grad is not None
    )


def _fisher_layer(layer: nn.Module, act: Tensor, grad: Tensor) -> Tensor:
    """Σ over channels of ½·mean_n (Σ_hw a·g)², each channel counted once per weight it owns."""
    per_sample = act * grad
    if per_sample.dim() > 2:
        per_sample = per_sample.sum(dim=tuple(range(2, per_sample.dim())))
    channel = per_sample.pow(2).mean(0).mul(0.5).abs()
    fan_in = math.prod(layer.weight.shape[1:])
    return channel.sum() * fan_in


def _jacob_cov(s: _Session) -> float:
    return jacob_cov_score(s.jacobian)


def jacob_cov_score(jacobian: Tensor) -> float:
    """-Σ (log(λ + k) + 1/(λ + k)) over the eigenvalues λ of the samples' Jacobian correlations.

    NaN when a sample's Jacobian is constant (no correlation defined), as the reference does.
    """
    rows = jacobian.detach().reshape(jacobian.shape[0], -1).cpu().numpy()
    with np.errstate(all="ignore"):
        corrs = np.corrcoef(rows)
        if not np.all(np.isfinite(corrs)):
            return math.nan
        eigenvalues = np.linalg.eig(corrs)[0]
        if np.iscomplexobj(eigenvalues):
            eigenvalues = eigenvalues.real
        shifted = eigenvalues + JACOB_K
        return float(-np.sum(np.log(shifted) + 1.0 / shifted))


def _naswot(s: _Session) -> float:
    kernel = s.forward.kernel
    if kernel is None:
        return math.nan
    return naswot_score(kernel)


def naswot_score(kernel: Tensor) -> float:
    """log|K|; NaN when K is singular (identical codes, e.g. a constant-output cell)."""
    sign, logdet = torch.linalg.slogdet(kernel.double().cpu())
    return float(logdet) if float(sign) > 0 else math.nan


def _synflow(s: _Session) -> float:
    return synflow_functional(s.model, s.state, s.inputs.shape[1:])


def synflow_functional(
    model: TinyNetwork, state: dict[str, Tensor], image_shape: Sequence[int]
) -> float:
    """synflow on a float64 |θ| copy of ``state``, run through ``model`` without touching it."""
    device = next(iter(state.values())).device
    params = {
        k: v.detach().to(torch.float64).abs() if v.is_floating_point() else v.clone()
        for k, v in state.items()
    }
    names = [
        f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    weights = [params[n].requires_grad_() for n in names]
    ones = torch.ones((1, *image_shape), dtype=torch.float64, device=device)
    with _batchnorm_bypassed(model):
        out = torch.func.functional_call(model, params, (ones,))
    grads = torch.autograd.grad(out.sum(), weights, allow_unused=True)
    return _total((w.detach() * g).abs().sum() for w, g in zip(weights, grads) if g is not None)


def _synflow_dropped_batchnorms(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, name) of the BatchNorms the reference's ``use_bn=False`` copy does not have.

    That is all of them except those of the residual reduction blocks, which the reference
    builds with BatchNorm regardless of ``use_bn``.
    """
    kept = {
        id(m)
        for block in model.modules()
        if isinstance(block, ResNetBasicBlock)
        for m in block.modules()
    }
    return [
        (parent, name)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, nn.BatchNorm2d) and id(child) not in kept
    ]


@contextlib.contextmanager
def _batchnorm_bypassed(model: nn.Module) -> Iterator[None]:
    """The dropped BatchNorms act as identities while inside; restored on exit."""
    norms = [getattr(parent, name) for parent, name in _synflow_dropped_batchnorms(model)]
    for norm in norms:
        norm.forward = types.MethodType(lambda self, x: x, norm)
    try:
        yield
    finally:
        for norm in norms:
            del norm.forward


def _params(s: _Session) -> float:
    return float(count_parameters(s.model))


def _flops(s: _Session) -> float:
    return count_flops(s.model, int(s.inputs.shape[-1]))


#: measure → scorer on the shared session (looked up at call time, so tests can swap one).
_SCORES: dict[str, Callable[[_Session], float]] = {
    "grad_norm": _grad_norm,
    "snip": _snip,
    "grasp": _grasp,
    "fisher": _fisher,
    "jacob_cov": _jacob_cov,
    "synflow": _synflow,
    "naswot": _naswot,
    "params": _params,
    "flops": _flops,
}


# ----------------------------------------------------------------------------- reference way
# The reference's procedure: a fresh copy of the initial net per measure, each with its own
# forward/backward passes. Kept to check the shared passes against and to time the baseline.


def _run_reference_way(
    model: TinyNetwork,
    state: dict[str, Tensor],
    inputs: Tensor,
    targets: Tensor,
    measures: Sequence[str],
    clock: _Clock,
) -> MeasureRun:
    run = MeasureRun(values={})
    pristine = copy.deepcopy(model)
    pristine.load_state_dict(state)
    for name in measures:

        def measure(name: str = name) -> float:
            net = copy.deepcopy(pristine).train()
            return _REFERENCE_SCORES[name](net, inputs.detach(), targets)

        _guarded(name, clock, measure, run)
    return _finish(run, clock)


def _ref_loss_backward(net: nn.Module, inputs: Tensor, targets: Tensor) -> None:
    net.zero_grad()
    F.cross_entropy(net(inputs), targets).backward()


def _ref_grad_norm(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    _ref_loss_backward(net, inputs, targets)
    return _total(
        layer.weight.grad.norm() for layer in _layers(net) if layer.weight.grad is not None
    )


def _masked_forward(self: Layer, x: Tensor) -> Tensor:
    weight = self.weight * self.weight_mask
    if isinstance(self, nn.Conv2d):
        return self._conv_forward(x, weight, self.bias)
    return F.linear(x, weight, self.bias)


def _ref_snip(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    for layer in _layers(net):
        layer.weight_mask = nn.Parameter(torch.ones_like(layer.weight))
        layer.weight.requires_grad = False
        layer.forward = types.MethodType(_masked_forward, layer)
    _ref_loss_backward(net, inputs, targets)
    masks = [layer.weight_mask.grad for layer in _layers(net)]
    return _total(m.abs().sum() for m in masks if m is not None)


def _ref_grasp(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    weights = [layer.weight for layer in _layers(net)]
    net.zero_grad()
    loss = F.cross_entropy(net(inputs), targets)
    grad_w = torch.autograd.grad(loss, weights, allow_unused=True)
    loss = F.cross_entropy(net(inputs), targets)
    grad_f = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
    z = sum((gw.data * gf).sum() for gw, gf in zip(grad_w, grad_f) if gw is not None)
    z.backward()
    return _total((-w.data * w.grad).sum() for w in weights if w.grad is not None)


def _ref_fisher(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    layers = _layers(net)
    fisher: dict[nn.Module, Tensor] = {}
    acts: dict[nn.Module, Tensor] = {}
    for layer in layers:
        layer.dummy = nn.Identity()
        layer.register_forward_hook(lambda m, _i, out: m.dummy(out))

        def on_grad(_m: nn.Module, _gi: object, grad_out: tuple[Tensor, ...], layer=layer) -> None:
            fisher[layer] = _fisher_layer(layer, acts.pop(layer).detach(), grad_out[0].detach())

        layer.dummy.register_forward_hook(
            lambda m, _i, out, layer=layer: acts.__setitem__(layer, out)
        )
        layer.dummy.register_full_backward_hook(on_grad)
    _ref_loss_backward(net, inputs, targets)
    return _total(iter(fisher.values()))


def _ref_jacob_cov(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    x = inputs.clone().requires_grad_(True)
    net.zero_grad()
    y = net(x)
    y.backward(torch.ones_like(y))
    return jacob_cov_score(torch.zeros_like(x) if x.grad is None else x.grad)


def _ref_synflow(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    for parent, name in _synflow_dropped_batchnorms(net):
        setattr(parent, name, nn.Identity())
    net.double()
    with torch.no_grad():
        for tensor in net.state_dict().values():
            tensor.abs_()
    net.zero_grad()
    out = net(torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=inputs.device))
    out.sum().backward()
    layers = _layers(net)
    return _total(
        (lay.weight.detach() * lay.weight.grad).abs().sum()
        for lay in layers
        if lay.weight.grad is not None
    )


def _ref_naswot(net: nn.Module, inputs: Tensor, targets: Tensor) -> float:
    kernel = torch.zeros(
        inputs.shape[0], inputs.shape[0], dtype=torch.float64, device=inputs.device
    )

    def hook(_m: nn.Module, _inp: object, out: Tensor) -> None:
        nonlocal kernel
        codes = (out > 0).reshape(out.shape[0], -1).float()
        kernel = kernel + (codes @ codes.T + (1 - codes) @ (1 - codes).T).double()

    for relu in (m for m in net.modules() if isinstance(m, nn.ReLU)):
        relu.register_forward_hook(hook)
    with torch.no_grad():
        net(inputs)
    return naswot_score(kernel)


_REFERENCE_SCORES: dict[str, Callable[[nn.Module, Tensor, Tensor], float]] = {
    "grad_norm": _ref_grad_norm,
    "snip": _ref_snip,
    "grasp": _ref_grasp,
    "fisher": _ref_fisher,
    "jacob_cov": _ref_jacob_cov,
    "synflow": _ref_synflow,
    "naswot": _ref_naswot,
    "params": lambda net, _x, _y: float(count_parameters(net)),
    "flops": lambda net, x, _y: count_flops(net, int(x.shape[-1])),
}
