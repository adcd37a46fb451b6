"""SegNet: Badrinarayanan, Kendall & Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation" (TPAMI 2017), layer table of the released Caffe model
(alexgkendall/SegNet-Tutorial ``Models/segnet_train.prototxt``, CamVid: 11 classes, 3x360x480).

Encoder: VGG-16's 13 3x3 convs (pad 1, with bias) 64, 64 | 128, 128 | 256 x3 | 512 x3 | 512 x3, each
followed by batch norm and ReLU; after each of the 5 stages a 2x2 max pool stride 2 that keeps its
indices. Caffe's pooling rounds up, so ``ceil_mode=True``: on 360x480 the maps are 180x240, 90x120,
45x60, 23x30, 12x15.
Decoder, mirrored: max-unpooling with the stored indices to the encoder stage's size (Caffe's
``upsample_h/upsample_w``), then 3x3 convs (with bias) + BN + ReLU: 512 x3 | 512, 512, 256 |
256, 256, 128 | 128, 64 | 64, and the classifier, a 3x3 conv (with bias, no BN) to 11 classes
(Caffe's ``conv1_1_D``). Output 11x360x480.

Parameter count, from the table: encoder convs 14,714,688 (VGG-16's conv layers: the paper's
"14.7M") + encoder BN 8,448 (scale and shift per channel) = 14,723,136; decoder convs 14,718,795
(of which the classifier 6,347) + decoder BN 7,424 = 14,726,219; total 29,449,355 = 29.45M. The
paper says 29.5M, 0.2 % more, without saying how it counted (BN's running mean and variance counted
as parameters too would give 29,465,227).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .registry import ZooModel

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)


def _conv_bn_relu(c_in: int, c_out: int) -> list[tuple[str, nn.Module]]:
    """Named layers of one 3x3 conv (with bias, as the Caffe model; unlike ``blocks.conv_bn_relu``), BN, ReLU."""
    return [("conv", nn.Conv2d(c_in, c_out, 3, padding=1)), ("bn", nn.BatchNorm2d(c_out)),
            ("relu", nn.ReLU(inplace=True))]


def _stage(layers: list[list[tuple[str, nn.Module]]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict((f"{name}{i}", m) for i, block in enumerate(layers, start=1)
                                     for name, m in block))


class SegNet(nn.Module):
    def __init__(self, num_classes: int = 11, in_channels: int = 3, widths=VGG16_WIDTHS, convs=VGG16_CONVS):
        super().__init__()
        self.encoder = nn.ModuleList()
        self.pools = nn.ModuleList()
        c = in_channels
        for w, n in zip(widths, convs):
            blocks = []
            for _ in range(n):
                blocks.append(_conv_bn_relu(c, w))
                c = w
            self.encoder.append(_stage(blocks))
            self.pools.append(nn.MaxPool2d(2, 2, ceil_mode=True, return_indices=True))
        self.unpools = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in reversed(range(len(widths))):
            w, n = widths[i], convs[i]
            blocks = [_conv_bn_relu(w, w) for _ in range(n - 1)]
            if i > 0:
                blocks.append(_conv_bn_relu(w, widths[i - 1]))
            else:
                blocks.append([("classifier", nn.Conv2d(w, num_classes, 3, padding=1))])
            self.unpools.append(nn.MaxUnpool2d(2, 2))
            self.decoder.append(_stage(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes, indices = [], []
        for stage, pool in zip(self.encoder, self.pools):
            x = stage(x)
            sizes.append(x.shape[-2:])
            x, idx = pool(x)
            indices.append(idx)
        for stage, unpool in zip(self.decoder, self.unpools):
            x = unpool(x, indices.pop(), output_size=sizes.pop())
            x = stage(x)
        return x


def segnet(num_classes: int = 11, in_channels: int = 3, widths=VGG16_WIDTHS, convs=VGG16_CONVS) -> SegNet:
    """SegNet with a VGG-16 encoder (defaults: the CamVid model, 11 classes), random weights."""
    return SegNet(num_classes, in_channels, widths, convs)


ENTRIES = [
    ZooModel(
        name="segnet_camvid",
        build=segnet,
        input_shape=(3, 360, 480),
        params=29_449_355,
        source="Badrinarayanan, Kendall & Cipolla, TPAMI 2017 (29.5M; encoder 14.7M); exact count from "
               "the Caffe segnet_train.prototxt layer table (conv biases, BN scale+shift, 11 CamVid classes)",
        summary="SegNet: VGG-16 encoder with BN, decoder max-unpooling with the encoder's indices, 11 classes",
    ),
]
