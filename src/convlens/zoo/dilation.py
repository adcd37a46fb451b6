"""The networks of Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions" (ICLR 2016),
as released in github.com/fyu/dilation: the dilated VGG-16 front-end followed by a context module
(``convlens.blocks.dilated`` holds both and their conventions).

- Dilation8 (Pascal VOC, 21 classes): context dilations 1, 1, 2, 4, 8, 16, 1 - the default model of
  ``convlens analyze``. Input 3x900x900 (the deploy file's padded tile), output 21x66x66 at stride 8.
- Dilation8, large context module (paper Table 1), for comparison.
- Dilation7 (KITTI, 11 classes): 1, 1, 2, 4, 8, 1. The 900x900 tile is ours (the paper fixes no tile).
- Dilation10 (Cityscapes, 19 classes): 1, 1, 2, 4, 8, 16, 32, 64, 1, on the released 1396x1396 tile
  (1024 + 2 x 186 label margin), output 19x128x128.

Parameter counts, from the layer table (weights + biases): VGG-16's 13 convolutions 14,714,688; fc6
512 x 4096 x 7 x 7 + 4096 = 102,764,544; fc7 4096^2 + 4096 = 16,781,312; the classifier 4096 C + C;
the basic context module (9 n + 1) C^2 + (n + 1) C for n dilated layers (paper: 64 C^2 weights for
n = 7), the large one 15,422 C^2 + 97 C.
"""

from __future__ import annotations

from functools import partial

import torch.nn as nn

from ..blocks.dilated import dilation_net
from .registry import ZooModel

SOURCE = "Yu & Koltun, ICLR 2016 (arXiv:1511.07122), section 3 and Table 1; github.com/fyu/dilation"


def dilated_vgg16_voc(num_classes: int = 21) -> nn.Sequential:
    """Dilation8 for Pascal VOC (front-end + basic context module), identity-initialised context,
    random front-end."""
    return dilation_net(8, num_classes)


ENTRIES = [
    ZooModel("dilation8_voc", dilated_vgg16_voc, (3, 900, 900), 134_374_973, SOURCE,
             "Dilation8, Pascal VOC: dilated VGG-16 front-end + basic context module (default model)"),
    ZooModel("dilation8_large_voc", partial(dilation_net, 8, 21, variant="large"), (3, 900, 900), 141_149_720,
             SOURCE, "Dilation8 with the large context module (2C ... 32C maps)"),
    ZooModel("dilation7_kitti", partial(dilation_net, 7, 11), (3, 900, 900), 134_312_343, SOURCE,
             "Dilation7, KITTI: context dilations 1,1,2,4,8,1"),
    ZooModel("dilation10_cityscapes", partial(dilation_net, 10, 19), (3, 1396, 1396), 134_368_179, SOURCE,
             "Dilation10, Cityscapes: context dilations 1,1,2,4,8,16,32,64,1"),
]
