"""Figures with matplotlib (the ``plot`` extra): imported only when a figure is asked for."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..coverage import CoverageResult
from ..errors import ConvlensError
from .files import atomic_output

if TYPE_CHECKING:
    from ..erf import ERFResult


def pyplot():
    """matplotlib.pyplot on the Agg backend (matplotlib is optional: the ``plot`` extra)."""
    try:
        import matplotlib
    except ImportError:
        raise ConvlensError("figures need matplotlib: pip install 'convlens[plot]'") from None
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


def _tight(fig) -> None:
    """tight_layout, without its warning when long labels leave no room (the figure is drawn anyway)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()


def save_figure_file(fig, path: str | Path) -> None:
    """Save ``fig`` to ``path`` (format by suffix) atomically, then close it."""
    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lstrip(".").lower() or None)
    finally:
        pyplot().close(fig)


def save_coverage_figure(cov: CoverageResult, path: str | Path) -> None:
    """Path counts over the input (png/svg/pdf by the file's suffix), the clipped window outlined."""
    title = f"coverage of {plain(cov.layer) or 'the output'} unit {cov.unit}"
    if cov.window is not None:
        title += f": {cov.covered} of {cov.pixels} pixels ({100 * cov.fraction:.1f} %)"
    save_map_figure(cov.map, path, title, "paths", cov.window, mask_zero=True)


def save_erf_figure(result: ERFResult, path: str | Path) -> None:
    """The ERF map over the input (png/svg/pdf), with the box holding 99 % of its mass per axis."""
    std = ", ".join(f"{s:.1f}" for s in result.std)
    title = (f"ERF of {plain(result.layer) or 'the output'} unit {result.unit} ({result.samples} samples): std {std} px, "
             f"rf {'x'.join(map(str, result.rf))}")
    total = result.map.sum()
    box = None
    if total > 0:
        centres = [int(round(float((result.map.sum(axis=tuple(b for b in range(result.map.ndim) if b != a))
                                    * np.arange(n)).sum() / total))) for a, n in enumerate(result.map.shape)]
        box = tuple((c - r, c + r) for c, r in zip(centres, result.radius[0.99]))
    save_map_figure(result.map, path, title, "mean |d unit / d input|", box, mask_zero=False)


def save_map_figure(counts: np.ndarray, path: str | Path, title: str, label: str,
                    box: tuple[tuple[int, int], ...] | None, mask_zero: bool) -> None:
    """A map over the input grid: a bar chart for 1-D inputs, an image with ``box`` outlined for
    2-D ones, the slice through the box's centre along the first axis for 3-D ones."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.8 if counts.ndim > 1 else 3.2), dpi=120)
    if counts.ndim == 3:
        z = (box[0][0] + box[0][1]) // 2 if box is not None else counts.shape[0] // 2
        counts = counts[z]
        title += f", slice {z} of axis 0"
        box = box[1:] if box is not None else None
    if counts.ndim == 1:
        ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
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
                                       edgecolor="tab:red", linewidth=1.2))
        ax.set_xlabel("input axis 1")
        ax.set_ylabel("input axis 0")
    ax.set_title(title, fontsize=8)
    _tight(fig)
    save_figure_file(fig, path)


def rf_figure(report):
    """rf per axis against the leaf modules in call order (log scale), input sizes dashed; None when
    no row has a local rf."""
    plt = pyplot()
    names = [layer.name for layer in report]
    leaves = [layer for layer in report if layer.depth > 0 and not any(n.startswith(layer.name + ".") for n in names)]
    points = [(i, layer) for i, layer in enumerate(leaves) if any(isinstance(r, int) for r in layer.rf)]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.2), dpi=100)
    for a, n in enumerate(report.input_shape[2:]):
        xs = [i for i, layer in points if isinstance(layer.rf[a], int)]
        ys = [layer.rf[a] for i, layer in points if isinstance(layer.rf[a], int)]
        line, = ax.plot(xs, ys, marker=".", linewidth=1, label=f"rf, axis {a}")
        ax.axhline(n, color=line.get_color(), linestyle="--", linewidth=0.8, label=f"input size, axis {a}")
    ax.set_yscale("log")
    ax.set_xlabel("layer (leaf modules in call order)")
    ax.set_ylabel("receptive field (px)")
    ax.legend(fontsize=7, loc="upper left")
    _tight(fig)
    return fig


def cost_figure(report, top: int = 20):
    """MACs of the (up to ``top``) costliest top-level modules; None when nothing costs MACs."""
    plt = pyplot()
    rows = sorted([layer for layer in report if layer.depth == 1 and layer.macs > 0], key=lambda x: x.macs,
                  reverse=True)[:top]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(rows) + 1.0), dpi=100)
    ax.barh([plain(layer.name) for layer in rows][::-1], [layer.macs / 1e9 for layer in rows][::-1], color="tab:blue")
    ax.set_xlabel("GMACs")
    ax.set_title("cost by top-level module", fontsize=9)
    _tight(fig)
    return fig


def checkerboard_figure(cb):
    """Overlap counts over one period of output phases (the grid for 2-D rows, bars for 1-D)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.0), dpi=100)
    if cb.grid is not None and cb.grid.ndim == 2:
        image = ax.imshow(cb.grid, cmap="viridis", interpolation="nearest")
        for (r, c), v in np.ndenumerate(cb.grid):
            ax.text(c, r, str(v), ha="center", va="center", color="white", fontsize=8)
        fig.colorbar(image, ax=ax, label="paths")
        ax.set_xlabel("phase, axis 1")
        ax.set_ylabel("phase, axis 0")
    else:
        counts = cb.per_axis[0]
        ax.bar(range(len(counts)), counts, color="tab:blue")
        ax.set_xlabel("phase, axis 0")
        ax.set_ylabel("paths")
    ax.set_title(f"overlap per output phase of {plain(cb.layer) or 'the output'}: max/min {cb.ratio:g}", fontsize=9)
    _tight(fig)
    return fig


def save_figure(fig, path) -> None:
    if fig is None:
        raise ConvlensError("nothing to draw for this model (no local rows, or no MACs)")
    save_figure_file(fig, path)
