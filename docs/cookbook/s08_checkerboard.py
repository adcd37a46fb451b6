"""Where do checkerboard artifacts come from, and what fixes them? Paths from the input to each output
phase of a 3x3 stride-2 transposed conv, against a 4x4 one and resize-then-convolve."""
from pathlib import Path

import matplotlib
import numpy as np
import torch.nn as nn

import convlens
from convlens.blocks import ResizeConv2d

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend


def run(out_dir: Path) -> dict:
    found, fig, axes = {}, *plt.subplots(1, 3, figsize=(10, 3.6))
    cases = {"t3": ("3x3 transposed, stride 2", nn.ConvTranspose2d(1, 1, 3, stride=2)),
             "t4": ("4x4 transposed, stride 2, padding 1", nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1)),
             "resize": ("nearest x2, then 3x3 conv", ResizeConv2d(1, 1, scale_factor=2))}
    print("on 16x16                             output  paths per phase   max/min  stride")
    for ax, (key, (label, model)) in zip(axes, cases.items()):
        report = convlens.analyze(model, (1, 1, 16, 16))
        cb = report.checkerboard("")         # paths to interior units start .. start + period - 1 per axis
        out = report[""]
        print(f"{label:<37}{out.output_shape[-1]:>4}    {cb.grid.tolist()!s:<18}{cb.ratio:>5g}   {out.stride[0]}")
        if cb.fix:
            print(f"  fix: {cb.fix}")
        found.update({f"{key}_out": out.output_shape[-1], f"{key}_ratio": cb.ratio, f"{key}_row": cb.start[0],
                      f"{key}_col": cb.start[1], f"{key}_stride": out.stride[0]})
        found.update({f"{key}_grid{i}{j}": v for i, row in enumerate(cb.grid.tolist()) for j, v in enumerate(row)})
        tile = np.tile(cb.grid, (4, 4))      # the interior overlap map: the phase grid repeats
        ax.imshow(tile, cmap="viridis", vmin=0, vmax=9)
        for (r, c), v in np.ndenumerate(tile):
            ax.text(c, r, str(v), ha="center", va="center", color="w" if v < 6 else "k", fontsize=7)
        ax.set_title(f"{label}: max/min {cb.ratio:g}", fontsize=9)
        ax.axis("off")
    fig.savefig(out_dir / "s08_overlap.png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return found


if __name__ == "__main__":
    run(Path("."))
