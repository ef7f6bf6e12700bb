"""Search space: arch strings, enumeration, degeneracy, and parity with NATS-Bench's net."""

from __future__ import annotations

import random

import pytest
import torch

from fear_mlflow.errors import UserError
from fear_mlflow.space.arch import (
    NUM_CELLS,
    OPS,
    Arch,
    all_archs,
    arch_from_enumeration,
    parse_arch,
)
from fear_mlflow.space.model import build_model, count_flops, count_parameters, macs_by_module

BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"
ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_parse_round_trips_canonical_string() -> None:
    arch = parse_arch(BEST)
    assert str(arch) == BEST
    assert arch.ops == (
        "nor_conv_3x3",
        "nor_conv_3x3",
        "nor_conv_3x3",
        "skip_connect",
        "nor_conv_1x1",
        "nor_conv_3x3",
    )
    assert parse_arch(f"  {BEST}\n") == arch


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv_5x5'"),
        ("|none~0|+|none~0|none~1|", "3 separated by '+'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "should read 'none~0'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2"),
        ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", "must start and end with '|'"),
    ],
)
def test_bad_strings_name_the_problem(text: str, fragment: str) -> None:
    with pytest.raises(UserError) as info:
        parse_arch(text)
    assert fragment in str(info.value)
    if "unknown op" in fragment:
        assert all(op in str(info.value) for op in OPS)


def test_enumeration_is_complete_unique_and_invertible() -> None:
    cells = list(all_archs())
    assert len(cells) == NUM_CELLS == 15625
    assert len(set(cells)) == NUM_CELLS
    for i in (0, 1, 777, 15624):
        assert arch_from_enumeration(i) == cells[i]
        assert cells[i].to_index_in_enumeration() == i
    with pytest.raises(UserError):
        arch_from_enumeration(NUM_CELLS)


def test_degeneracy_is_about_paths_from_input_to_output() -> None:
    assert parse_arch(ALL_NONE).is_degenerate
    # output only fed by node 1, which is unreachable from the input
    assert parse_arch("|none~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|").is_degenerate
    # one direct edge is enough
    assert not parse_arch("|none~0|+|none~0|none~1|+|avg_pool_3x3~0|none~1|none~2|").is_degenerate
    # a chain through nodes 1 and 2
    chain = parse_arch("|skip_connect~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|")
    assert not chain.is_degenerate
    assert chain.live_edges() == {(1, 0), (2, 1), (3, 2)}
    count = sum(a.is_degenerate for a in all_archs())
    assert 0 < count < NUM_CELLS


@pytest.mark.parametrize(("text", "expected"), [(ALL_3X3, 1_531_546), (ALL_NONE, 73_306)])
def test_parameter_counts_match_the_benchmark(text: str, expected: int) -> None:
    assert count_parameters(build_model(parse_arch(text), 10)) == expected


def test_edge_conv_bias_adds_uncounted_biases_to_cell_edge_convs_only() -> None:
    arch = parse_arch(BEST)
    plain = build_model(arch, 10, channels=4, cells_per_stage=1)
    biased = build_model(arch, 10, channels=4, cells_per_stage=1, edge_conv_bias=True)
    new = {n for n, _ in biased.named_parameters()} - {n for n, _ in plain.named_parameters()}
    convs_per_cell = sum(op.startswith("nor_conv") for op in arch.ops)
    assert len(new) == 3 * convs_per_cell  # three search cells at cells_per_stage=1
    assert all(n.startswith("cells.") and n.endswith(".op.1.bias") for n in new)
    assert not any(n.startswith(("cells.1.", "cells.3.")) for n in new)  # reductions stay bias-free
    assert count_parameters(biased) == count_parameters(plain)
    assert count_flops(biased, 16) == count_flops(plain, 16)


def test_module_names_keep_freeze_identifiers() -> None:
    names = {name for name, _ in build_model(parse_arch(BEST), 10).named_parameters()}
    for ident in (
        "classifier.weight",
        "lastact.0.weight",
        "cells.16.layers.0.op.1.weight",
        "cells.5.conv_a.op.1.weight",
        "cells.11.downsample.1.weight",
    ):
        assert ident in names


def test_model_is_channels_last_and_returns_logits() -> None:
    model = build_model(parse_arch(BEST), 7, channels=4, cells_per_stage=1)
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)


