"""Figures with matplotlib (a dependency): imported only when a figure is asked for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..coverage import CoverageResult
from ..errors import ConvlensError
from .files import atomic_output

if TYPE_CHECKING:
    from ..effective_rf import ERFResult


def pyplot():
    """matplotlib.pyplot on the Agg backend (imported here, not with convlens: the CLI's small commands
    start without it)."""
    try:
        import matplotlib
    except ImportError:
        raise ConvlensError("matplotlib, a dependency of convlens, is missing: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plain(text: str, limit: int = 60) -> str:
    """A name drawn as it is: matplotlib reads text between two ``$`` as math, so they are escaped;
    names longer than ``limit`` characters are cut with an ellipsis."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return text.replace("$", r"\$")


def save_figure_file(fig, path: str | Path) -> None:
    """Save ``fig`` to ``path`` (format by suffix) atomically, then close it."""
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or None)
    finally:
        pyplot().close(fig)


def save_coverage_figure(cov: CoverageResult, path: str | Path) -> None:
    """:func:`coverage_figure`, saved (png/svg/pdf by the file's suffix)."""
    save_figure_file(coverage_figure(cov), path)


def coverage_figure(cov: CoverageResult):
    """Path counts over the input, the clipped window outlined and labelled."""
    title = f"coverage of {plain(cov.layer) or 'the output'} unit {cov.unit}"
    if cov.window is not None:
        title += f": {cov.covered} of {cov.pixels} pixels ({100 * cov.fraction:.1f} %)"
    return map_figure(cov.map, title, "paths", cov.window, mask_zero=True, box_label="the unit's clipped window")


def save_erf_figure(result: ERFResult, path: str | Path) -> None:
    """:func:`erf_figure`, saved (png/svg/pdf by the file's suffix)."""
    save_figure_file(erf_figure(result), path)


def erf_figure(result: ERFResult):
    """The ERF map over the input, with the box holding 99 % of its mass per axis, labelled."""
    std = ", ".join(f"{s:.1f}" for s in result.std)
    title = (f"ERF of {plain(result.layer) or 'the output'} unit {result.unit} ({result.samples} samples): std {std} px, "
             f"rf {'x'.join(map(str, result.rf))}")
    total = result.map.sum()
    box = None
    if total > 0:
        centres = [int(round(float((result.map.sum(axis=tuple(b for b in range(result.map.ndim) if b != a))
                                    * np.arange(n)).sum() / total))) for a, n in enumerate(result.map.shape)]
        box = tuple((c - r, c + r) for c, r in zip(centres, result.radius[0.99]))
    return map_figure(result.map, title, "mean |d unit / d input|", box, mask_zero=False,
                      box_label="99 % of the ERF's mass (centre ± radius per axis), not the rf window")


def save_map_figure(counts: np.ndarray, path: str | Path, title: str, label: str,
                    box: tuple[tuple[int, int], ...] | None, mask_zero: bool, box_label: str = "") -> None:
    """:func:`map_figure`, saved (png/svg/pdf by the file's suffix)."""
    save_figure_file(map_figure(counts, title, label, box, mask_zero, box_label), path)


