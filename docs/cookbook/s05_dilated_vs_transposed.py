"""Dilated or transposed convolution: which one upsamples? Output sizes, receptive fields, and each one
animated."""
from pathlib import Path

import torch.nn as nn

import convlens
from convlens.render.animate import ConvSpec, animate


def run(out_dir: Path) -> dict:
    found = {}
    cases = {"dilated": ("3x3, dilation 2, padding 0", nn.Conv2d(1, 1, 3, dilation=2), 7),
             "dilated_padded": ("3x3, dilation 2, padding 2", nn.Conv2d(1, 1, 3, dilation=2, padding=2), 7),
             "transposed": ("3x3 transposed, stride 2", nn.ConvTranspose2d(1, 1, 3, stride=2), 3)}
    print(f"{'':<29}{'input':<7}{'output':<8}{'rf':<4}stride")
    for key, (label, model, n) in cases.items():
        out = convlens.analyze(model, (1, 1, n, n))[""]
        size, rf, stride = out.output_shape[-1], out.rf[0], out.stride[0]
        print(f"{label:<29}{f'{n}x{n}':<7}{f'{size}x{size}':<8}{rf:<4}{stride}")
        found.update({f"{key}_out": size, f"{key}_rf": rf, f"{key}_stride": stride})
    found["dilated_frames"] = len(animate(ConvSpec.make(7, 3, dilation=2), out_dir / "s05_dilated.gif"))
    found["transposed_frames"] = len(animate(ConvSpec.make(3, 3, stride=2, transposed=True),
                                             out_dir / "s05_transposed.gif"))
    return found


if __name__ == "__main__":
    run(Path("."))
