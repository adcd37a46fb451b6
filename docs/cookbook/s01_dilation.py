"""What does dilation buy? A plain 3x3 stack against a dilated one of the same depth, and the padding
that "dilation preserves resolution" needs."""
from pathlib import Path

import torch.nn as nn

import convlens
from convlens import arith


def stack(dilations, padded=True):
    return nn.Sequential(*[nn.Conv2d(64, 64, 3, dilation=d, padding=d if padded else 0) for d in dilations])


def run(out_dir: Path) -> dict:
    found = {}
    print("three 3x3 layers, 64 maps, on 64x64   rf   output    params         MACs")
    for key, label, model in [("plain", "dilations 1, 1, 1, padding d", stack((1, 1, 1))),
                              ("dilated", "dilations 1, 2, 4, padding d", stack((1, 2, 4))),
                              ("unpadded", "dilations 1, 2, 4, no padding", stack((1, 2, 4), padded=False))]:
        report = convlens.analyze(model, (1, 64, 64, 64))
        rf, out, params, macs = report[""].rf[0], report[""].output_shape[-1], report.totals.params, report.totals.macs
        print(f"{label:<36}{rf:>4}   {out:>2}x{out:<2}  {params:>9,}  {macs:>11,}")
        found.update({f"{key}_rf": rf, f"{key}_out": out, f"{key}_params": params, f"{key}_macs": macs})

    # one 3x3 layer at dilation 10 on a 1024x1024 input: the padding that keeps the size, and who reads it
    pad = arith.same_padding(3, dilation=10)[0]                  # d (k - 1) / 2 = 10 per side
    unpadded = arith.conv_output_size(1024, 3, dilation=10)      # without it the map shrinks to 1004
    side = 1024 + 2 * pad
    layer = convlens.analyze(nn.Conv2d(1, 1, 3, dilation=10, padding=pad), (1, 1, 1024, 1024))[""]
    corner, edge = layer.padding_share(0, 0), layer.padding_share(0, 512)
    edge_units = sum(layer.padding_share(u, 512) > 0 for u in range(1024))   # units along one axis
    touching = 1 - (1 - edge_units / 1024) ** 2
    print(f"\ndilation 10 on 1024x1024: padding {pad} per side (output {unpadded}x{unpadded} without it)")
    print(f"padded input {side}x{side}: {1 - 1024 ** 2 / side ** 2:.1%} of it is padding")
    print(f"corner unit (0, 0):  window {layer.window(0, 0, clipped=False)}, {corner:.1%} padding")
    print(f"edge unit (0, 512):  window {layer.window(0, 512, clipped=False)}, {edge:.1%} padding")
    print(f"units that read any padding: {edge_units} of 1024 per axis, {touching:.2%} of all units")
    found.update(d10_pad=pad, d10_unpadded_out=unpadded, d10_padded_side=side, d10_padding=1 - 1024 ** 2 / side ** 2,
                 d10_corner=corner, d10_edge=edge, d10_edge_units=edge_units, d10_touching=touching)
    return found


if __name__ == "__main__":
    run(Path("."))
