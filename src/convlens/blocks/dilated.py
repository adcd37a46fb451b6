"""Yu & Koltun, "Multi-Scale Context Aggregation by Dilated Convolutions" (ICLR 2016): the dilated
VGG-16 front-end, the context module and the Dilation7/8/10 networks built from them.

Reference code: github.com/fyu/dilation (``network.py``, ``models/dilation8_pascal_voc_deploy.prototxt``).

Conventions, all from that code unless stated:

- Front-end: VGG-16's conv1_1 ... conv5_3 without padding; pool1-3 are 2x2/2 max pools in Caffe's
  ceil mode; pool4 and pool5 are removed and conv5_x is dilated by 2; fc6 is a 7x7 convolution dilated
  by 4 with 4096 maps, fc7 a 1x1 convolution (4096), ``final`` a 1x1 classifier. Output stride 8; on an
  input of side ``n`` the output side is ``(n - 372) / 8 + 1`` rounded as the pools round (900 -> 66).
- Context module: 3x3 convolutions with the given dilations, each followed by ReLU ("truncation"), then
  a 1x1 convolution. The deploy file pads the module's input once by the module's radius
  ``sum(dilations)`` (33 for Dilation8) and the convolutions do not pad, so the output has the input's
  size; ``padding="layer"`` pads every layer by its dilation instead (the same size, different values
  at the borders), ``padding="none"`` shrinks the map by ``2 * sum(dilations)``.
- Basic variant: C maps throughout, 64 C^2 weights for 7 dilated layers. Large variant (paper Table 1):
  2C, 2C, 4C, 8C, 16C, 32C, 32C maps, then C; 15,422 C^2 weights.
- Identity initialisation (paper section 3): ``k(t, a) -> b`` is ``C / c_out`` at the centre tap where
  ``floor(a C / c_in) == floor(b C / c_out)`` and ``eps ~ N(0, sigma^2)`` elsewhere, biases 0. For the
  basic variant this is the identity (1 on the matching map, exactly 0 elsewhere: sigma is ignored).
  With sigma = 0 either variant computes relu(x) at initialisation.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, Sequence

import torch
import torch.nn as nn

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

#: dilations of the 3x3 layers of the context module in each network of the paper (the last 1 is the
#: paper's "layer 7"; the 1x1 output layer follows)
CONTEXT_DILATIONS = {
    7: (1, 1, 2, 4, 8, 1),
    8: (1, 1, 2, 4, 8, 16, 1),
    10: (1, 1, 2, 4, 8, 16, 32, 64, 1),
}
#: the large variant's maps per 3x3 layer, in multiples of C (paper Table 1; defined for 7 layers)
LARGE_WIDTHS = (2, 2, 4, 8, 16, 32, 32)

Padding = Literal["input", "layer", "none"]


def dilated_frontend(num_classes: int = 21, in_channels: int = 3, width: float = 1.0,
                     fc_channels: int = 4096) -> nn.Sequential:
    """The dilated VGG-16 front-end. ``width`` scales the conv maps and ``fc_channels`` the fc6/fc7
    maps (1.0 and 4096 are the paper's; smaller values give slim copies for tests)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c = in_channels
    for block, widths in enumerate(VGG16_BLOCKS, start=1):
        dilation = 2 if block == 5 else 1
        for i, w in enumerate(widths, start=1):
            w = max(1, round(w * width))
            layers[f"conv{block}_{i}"] = nn.Conv2d(c, w, 3, dilation=dilation)
            layers[f"relu{block}_{i}"] = nn.ReLU(inplace=True)
            c = w
        if block <= 3:
            layers[f"pool{block}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
    layers["fc6"] = nn.Conv2d(c, fc_channels, 7, dilation=4)
    layers["relu6"] = nn.ReLU(inplace=True)
    layers["fc7"] = nn.Conv2d(fc_channels, fc_channels, 1)
    layers["relu7"] = nn.ReLU(inplace=True)
    layers["final"] = nn.Conv2d(fc_channels, num_classes, 1)
    return nn.Sequential(layers)


class ContextModule(nn.Sequential):
    """The multi-scale context module: ``C`` maps in, ``C`` maps out, the same spatial size (unless
    ``padding="none"``), receptive field ``1 + 2 * sum(dilations)`` (67 for the default dilations).

    Children: ``pad`` (with ``padding="input"``), ``conv1`` ... ``convN`` (3x3, dilated) each followed
    by ``relu1`` ... ``reluN``, then ``final`` (1x1, no ReLU).
    """

    def __init__(self, channels: int, variant: Literal["basic", "large"] = "basic",
                 dilations: Sequence[int] = CONTEXT_DILATIONS[8], *, padding: Padding = "input",
                 init: Literal["identity", "default"] = "identity", sigma: float = 1e-2) -> None:
        dilations = tuple(int(d) for d in dilations)
        if channels < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"ContextModule needs channels >= 1 and dilations >= 1; got {channels}, {dilations}")
        if variant == "basic":
            widths = [channels] * len(dilations)
        elif variant == "large":
            if len(dilations) != len(LARGE_WIDTHS):
                raise ValueError(f"the large variant is defined for {len(LARGE_WIDTHS)} dilated layers "
                                 f"(paper Table 1); got {len(dilations)}: use variant='basic'")
            widths = [m * channels for m in LARGE_WIDTHS]
        else:
            raise ValueError(f"variant must be 'basic' or 'large', not {variant!r}")
        if padding not in ("input", "layer", "none"):
            raise ValueError(f"padding must be 'input', 'layer' or 'none', not {padding!r}")
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if padding == "input":
            layers["pad"] = nn.ZeroPad2d(sum(dilations))
        c = channels
        for i, (d, w) in enumerate(zip(dilations, widths), start=1):
            layers[f"conv{i}"] = nn.Conv2d(c, w, 3, dilation=d, padding=d if padding == "layer" else 0)
            layers[f"relu{i}"] = nn.ReLU(inplace=True)
            c = w
        layers["final"] = nn.Conv2d(c, channels, 1)
        super().__init__(layers)
        self.channels, self.variant, self.dilations = channels, variant, dilations
        if init == "identity":
            self.identity_init(sigma)
        elif init != "default":
            raise ValueError(f"init must be 'identity' or 'default', not {init!r}")

    @torch.no_grad()
    def identity_init(self, sigma: float = 1e-2) -> None:
        """Paper section 3 (see the module docstring); ``sigma`` only matters for the large variant."""
        C = self.channels
        for conv in (m for m in self.children() if isinstance(m, nn.Conv2d)):
            c_out, c_in, kh, kw = conv.weight.shape
            eps = sigma if self.variant == "large" else 0.0
            if eps > 0:
                conv.weight.normal_(0.0, eps)
            else:
                conv.weight.zero_()
            a = torch.arange(c_in, device=conv.weight.device)
            b = torch.arange(c_out, device=conv.weight.device)
            same_group = (b[:, None] * C // c_out) == (a[None, :] * C // c_in)
            centre = conv.weight[:, :, kh // 2, kw // 2]
            centre.copy_(torch.where(same_group, C / c_out, centre))  # no boolean indexing: works on meta
            conv.bias.zero_()


def dilation_net(context_layers: Literal[7, 8, 10] = 8, num_classes: int = 21, *,
                 variant: Literal["basic", "large"] = "basic", width: float = 1.0,
                 fc_channels: int = 4096) -> nn.Sequential:
    """DilationN (N = ``context_layers``): the front-end then the context module on its class maps,
    as released (input padding, identity initialisation); children ``frontend`` and ``context``."""
    if context_layers not in CONTEXT_DILATIONS:
        raise ValueError(f"context_layers must be one of {sorted(CONTEXT_DILATIONS)}, not {context_layers!r}")
    return nn.Sequential(OrderedDict(
        frontend=dilated_frontend(num_classes, width=width, fc_channels=fc_channels),
        context=ContextModule(num_classes, variant, CONTEXT_DILATIONS[context_layers])))
