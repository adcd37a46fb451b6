"""DeepLabv3's ASPP head on a dilated ResNet-50: Chen, Papandreou, Schroff & Adam, "Rethinking Atrous
Convolution for Semantic Image Segmentation" (arXiv:1706.05587, 2017), Sec. 3.3 / Fig. 5.

Backbone: ResNet-50 (He et al. 2016) with bottleneck blocks (1x1, 3x3, 1x1 convs without bias, each
followed by BN; 3, 4, 6, 3 blocks with 64, 128, 256, 512 planes and 4x expansion; the stride sits on
the 3x3 conv, as in torchvision's ResNet-50 and TF-slim's resnet_v1), output stride 8: the strides
of layer3 and layer4 are removed and their later blocks dilated by 2 and 4; the first block of each
(where the stride was) keeps the previous dilation (1, then 2), as torchvision's
``replace_stride_with_dilation`` and TF-slim's ``stack_blocks_dense`` do. No average pool or fc.

ASPP (2048 -> 256 per branch, each conv without bias + BN + ReLU): a 1x1 conv, three 3x3 atrous
convs, and image pooling (global average pool, 1x1 conv, BN, ReLU, bilinear upsampling back to the
map); concatenated (1280 maps), 1x1 projection to 256 + BN + ReLU + dropout 0.5 (``convlens.blocks.ASPP``),
then a 1x1 classifier (with bias)
to 21 classes, and bilinear upsampling of the logits to the input size. Atrous rates: the paper
uses (6, 12, 18) at output stride 16 and doubles them at output stride 8, so the default here is
(12, 24, 36) (torchvision's choice too); ``rates=`` takes others (the count does not depend on them).

Parameter count (21 classes), from the table: ResNet-50 without its fc 23,508,032; ASPP convs
524,288 + 3 * 4,718,592 + 524,288 + 327,680 (projection) = 15,532,032, ASPP BN 6 * 512 = 3,072;
classifier 256*21 + 21 = 5,397; total 39,048,533.
torchvision's ``deeplabv3_resnet50`` (42,004,074 parameters with its auxiliary FCN head, 39,638,869
without) has the same backbone and ASPP but puts a 3x3 conv 256 -> 256 + BN (590,336) between the
ASPP and the classifier; ``torchvision_head=True`` adds it and then matches torchvision's count.
On a 3x513x513 input the backbone map is 2048x65x65 and the output 21x513x513.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks.factorized import ASPP, conv_bn_relu
from .registry import ZooModel

RESNET50_BLOCKS = (3, 4, 6, 3)
RATES_OS8 = (12, 24, 36)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet trunk (stem, layer1..layer4) with the strides of the stages in ``dilate`` replaced by dilation."""

    def __init__(self, blocks=RESNET50_BLOCKS, width: int = 64, dilate=(False, True, True), in_channels: int = 3):
        super().__init__()
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, blocks[0])
        self.layer2 = self._make_layer(width * 2, blocks[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(width * 4, blocks[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(width * 8, blocks[3], stride=2, dilate=dilate[2])
        self.out_channels = width * 8 * Bottleneck.expansion

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, previous, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class DeepLabV3(nn.Module):
    def __init__(self, num_classes: int = 21, width: int = 64, blocks=RESNET50_BLOCKS, aspp_channels: int = 256,
                 rates=RATES_OS8, torchvision_head: bool = False, in_channels: int = 3):
        super().__init__()
        self.backbone = DilatedResNet(blocks, width, in_channels=in_channels)
        self.aspp = ASPP(self.backbone.out_channels, aspp_channels, rates)  # convlens.blocks.ASPP
        self.head = conv_bn_relu(aspp_channels, aspp_channels, 3) if torchvision_head else nn.Identity()
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        x = self.classifier(self.head(self.aspp(self.backbone(x))))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def deeplabv3_aspp_resnet50(num_classes: int = 21, width: int = 64, blocks=RESNET50_BLOCKS,
                            aspp_channels: int = 256, rates=RATES_OS8, torchvision_head: bool = False,
                            in_channels: int = 3) -> DeepLabV3:
    """DeepLabv3 (ASPP + image pooling) on a ResNet-50 with output stride 8, random weights."""
    return DeepLabV3(num_classes, width, blocks, aspp_channels, rates, torchvision_head, in_channels)


ENTRIES = [
    ZooModel(
        name="deeplabv3_aspp_resnet50",
        build=deeplabv3_aspp_resnet50,
        input_shape=(3, 513, 513),
        params=39_048_533,
        source="Chen et al. 2017, Rethinking Atrous Convolution (arXiv:1706.05587), ASPP Sec. 3.3, output stride 8, "
               "rates (12, 24, 36); count from the layer table (torchvision deeplabv3_resnet50: 42,004,074 with aux "
               "head, less the aux FCN head 2,365,205 and its extra 3x3 conv+BN 590,336)",
        summary="DeepLabv3: ASPP with image pooling on a dilated ResNet-50 (output stride 8), 21 classes",
    ),
]