@pytest.mark.parametrize(
    ("text", "computed"),
    [
        # node 2 feeds the output only through `none`
        ("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|skip_connect~0|none~1|none~2|", {(3, 0)}),
        # node 1 is exactly zero: skip of it is zero, but a conv of it adds BN's constant
        (
            "|none~0|+|skip_connect~0|nor_conv_3x3~1|+|none~0|skip_connect~1|nor_conv_1x1~2|",
            {(2, 0), (2, 1), (3, 2)},
        ),
    ],
)
def test_skipping_zero_edges_changes_nothing(text: str, computed: set) -> None:
    from fear_mlflow.space.model import edges_to_compute

    arch = parse_arch(text)
    assert edges_to_compute(arch) == computed
    torch.manual_seed(0)
    model = build_model(arch, 10, channels=4, cells_per_stage=2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.bias.uniform_(-1, 1)
                module.running_mean.uniform_(-1, 1)
    x = torch.randn(3, 3, 16, 16)
    for mode in (True, False):
        model.train(mode)
        model.set_skip_dead_edges(True)
        fast = model(x)
        model.set_skip_dead_edges(False)
        torch.testing.assert_close(model(x), fast)


xautodl = pytest.importorskip("xautodl", reason="dev extra: pip install --no-deps xautodl==1.0.0")


def _reference_net(
    text: str, num_classes: int, channels: int = 16, cells: int = 5
) -> torch.nn.Module:
    from xautodl.models import get_cell_based_tiny_net

    return get_cell_based_tiny_net(
        {
            "name": "infer.tiny",
            "C": channels,
            "N": cells,
            "arch_str": text,
            "num_classes": num_classes,
        }
    )


def _random_cells(n: int, seed: int) -> list[Arch]:
    rng = random.Random(seed)
    return [Arch(tuple(rng.choice(OPS) for _ in range(6))) for _ in range(n)]


@pytest.mark.parametrize(
    "arch", [parse_arch(ALL_3X3), parse_arch(ALL_NONE), *_random_cells(14, 0)], ids=str
)
def test_parity_with_nats_bench_tiny_network(arch: Arch) -> None:
    from xautodl.utils import get_model_infos

    ours = build_model(arch, 10, channels_last=False)
    ref = _reference_net(str(arch), 10)
    assert count_parameters(ours) == count_parameters(ref)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():  # non-trivial BN statistics
        for module in ref.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 1.5)
    ours.load_state_dict(ref.state_dict())
    ours.eval()
    ref.eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        _, ref_logits = ref(x)
        torch.testing.assert_close(ours(x), ref_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(
            ours.to(memory_format=torch.channels_last)(x), ref_logits, rtol=1e-4, atol=1e-5
        )
    ref_flops, _ = get_model_infos(_reference_net(str(arch), 10), (1, 3, 32, 32))
    assert count_flops(ours, 32) == pytest.approx(ref_flops, rel=1e-9)


def test_parity_for_small_test_networks() -> None:
    arch = _random_cells(1, 3)[0]
    ours = build_model(arch, 5, channels=4, cells_per_stage=1, channels_last=False)
    ref = _reference_net(str(arch), 5, channels=4, cells=1)
    assert count_parameters(ours) == count_parameters(ref)


def test_macs_by_module_splits_count_flops_by_conv_and_linear() -> None:
    """The per-module split (the throughput bench counts stage 2's prefix with it) sums to
    `count_flops` and names each conv / linear with its own multiply-accumulates."""
    arch = parse_arch(
        "|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    )
    model = build_model(arch, 10, channels=4, cells_per_stage=1)
    macs = macs_by_module(model, 16)
    assert sum(macs.values()) / 1e6 == pytest.approx(count_flops(model, 16), rel=1e-12)
    assert macs["classifier"] == 16 * 10 + 10
    assert macs["stem.0"] == 3 * 3 * 3 * 4 * 16 * 16
    assert macs["cells.0.layers.0.op.1"] == 3 * 3 * 4 * 4 * 16 * 16  # 3x3 edge 0 -> 1
    assert macs["cells.0.layers.1.op.1"] == 4 * 4 * 16 * 16  # 1x1 edge 0 -> 2
    assert not any(name.startswith("cells.0.layers.2") for name in macs)  # skip: no MACs
