"""Zero-cost proxies on tiny nets: definitions, shared passes vs the reference's way, failures."""

from __future__ import annotations

import ast
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import fear_mlflow
from fear_mlflow.config import ZEROCOST_MEASURES, RunContext, ZerocostSettings
from fear_mlflow.data.datasets import ImageData
from fear_mlflow.data.loader import DeviceLoader
from fear_mlflow.evaluators import zerocost
from fear_mlflow.evaluators.zerocost import (
    JACOB_K,
    compute_measures,
    evaluate_zerocost,
    jacob_cov_score,
    random_minibatch,
    run_measures,
)
from fear_mlflow.space.arch import parse_arch
from fear_mlflow.space.model import (
    ResNetBasicBlock,
    build_model,
    count_flops,
    count_parameters,
)

CONVS = parse_arch(
    "|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
)
#: node 1 is fed by `none` only, so its conv 1→3 reads zeros (a dead edge we skip).
MIXED = parse_arch(
    "|none~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"
)
DEGENERATE = parse_arch("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
CLASSES = 10
SIX = ("grad_norm", "snip", "grasp", "fisher", "jacob_cov", "synflow")


def tiny(arch=CONVS, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(arch, CLASSES, channels=4, cells_per_stage=1)


def batch(n: int = 8, size: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, CLASSES, (n,), generator=gen)


def values(arch=CONVS, measures=ZEROCOST_MEASURES, seed: int = 0, **kw) -> dict[str, float]:
    x, y = batch()
    result = compute_measures(tiny(arch, seed), x, y, measures, num_classes=CLASSES, **kw)
    return {m: v for m, (v, _) in result.items()}


def same(a: float, b: float, rel: float = 1e-4) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-6)


def synthetic_data(n: int = 48, size: int = 16) -> ImageData:
    gen = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen)
    labels = torch.arange(n) % CLASSES
    return ImageData(
        name="synthetic",
        train_x=images,
        train_y=labels,
        test_x=images[:8],
        test_y=labels[:8],
        num_classes=CLASSES,
        mean=(120.0, 120.0, 120.0),
        std=(60.0, 60.0, 60.0),
        pad=2,
    )


def tiny_context(seed: int = 42) -> RunContext:
    return RunContext(dataset="synthetic", seed=seed, device="cpu", channels=4, cells_per_stage=1)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- definitions


def test_every_measure_is_finite_with_the_expected_sign() -> None:
    v = values()
    assert all(math.isfinite(v[m]) for m in ZEROCOST_MEASURES), v
    for m in ("grad_norm", "snip", "fisher", "synflow"):
        assert v[m] > 0, m
    # log λ + 1/λ ≥ 1 for every eigenvalue λ > 0, so the score is at most -batch size
    assert v["jacob_cov"] < -8 * 0.99
    # K has D (the code length) on its diagonal, so log|K| is far above 0
    assert v["naswot"] > 8


def test_params_and_flops_are_the_model_counts() -> None:
    model = tiny()
    x, y = batch()
    v = compute_measures(model, x, y, ("params", "flops"), num_classes=CLASSES)
    assert v["params"][0] == count_parameters(model)
    assert v["flops"][0] == pytest.approx(count_flops(model, 8))


def test_snip_is_weight_times_gradient_and_grad_norm_its_layer_norms() -> None:
    model = tiny()
    x, y = batch()
    v = compute_measures(model, x, y, ("grad_norm", "snip"), num_classes=CLASSES)
    nn.functional.cross_entropy(model(x), y).backward()
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    used = [m.weight for m in layers if m.weight.grad is not None]
    snip = sum(float((w.detach() * w.grad).abs().sum()) for w in used)
    norms = sum(float(w.grad.norm()) for w in used)
    assert v["snip"][0] == pytest.approx(snip, rel=1e-4)
    assert v["grad_norm"][0] == pytest.approx(norms, rel=1e-4)


def test_jacob_cov_uses_the_reference_eigenvalue_formula() -> None:
    rows = torch.tensor([[1.0, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]])  # uncorrelated
    expected = -3 * (math.log(1 + JACOB_K) + 1 / (1 + JACOB_K))
    assert jacob_cov_score(rows) == pytest.approx(expected, rel=1e-9)
    corr = torch.tensor([[1.0, 2, 3, 4], [2, 4, 6, 8.5], [1, -1, 1, -1]])
    lam = np.linalg.eigvalsh(np.corrcoef(corr.numpy()))
    assert jacob_cov_score(corr) == pytest.approx(
        -np.sum(np.log(lam + JACOB_K) + 1 / (lam + JACOB_K))
    )


def test_jacob_cov_is_nan_when_a_jacobian_is_constant() -> None:
    assert math.isnan(jacob_cov_score(torch.zeros(4, 6)))


