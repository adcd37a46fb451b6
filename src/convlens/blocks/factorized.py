"""Cheaper convolutions and upsampling: depthwise-separable, spatially separable, grouped with a
channel shuffle, and resize-then-convolve; plus the ASPP head.

Each block is an ``nn.Sequential`` (or a small module) whose children are plain torch layers, so
``convlens.analyze`` reports every part on its own row.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class DepthwiseSeparableConv2d(nn.Sequential):
    """``depthwise`` (k x k, one filter group per input map, ``multiplier`` maps each) then
    ``pointwise`` (1x1): ``in * multiplier * (k^2 + out)`` weights against ``in * out * k^2``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3, stride=1,
                 padding: int | str | tuple[int, int] = 0, dilation=1, *, multiplier: int = 1,
                 bias: bool = True) -> None:
        mid = in_channels * multiplier
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, mid, kernel_size, stride, padding, dilation, groups=in_channels,
                                bias=bias),
            pointwise=nn.Conv2d(mid, out_channels, 1, bias=bias)))


class SpatiallySeparableConv2d(nn.Sequential):
    """``vertical`` (k x 1) then ``horizontal`` (1 x k): the receptive field, stride and output size of
    one k x k convolution with ``2 k`` weights per map pair (mid = out maps by default) instead of
    ``k^2``. ``padding`` and ``dilation`` are per-axis values of the k x k convolution it replaces."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 0, dilation: int = 1, *, mid_channels: int | None = None,
                 bias: bool = True) -> None:
        mid = out_channels if mid_channels is None else mid_channels
        super().__init__(OrderedDict(
            vertical=nn.Conv2d(in_channels, mid, (kernel_size, 1), (stride, 1), (padding, 0), (dilation, 1),
                               bias=bias),
            horizontal=nn.Conv2d(mid, out_channels, (1, kernel_size), (1, stride), (0, padding), (1, dilation),
                                 bias=bias)))


class ShuffledGroupConv2d(nn.Sequential):
    """A grouped convolution followed by a channel shuffle (ShuffleNet, Zhang et al. 2018), so the
    next grouped layer mixes information across groups. ``shuffle`` is ``nn.ChannelShuffle``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 1, stride=1,
                 padding: int | str | tuple[int, int] = 0, dilation=1, *, groups: int, bias: bool = True) -> None:
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups ({groups})")
        super().__init__(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups=groups,
                           bias=bias),
            shuffle=nn.ChannelShuffle(groups)))


class ResizeConv2d(nn.Sequential):
    """Resize-convolution upsampling (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard
    Artifacts", Distill 2016): ``resize`` (nearest or bilinear, factor ``scale_factor``) then ``conv``
    (k x k, stride 1, padding k // 2), so every output unit gets the same number of paths - no
    checkerboard - where a transposed convolution with kernel not divisible by its stride has one."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 2, kernel_size: int = 3, *,
                 mode: Literal["nearest", "bilinear"] = "nearest", padding_mode: str = "zeros",
                 bias: bool = True) -> None:
        if kernel_size % 2 == 0:
            raise ValueError(f"ResizeConv2d needs an odd kernel (an even one shifts the map by half a "
                             f"pixel); got {kernel_size}")
        super().__init__(OrderedDict(
            resize=nn.Upsample(scale_factor=scale_factor, mode=mode),
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2,
                           padding_mode=padding_mode, bias=bias)))


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    """k x k convolution without bias ("same" padding for odd k), BatchNorm, ReLU."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size // 2),
                       dilation=dilation, bias=False),
        bn=nn.BatchNorm2d(out_channels),
        relu=nn.ReLU(inplace=True)))


class ASPPPooling(nn.Module):
    """Image-level features: global average, 1x1 conv + BN + ReLU, then copied back to the map's size
    (bilinear from 1x1). Every unit of its output sees the whole input (global context)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = conv_bn_relu(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.project(self.pool(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in DeepLabv3 (Chen et al. 2017, section 3.3): a 1x1 branch,
    one 3x3 branch per rate (6, 12, 18 at output stride 16; double them at 8), and an image-pooling
    branch, each ``out_channels`` maps with BN + ReLU; concatenated, projected by 1x1 + BN + ReLU and
    dropout 0.5 (as in the reference implementations)."""

    def __init__(self, in_channels: int, out_channels: int = 256, rates: Sequence[int] = (6, 12, 18), *,
                 image_pooling: bool = True, dropout: float = 0.5) -> None:
        super().__init__()
        branches = [conv_bn_relu(in_channels, out_channels, 1)]
        branches += [conv_bn_relu(in_channels, out_channels, 3, dilation=r) for r in rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, out_channels))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(len(branches) * out_channels, out_channels, 1, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            relu=nn.ReLU(inplace=True),
            dropout=nn.Dropout(dropout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))
