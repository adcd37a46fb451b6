"""U-Net: Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation" (MICCAI 2015), the layer table of the paper's Fig. 1 and Sec. 2 (reference: the
authors' released Caffe model, u-net-release-2015-10).

Layer table (no padding anywhere):

* contracting path, 4 levels: two 3x3 convs (+ReLU) with 64, 128, 256, 512 maps, then 2x2 max pool
  stride 2; bottom: two 3x3 convs with 1024 maps; dropout at the end of the contracting path
  (identity in eval mode);
* expansive path, 4 levels: 2x2 up-convolution stride 2 (ConvTranspose2d) halving the maps, concat
  with the center-cropped encoder map of the same level (encoder map first, as in Fig. 1), two 3x3
  convs (+ReLU) with 512, 256, 128, 64 maps; the up-convolution has no ReLU (the paper: "two 3x3
  convolutions, each followed by a ReLU");
* a 1x1 conv to 2 classes.

On a 1x572x572 input the output is 2x388x388 (Fig. 1). Valid inputs are n = 16 m + 124 with m >= 4
(the bottom level needs at least 8 pixels before its two convs); the smallest is 188 (output 4x4).

Parameter count (1 input channel, 2 classes; every conv has a bias), from the table:
contracting 18,842,048 (3x3 convs: 640 + 36,928; 73,856 + 147,584; 295,168 + 590,080;
1,180,160 + 2,359,808; 4,719,616 + 9,438,208), expansive 12,188,480 (up-convs 2x2: 2,097,664, 524,544,
131,200, 32,832; 3x3 convs: 4,719,104 + 2,359,808; 1,179,904 + 590,080; 295,040 + 147,584;
73,792 + 36,928), final 1x1: 130; total 31,030,658. (The paper gives no count.)
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .registry import ZooModel


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(c_in, c_out, 3), relu1=nn.ReLU(inplace=True),
        conv2=nn.Conv2d(c_out, c_out, 3), relu2=nn.ReLU(inplace=True)))


def center_crop(x: torch.Tensor, size) -> torch.Tensor:
    """The middle ``size`` of x's last two dims (the paper's "copy and crop")."""
    h, w = size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[:, :, top:top + h, left:left + w]


class UNet(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 2, base: int = 64, depth: int = 4,
                 dropout: float = 0.5):
        super().__init__()
        widths = [base * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        self.pools = nn.ModuleList()
        c = in_channels
        for w in widths[:-1]:
            self.down.append(double_conv(c, w))
            self.pools.append(nn.MaxPool2d(2, 2))
            c = w
        self.bottom = double_conv(c, widths[-1])
        self.dropout = nn.Dropout(dropout)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w_in, w in zip(widths[:0:-1], widths[-2::-1]):
            self.up.append(nn.ConvTranspose2d(w_in, w, 2, stride=2))
            self.dec.append(double_conv(2 * w, w))
        self.final = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block, pool in zip(self.down, self.pools):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.dropout(self.bottom(x))
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = up(x)
            x = dec(torch.cat([center_crop(skip, x.shape[-2:]), x], dim=1))
        return self.final(x)


def unet(in_channels: int = 1, num_classes: int = 2, base: int = 64, depth: int = 4) -> UNet:
    """The paper's U-Net (base 64, depth 4: 64 ... 1024 maps), random weights."""
    return UNet(in_channels, num_classes, base, depth)


ENTRIES = [
    ZooModel(
        name="unet",
        build=unet,
        input_shape=(1, 572, 572),
        params=31_030_658,
        source="Ronneberger, Fischer & Brox, MICCAI 2015, Fig. 1 (unpadded 3x3 convs, 64..1024 maps, 2 classes); "
               "count from that layer table (the paper states none)",
        summary="U-Net: unpadded encoder-decoder with cropped skip copies, 1x572x572 -> 2x388x388",
    ),
]