def test_synflow_keeps_only_the_reduction_blocks_batchnorms() -> None:
    model = tiny()
    dropped = {id(getattr(p, n)) for p, n in zerocost._synflow_dropped_batchnorms(model)}
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    kept = {id(m) for b in model.modules() if isinstance(b, ResNetBasicBlock) for m in b.modules()}
    assert {id(m) for m in norms} - kept == dropped
    assert id(model.stem[1]) in dropped and id(model.lastact[0]) in dropped
    assert len(kept & {id(m) for m in norms}) == 4  # conv_a + conv_b of both reductions


def test_synflow_depends_on_the_batchnorm_handling(monkeypatch: pytest.MonkeyPatch) -> None:
    before = values(measures=("synflow",))["synflow"]
    monkeypatch.setattr(zerocost, "_synflow_dropped_batchnorms", lambda model: [])
    assert not same(values(measures=("synflow",))["synflow"], before)


# ----------------------------------------------------------------------------- shared passes


def test_same_seed_gives_identical_values_and_another_seed_does_not() -> None:
    first, again, other = values(seed=5), values(seed=5), values(seed=6)
    assert all(first[m] == again[m] for m in ZEROCOST_MEASURES)
    assert not any(same(first[m], other[m]) for m in ("grad_norm", "synflow", "jacob_cov"))


@pytest.mark.parametrize("arch", [CONVS, MIXED, DEGENERATE], ids=["convs", "mixed", "degenerate"])
def test_shared_passes_equal_the_reference_way(arch) -> None:
    shared = values(arch)
    reference = values(arch, reference_way=True)
    for m in ZEROCOST_MEASURES:
        assert same(shared[m], reference[m]), (m, shared[m], reference[m])


def test_measures_in_any_order_and_subset_agree() -> None:
    full = values()
    some = values(measures=("naswot", "grasp", "jacob_cov", "fisher"))
    assert all(same(some[m], full[m], rel=1e-6) for m in some)


