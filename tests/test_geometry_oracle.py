"""Geometry of hand-picked networks, one op family at a time, against the gradient oracle.

Each case is a small model and input; the expected values all come from tests/oracle.py (the
gradient of a linearized copy) and torch's shapes, never from convlens.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from checks import check_against_oracle


class Fn(nn.Module):
    """Wrap a function of the input as a module so it gets a row."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def seq(*mods):
    return nn.Sequential(*mods)


class Residual(nn.Module):
    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body, self.shortcut = body, shortcut or nn.Identity()

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


class TwoBranchCat(nn.Module):
    def __init__(self, a, b, dim):
        super().__init__()
        self.a, self.b, self.dim = a, b, dim

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], self.dim)


class UNetCrop(nn.Module):
    """Contract, expand and crop the skip to match (U-Net without padding)."""

    def __init__(self):
        super().__init__()
        self.down = seq(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2))
        self.mid = nn.Conv2d(3, 3, 3)
        self.up = nn.ConvTranspose2d(3, 3, 2, stride=2)
        self.skip = nn.Conv2d(2, 3, 3)

    def forward(self, x):
        s = self.skip(x)
        y = self.up(self.mid(self.down(x)))
        dh = (s.shape[-2] - y.shape[-2]) // 2
        dw = (s.shape[-1] - y.shape[-1]) // 2
        return torch.cat([s[:, :, dh:dh + y.shape[-2], dw:dw + y.shape[-1]], y], 1)


class UnpoolNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, 2)

    def forward(self, x):
        y, i = self.pool(self.conv(x))
        return self.unpool(y, i)


class SEGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.fc = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return y * torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))


