"""The report's matplotlib figures (the paper's figures 3, 6, 7 and 8, and diagnostics).

Each function takes the analysis tables and returns one `Figure`; nothing here reads runs
or writes files except `save_figure`. Figures are built without pyplot, so no global state
and no display backend are involved.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator

from fear_mlflow.analysis import x_name

#: Zero-cost seconds are attributed, not standalone: say so under the duration figures.
ZEROCOST_COST_NOTE = (
    "zero-cost durations: seconds charged to each measure; a pass shared by several measures "
    "(forward, backward) is charged to the first one computed, so a measure run alone "
    "(--measures NAME) can cost more"
)
#: Colour map per method family; zero-cost measures are green as in the paper.
FAMILY_CMAP = {"fear": "Blues", "shortreg": "Oranges", "zerocost": "Greens", "regular": "Purples"}
FAMILY_MARKER = {"fear": "o", "shortreg": "s", "zerocost": "^", "regular": "D"}
FAMILY_TITLE = {
    "fear": "FEAR",
    "shortreg": "shortreg",
    "zerocost": "zero-cost",
    "regular": "regular",
}
#: Shortest duration drawn on the log axis (a measure that took ~0 s is drawn here).
MIN_DURATION_S = 1e-4
STATUS_STYLE = {
    "ok": {"label": "used", "marker": "o"},
    "threshold_not_reached": {"label": "threshold not reached", "marker": "v"},
    "degenerate": {"label": "degenerate cell", "marker": "x"},
    "diverged": {"label": "diverged", "marker": "+"},
}


def family_colors(summary: pd.DataFrame) -> dict[str, tuple[float, ...]]:
    """config_key → colour: a shade of its family's colour map, dark to light by label."""
    colors: dict[str, tuple[float, ...]] = {}
    for family, group in summary.drop_duplicates("config_key").groupby("family"):
        cmap = colormaps[FAMILY_CMAP.get(str(family), "Greys")]
        keys = list(group.sort_values("config_label")["config_key"])
        shades = np.linspace(0.85, 0.45, len(keys)) if len(keys) > 1 else [0.75]
        for key, shade in zip(keys, shades):
            colors[key] = tuple(cmap(float(shade)))
    return colors


_CURVE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_CURVE_LINES = ("-", "--", "-.", ":")


def curve_styles(summary: pd.DataFrame) -> dict[str, dict[str, object]]:
    """config_key → line style: family colour shade, and marker/dash varied within a family."""
    colors = family_colors(summary)
    styles: dict[str, dict[str, object]] = {}
    for _, group in summary.drop_duplicates("config_key").groupby("family"):
        keys = list(group.sort_values("config_label")["config_key"])
        for i, key in enumerate(keys):
            styles[key] = {
                "color": colors[key],
                "marker": _CURVE_MARKERS[i % len(_CURVE_MARKERS)],
                "linestyle": _CURVE_LINES[(i // len(_CURVE_MARKERS) + i) % len(_CURVE_LINES)],
            }
    return styles


def _family_legend(ax: Axes, families: Sequence[str], **kwargs: object) -> None:
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=FAMILY_MARKER.get(f, "o"),
            color=colormaps[FAMILY_CMAP.get(f, "Greys")](0.7),
            label=FAMILY_TITLE.get(f, f),
        )
        for f in families
    ]
    ax.legend(handles=handles, **kwargs)