def test_model_is_left_as_it_was() -> None:
    model = tiny()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = batch()
    compute_measures(model, x, y, ZEROCOST_MEASURES, num_classes=CLASSES)
    compute_measures(model, x, y, ZEROCOST_MEASURES, num_classes=CLASSES, reference_way=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN buffers
    assert all(p.grad is None for p in model.parameters())
    assert not model.training
    assert model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_shared_pass_is_charged_to_the_first_measure_needing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forward = zerocost._Session._forward

    def slow_forward(self):
        time.sleep(0.3)
        return forward(self)

    monkeypatch.setattr(zerocost._Session, "_forward", slow_forward)
    x, y = batch()
    run = run_measures(tiny(), x, y, ("snip", "grad_norm", "params"), num_classes=CLASSES)
    seconds = {m: s for m, (_, s) in run.values.items()}
    assert seconds["snip"] >= 0.3 > seconds["grad_norm"]
    assert run.total_s == pytest.approx(sum(seconds.values()))


# ----------------------------------------------------------------------------- failures


def test_a_measure_that_raises_becomes_nan(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(session):
        raise RuntimeError("boom")

    monkeypatch.setitem(zerocost._SCORES, "snip", broken)
    x, y = batch()
    run = run_measures(tiny(), x, y, ZEROCOST_MEASURES, num_classes=CLASSES)
    assert math.isnan(run.values["snip"][0])
    assert "boom" in run.errors["snip"] and len(run.errors) == 1
    assert all(math.isfinite(v) for m, (v, _) in run.values.items() if m != "snip")


def test_a_failed_shared_pass_fails_only_its_measures(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(zerocost._Session, "_forward", broken)
    x, y = batch()
    run = run_measures(tiny(), x, y, ZEROCOST_MEASURES, num_classes=CLASSES)
    assert set(run.errors) == set(zerocost.SHARED_MEASURES)
    assert all(math.isfinite(run.values[m][0]) for m in ("synflow", "params", "flops"))


def test_a_non_finite_value_becomes_nan_without_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(zerocost._SCORES, "grad_norm", lambda session: math.inf)
    x, y = batch()
    run = run_measures(tiny(), x, y, ("grad_norm", "snip"), num_classes=CLASSES)
    assert math.isnan(run.values["grad_norm"][0]) and not run.errors


def test_bad_input_is_refused() -> None:
    x, y = batch()
    with pytest.raises(ValueError, match="unknown"):
        compute_measures(tiny(), x, y, ("synflow", "nope"), num_classes=CLASSES)
    with pytest.raises(ValueError, match="class indices"):
        compute_measures(tiny(), x, y + CLASSES, ("snip",), num_classes=CLASSES)


# ----------------------------------------------------------------------------- evaluator


def test_evaluate_zerocost_result() -> None:
    data = synthetic_data()
    settings = ZerocostSettings(batch_size=16)
    result = evaluate_zerocost(CONVS, data, settings, tiny_context(), torch.device("cpu"))
    again = evaluate_zerocost(CONVS, data, settings, tiny_context(), torch.device("cpu"))
    s = result.summary
    assert (result.method, result.status) == ("zerocost", "ok")
    assert result.score == s["zc/synflow"] > 0
    assert {f"zc/{m}" for m in ZEROCOST_MEASURES} | {"params", "flops", "zc/total_s"} <= set(s)
    measure_s = sum(s[f"zc/{m}_s"] for m in ZEROCOST_MEASURES)
    assert result.duration_s == pytest.approx(measure_s) == pytest.approx(s["zc/total_s"])
    assert result.wall_s >= result.duration_s
    assert s["params"] == count_parameters(tiny())
    assert all(s[f"zc/{m}"] == again.summary[f"zc/{m}"] for m in ZEROCOST_MEASURES)


def test_score_is_the_first_measure_without_synflow() -> None:
    settings = ZerocostSettings(batch_size=16, measures=("snip", "grad_norm"))
    result = evaluate_zerocost(CONVS, synthetic_data(), settings, tiny_context(), "cpu")
    assert result.score == result.summary["zc/snip"]
    assert {"params", "flops"} <= set(result.summary)


def test_degenerate_arch_is_measured() -> None:
    assert DEGENERATE.is_degenerate
    settings = ZerocostSettings(batch_size=16, network="natsbench")
    result = evaluate_zerocost(DEGENERATE, synthetic_data(), settings, tiny_context(), "cpu")
    assert result.status == "ok"
    assert result.score == result.summary["zc/synflow"] == 0.0
    assert math.isnan(result.summary["zc/jacob_cov"])  # constant output: no correlation
    assert result.summary["zc/grad_norm"] == 0.0


def test_reference_network_reproduces_the_reference_on_a_conv_of_a_zero_node() -> None:
    """DEGENERATE's output is a conv of an all-zero node. The reference's biased edge convs
    give it what the reference CSV shows for such cells (e.g. 10659): rounding noise that
    BatchNorm amplifies, i.e. a non-zero synflow, a tiny grad_norm and a huge fisher."""
    values = {}
    for network in ("natsbench", "reference"):
        settings = ZerocostSettings(batch_size=16, network=network)
        result = evaluate_zerocost(DEGENERATE, synthetic_data(), settings, tiny_context(), "cpu")
        values[network] = result.summary
    ref, nats = values["reference"], values["natsbench"]
    assert ref["zc/synflow"] > 0.1
    assert 0.0 < ref["zc/grad_norm"] < 1e-6
    assert ref["zc/fisher"] > 1e4 * nats["zc/fisher"]
    assert ref["params"] == nats["params"] and ref["flops"] == nats["flops"]


def test_reference_network_changes_little_on_a_healthy_cell() -> None:
    values = {}
    for network in ("natsbench", "reference"):
        settings = ZerocostSettings(batch_size=16, measures=("fisher", "snip"), network=network)
        values[network] = evaluate_zerocost(
            CONVS, synthetic_data(), settings, tiny_context(), "cpu"
        ).summary
    for m in ("fisher", "snip"):
        ratio = values["reference"][f"zc/{m}"] / values["natsbench"][f"zc/{m}"]
        assert 0.2 < ratio < 5.0, (m, ratio)  # same magnitude, other init draws


def test_status_failed_only_when_every_measure_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(session):
        raise RuntimeError("boom")

    for m in ("snip", "synflow"):
        monkeypatch.setitem(zerocost._SCORES, m, broken)
    data, ctx = synthetic_data(), tiny_context()
    both = ZerocostSettings(batch_size=16, measures=("snip", "synflow"))
    assert evaluate_zerocost(CONVS, data, both, ctx, "cpu").status == "failed"
    one_left = ZerocostSettings(batch_size=16, measures=("snip", "synflow", "params"))
    result = evaluate_zerocost(CONVS, data, one_left, ctx, "cpu")
    assert result.status == "ok" and math.isnan(result.score)


def test_minibatch_is_one_seeded_augmented_training_batch() -> None:
    data = synthetic_data()
    x, y = random_minibatch(data, 16, seed=42)
    loader = DeviceLoader.from_data(data, "train", batch_size=16, augment=True, seed=42)
    ex, ey = next(iter(loader))
    assert torch.equal(x, ex) and torch.equal(y, ey)
    plain = DeviceLoader.from_data(data, "train", batch_size=16, augment=False, seed=42)
    assert not torch.equal(x, next(iter(plain))[0])
    assert not torch.equal(x, random_minibatch(data, 16, seed=43)[0])


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def module_file(name: str) -> Path | None:
    """The source of a fear_mlflow module or package (None for names that are not modules)."""
    base = Path(fear_mlflow.__file__).parent.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_zerocost_does_not_import_mlflow() -> None:
    """Nothing zerocost imports from the package, however indirectly, imports mlflow."""
    seen: set[str] = set()
    todo = ["fear_mlflow.evaluators.zerocost"]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for parent in (".".join(parts[:i]) for i in range(1, len(parts) + 1)):
            path = module_file(parent)
            if parent in seen or path is None:
                continue
            seen.add(parent)
            imports = imported_modules(path)
            assert not any(i.split(".")[0] == "mlflow" for i in imports), parent
            todo += [i for i in imports if i.split(".")[0] == "fear_mlflow"]
    assert "fear_mlflow.evaluators.common" in seen  # the walk does follow the imports