class GapProduct(nn.Module):
    """A conv gated by a bias-free transposed conv, exactly 0 at its odd outputs, and a difference
    of a branch with its own activation: windows follow paths, values ignored (DESIGN)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.up = nn.ConvTranspose2d(2, 2, 1, stride=2, bias=False)

    def forward(self, x):
        y = self.a(x)
        g = self.up(x[:, :, : x.shape[2] // 2, : x.shape[3] // 2])
        y = y[:, :, : g.shape[2], : g.shape[3]] * g
        return y - F.relu(y)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, dilation=2)

    def forward(self, x):
        return self.conv(self.conv(x))


CASES = {
    "conv_stride_pad_dilation": (seq(nn.Conv2d(2, 3, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
                                     nn.Conv2d(3, 3, 3, stride=2)), (1, 2, 23, 19)),
    "conv_same_even": (seq(nn.Conv2d(2, 2, 4, padding="same"), nn.Conv2d(2, 2, 3, padding="valid")), (1, 2, 16, 15)),
    "conv_groups_reflect": (seq(nn.Conv2d(4, 4, 3, groups=2, padding=2, padding_mode="reflect"),
                                nn.Conv2d(4, 2, 3, padding=1, padding_mode="replicate")), (1, 4, 12, 13)),
    "conv_circular_dilated": (seq(nn.Conv2d(2, 2, 3, padding=2, dilation=2, padding_mode="circular"),
                                  nn.Conv2d(2, 2, 3, dilation=3)), (1, 2, 14, 12)),
    "transposed": (seq(nn.Conv2d(2, 2, 3), nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),
                       nn.ConvTranspose2d(3, 2, 2, stride=3, dilation=2)), (1, 2, 9, 8)),
    "transposed_groups_dilation": (seq(nn.ConvTranspose2d(4, 4, 3, stride=2, dilation=2, groups=2),
                                       nn.Conv2d(4, 2, 3)), (1, 4, 7, 6)),
    "pools": (seq(nn.MaxPool2d(3, 2, padding=1, ceil_mode=True), nn.AvgPool2d(2, 2, ceil_mode=True,
                                                                             count_include_pad=False),
                  nn.MaxPool2d(2, 1, dilation=2), nn.LPPool2d(2, 2)), (1, 2, 27, 30)),
    "adaptive": (seq(nn.Conv2d(2, 2, 3), nn.AdaptiveAvgPool2d((5, 3)), nn.AdaptiveMaxPool2d((2, 3))), (1, 2, 19, 14)),
    "unpool": (UnpoolNet(), (1, 2, 10, 12)),
    "nearest": (seq(nn.Conv2d(2, 2, 3), nn.Upsample(scale_factor=2), Fn(lambda x: F.interpolate(x, scale_factor=1.5)),
                    Fn(lambda x: F.interpolate(x, size=(7, 11), mode="nearest-exact"))), (1, 2, 9, 8)),
    "bilinear": (seq(nn.Conv2d(2, 2, 3, stride=2), nn.Upsample(scale_factor=2, mode="bilinear"),
                     Fn(lambda x: F.interpolate(x, size=(13, 9), mode="bilinear", align_corners=True)),
                     Fn(lambda x: F.interpolate(x, scale_factor=0.5, mode="bilinear"))), (1, 2, 17, 14)),
    "bicubic": (seq(nn.Conv2d(2, 2, 3), Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bicubic")),
                    Fn(lambda x: F.interpolate(x, size=(11, 9), mode="bicubic", align_corners=True))), (1, 2, 9, 10)),
    "pixel_shuffle": (seq(nn.Conv2d(2, 8, 3), nn.PixelShuffle(2), nn.Conv2d(2, 4, 3), nn.PixelUnshuffle(2)),
                      (1, 2, 12, 10)),
    "pads": (seq(nn.ZeroPad2d((1, 2, 3, 0)), nn.Conv2d(2, 2, 3), Fn(lambda x: F.pad(x, (2, 1, 1, 2), mode="reflect")),
                 Fn(lambda x: F.pad(x, (0, 3, 2, 2), mode="replicate")),
                 Fn(lambda x: F.pad(x, (1, 1, 2, 0), mode="circular")), nn.Conv2d(2, 2, 3, dilation=2)), (1, 2, 10, 9)),
    "crop_slice": (seq(nn.Conv2d(2, 2, 3), Fn(lambda x: x[:, :, 2:-1, 1::2]), nn.Conv2d(2, 2, 3)), (1, 2, 16, 17)),
    "unet": (UNetCrop(), (1, 2, 20, 18)),
    "residual": (Residual(seq(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))),
                 (1, 2, 12, 11)),
    "misaligned_residual": (Residual(seq(nn.Conv2d(2, 2, 3), nn.ZeroPad2d((0, 2, 0, 2)))), (1, 2, 9, 9)),
    "cat_channels": (TwoBranchCat(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 5, padding=2, dilation=1), 1),
                     (1, 2, 10, 8)),
    "cat_spatial": (TwoBranchCat(nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, (3, 1), stride=(1, 2)), 3), (1, 2, 10, 8)),
    "shared_module": (Shared(), (1, 2, 15, 14)),
    "product_with_gap": (GapProduct(), (1, 2, 12, 10)),
    "se_gate": (SEGate(), (1, 2, 10, 9)),
    "views": (seq(nn.Conv2d(2, 3, 3), Fn(lambda x: x.flatten(2).unflatten(2, x.shape[2:])),
                  Fn(lambda x: x.permute(0, 2, 3, 1)), nn.LayerNorm(3), Fn(lambda x: x.permute(0, 3, 1, 2)),
                  nn.Conv2d(3, 2, 3)), (1, 2, 9, 10)),
    "head": (seq(nn.Conv2d(2, 3, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4)), (1, 2, 8, 8)),
    "reduce_one_axis": (seq(nn.Conv2d(2, 3, 3), Fn(lambda x: x.mean(3, keepdim=True)), nn.Conv2d(3, 3, (3, 1))),
                        (1, 2, 11, 9)),
    "conv1d": (seq(nn.Conv1d(2, 3, 5, stride=2, dilation=2), nn.MaxPool1d(3, 2, ceil_mode=True),
                   nn.Upsample(scale_factor=3, mode="linear")), (1, 2, 50)),
    "conv3d": (seq(nn.Conv3d(1, 2, 3, stride=(1, 2, 1), padding=1), nn.ConvTranspose3d(2, 1, 2, stride=2),
                   nn.AvgPool3d(2)), (1, 1, 6, 7, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_case_against_oracle(case):
    model, shape = CASES[case]
    big = shape[:2] + tuple(3 * s + 8 for s in shape[2:])
    if case in ("adaptive", "unet", "cat_spatial", "misaligned_residual", "head"):
        big = None  # windows depend on the input size, or the merge needs a fixed size
    if case in ("nearest", "bilinear", "bicubic"):
        big = None  # explicit output sizes: a larger input changes the scale
    checked = check_against_oracle(model, shape, big_shape=big)
    assert checked.windows > 0
    assert not [s for s in checked.skipped if "unknown" in s], checked.skipped


@pytest.mark.parametrize("case", ["residual", "misaligned_residual"])
def test_alignment_verdict_matches_the_branches_centres(case):
    """A merge is aligned iff its branches' windows have the same centres (oracle, interior units)."""
    import convlens
    from oracle import probe_many

    model, shape = CASES[case]
    report = convlens.analyze(model, shape)
    units = [(i, j) for i in range(2, shape[2] - 4) for j in range(2, shape[3] - 4)]
    big = shape[:2] + tuple(4 * s for s in shape[2:])  # the units above are interior there
    centres = []
    for branch in ("body", "shortcut"):
        res = probe_many(model, big, branch, units)
        centres.append([tuple((lo + hi) / 2 for lo, hi in r.bbox) for r in res])
    expected = centres[0] == centres[1]
    assert report[""].aligned is expected
    if not expected:
        assert any("misaligned merge" in n and "body" in n and "shortcut" in n for n in report[""].notes)