def map_figure(counts: np.ndarray, title: str, label: str, box: tuple[tuple[int, int], ...] | None,
               mask_zero: bool, box_label: str = ""):
    """A map over the input grid: a bar chart for 1-D inputs, an image with ``box`` outlined for
    2-D ones, the slice through the box's centre along the first axis for 3-D ones; the box is
    labelled ``box_label`` in a legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8 if counts.ndim > 1 else 3.2), dpi=120, layout="constrained")
    if counts.ndim == 3:
        z = (box[0][0] + box[0][1]) // 2 if box is not None else counts.shape[0] // 2
        counts = counts[z]
        title += f", slice {z} of axis 0"
        box = box[1:] if box is not None else None
    if counts.ndim == 1:
        ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
        if box is not None:
            ax.axvspan(box[0][0] - 0.5, box[0][1] + 0.5, fill=False, edgecolor="tab:red", linewidth=1.2,
                       label=box_label or None)
        ax.set_xlabel("input position")
        ax.set_ylabel(label)
    else:
        shown = counts.astype(np.float64)
        shown = np.ma.masked_equal(shown, 0) if mask_zero else shown
        image = ax.imshow(shown, cmap="viridis", interpolation="nearest", origin="upper")
        fig.colorbar(image, ax=ax, label=label)
        if box is not None:
            (r0, r1), (c0, c1) = box
            ax.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                                       edgecolor="tab:red", linewidth=1.2, label=box_label or None))
        ax.set_xlabel("input axis 1")
        ax.set_ylabel("input axis 0")
    if box is not None and box_label:
        fig.legend(loc="outside lower center", fontsize=7, frameon=False)
    ax.set_title(title, fontsize=8, wrap=True)
    return fig


MAX_STAGE_LABELS = 12
"""Stage names the rf plot writes under its x axis at most."""


def rf_figure(report):
    """rf per axis against the leaf modules in call order (log scale), input sizes as thin lines,
    the x axis labelled with the stages the leaves belong to; axes with the same rf at every leaf are
    one line (else each axis has its own style, so none hides another). None when no row has a
    local rf."""
    plt = pyplot()
    names = [layer.name for layer in report]
    leaves = [layer for layer in report if layer.depth > 0 and not any(n.startswith(layer.name + ".") for n in names)]
    points = [(i, layer) for i, layer in enumerate(leaves) if any(isinstance(r, int) for r in layer.rf)]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.4), dpi=100, layout="constrained")
    k = len(report.input_shape) - 2
    styles = [("-", "o"), ("--", "x"), (":", "^")]
    series: dict[tuple, list[int]] = {}  # axes whose rf is the same at every leaf are one line
    for a in range(k):
        series.setdefault(tuple(layer.rf[a] for _, layer in points), []).append(a)
    for style, axes in zip(styles, series.values()):
        a = axes[0]
        xs = [i for i, layer in points if isinstance(layer.rf[a], int)]
        ys = [layer.rf[a] for i, layer in points if isinstance(layer.rf[a], int)]
        line, = ax.plot(xs, ys, linestyle=style[0], marker=style[1], markersize=3, linewidth=1,
                        label=f"rf, {_axes_words(axes, k)}")
        sizes: dict[int, list[int]] = {}
        for b in axes:
            sizes.setdefault(report.input_shape[2 + b], []).append(b)
        for n, same_size in sizes.items():
            ax.axhline(n, color=line.get_color(), linestyle=style[0], linewidth=0.6, alpha=0.6,
                       label=f"input size, {_axes_words(same_size, k)}")
    ticks = _stage_ticks(leaves)
    ax.set_xticks([i for i, _ in ticks], [plain(name, 24) for _, name in ticks], rotation=40, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(leaves) - 0.5)
    ax.set_yscale("log")
    ax.set_xlabel("leaf modules in call order, by stage (where each stage starts)")
    ax.set_ylabel("receptive field (px)")
    ax.set_title("receptive field against depth", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def _axes_words(axes: list[int], k: int) -> str:
    """'axis 0', 'axes 1 and 2', 'every axis'."""
    if len(axes) == k > 1:
        return "every axis"
    if len(axes) == 1:
        return f"axis {axes[0]}"
    return f"axes {', '.join(map(str, axes[:-1]))} and {axes[-1]}"


def _stage_ticks(leaves) -> list[tuple[int, str]]:
    """(index of the first leaf, name) of each stage: the shallowest depth at which the leaves fall
    into at least three modules (a model with one ``features`` child is read one level down), at most
    :data:`MAX_STAGE_LABELS` of them (evenly picked)."""
    deepest = max((layer.depth for layer in leaves), default=1)
    ticks: list[tuple[int, str]] = []
    for depth in range(1, deepest + 1):
        ticks = []
        for i, layer in enumerate(leaves):
            stage = ".".join(layer.name.split(".")[:depth])
            if not ticks or ticks[-1][1] != stage:
                ticks.append((i, stage))
        if len(ticks) >= 3:
            break
    # labels closer than a share of the axis would overlap: of such neighbours the longer stage stays
    gap = len(leaves) / (2 * MAX_STAGE_LABELS)
    ends = [i for i, _ in ticks[1:]] + [len(leaves)]
    kept: list[tuple[int, str, int]] = []
    for (i, name), end in zip(ticks, ends):
        if kept and i - kept[-1][0] < gap:
            if end - i > kept[-1][2]:
                kept[-1] = (i, name, end - i)
            continue
        kept.append((i, name, end - i))
    return [(i, name) for i, name, _ in kept]


def cost_figure(report, top: int = 20):
    """MACs of the (up to ``top``) costliest top-level modules; None when nothing costs MACs."""
    plt = pyplot()
    rows = sorted([layer for layer in report if layer.depth == 1 and layer.macs > 0], key=lambda x: x.macs,
                  reverse=True)[:top]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(rows) + 1.2), dpi=100, layout="constrained")
    ax.barh([plain(layer.name) for layer in rows][::-1], [layer.macs / 1e9 for layer in rows][::-1], color="tab:blue")
    ax.set_xlabel("GMACs")
    ax.set_title("cost by top-level module", fontsize=9)
    return fig


def checkerboard_figure(cb):
    """Overlap counts over one period of output phases (the grid for 2-D rows, bars for 1-D)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 4.4), dpi=100, layout="constrained")
    if cb.grid is not None and cb.grid.ndim == 2:
        image = ax.imshow(cb.grid, cmap="viridis", interpolation="nearest")
        for (r, c), v in np.ndenumerate(cb.grid):
            ax.text(c, r, str(v), ha="center", va="center", color="white", fontsize=8)
        fig.colorbar(image, ax=ax, label="paths")
        ax.set_xticks(range(cb.grid.shape[1]))
        ax.set_yticks(range(cb.grid.shape[0]))
        ax.set_xlabel("phase, axis 1")
        ax.set_ylabel("phase, axis 0")
    else:
        counts = cb.per_axis[0]
        ax.bar(range(len(counts)), counts, color="tab:blue")
        ax.set_xlabel("phase, axis 0")
        ax.set_ylabel("paths")
    ax.set_title(f"overlap per output phase of {plain(cb.layer) or 'the output'}: max/min {cb.ratio:g}", fontsize=9,
                 wrap=True)
    return fig


def save_figure(fig, path) -> None:
    if fig is None:
        raise ConvlensError("nothing to draw for this model (no local rows, or no MACs)")
    save_figure_file(fig, path)
