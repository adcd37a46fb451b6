"""Dilated Residual Networks: Yu, Koltun & Funkhouser, "Dilated Residual Networks" (CVPR 2017),
DRN-C-26 and DRN-D-22 as in the reference code fyu/drn ``drn.py`` (``drn_c_26``, ``drn_d_22``), with
its ImageNet classification head.

Layer table (both: BasicBlock, layers [1, 1, 2, 2, 2, 2, 1, 1], channels (16, 32, 64, 128, 256, 512,
512, 512); every 3x3 conv without bias and followed by BN):

* base: 7x7 conv stride 1 (16) + BN + ReLU;
  C: layer1 = 1 BasicBlock (16), layer2 = 1 BasicBlock stride 2 (32, 1x1 stride-2 conv + BN shortcut);
  D: layer1 = one 3x3 conv (16) + BN + ReLU, layer2 = one 3x3 stride-2 conv (32) + BN + ReLU;
* layer3, layer4: 2 BasicBlocks each, the first with stride 2 and a 1x1 conv + BN shortcut (64, 128);
* layer5: 2 BasicBlocks (256) dilated by 2, layer6: 2 BasicBlocks (512) dilated by 4 (strides
  removed: output stride 8; the first block of each has a stride-1 1x1 conv + BN shortcut);
* degridding: C: layer7 = 1 BasicBlock dilation 2 and layer8 = 1 BasicBlock dilation 1, both without
  the residual connection; D: layer7 = one 3x3 conv dilation 2 + BN + ReLU, layer8 = one 3x3 conv
  + BN + ReLU;
* head: AvgPool2d(28) (the 28x28 map of a 224x224 crop) and a 1x1 conv with bias to 1000 classes,
  flattened.

Parameter counts, from the table: DRN-C-26 21,126,584; DRN-D-22 16,393,752 (the paper's Table 1 and
the reference README: 21.1M and 16.4M).
Receptive field of layer8 (the last spatial map): C-26 581, D-22 527 pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import ZooModel

CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)
LAYERS = (1, 1, 2, 2, 2, 2, 1, 1)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, padding: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=padding, bias=False, dilation=dilation)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation=(1, 1), residual: bool = True):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride, padding=dilation[0], dilation=dilation[0])
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, padding=dilation[1], dilation=dilation[1])
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            residual = self.downsample(x)
        if self.residual:
            out += residual
        return self.relu(out)


class DRN(nn.Module):
    def __init__(self, layers=LAYERS, num_classes: int = 1000, channels=CHANNELS, pool_size: int = 28,
                 arch: str = "D", in_channels: int = 3):
        super().__init__()
        if arch not in ("C", "D"):
            raise ValueError(f"arch must be 'C' or 'D', got {arch!r}")
        self.inplanes = channels[0]
        self.arch = arch
        if arch == "C":
            self.conv1 = nn.Conv2d(in_channels, channels[0], 7, stride=1, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(channels[0])
            self.relu = nn.ReLU(inplace=True)
            self.layer1 = self._make_layer(channels[0], layers[0], stride=1)
            self.layer2 = self._make_layer(channels[1], layers[1], stride=2)
        else:
            self.layer0 = nn.Sequential(
                nn.Conv2d(in_channels, channels[0], 7, stride=1, padding=3, bias=False),
                nn.BatchNorm2d(channels[0]),
                nn.ReLU(inplace=True))
            self.layer1 = self._make_conv_layers(channels[0], layers[0], stride=1)
            self.layer2 = self._make_conv_layers(channels[1], layers[1], stride=2)
        self.layer3 = self._make_layer(channels[2], layers[2], stride=2)
        self.layer4 = self._make_layer(channels[3], layers[3], stride=2)
        self.layer5 = self._make_layer(channels[4], layers[4], dilation=2, new_level=False)
        self.layer6 = None if layers[5] == 0 else self._make_layer(channels[5], layers[5], dilation=4,
                                                                   new_level=False)
        if arch == "C":
            self.layer7 = None if layers[6] == 0 else self._make_layer(channels[6], layers[6], dilation=2,
                                                                       new_level=False, residual=False)
            self.layer8 = None if layers[7] == 0 else self._make_layer(channels[7], layers[7], dilation=1,
                                                                       new_level=False, residual=False)
        else:
            self.layer7 = None if layers[6] == 0 else self._make_conv_layers(channels[6], layers[6], dilation=2)
            self.layer8 = None if layers[7] == 0 else self._make_conv_layers(channels[7], layers[7], dilation=1)
        self.avgpool = nn.AvgPool2d(pool_size)
        self.fc = nn.Conv2d(channels[-1], num_classes, 1, stride=1, padding=0, bias=True)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1, new_level: bool = True,
                    residual: bool = True) -> nn.Sequential:
        assert dilation == 1 or dilation % 2 == 0
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion))
        first = (1, 1) if dilation == 1 else (dilation // 2 if new_level else dilation, dilation)
        layers = [BasicBlock(self.inplanes, planes, stride, downsample, dilation=first, residual=residual)]
        self.inplanes = planes * BasicBlock.expansion
        for _ in range(1, blocks):
            layers.append(BasicBlock(self.inplanes, planes, residual=residual, dilation=(dilation, dilation)))
        return nn.Sequential(*layers)

    def _make_conv_layers(self, channels: int, convs: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        modules: list[nn.Module] = []
        for i in range(convs):
            modules.extend([
                nn.Conv2d(self.inplanes, channels, 3, stride=stride if i == 0 else 1, padding=dilation,
                          bias=False, dilation=dilation),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True)])
            self.inplanes = channels
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch == "C":
            x = self.relu(self.bn1(self.conv1(x)))
        else:
            x = self.layer0(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.layer5(x)
        if self.layer6 is not None:
            x = self.layer6(x)
        if self.layer7 is not None:
            x = self.layer7(x)
        if self.layer8 is not None:
            x = self.layer8(x)
        x = self.fc(self.avgpool(x))
        return x.view(x.size(0), -1)


def drn_c_26(num_classes: int = 1000, channels=CHANNELS, pool_size: int = 28, in_channels: int = 3) -> DRN:
    """DRN-C-26 (fyu/drn ``drn_c_26``), random weights."""
    return DRN(LAYERS, num_classes, channels, pool_size, arch="C", in_channels=in_channels)


def drn_d_22(num_classes: int = 1000, channels=CHANNELS, pool_size: int = 28, in_channels: int = 3) -> DRN:
    """DRN-D-22 (fyu/drn ``drn_d_22``), random weights."""
    return DRN(LAYERS, num_classes, channels, pool_size, arch="D", in_channels=in_channels)


_SOURCE = ("Yu, Koltun & Funkhouser, Dilated Residual Networks, CVPR 2017 (Table 1: {m}); exact count from the "
           "layer table of fyu/drn drn.py ({fn}, ImageNet head: AvgPool2d(28) + 1x1 conv to 1000)")

ENTRIES = [
    ZooModel(
        name="drn_c_26",
        build=drn_c_26,
        input_shape=(3, 224, 224),
        params=21_126_584,
        source=_SOURCE.format(m="21.1M", fn="drn_c_26"),
        summary="DRN-C-26: ResNet with output stride 8, dilations 2 and 4, residual-free degridding blocks",
    ),
    ZooModel(
        name="drn_d_22",
        build=drn_d_22,
        input_shape=(3, 224, 224),
        params=16_393_752,
        source=_SOURCE.format(m="16.4M", fn="drn_d_22"),
        summary="DRN-D-22: DRN with conv base layers and single-conv degridding layers, output stride 8",
    ),
]