#: Candidate label offsets (points) and alignment, tried in order; the least crowded wins.
_LABEL_SPOTS = (
    (6, 4, "left"),
    (-6, 4, "right"),
    (6, -11, "left"),
    (-6, -11, "right"),
    (0, 9, "center"),
    (0, -17, "center"),
    (12, 14, "left"),
    (-12, 14, "right"),
    (12, -22, "left"),
    (-12, -22, "right"),
)
_FONT_PT = 7.0


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Area shared by two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def _label_points(ax: Axes, xs: np.ndarray, ys: np.ndarray, labels: Sequence[str]) -> None:
    """Name each point where its name covers the fewest other names and markers.

    Greedy placement in display space (text size estimated from the font size); a name
    that fits nowhere takes the spot with the least overlap. Call after `_freeze_layout`,
    so display positions are final.
    """
    fig = ax.get_figure()
    px = fig.dpi / 72.0
    points = ax.transData.transform(np.column_stack([xs, ys]))
    bounds = ax.bbox.extents
    marker = 5 * px
    taken = [
        (x - marker, y - marker, x + marker, y + marker)
        for x, y in points
        if math.isfinite(x) and math.isfinite(y)
    ]
    for (x, y), data_xy, text in zip(points, zip(xs, ys), labels):
        if not (math.isfinite(x) and math.isfinite(y)):
            continue
        width = 0.6 * _FONT_PT * len(text) * px
        height = 1.25 * _FONT_PT * px
        best, best_cost = None, math.inf
        for dx, dy, align in _LABEL_SPOTS:
            left = x + dx * px - {"left": 0.0, "right": width, "center": width / 2}[align]
            box = (left, y + dy * px, left + width, y + dy * px + height)
            cost = sum(_overlap(box, other) for other in taken)
            outside = (
                max(0.0, bounds[0] - box[0])
                + max(0.0, box[2] - bounds[2])
                + max(0.0, bounds[1] - box[1])
                + max(0.0, box[3] - bounds[3])
            )
            cost += outside * height * 4
            if cost < best_cost - 1e-9:
                best, best_cost = (dx, dy, align, box), cost
        assert best is not None
        dx, dy, align, box = best
        taken.append(box)
        label = ax.annotate(
            text,
            data_xy,
            xytext=(dx, dy),
            textcoords="offset points",
            fontsize=_FONT_PT,
            ha=align,
            va="bottom",
            color="0.2",
        )
        label.set_in_layout(False)


def _freeze_layout(fig: Figure) -> None:
    """Lay the figure out once, then keep it: saving PNG and SVG redoes no layout.

    Constrained layout is the costliest part of drawing; positions are figure-relative, so
    they hold at any dpi.
    """
    fig.draw_without_rendering()
    fig.set_layout_engine("none")


