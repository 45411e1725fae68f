"""The report's PNG plots, drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coulisse.interfaces.jobs.formats import require
from coulisse.interfaces.jobs.metrics import Metrics

COLORS = ["#d1495b", "#2e86ab", "#edae49", "#66a182", "#8d6a9f", "#00798c", "#f28f3b", "#4b3f72"]
LINESTYLES = ["solid", "dashed", "dotted", "dashdot"]
LEGEND_INSIDE = 8  # labels whose legend fits in the plot's corner; more go beside it, in columns


def label_styles(plt, n: int) -> list[tuple[str | tuple, str]]:
    """(colour, line style) of each of `n` labels, no two alike: the palette for up to 8, else a qualitative
    map (tab20) or an even sampling of a continuous one (turbo), the line style cycling too, so that
    neighbouring hues still differ in their outline."""
    if n <= len(COLORS):
        return [(c, "solid") for c in COLORS[:n]]
    cmap = plt.get_cmap("tab20" if n <= 20 else "turbo")
    colours = [cmap(k) if n <= 20 else cmap(k / (n - 1)) for k in range(n)]
    return [(tuple(c), LINESTYLES[k % len(LINESTYLES)]) for k, c in enumerate(colours)]


def _pyplot():
    matplotlib = require("matplotlib", "coulisse evaluate's plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_plot(metrics: Metrics, path: Path) -> None:
    """Counts with the share of each true class (row), the diagonal reading as recall."""
    plt = _pyplot()
    cm = metrics.confusion
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(metrics.labels)
    size = 2.2 + 1.1 * n
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for t in range(n):
        for p in range(n):
            color = "white" if share[t, p] > 0.6 else "black"
            ax.text(p, t, f"{cm[t, p]:,}\n{share[t, p]:.1%}", ha="center", va="center", color=color,
                    fontsize=11)
    ax.set_xticks(range(n), metrics.labels, rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center")
    ax.set_yticks(range(n), metrics.labels)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix (n = {metrics.total:,}, accuracy {metrics.accuracy:.1%})")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reliability_plot(metrics: Metrics, path: Path) -> None:
    """Accuracy per top-1 score bin against the diagonal of perfect calibration, with bin counts."""
    plt = _pyplot()
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(6.4, 6.4), sharex=True,
                                     gridspec_kw={"height_ratios": [3, 1]})
    full = [b for b in metrics.bins if b.count]
    width = metrics.bins[0].high - metrics.bins[0].low
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
    ax.bar([b.low for b in full], [b.accuracy for b in full], width=width, align="edge", color=COLORS[1],
           edgecolor="white", alpha=0.85, label="accuracy in the bin")
    ax.plot([b.confidence for b in full], [b.accuracy for b in full], "o", color=COLORS[0],
            label="(mean score, accuracy)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability of the top-1 score (ECE {metrics.ece:.3f})")
    ax.legend(loc="upper left")
    counts.bar([b.low for b in metrics.bins], [b.count for b in metrics.bins], width=width, align="edge",
               color="gray", edgecolor="white")
    counts.set_xlabel("top-1 score")
    counts.set_ylabel("rows")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def score_histogram(metrics: Metrics, y_true: np.ndarray, probs: np.ndarray, path: Path) -> None:
    """Two labels: the score of the second label, by true class. More: the score of the true class."""
    plt = _pyplot()
    fig = histogram_figure(plt, metrics, y_true, probs)
    fig.savefig(path, dpi=120, bbox_inches="tight")  # the legend beside the plot included
    plt.close(fig)


def histogram_figure(plt, metrics: Metrics, y_true: np.ndarray, probs: np.ndarray):
    binary = len(metrics.labels) == 2
    n = len(metrics.labels)
    outside = n > LEGEND_INSIDE
    fig, ax = plt.subplots(figsize=(7, 4.2))
    edges = np.linspace(0, 1, 21)
    for k, (label, (color, style)) in enumerate(zip(metrics.labels, label_styles(plt, n), strict=True)):
        rows = y_true == k
        if not rows.any():
            continue
        values = probs[rows, 1] if binary else probs[rows, k]
        ax.hist(values, bins=edges, histtype="stepfilled", alpha=0.3, color=color)
        ax.hist(values, bins=edges, histtype="step", linewidth=2, color=color, linestyle=style,
                label=f"true {label} ({int(rows.sum()):,})")
    if binary:
        ax.axvline(0.5, color="gray", linestyle="--", linewidth=1, label="decision threshold")
    what = f"score of {metrics.labels[1]}" if binary else "score of the true label"
    ax.set_xlabel(what)
    ax.set_ylabel("rows")
    ax.set_xlim(0, 1)
    ax.set_title(f"Distribution of the {what}, by true label")
    if outside:  # beside the plot, never over its bars; a column per 20 entries
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize="small",
                  ncols=1 + (n - 1) // 20)
    else:
        ax.legend()
    fig.tight_layout()
    return fig
