"""Why do exponentially dilated stacks look like Kronecker products? The one kernel a linear stack of 3x3
convs at dilations 1, 3, 9 equals, against 1, 2, 4."""
from pathlib import Path

import matplotlib
import torch
import torch.nn as nn

import convlens
from convlens.blocks import compose

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend


def run(out_dir: Path) -> dict:
    torch.manual_seed(0)
    found, fig, axes = {}, *plt.subplots(1, 2, figsize=(8, 4))
    print("dilations  weights  composed kernel  rf   pixels with a path  paths per pixel")
    for ax, (key, dilations) in zip(axes, [("d139", (1, 3, 9)), ("d124", (1, 2, 4))]):
        stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, bias=False) for d in dilations])
        kernel = compose(stack).weight[0, 0].detach()              # the one conv equal to the stack
        report = convlens.analyze(stack, (1, 1, 64, 64))
        cov = report.coverage("")                                  # paths from each pixel to the centre unit
        row = dict(weights=report.totals.params, side=kernel.shape[0], rf=report[""].rf[0], covered=cov.covered,
                   pixels=cov.pixels, min_paths=int(cov.counts.min()), max_paths=int(cov.counts.max()))
        print(f"{', '.join(map(str, dilations)):<11}{row['weights']:>7}  {row['side']:>7}x{row['side']:<8} "
              f"{row['rf']:>3}   {row['covered']:>6} of {row['pixels']:<8}  {row['min_paths']} to {row['max_paths']}")
        found.update({f"{key}_{k}": v for k, v in row.items()})
        top = kernel.abs().max().item()
        ax.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-top, vmax=top)
        ax.set_title(f"dilations {dilations}: one {row['side']}x{row['side']} kernel", fontsize=9)
        if key == "d139":
            k1, k3, k9 = (m.weight[0, 0].detach() for m in stack)
            found["d139_is_kron"] = torch.allclose(kernel, torch.kron(k9, torch.kron(k3, k1)), atol=1e-7)
    print(f"dilations 1, 3, 9: composed kernel == kron(k9, kron(k3, k1)): {found['d139_is_kron']}")
    fig.savefig(out_dir / "s07_kernels.png", dpi=80)
    plt.close(fig)
    return found


if __name__ == "__main__":
    run(Path("."))