def duration_panels(
    summary: pd.DataFrame, dataset: str, metric: str, top_x: Sequence[float]
) -> Figure:
    """Mean duration per arch against ``metric`` (spearman | common_ratio), one panel per x.

    The all-archs Spearman panel carries the bootstrap interval as vertical bars; durations
    carry ± one standard error as horizontal bars (often smaller than the marker). The common
    ratio at 100 % is 1 by definition, so that panel is left out.
    """
    rows = summary[summary["dataset"] == dataset].reset_index(drop=True)
    if metric == "common_ratio":
        top_x = [x for x in top_x if x < 100] or list(top_x)
    colors = family_colors(rows)
    ylabel = {
        "spearman": "Spearman ρ of score with test accuracy",
        "common_ratio": "common ratio: |top-k by score ∩ top-k by test acc.| / k",
    }[metric]
    cols = len(top_x) if len(top_x) <= 3 else 2
    nrows = math.ceil(len(top_x) / cols)
    fig = Figure(figsize=(6.4 * cols, 4.6 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    duration = rows["duration_mean_s"].to_numpy(dtype=float).clip(min=MIN_DURATION_S)
    duration_se = np.nan_to_num(rows["duration_se_s"].to_numpy(dtype=float))
    n_archs = int(rows["n_used"].max()) if len(rows) else 0
    labelled = []
    for ax, x in zip(axes, top_x):
        ys = rows[f"{metric}_top{x_name(x)}"].to_numpy(dtype=float)
        yerr = None
        if metric == "spearman" and x == 100:
            lo = (ys - rows["spearman_lo"].to_numpy(dtype=float)).clip(min=0)
            hi = (rows["spearman_hi"].to_numpy(dtype=float) - ys).clip(min=0)
            yerr = np.nan_to_num(np.vstack([lo, hi]))
        for i, row in rows.iterrows():
            ax.errorbar(
                duration[i],
                ys[i],
                xerr=duration_se[i],
                yerr=None if yerr is None else yerr[:, [i]],
                fmt=FAMILY_MARKER.get(row["family"], "o"),
                color=colors[row["config_key"]],
                markeredgecolor="0.25",
                markersize=7,
                ecolor="0.55",
                elinewidth=0.8,
                capsize=2,
            )
        ax.set_xscale("log")
        ax.set_xlabel("mean duration per architecture (s, log scale)")
        ax.set_ylabel(ylabel)
        scope = "all archs" if x == 100 else f"top {x_name(x)} % of archs by test accuracy"
        extra = " (bars: 95 % bootstrap CI)" if yerr is not None else ""
        missing = int(np.isnan(ys).sum())
        if missing:
            extra += f"; {missing} configuration(s) with too few archs not shown"
        ax.set_title(f"{scope}{extra}", fontsize=10)
        if missing == len(ys):  # an empty frame with made-up axes would only puzzle readers
            ax.text(0.5, 0.5, "too few archs in this top x % for any configuration\n"
                    "(ρ needs at least 3)", transform=ax.transAxes, ha="center", va="center",
                    color="0.4")  # fmt: skip
            ax.set_yticks([])
        if metric == "common_ratio":
            ax.set_ylim(-0.04, 1.08)
        ax.grid(True, which="major", alpha=0.3)
        ax.margins(x=0.15, y=0.08)
        labelled.append((ax, ys))
    for ax in axes[len(top_x) :]:
        ax.set_visible(False)
    _family_legend(axes[0], sorted(rows["family"].unique()), loc="best", fontsize=8)
    if "zerocost" in set(rows["family"]):
        fig.supxlabel(ZEROCOST_COST_NOTE, fontsize=8, color="0.35")
    verb = "Spearman ρ" if metric == "spearman" else "common ratio"
    fig.suptitle(
        f"{dataset}: {verb} against cost per configuration "
        f"({len(rows)} configurations, up to {n_archs} archs each)"
    )
    _freeze_layout(fig)
    for ax, ys in labelled:
        _label_points(ax, duration, ys, list(rows["config_label"]))
    return fig


def curves_figure(curves: pd.DataFrame, summary: pd.DataFrame, dataset: str) -> Figure:
    """Spearman ρ within the top x % and the common ratio at x %, as curves over x."""
    configs = summary[summary["dataset"] == dataset]
    rows = curves[curves["dataset"] == dataset]
    styles = curve_styles(configs)
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    by_key = dict(tuple(rows.groupby("config_key", sort=False)))
    for key, label in zip(configs["config_key"], configs["config_label"]):
        group = by_key[key]
        style = {**styles[key], "markersize": 4, "linewidth": 1.3, "label": label}
        left.plot(group["x"], group["spearman"], **style)
        right.plot(group["x"], group["common_ratio"], **style)
    left.set_ylabel("Spearman ρ within the top x % of archs")
    right.set_ylabel("common ratio at x % (|top-k by truth ∩ top-k by score| / k)")
    right.set_ylim(-0.03, 1.03)
    for ax in (left, right):
        ax.set_xlabel("x: top x % of archs by test accuracy")
        ax.set_xlim(0, 101)
        ax.grid(True, alpha=0.3)
    handles, labels = right.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title="configuration")
    fig.suptitle(f"{dataset}: ranking quality over the top x % of architectures")
    _freeze_layout(fig)
    return fig


def _score_label(family: str, measure: str) -> str:
    if family == "zerocost":
        return f"{measure} (zero-cost value)"
    if family == "regular":
        return "test top-1 (fraction)"
    return "score: train top-1 (fraction)"


#: Spread (largest |value| over the median |value|) above which an axis goes logarithmic.
HEAVY_TAIL = 100.0


def _value_scale(ax: Axes, values: np.ndarray) -> None:
    """Log (or, with zeros or negatives, symlog) y axis for heavy-tailed zero-cost values.

    Ranks are what the correlations use; a linear axis would squash all but a few outliers.
    """
    magnitude = np.abs(values[np.isfinite(values)])
    nonzero = magnitude[magnitude > 0]
    if nonzero.size < 2 or magnitude.max() <= HEAVY_TAIL * np.median(nonzero):
        return
    if (values > 0).all():
        ax.set_yscale("log")
        return
    linthresh = float(np.quantile(nonzero, 0.1))
    ax.set_yscale("symlog", linthresh=linthresh)
    finite = values[np.isfinite(values)]
    ax.yaxis.set_major_locator(
        FixedLocator(_symlog_ticks(float(finite.min()), float(finite.max()), linthresh))
    )
    ax.yaxis.set_minor_locator(NullLocator())


def _symlog_ticks(lo: float, hi: float, linthresh: float, most: int = 8) -> list[float]:
    """0 and whole decades beyond ``linthresh`` on each side, thinned to about ``most``."""
    first = math.ceil(math.log10(linthresh))
    up = [10.0**e for e in range(first, math.floor(math.log10(hi)) + 1)] if hi > 0 else []
    down = [-(10.0**e) for e in range(first, math.floor(math.log10(-lo)) + 1)] if lo < 0 else []
    step = max(1, math.ceil((len(up) + len(down)) / most))
    return sorted([*down[::-1][::step], 0.0, *up[::-1][::step]])


def scatter_grid(evaluations: pd.DataFrame, summary: pd.DataFrame, dataset: str) -> Figure:
    """Score against ground truth, one panel per configuration, excluded archs marked."""
    configs = summary[summary["dataset"] == dataset].reset_index(drop=True)
    rows = evaluations[evaluations["dataset"] == dataset]
    rows = rows[np.isfinite(rows["gt"]) & np.isfinite(rows["score"])]
    colors = family_colors(configs)
    cols = min(4, max(1, len(configs)))
    nrows = max(1, math.ceil(len(configs) / cols))
    fig = Figure(figsize=(3.9 * cols, 3.3 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    by_key = dict(tuple(rows.groupby("config_key", sort=False)))
    for ax, (_, config) in zip(axes, configs.iterrows()):
        points = by_key.get(config["config_key"], rows.iloc[0:0])
        for status, style in STATUS_STYLE.items():
            part = points[points["status"] == status]
            if status == "ok":
                part = part[part["used"]]
            if part.empty:
                continue
            used = status == "ok"
            ax.scatter(
                part["gt"],
                part["score"],
                s=9 if used else 16,
                marker=style["marker"],
                color=colors[config["config_key"]] if used else "0.45",
                edgecolors="0.3" if used else None,
                linewidths=0.3,
                alpha=0.85,
                rasterized=True,
                label=style["label"],
            )
        _value_scale(ax, points["score"].to_numpy(dtype=float))
        rho = config["spearman"]
        ax.set_title(
            f"{config['config_label']}\nρ = {rho:.3f}, n = {config['n_used']}"
            if math.isfinite(rho)
            else f"{config['config_label']}\nρ undefined, n = {config['n_used']}",
            fontsize=9,
        )
        ax.set_xlabel("test accuracy (%)", fontsize=8)
        ax.set_ylabel(_score_label(config["family"], config["measure"]), fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if len(ax.get_legend_handles_labels()[0]) > 1:
            ax.legend(fontsize=6, loc="best")
    for ax in axes[len(configs) :]:
        ax.set_visible(False)
    fig.suptitle(f"{dataset}: score against ground truth, per configuration")
    _freeze_layout(fig)
    return fig


def safe_name(text: str) -> str:
    """A file-name-safe form of a dataset or label (``imagefolder:/x`` → ``imagefolder_x``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unnamed"


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.svg``; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    return paths
