"""Channel pieces (issue 17): channels that a cat brought together see different windows, and a pick
of some of them (a slice, a split, MixNet's groups, DPN's dense path, EfficientViT's heads) sees
only the windows of the pieces it picks. Every case is checked against the gradient oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convlens
from convlens.geometry import Local, Unknown
from checks import check_against_oracle


class MixedKernels(nn.Module):
    """MixNet's mixed depthwise conv and what follows it: split, convs with other kernels, cat,
    batch norm and an activation, a strided depthwise conv, then picks inside one piece, across
    two, through a per-channel gate and through a reshape that splits the channel dim."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 7, padding=3)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, stride=2)
        self.c = nn.Conv2d(1, 1, 5, padding=2)

    def forward(self, x):
        x0, x1 = torch.split(torch.cat([x, x], 1), [2, 2], 1)
        y = self.dw(F.relu(self.bn(torch.cat([self.a(x0), self.b(x1)], 1))))
        one, more = torch.split(y, [1, 3], 1)
        inside = more[:, 1:2]
        gated = (y * y.mean((2, 3), keepdim=True).sigmoid())[:, :2]
        heads = y.view(1, 2, 2, *y.shape[2:])[:, 1]
        return self.c(one) + inside + gated[:, :1] + heads[:, :1]


class DensePath(nn.Module):
    """DPN's dual path: a residual part and a dense part that grows by a cat each block, sliced
    apart again (``x[:, :r]``, ``x[:, r:]``)."""

    def __init__(self, r: int = 2, grow: int = 2, blocks: int = 3):
        super().__init__()
        self.r = r
        self.stem = nn.Conv2d(2, r + grow, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(r + grow * (i + 1), r + grow, 3, padding=i + 1, dilation=i + 1)
                                   for i in range(blocks))

    def forward(self, x):
        y = self.stem(x)
        resid, dense = y[:, :self.r], y[:, self.r:]
        for conv in self.convs:
            out = conv(F.relu(torch.cat([resid, dense], 1)))
            resid = resid + out[:, :self.r]
            dense = torch.cat([dense, out[:, self.r:]], 1)
        return dense[:, :2] + dense[:, -2:].mean((2, 3), keepdim=True), dense[:, 2:4]


class Pick(nn.Module):
    """A pick from the cat of a wide and a narrow branch, after ``between``."""

    def __init__(self, between):
        super().__init__()
        self.wide, self.narrow = nn.Conv2d(1, 2, 5, padding=2), nn.Conv2d(1, 2, 1)
        self.between = between

    def forward(self, x):
        return self.between(torch.cat([self.wide(x), self.narrow(x)], 1))[:, 2:]


@pytest.mark.parametrize("model, shape", [(MixedKernels(), (1, 2, 12, 12)), (DensePath(), (1, 2, 12, 11))],
                         ids=["mixed kernels", "dense path"])
def test_picked_channels_see_their_pieces_windows(model, shape):
    torch.manual_seed(0)
    report = convlens.analyze(model.eval(), shape)
    assert not [layer.name for layer in report if any(isinstance(s, Unknown) for s in layer.axes)]
    checked = check_against_oracle(model.eval(), shape, big_shape=shape[:2] + (40, 40))
    assert checked.windows > 0 and checked.coverage > 0


def test_a_pick_of_the_narrow_piece_is_narrower_than_the_cat():
    """The oracle agrees with a pick that sees only the 1x1 branch, where the union over the cat's
    channels is the 5x5 one (the number the old rule would have had to refuse)."""
    model = Pick(nn.ReLU()).eval()
    picked = convlens.analyze(model, (1, 1, 9, 9))[""]
    assert isinstance(picked.axes[0], Local) and picked.axes[0].rf == 1
    check_against_oracle(model, (1, 1, 9, 9), big_shape=(1, 1, 30, 30))


@pytest.mark.parametrize("between", [nn.ChannelShuffle(2), nn.GroupNorm(2, 4), nn.Conv2d(4, 4, 1, groups=2)],
                         ids=["channel shuffle", "group norm", "grouped conv"])
def test_ops_that_move_or_mix_channels_leave_the_pick_named(between):
    """After an op that reorders or mixes channels, which piece a channel saw is not carried: the pick
    is named untracked, never given the union over the cat (or a guessed piece)."""
    report = convlens.analyze(Pick(between).eval(), (1, 1, 9, 9))
    assert all(isinstance(s, Unknown) for s in report[""].axes)
    assert any("picks channels" in op for s in report[""].axes for op in s.ops)


# Slim configurations of timm's models that pick channels after a cat (weights=None).
TIMM = {
    "mixnet": ("mixnet_s", dict(), (1, 3, 32, 32), r"blocks\.[12]\.0(\.conv_dw)?"),
    "dpn": ("dpn48b", dict(), (1, 3, 32, 32), r"features\.conv2_[12]"),
    # (stage 2's first attention; past it the oracle's positive weights overflow float64 in the
    # products of linear attention)
    "efficientvit b": ("efficientvit_b0", dict(), (1, 3, 64, 64), r"stages\.2\.blocks\.1(\.context_module)?"),
}


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_models_that_pick_channels_match_the_oracle(name):
    import re

    import timm

    arch, kwargs, shape, rows = TIMM[name]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    report = convlens.analyze(model, shape)
    assert not [layer.name for layer in report if any(isinstance(s, Unknown) for s in layer.axes)]
    picked = [layer.name for layer in report if re.fullmatch(rows, layer.name)]
    assert picked
    checked = check_against_oracle(model, shape, rows=picked, local_products=name == "efficientvit b")
    assert checked.windows >= len(picked) and not checked.skipped, checked
