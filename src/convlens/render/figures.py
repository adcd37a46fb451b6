"""Figures with matplotlib (the ``plot`` extra): imported only when a figure is asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..coverage import CoverageResult
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
    """Path counts over the input (png/svg/pdf by the file's suffix): a bar chart for 1-D inputs, an
    image with the clipped window outlined for 2-D ones, the slice through the window's centre along
    the first axis for 3-D ones. Pixels without a path are white."""
    plt = _pyplot()
    counts = cov.map
    win = cov.window
    title = f"coverage of {cov.layer or 'the output'} unit {cov.unit}"
    if win is not None:
        title += f": {cov.covered} of {cov.pixels} pixels ({100 * cov.fraction:.1f} %)"
    fig, ax = plt.subplots(figsize=(6.4, 4.8 if counts.ndim > 1 else 3.2), dpi=120)
    if counts.ndim == 3:
        z = (win[0][0] + win[0][1]) // 2 if win is not None else counts.shape[0] // 2
        counts = counts[z]
        title += f", slice {z} of axis 0"
        win = win[1:] if win is not None else None
    if counts.ndim == 1:
        ax.bar(np.arange(len(counts)), counts, width=1.0, color="tab:blue")
        ax.set_xlabel("input position")
        ax.set_ylabel("paths")
    else:
        shown = np.ma.masked_equal(counts.astype(np.float64), 0)
        image = ax.imshow(shown, cmap="viridis", interpolation="nearest", origin="upper")
        fig.colorbar(image, ax=ax, label="paths")
        if win is not None:
            (r0, r1), (c0, c1) = win
            ax.add_patch(plt.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1, fill=False,
                                       edgecolor="tab:red", linewidth=1.2))
        ax.set_xlabel("input axis 1")
        ax.set_ylabel("input axis 0")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
