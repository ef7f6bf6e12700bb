"""How good is a cheap ranking: the quantities of DESIGN.md's analysis section.

For one method configuration over n archs with ground truth g and score s (higher = better):
Spearman ρ and Kendall τ-b with bootstrap confidence intervals, Spearman within the top x %
by g, the common ratio at x % (|top-k by g ∩ top-k by s| / k, k = ⌊n·x/100⌋), and the mean
duration per arch ± its standard error, plus how many archs were left out and why.

Everything is vectorised: a bootstrap resample is a row of counts w (how often each arch was
drawn), so all resamples of one configuration are a few matrix operations instead of a loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, rankdata

#: Statuses counted in the summary, in the order shown.
STATUSES = ("ok", "threshold_not_reached", "degenerate", "diverged", "failed")
#: Above this many archs, τ's interval is asymptotic: the exact bootstrap needs an n×n matrix.
TAU_BOOTSTRAP_MAX_N = 4000
#: Elements per bootstrap chunk (rows × archs), bounding memory for large n.
_CHUNK_ELEMENTS = 4_000_000
#: Fewest archs for a Spearman ρ worth reporting.
MIN_ARCHS = 3


@dataclass(frozen=True)
class AnalysisOptions:
    """Which top-x % to tabulate, the curve grid, the bootstrap, and the exclusion policy."""

    top_x: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0)
    curve_x: tuple[float, ...] = tuple(float(x) for x in range(5, 101, 5))
    resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    include_not_reached: bool = False

    def __post_init__(self) -> None:
        for x in (*self.top_x, *self.curve_x):
            if not 0 < x <= 100:
                raise ValueError(f"top-x percentages must be in (0, 100], got {x}")
        if self.resamples < 0:
            raise ValueError(f"resamples must be >= 0, got {self.resamples}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")

    @property
    def used_statuses(self) -> tuple[str, ...]:
        """Statuses whose scores enter the correlations."""
        return ("ok", "threshold_not_reached") if self.include_not_reached else ("ok",)


@dataclass
class Analysis:
    """Per-configuration summary, curves over x, and the evaluations behind them."""

    summary: pd.DataFrame
    curves: pd.DataFrame
    evaluations: pd.DataFrame
    options: AnalysisOptions = field(default_factory=AnalysisOptions)


def x_name(x: float) -> str:
    """``10`` for 10.0, ``12.5`` for 12.5: column suffixes and panel titles."""
    return f"{x:g}"


# ----------------------------------------------------------------------------- statistics


def spearman(g: np.ndarray, s: np.ndarray) -> float:
    """Spearman ρ (average ranks for ties); NaN when either side is constant or n < 3."""
    if len(g) < MIN_ARCHS:
        return math.nan
    return _pearson(rankdata(g), rankdata(s))


def kendall(g: np.ndarray, s: np.ndarray) -> float:
    """Kendall τ-b; NaN when either side is constant or n < 3."""
    if len(g) < MIN_ARCHS or np.ptp(g) == 0 or np.ptp(s) == 0:
        return math.nan
    return float(kendalltau(g, s).statistic)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denom if denom > 0 else math.nan


def order_desc(values: np.ndarray) -> np.ndarray:
    """Indices from best to worst; ties keep their input order (deterministic)."""
    return np.argsort(-values, kind="stable")


def top_x_spearman(g: np.ndarray, s: np.ndarray, xs: Sequence[float]) -> np.ndarray:
    """Spearman ρ within the top x % of archs by ground truth, for every x."""
    order = order_desc(g)
    n = len(g)
    out = np.full(len(xs), np.nan)
    for i, x in enumerate(xs):
        k = int(n * x // 100)
        if k >= MIN_ARCHS:
            keep = order[:k]
            out[i] = spearman(g[keep], s[keep])
    return out


def common_ratio(g: np.ndarray, s: np.ndarray, xs: Sequence[float]) -> np.ndarray:
    """|top-k by g ∩ top-k by s| / k with k = ⌊n·x/100⌋, for every x (NaN when k = 0).

    An arch is in both top-k sets exactly when the worse of its two positions is < k, so a
    histogram of that position answers every k at once.
    """
    n = len(g)
    pos_g = np.empty(n, dtype=np.int64)
    pos_s = np.empty(n, dtype=np.int64)
    pos_g[order_desc(g)] = np.arange(n)
    pos_s[order_desc(s)] = np.arange(n)
    both = np.cumsum(np.bincount(np.maximum(pos_g, pos_s), minlength=n))
    ks = np.array([int(n * x // 100) for x in xs], dtype=np.int64)
    out = np.full(len(xs), np.nan)
    ok = ks > 0
    out[ok] = both[ks[ok] - 1] / ks[ok]
    return out


def bootstrap_counts(n: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``rows`` bootstrap resamples of n items, each as counts per item (rows × n)."""
    drawn = rng.integers(0, n, size=(rows, n))
    offsets = (np.arange(rows) * n)[:, None]
    return np.bincount((drawn + offsets).ravel(), minlength=rows * n).reshape(rows, n)


