"""The analysis math on small arrays and DataFrames, checked against scipy and by brute force."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from fear_mlflow import analysis
from fear_mlflow.analysis import (
    AnalysisOptions,
    analyse,
    bootstrap_counts,
    common_ratio,
    correlations,
    top_x_spearman,
)
from fear_mlflow.run_table import config_labels, identity_params


def tied_pair(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated scores with ties on both sides (rounded), as real accuracies have."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=n)
    s = g + rng.normal(scale=1.0, size=n)
    return np.round(g, 1), np.round(s, 1)


def test_point_estimates_match_scipy() -> None:
    g, s = tied_pair(200, 1)
    assert analysis.spearman(g, s) == pytest.approx(spearmanr(g, s).statistic, abs=1e-12)
    assert analysis.kendall(g, s) == pytest.approx(kendalltau(g, s).statistic, abs=1e-12)
    assert math.isnan(analysis.spearman(g[:2], s[:2]))
    assert math.isnan(analysis.kendall(g, np.ones_like(s)))


def test_weighted_bootstrap_equals_resampling_by_hand() -> None:
    """Each bootstrap row of counts gives exactly scipy's ρ and τ-b of that resample."""
    g, s = tied_pair(60, 2)
    weights = bootstrap_counts(g.size, 25, np.random.default_rng(3))
    assert (weights.sum(axis=1) == g.size).all()
    rho = analysis._weighted_spearman(g, s, weights)
    tau = analysis._weighted_kendall(g, s, weights, analysis._concordance_sign(g, s))
    for row in range(weights.shape[0]):
        drawn = np.repeat(np.arange(g.size), weights[row])
        assert rho[row] == pytest.approx(spearmanr(g[drawn], s[drawn]).statistic, abs=1e-9)
        assert tau[row] == pytest.approx(kendalltau(g[drawn], s[drawn]).statistic, abs=1e-5)


def test_confidence_intervals_are_seeded_and_shrink_with_n() -> None:
    small, large = tied_pair(40, 4), tied_pair(800, 4)
    options = AnalysisOptions(resamples=400, seed=7)
    first, again = correlations(*small, options), correlations(*small, options)
    assert first == again
    assert first.spearman_lo < first.spearman < first.spearman_hi
    assert first.kendall_lo < first.kendall < first.kendall_hi
    wide = correlations(*small, options)
    narrow = correlations(*large, options)
    assert narrow.spearman_hi - narrow.spearman_lo < (wide.spearman_hi - wide.spearman_lo) / 2
    other_seed = correlations(*small, AnalysisOptions(resamples=400, seed=8))
    assert other_seed.spearman_lo != first.spearman_lo
    none = correlations(*small, AnalysisOptions(resamples=0))
    assert math.isnan(none.spearman_lo) and none.kendall_ci == "none"


def test_asymptotic_tau_interval_agrees_with_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    g, s = tied_pair(1500, 5)
    options = AnalysisOptions(resamples=300, seed=1)
    boot = correlations(g, s, options)
    monkeypatch.setattr(analysis, "TAU_BOOTSTRAP_MAX_N", 1000)
    asym = correlations(g, s, options)
    assert (boot.kendall_ci, asym.kendall_ci) == ("bootstrap", "asymptotic")
    assert asym.kendall == boot.kendall
    width_boot = boot.kendall_hi - boot.kendall_lo
    width_asym = asym.kendall_hi - asym.kendall_lo
    assert width_asym == pytest.approx(width_boot, rel=0.3)


