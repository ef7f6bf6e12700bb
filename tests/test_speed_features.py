"""Speed features must not change what they claim not to change (tiny nets, CPU)."""

from __future__ import annotations

import torch

from fear_mlflow.config import FearSettings
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.evaluators.fear import evaluate_fear
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.space.model import build_model
from fear_mlflow.train.feature_cache import prefix_features
from fear_mlflow.train.freeze import freeze_all_but, frozen_prefix_length, run_prefix
from tests.helpers import CONV_CELL, TINY, synthetic, tiny_context

CPU = torch.device("cpu")


def test_channels_last_gives_the_same_outputs_and_gradients() -> None:
    arch = parse_arch(CONV_CELL)
    torch.manual_seed(0)
    nchw = build_model(arch, 10, channels_last=False, **TINY)
    nhwc = build_model(arch, 10, channels_last=True, **TINY)
    nhwc.load_state_dict(nchw.state_dict())
    x = torch.randn(16, 3, 16, 16)
    out_a, out_b = nchw(x), nhwc(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out_a, out_b, rtol=1e-5, atol=1e-5)
    out_a.square().sum().backward()
    out_b.square().sum().backward()
    for (name, a), b in zip(nchw.named_parameters(), nhwc.parameters()):
        # float sums run in another order: compare relative to the gradient's size
        error = (a.grad - b.grad).norm() / a.grad.norm().clamp_min(1e-12)
        assert error < 1e-4 or (a.grad - b.grad).abs().max() < 1e-6, (name, float(error))


def test_stage2_cache_features_are_the_frozen_prefix_in_eval_mode() -> None:
    data = synthetic()
    torch.manual_seed(0)
    model = build_model(parse_arch(CONV_CELL), data.num_classes, **TINY)
    freeze_all_but(model, ("classifier", "lastact", "cells.4"))
    prefix = frozen_prefix_length(model)
    assert prefix == 5  # stem + cells 0..3
    loader = DeviceLoader(
        data.train_x,
        data.train_y,
        batch_size=100,
        mean=data.mean,
        std=data.std,
        augment=False,
        shuffle=False,
        drop_single=False,
    )
    feats, labels = prefix_features(model, prefix, loader, CPU, "fp32")
    assert feats.shape[0] == labels.shape[0] == len(data.train_y)
    assert model.training  # restored
    model.eval()
    x, _ = next(
        iter(
            DeviceLoader(
                data.train_x[:7],
                data.train_y[:7],
                batch_size=7,
                mean=data.mean,
                std=data.std,
                augment=False,
                shuffle=False,
            )
        )
    )
    torch.testing.assert_close(feats[:7], run_prefix(model, prefix, x))


def test_stage2_cache_is_deterministic_and_only_changes_stage2() -> None:
    data = synthetic()
    base = dict(
        threshold=0.3, batch_size=64, stage1_epochs=6, freeze_batch_size=128, freeze_epochs=3
    )
    plain = evaluate_fear(parse_arch(CONV_CELL), data, FearSettings(**base), tiny_context(), CPU)
    cached = [
        evaluate_fear(
            parse_arch(CONV_CELL),
            data,
            FearSettings(**base, stage2_cache=True),
            tiny_context(),
            CPU,
        )
        for _ in range(2)
    ]
    assert cached[0].score == cached[1].score
    assert cached[0].status == "ok" and 0 < cached[0].score <= 1
    stage1 = [
        [r.metrics["train_top1"] for r in res.history if r.stage == "stage1"]
        for res in (plain, cached[0])
    ]
    assert stage1[0] == stage1[1]
    assert len([r for r in cached[0].history if r.stage == "stage2"]) == 3


def test_bf16_on_cpu_really_autocasts_and_stays_close_to_fp32() -> None:
    """`--precision bf16` on a CPU is recorded as bf16, so it must compute in bf16."""
    from fear_mlflow.device import autocast, resolve_precision

    assert resolve_precision("auto", CPU) == "fp32"  # opt-in on CPUs
    assert resolve_precision("bf16", CPU) == "bf16"
    torch.manual_seed(0)
    model = build_model(parse_arch(CONV_CELL), 10, **TINY)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        with autocast(CPU, "bf16"):
            low = model(x)
        with autocast(CPU, "fp32"):
            full = model(x)
    assert low.dtype == torch.bfloat16 and full.dtype == torch.float32
    assert not torch.equal(low.float(), full)
    torch.testing.assert_close(low.float(), full, rtol=0.1, atol=0.1)


def test_cached_stage2_batches_stay_channels_last() -> None:
    """The suffix must see the fast memory format: a shuffled gather must not drop it."""
    from fear_mlflow.train.feature_cache import CachedFeatureBatches

    feats = torch.randn(10, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(10)
    batches = CachedFeatureBatches(lambda: (feats, labels), 10, batch_size=4, seed=0)
    seen = []
    for x, y in batches:
        assert x.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(x, feats[y])  # each feature row travels with its label
        seen += y.tolist()
    assert sorted(seen) == list(range(10))


def test_shared_relus_without_autograd_change_nothing(monkeypatch) -> None:
    """Without autograd a node's ReLU is computed once for all its convs: same bits out."""
    import copy

    from fear_mlflow.space.model import ReLUConvBN

    all_3x3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    torch.manual_seed(0)
    shared = build_model(parse_arch(all_3x3), 10, **TINY).train()
    per_edge = copy.deepcopy(shared)
    for module in per_edge.modules():  # a hooked ReLU must run: forces the per-edge path
        if isinstance(module, torch.nn.ReLU):
            module.register_forward_hook(lambda *_: None)
    calls = {"shared": 0}
    original = ReLUConvBN.conv_bn

    def counting(self, relu_x):
        calls["shared"] += 1
        return original(self, relu_x)

    monkeypatch.setattr(ReLUConvBN, "conv_bn", counting)
    x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = shared(x), per_edge(x)
    assert calls["shared"] == 6 * 3  # six convs in each of the three search cells
    assert torch.equal(a, b)
    for (name, s), p in zip(shared.state_dict().items(), per_edge.state_dict().values()):
        assert torch.equal(s, p), name  # BatchNorm running statistics too
    calls["shared"] = 0
    shared(x).sum().backward()  # with autograd every edge keeps its own ReLU
    assert calls["shared"] == 0


def test_no_grad_cell_sums_in_place_match_autograd_and_leave_inputs_alone() -> None:
    """Without autograd node sums accumulate in place; a skip edge's node must stay intact."""
    for text in (
        CONV_CELL,
        "|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|",
    ):
        torch.manual_seed(0)
        model = build_model(parse_arch(text), 10, **TINY).train()
        x = torch.randn(8, 3, 16, 16).contiguous(memory_format=torch.channels_last)
        kept = x.clone()
        with torch.no_grad():
            fast = model(x)
        slow = model(x)  # autograd on: out-of-place sums, one ReLU per edge
        assert torch.equal(x, kept)
        assert torch.equal(fast, slow.detach()), text