def _group_weights(codes: np.ndarray, groups: int, weights: np.ndarray) -> np.ndarray:
    """Per-row total weight of each tie group (rows × groups)."""
    if groups == len(codes):  # no ties: one item per group
        out = np.empty_like(weights)
        out[:, codes] = weights
        return out
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) > 0])
    return np.add.reduceat(weights[:, order], starts, axis=1)


def _weighted_midranks(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks every item gets inside each weighted resample, and the tie-group weights."""
    _, codes = np.unique(values, return_inverse=True)
    groups = int(codes.max()) + 1
    group_w = _group_weights(codes, groups, weights.astype(np.float64))
    mid = np.cumsum(group_w, axis=1) - (group_w - 1.0) / 2.0
    return mid[:, codes], group_w


def _weighted_spearman(g: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    rank_g, _ = _weighted_midranks(g, w)
    rank_s, _ = _weighted_midranks(s, w)
    center = (g.size + 1) / 2.0  # the mean rank of every resample
    rank_g -= center
    rank_s -= center
    cov = np.einsum("ij,ij,ij->i", w, rank_g, rank_s)
    var_g = np.einsum("ij,ij,ij->i", w, rank_g, rank_g)
    var_s = np.einsum("ij,ij,ij->i", w, rank_s, rank_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / np.sqrt(var_g * var_s)


def _tie_pairs(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pairs of resample positions tied on ``values`` (drawing an arch twice ties too)."""
    _, group_w = _weighted_midranks(values, w)
    return ((group_w**2).sum(axis=1) - values.size) / 2.0


def _weighted_kendall(g: np.ndarray, s: np.ndarray, w: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """τ-b of each resample: concordant − discordant pairs = ½ wᵀ S w, S = sign·sign."""
    wf = w.astype(np.float32)
    net = 0.5 * np.einsum("ij,ij->i", wf @ sign, wf).astype(np.float64)
    n = g.size
    pairs = n * (n - 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return net / np.sqrt((pairs - _tie_pairs(g, w)) * (pairs - _tie_pairs(s, w)))


def _concordance_sign(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    return (np.sign(g[:, None] - g[None, :]) * np.sign(s[:, None] - s[None, :])).astype(np.float32)


def _kendall_asymptotic_se(g: np.ndarray, s: np.ndarray) -> float:
    """Hoeffding's U-statistic standard error of τ, in blocks (no n×n matrix)."""
    n = g.size
    per_item = np.empty(n)
    block = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n, block):
        stop = min(n, start + block)
        signs = np.sign(g[start:stop, None] - g[None, :]) * np.sign(
            s[start:stop, None] - s[None, :]
        )
        per_item[start:stop] = signs.sum(axis=1) / (n - 1)
    return math.sqrt(4.0 * per_item.var() / n)


@dataclass(frozen=True)
class Correlations:
    """ρ and τ with their interval bounds."""

    spearman: float
    spearman_lo: float
    spearman_hi: float
    kendall: float
    kendall_lo: float
    kendall_hi: float
    kendall_ci: str


def correlations(g: np.ndarray, s: np.ndarray, options: AnalysisOptions) -> Correlations:
    """Point estimates and percentile-bootstrap intervals of ρ and τ-b.

    The seed is the same for every configuration, so a configuration's interval does not
    depend on which others are in the report. Above `TAU_BOOTSTRAP_MAX_N` archs τ's interval
    is Hoeffding's asymptotic one (``kendall_ci = "asymptotic"``).
    """
    n = g.size
    rho, tau = spearman(g, s), kendall(g, s)
    nan = math.nan
    if n < MIN_ARCHS or options.resamples == 0 or math.isnan(rho):
        return Correlations(rho, nan, nan, tau, nan, nan, "none")
    alpha = (1.0 - options.confidence) / 2.0
    quantiles = [100 * alpha, 100 * (1 - alpha)]
    rng = np.random.default_rng(options.seed)
    exact_tau = n <= TAU_BOOTSTRAP_MAX_N
    sign = _concordance_sign(g, s) if exact_tau else None
    rows = max(1, _CHUNK_ELEMENTS // n)
    rho_boot, tau_boot = [], []
    for start in range(0, options.resamples, rows):
        w = bootstrap_counts(n, min(rows, options.resamples - start), rng)
        rho_boot.append(_weighted_spearman(g, s, w))
        if sign is not None:
            tau_boot.append(_weighted_kendall(g, s, w, sign))
    rho_lo, rho_hi = np.nanpercentile(np.concatenate(rho_boot), quantiles)
    if sign is not None:
        tau_lo, tau_hi = np.nanpercentile(np.concatenate(tau_boot), quantiles)
        how = "bootstrap"
    else:
        z = float(np.sqrt(2) * _erfinv(options.confidence))
        se = _kendall_asymptotic_se(g, s)
        tau_lo, tau_hi, how = tau - z * se, tau + z * se, "asymptotic"
    return Correlations(rho, float(rho_lo), float(rho_hi), tau, float(tau_lo), float(tau_hi), how)


def _erfinv(p: float) -> float:
    from scipy.special import erfinv

    return float(erfinv(p))


def mean_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN where undefined)."""
    n = values.size
    if n == 0:
        return math.nan, math.nan
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return float(values.mean()), se


# ----------------------------------------------------------------------------- per configuration


def completed_evaluations(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished evaluations, one per (configuration, arch): the latest one wins.

    The index is ``frame``'s, so callers can mark which of their rows were used.
    """
    done = frame[frame["status"] != "running"]
    done = done.sort_values("start_time", kind="stable")
    return done.drop_duplicates(["dataset", "config_key", "arch"], keep="last")


def analyse(frame: pd.DataFrame, options: AnalysisOptions | None = None) -> Analysis:
    """Every quantity of the analysis section, per (dataset, configuration).

    ``frame`` holds one row per evaluation (`fear_mlflow.run_table.runs_frame`, plus a
    ``config_label`` column). Correlations use archs whose status is in
    ``options.used_statuses`` and that have a finite score and ground truth; durations use
    every finished, non-failed evaluation (a FEAR arch that never reached its threshold still
    cost its training time).
    """
    options = options or AnalysisOptions()
    if "config_label" not in frame:
        frame = frame.assign(config_label=frame["config_key"])
    done = completed_evaluations(frame)
    usable = (
        done["status"].isin(options.used_statuses)
        & np.isfinite(done["score"])
        & np.isfinite(done["gt"])
    )
    done = done.assign(used=usable)
    running = frame[frame["status"] == "running"].groupby(["dataset", "config_key"]).size()
    evaluated = frame[frame["status"] != "running"].groupby(["dataset", "config_key"]).size()
    summaries, curves = [], []
    for (dataset, key), group in done.groupby(["dataset", "config_key"], sort=False):
        first = group.iloc[0]
        row: dict[str, object] = {
            "dataset": dataset,
            "family": first["family"],
            "measure": first["measure"],
            "config_label": first["config_label"],
            "n_evaluations": int(evaluated.get((dataset, key), 0)),
        }
        counts = group["status"].value_counts()
        for status in STATUSES:
            row[f"n_{status}"] = int(counts.get(status, 0))
        row["n_running"] = int(running.get((dataset, key), 0))
        row["n_duplicate"] = row["n_evaluations"] - len(group)
        in_policy = group["status"].isin(options.used_statuses)
        row["n_no_gt"] = int((in_policy & ~np.isfinite(group["gt"])).sum())
        row["n_nan_score"] = int((in_policy & ~np.isfinite(group["score"])).sum())
        used = group[group["used"]]
        g = used["gt"].to_numpy(dtype=np.float64)
        s = used["score"].to_numpy(dtype=np.float64)
        row["n_used"] = len(used)
        row.update(vars(correlations(g, s, options)))
        timed = group[(group["status"] != "failed") & np.isfinite(group["duration_s"])]
        row["n_timed"] = len(timed)
        row["duration_mean_s"], row["duration_se_s"] = mean_se(
            timed["duration_s"].to_numpy(dtype=np.float64)
        )
        top_rho = top_x_spearman(g, s, options.top_x)
        top_ratio = common_ratio(g, s, options.top_x)
        for x, rho, ratio in zip(options.top_x, top_rho, top_ratio):
            row[f"spearman_top{x_name(x)}"] = rho
            row[f"common_ratio_top{x_name(x)}"] = ratio
        row["config"] = first["config"]
        row["config_key"] = key
        summaries.append(row)
        curve = pd.DataFrame(
            {
                "dataset": dataset,
                "config_key": key,
                "config_label": first["config_label"],
                "family": first["family"],
                "x": np.asarray(options.curve_x, dtype=np.float64),
                "k": [int(len(g) * x // 100) for x in options.curve_x],
                "spearman": top_x_spearman(g, s, options.curve_x),
                "common_ratio": common_ratio(g, s, options.curve_x),
            }
        )
        curves.append(curve)
    if not summaries:  # nothing finished yet: empty tables that still have their key columns
        keys = ["dataset", "family", "measure", "config_label", "config_key"]
        empty = pd.DataFrame(columns=keys)
        return Analysis(empty, pd.DataFrame(columns=[*keys, "x"]), done, options)
    summary = pd.DataFrame(summaries)
    summary = summary.sort_values(["dataset", "family", "config_label"], kind="stable")
    summary = summary.reset_index(drop=True)
    curve_frame = pd.concat(curves, ignore_index=True)
    return Analysis(summary, curve_frame, done, options)