def test_top_x_and_common_ratio_by_brute_force() -> None:
    g, s = tied_pair(57, 6)
    xs = [5, 10, 25, 50, 100]
    order_g = np.argsort(-g, kind="stable")
    order_s = np.argsort(-s, kind="stable")
    rho = top_x_spearman(g, s, xs)
    ratio = common_ratio(g, s, xs)
    for i, x in enumerate(xs):
        k = int(57 * x // 100)
        top = order_g[:k]
        expected = spearmanr(g[top], s[top]).statistic if k >= 3 else math.nan
        assert rho[i] == pytest.approx(expected, nan_ok=True)
        shared = len(set(order_g[:k]) & set(order_s[:k]))
        assert ratio[i] == pytest.approx(shared / k)
    assert ratio[-1] == 1.0
    assert math.isnan(common_ratio(g[:5], s[:5], [10])[0])  # k = 0


def test_a_perfect_ranking_scores_one_everywhere() -> None:
    g = np.arange(100.0)
    s = g * 3 + 1
    assert np.allclose(top_x_spearman(g, s, [10, 50, 100]), 1.0)
    assert np.allclose(common_ratio(g, s, [1, 10, 50]), 1.0)
    assert np.allclose(common_ratio(g, -s, [10, 50]), 0.0)


def evaluation_rows() -> pd.DataFrame:
    """One FEAR configuration: every status, a duplicate, a run in progress, a NaN score."""
    rows = [
        # arch, status, score, duration, gt, start
        ("a", "ok", 0.9, 10.0, 94.0, 1),
        ("b", "ok", 0.8, 12.0, 93.0, 1),
        ("c", "ok", 0.5, 8.0, 90.0, 1),
        ("d", "ok", 0.6, 9.0, 91.0, 1),
        ("e", "threshold_not_reached", -0.6, 30.0, 60.0, 1),
        ("f", "threshold_not_reached", -0.7, 30.0, 50.0, 1),
        ("g", "degenerate", 0.1, 0.0, 10.0, 1),
        ("h", "failed", math.nan, math.nan, 80.0, 1),
        ("c", "ok", 0.4, 7.0, 90.0, 0),  # an older evaluation of c: replaced by the newer
        ("i", "running", math.nan, math.nan, 85.0, 2),
        ("j", "ok", math.nan, 5.0, 70.0, 1),
        ("k", "ok", 0.7, 5.0, math.nan, 1),
    ]
    frame = pd.DataFrame(
        rows, columns=["arch", "status", "score", "duration_s", "gt", "start_time"]
    )
    return frame.assign(
        dataset="cifar10",
        family="fear",
        measure="",
        config_key="fear|x",
        config_label="FEAR",
        config="{}",
        run_id=[f"r{i}" for i in range(len(rows))],
    )


def test_analyse_counts_exclusions_and_uses_status_ok_only() -> None:
    result = analyse(evaluation_rows(), AnalysisOptions(resamples=50))
    row = result.summary.iloc[0]
    assert row["n_evaluations"] == 11  # every row but the running one
    assert row["n_duplicate"] == 1
    assert (row["n_ok"], row["n_threshold_not_reached"]) == (6, 2)
    assert (row["n_degenerate"], row["n_failed"], row["n_running"]) == (1, 1, 1)
    assert (row["n_nan_score"], row["n_no_gt"]) == (1, 1)
    assert row["n_used"] == 4  # a, b, c (newer), d
    expected = spearmanr([94, 93, 90, 91], [0.9, 0.8, 0.5, 0.6]).statistic
    assert row["spearman"] == pytest.approx(expected)
    timed = [10, 12, 8, 9, 30, 30, 0, 5, 5]  # every finished, non-failed evaluation
    assert row["duration_mean_s"] == pytest.approx(np.mean(timed))
    assert row["duration_se_s"] == pytest.approx(np.std(timed, ddof=1) / 3)
    assert result.curves["x"].tolist() == list(AnalysisOptions().curve_x)


def test_include_not_reached_ranks_them_below_the_reached() -> None:
    result = analyse(evaluation_rows(), AnalysisOptions(resamples=0, include_not_reached=True))
    row = result.summary.iloc[0]
    assert row["n_used"] == 6
    expected = spearmanr([94, 93, 90, 91, 60, 50], [0.9, 0.8, 0.5, 0.6, -0.6, -0.7]).statistic
    assert row["spearman"] == pytest.approx(expected)


def test_configurations_are_analysed_separately_per_dataset() -> None:
    one = evaluation_rows()
    other = one.assign(dataset="cifar100", gt=one["gt"] / 2, score=-one["score"])
    result = analyse(pd.concat([one, other], ignore_index=True), AnalysisOptions(resamples=0))
    by_dataset = result.summary.set_index("dataset")["spearman"]
    assert by_dataset["cifar100"] == pytest.approx(-by_dataset["cifar10"])


def test_identity_params_prefer_resolved_values_and_skip_paths() -> None:
    params = {
        "threshold": "auto",
        "resolved.threshold": "0.6",
        "dataroot": "/data",
        "device": "cuda",
        "batch_size": "256",
        "measures": "synflow",
    }
    assert identity_params(params, "fear") == {
        "batch_size": "256",
        "measures": "synflow",
        "threshold": "0.6",
    }
    assert "measures" not in identity_params(params, "zerocost")


def test_labels_name_only_the_settings_that_differ() -> None:
    def config(family: str, measure: str = "", **params: str) -> dict[str, str]:
        text = json.dumps(
            {
                "dataset": "cifar10",
                "seed": "36",
                **params,
                **({"measure": measure} if measure else {}),
            },
            sort_keys=True,
        )
        return {
            "family": family,
            "measure": measure,
            "config": text,
            "config_key": f"{family}|{text}",
        }

    frame = pd.DataFrame(
        [
            config("shortreg", batch_size="256", epochs="10"),
            config("shortreg", batch_size="512", epochs="10"),
            config("fear", threshold="0.6"),
            config("zerocost", "synflow", batch_size="64"),
            config("zerocost", "snip", batch_size="64"),
        ]
    )
    labels = sorted(config_labels(frame).values())
    assert labels == ["FEAR", "shortreg batch=256", "shortreg batch=512", "snip", "synflow"]


def test_labels_stay_short_for_tuned_fear_configurations() -> None:
    """Optuna's thresholds and unfreeze lists must not turn figure labels into paragraphs."""

    def fear(threshold: str, unfreeze: str) -> dict[str, str]:
        text = json.dumps({"threshold": threshold, "unfreeze": unfreeze}, sort_keys=True)
        return {"family": "fear", "measure": "", "config": text, "config_key": f"fear|{text}"}

    frame = pd.DataFrame(
        [
            fear("0.2513992070240618", "classifier,lastact,cells.16,cells.15,cells.14"),
            fear("0.6", "classifier,lastact"),
            fear("0.6", "classifier,lastact,cells.3,cells.9"),
        ]
    )
    assert sorted(config_labels(frame).values()) == [
        "FEAR thr=0.251 unfreeze=last 3",
        "FEAR thr=0.6 unfreeze=classifier,lastact,cells.3,cells.9",
        "FEAR thr=0.6 unfreeze=head only",
    ]
