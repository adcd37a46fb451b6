"""How should I choose kernel sizes? Weights, receptive field and MACs of the usual trade-offs (no biases,
as in the seed's count)."""
from pathlib import Path

import torch.nn as nn

import convlens
from convlens.blocks import SpatiallySeparableConv2d


def candidates(c=64):
    def conv(maps_in, maps_out, k):
        return nn.Conv2d(maps_in, maps_out, k, padding=k // 2, bias=False)
    return {"four 5x5 filters (1 map in)": (1, conv(1, 4, 5)),
            "ten 3x3 filters (1 map in)": (1, conv(1, 10, 3)),
            "ten 3x3, then ten 3x3 on them": (1, nn.Sequential(conv(1, 10, 3), conv(10, 10, 3))),
            f"one 3x3, {c} maps": (c, conv(c, c, 3)),
            f"3x1 then 1x3, {c} maps": (c, SpatiallySeparableConv2d(c, c, 3, padding=1, bias=False)),
            f"one 7x7, {c} maps": (c, conv(c, c, 7)),
            f"three 3x3, {c} maps": (c, nn.Sequential(conv(c, c, 3), conv(c, c, 3), conv(c, c, 3)))}


def run(out_dir: Path) -> dict:
    found = {}
    print("on a 56x56 input                       weights   rf          MACs")
    for i, (label, (maps, model)) in enumerate(candidates().items()):
        report = convlens.analyze(model, (1, maps, 56, 56))
        rf, weights, macs = report[""].rf, report.totals.params, report.totals.macs
        print(f"{label:<36}{weights:>9,}  {rf[0]}x{rf[1]}  {macs:>12,}")
        found.update({f"{i}_weights": weights, f"{i}_rf": rf[0], f"{i}_rf_w": rf[1], f"{i}_macs": macs})
    return found


if __name__ == "__main__":
    run(Path("."))
