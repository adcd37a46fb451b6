"""The dilated network of Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions"
(ICLR 2016), as released for Pascal VOC (``dilation8_pascal_voc_deploy.prototxt``).

Front-end: VGG-16's conv1_1 ... conv5_3 without padding, pool4 and pool5 removed, conv5_x dilated by
2, fc6 as a 7x7 convolution dilated by 4 (4096 maps), fc7 as a 1x1 convolution (4096), and a 1x1
classifier to 21 classes. Context module (basic, C = 21): the input is zero-padded by 33 (the
module's receptive field is 67), then 3x3 convolutions with dilations 1, 1, 2, 4, 8, 16, 1, each
followed by ReLU, then a 1x1 convolution. No final upsampling. On a 3x900x900 input (the released
model's padded input) the output is 21x66x66 at stride 8.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn as nn

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
CONTEXT_DILATIONS = (1, 1, 2, 4, 8, 16, 1)


def dilated_frontend(num_classes: int = 21, in_channels: int = 3) -> nn.Sequential:
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    c = in_channels
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        dilation = 2 if block == 5 else 1
        for i, width in enumerate(widths, start=1):
            layers[f"conv{block}_{i}"] = nn.Conv2d(c, width, 3, dilation=dilation)
            layers[f"relu{block}_{i}"] = nn.ReLU(inplace=True)
            c = width
        if block <= 3:
            layers[f"pool{block}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
    layers["fc6"] = nn.Conv2d(512, 4096, 7, dilation=4)
    layers["relu6"] = nn.ReLU(inplace=True)
    layers["fc7"] = nn.Conv2d(4096, 4096, 1)
    layers["relu7"] = nn.ReLU(inplace=True)
    layers["final"] = nn.Conv2d(4096, num_classes, 1)
    return nn.Sequential(layers)


def basic_context(channels: int = 21, dilations=CONTEXT_DILATIONS) -> nn.Sequential:
    pad = sum(dilations)
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(pad=nn.ZeroPad2d(pad))
    for i, d in enumerate(dilations, start=1):
        layers[f"ctx_conv{i}"] = nn.Conv2d(channels, channels, 3, dilation=d)
        layers[f"ctx_relu{i}"] = nn.ReLU(inplace=True)
    layers["ctx_final"] = nn.Conv2d(channels, channels, 1)
    return nn.Sequential(layers)


def dilated_vgg16_voc(num_classes: int = 21) -> nn.Sequential:
    """Front-end + basic context module (Dilation8 for Pascal VOC), random weights."""
    return nn.Sequential(OrderedDict(frontend=dilated_frontend(num_classes), context=basic_context(num_classes)))
