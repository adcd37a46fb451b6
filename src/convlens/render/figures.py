"""Figures with matplotlib (the ``plot`` extra): imported only when a figure is asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coverage import CoverageResult
from ..erf import ERFResult
from ..errors import ConvlensError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ConvlensError("figures need matplotlib: pip install 'convlens[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_coverage_figure(cov: CoverageResult, path: str | Path) -> None:
    """Path counts over the input (png/svg/pdf by the file's suffix), the clipped window outlined."""
    title = f"coverage of {cov.layer or 'the output'} unit {cov.unit}"
    if cov.window is not None:
        title += f": {cov.covered} of {cov.pixels} pixels ({100 * cov.fraction:.1f} %)"
    save_map_figure(cov.map, path, title, "paths", cov.window, mask_zero=True)


def save_erf_figure(result: ERFResult, path: str | Path) -> None:
    """The ERF map over the input (png/svg/pdf), with the box holding 99 % of its mass per axis."""
    std = ", ".join(f"{s:.1f}" for s in result.std)
    title = (f"ERF of {result.layer or 'the output'} unit {result.unit} ({result.samples} samples): std {std} px, "
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
    plt = _pyplot()
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
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
