"""The exam questions: an FC layer as a conv, a 1x1 conv's weights, max-pool gradients, and a pooling layer
that keeps the size."""
from pathlib import Path

import torch.nn as nn

import convlens
from convlens import arith


def run(out_dir: Path) -> dict:
    # an FC layer with 5 outputs over a 4x3x8x8 batch = a conv with 5 filters of 8x8 (the whole input)
    conv = nn.Conv2d(3, 5, 8)
    fc = convlens.analyze(conv, (4, 3, 8, 8))
    print(f"FC as conv: weight {tuple(conv.weight.shape)}, output {fc[''].output_shape}, rf {fc[''].rf}, "
          f"params {fc.totals.params}")
    # the same after flattening: 192 maps of 1x1, then a 1x1 conv
    flat = convlens.analyze(nn.Conv2d(192, 5, 1), (4, 192, 1, 1))
    print(f"flattened, 1x1 conv: output {flat[''].output_shape}, params {flat.totals.params}")
    # a 1x1 conv from 10 maps to 5
    one = nn.Conv2d(10, 5, 1)
    pointwise = convlens.analyze(one, (1, 10, 8, 8))
    print(f"1x1 conv 10 -> 5: weight {tuple(one.weight.shape)}, params {pointwise.totals.params}, "
          f"rf {pointwise[''].rf}")
    # max pool 2x2 / 2: one input per window gets the gradient
    pool = convlens.analyze(nn.MaxPool2d(2, 2), (1, 1, 8, 8))
    share = next(d.data["share"] for d in pool.diagnostics if d.kind == "sparse-gradient")
    print(f"max pool 2x2/2: gradient reaches at most {share:.0%} of its inputs")
    # a pooling layer that keeps the size: solve for the padding, with a window larger than one pixel
    pad = arith.padding_for_output(8, 8, 3, stride=1)[0]
    keep = convlens.analyze(nn.MaxPool2d(3, stride=1, padding=pad), (1, 1, 8, 8))
    print(f"max pool 3x3, stride 1, padding {pad}: output {keep[''].output_shape}, rf {keep[''].rf}")
    grown = arith.pool_output_size(8, 1, stride=1, padding=1)
    print(f"the seed's answer, kernel 1, stride 1, padding 1: output {grown}x{grown} "
          f"(and torch refuses padding > k/2)")
    return dict(fc_weight=tuple(conv.weight.shape), fc_out=fc[""].output_shape, fc_rf=fc[""].rf[0],
                fc_params=fc.totals.params, flat_out=flat[""].output_shape, flat_params=flat.totals.params,
                pointwise_weight=tuple(one.weight.shape), pointwise_params=pointwise.totals.params,
                pointwise_rf=pointwise[""].rf[0], pool_share=share, keep_pad=pad, keep_out=keep[""].output_shape,
                keep_rf=keep[""].rf[0], seed_pool_out=grown)


if __name__ == "__main__":
    run(Path("."))
