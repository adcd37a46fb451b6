"""How does a deep CNN localise well when its units see a huge window? Where one unit's window lies,
how far apart its neighbours are, and where its gradient mass (the ERF) actually sits."""
from pathlib import Path

import torch
import torch.nn as nn

import convlens
from convlens.render.figures import save_map_figure


def vgg_like(widths=(8, 16, 32, 64)):
    """The question's toy: 1x256x256 in, four blocks of two 3x3 convs + ReLU and a 2x2 max pool, 16x16 out."""
    layers, c = [], 1
    for w in widths:
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        c = w
    return nn.Sequential(*layers)


def run(out_dir: Path) -> dict:
    torch.manual_seed(0)
    model = vgg_like()
    out = convlens.analyze(model, (1, 1, 256, 256))[""]
    rf, stride, offset = out.rf[0], out.stride[0], out.offset[0]
    (lo, hi), _ = out.window(8, 8)
    (nlo, nhi), _ = out.window(9, 8)
    centre = offset + 8 * stride                                  # unit u is centred on offset + u * stride
    rows = [out.window(u, 8)[0] for u in range(16)]               # (lo, hi) of each unit along axis 0
    seeing = [sum(lo <= r <= hi for lo, hi in rows) for r in range(64, 192)]   # units that see input row r
    x = torch.randn(16, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    erf = convlens.erf(model, (1, 1, 256, 256), unit=(8, 8), inputs=x, samples=16)
    save_map_figure(erf.map, out_dir / "s02_erf.png", f"ERF of unit (8, 8) (16 samples), its {rf}x{rf} window outlined",
                    "mean |d unit / d input|", out.window(8, 8), mask_zero=False)
    print(f"output {out.output_shape[2]}x{out.output_shape[3]}, rf {rf} px, stride {stride} px, offset {offset} px")
    print(f"unit (8, 8): window rows {lo}..{hi}, centre {float(centre)}; unit (9, 8): rows {nlo}..{nhi}")
    print(f"every input row from 64 to 191 lies in the windows of {min(seeing)} to {max(seeing)} units per axis")
    print(f"ERF of unit (8, 8), 16 samples: std {erf.std[0]:.1f} px; half its mass within +-{erf.radius[0.5][0]} px, "
          f"99 % within +-{erf.radius[0.99][0]} px ({erf.ratio[0]:.0%} of the rf)")
    return dict(rf=rf, stride=stride, offset=offset, lo=lo, hi=hi, next_lo=nlo, next_hi=nhi, centre=centre,
                seeing_min=min(seeing), seeing_max=max(seeing), erf_std=erf.std[0], erf_r50=erf.radius[0.5][0],
                erf_r99=erf.radius[0.99][0], erf_ratio=erf.ratio[0])


if __name__ == "__main__":
    run(Path("."))
