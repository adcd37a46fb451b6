"""Coverage maps (DESIGN: coverage) against the gradient oracle's path counts.

The support of every coverage map is also checked on every generated network
(tests/test_random_networks.py, via checks.py). Here: multiplicities. With every weight 1, sum
pooling and a single channel throughout, the oracle's gradient (tests/oracle.py, ``weights="ones"``)
counts exactly the spatial paths from each input pixel to the unit, so convlens's counts must equal
it, pixel for pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import convlens
from oracle import probe


def _ones_counts(model: nn.Module, shape, layer: str, unit) -> np.ndarray:
    res = probe(model, shape, layer, unit, weights="ones", inputs=1)
    return np.rint(res.grad).astype(np.int64)


def _check_counts(model: nn.Module, shape, layer: str = "", units=None) -> None:
    report = convlens.analyze(model, shape)
    row = report[layer]
    units = units or [tuple(s.n // 2 for s in row.axes), tuple(0 for _ in row.axes),
                      tuple(s.n - 1 for s in row.axes)]
    for unit in units:
        got = report.coverage(layer, unit)
        want = _ones_counts(model, shape, layer, unit)
        assert got.exact and got.counts.dtype == np.int64
        assert np.array_equal(got.map, want), f"unit {unit}: convlens\n{got.map}\noracle\n{want}"


class Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x) + x


class CatThenConv(nn.Module):
    """Two branches concatenated along channels, mixed back to one channel."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, padding=1, dilation=1)
        self.b = nn.Conv2d(1, 1, 3, padding=2, dilation=2)
        self.mix = nn.Conv2d(2, 1, 1)

    def forward(self, x):
        return self.mix(torch.cat([self.a(x), self.b(x)], 1))


class Shuffle(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.PixelShuffle(2)

    def forward(self, x):
        return self.up(self.conv(x))


MULTIPLICITY_CASES = {
    "dilated_stack": (nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in (1, 2, 4)]), (1, 1, 24, 20)),
    "strided": (nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.Conv2d(1, 1, (3, 2), stride=(1, 2))),
                (1, 1, 17, 18)),
    "transposed": (nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),
                                 nn.ConvTranspose2d(1, 1, 3, stride=3, dilation=2)), (1, 1, 7, 6)),
    "pools": (nn.Sequential(nn.MaxPool2d(3, 2, padding=1), nn.AvgPool2d(2, 1), nn.Conv2d(1, 1, 3)), (1, 1, 20, 19)),
    "residual": (nn.Sequential(Residual(nn.Conv2d(1, 1, 3, padding=1)), Residual(nn.Conv2d(1, 1, 3, padding=2,
                                                                                           dilation=2))),
                 (1, 1, 16, 15)),
    "reflect_pad": (nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(1, 1, 3), nn.ReplicationPad2d((1, 0, 2, 1)),
                                  nn.Conv2d(1, 1, 3)), (1, 1, 9, 8)),
    "cat_channels": (CatThenConv(), (1, 1, 14, 13)),
    "nearest": (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3)), (1, 1, 9, 10)),
    "pixel_shuffle": (Shuffle(), (1, 1, 6, 7)),
    "conv1d": (nn.Sequential(nn.Conv1d(1, 1, 5, dilation=3, padding=6), nn.MaxPool1d(2), nn.Conv1d(1, 1, 3)),
               (1, 1, 40)),
    "conv3d": (nn.Sequential(nn.Conv3d(1, 1, 3, padding=1), nn.ConvTranspose3d(1, 1, 2, stride=2)), (1, 1, 4, 5, 3)),
}


@pytest.mark.parametrize("case", sorted(MULTIPLICITY_CASES))
def test_multiplicities_equal_the_all_ones_forward(case):
    model, shape = MULTIPLICITY_CASES[case]
    _check_counts(model, shape)


def test_gridding_counts_of_the_issue():
    # a 3x3 kernel at dilation 2 touches 9 of the 25 pixels of its window
    one = convlens.analyze(nn.Conv2d(1, 1, 3, dilation=2), (1, 1, 9, 9)).coverage("", (2, 2))
    assert (one.covered, one.pixels) == (9, 25) and one.holes == (2, 2)
    # dilations 2, 4, 8: only even offsets, 225 of the 841 pixels of the 29 x 29 window
    stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in (2, 4, 8)])
    c = convlens.analyze(stack, (1, 1, 64, 64)).coverage("", (32, 32))
    assert (c.covered, c.pixels, c.holes) == (225, 841, (14, 14))
    assert c.window == ((18, 46), (18, 46))
    # dilations 1, 2, 5 cover their 17 x 17 window
    hdc = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, padding=d) for d in (1, 2, 5)])
    c = convlens.analyze(hdc, (1, 1, 64, 64)).coverage("")
    assert (c.covered, c.pixels, c.holes, c.fraction) == (289, 289, (0, 0), 1.0)


def test_coverage_window_is_the_clipped_window_and_the_map_is_input_sized():
    model = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2, stride=2), nn.ReLU(), nn.Conv2d(4, 2, 3, dilation=3))
    report = convlens.analyze(model, (1, 3, 30, 28))
    for unit in [(0, 0), (3, 5), (7, 6)]:
        c = report.coverage("", unit)
        assert c.window == report[""].window(*unit)
        assert c.map.shape == (30, 28)
        assert c.covered == np.count_nonzero(c.map)


def test_global_paths_are_left_out_and_said_so():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3)

        def forward(self, x):
            y = self.conv(x)
            return y * torch.sigmoid(y.mean((2, 3), keepdim=True))

    c = convlens.analyze(SE(), (1, 2, 12, 12)).coverage("", (4, 4))
    assert c.window == ((4, 6), (4, 6)) and c.global_context
    assert any("global context" in n for n in c.notes)


def test_bad_requests_get_one_clear_error():
    head = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    report = convlens.analyze(head, (1, 1, 8, 8))
    with pytest.raises(convlens.ConvlensError, match="global along axis 0"):
        report.coverage("")
    with pytest.raises(convlens.ConvlensError, match="outside 0..5"):
        report.coverage("0", (6, 0))
    with pytest.raises(convlens.ConvlensError, match="one integer index per spatial axis"):
        report.coverage("0", (1,))
    with pytest.raises(convlens.ConvlensError, match="no row named"):
        report.coverage("nope")


def test_deep_counts_switch_to_float64_with_a_note():
    # 60 layers of 5x5: the centre count is about 5**60 per axis, far past int64
    deep = nn.Sequential(*[nn.Conv1d(1, 1, 5, padding=2) for _ in range(60)])
    c = convlens.analyze(deep, (1, 1, 300)).coverage("")
    assert not c.exact and c.counts.dtype == np.float64 and any("int64" in n for n in c.notes)
    shallow = nn.Sequential(*[nn.Conv1d(1, 1, 5, padding=2) for _ in range(20)])
    assert convlens.analyze(shallow, (1, 1, 300)).coverage("").exact


# --- random single-channel stacks ---------------------------------------------------------------

@st.composite
def _layer(draw):
    kind = draw(st.sampled_from(["conv", "conv", "transposed", "maxpool", "avgpool", "residual"]))
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 3))
    d = draw(st.integers(1, 3))
    if kind == "conv":
        return nn.Conv2d(1, 1, k, stride=s, padding=draw(st.integers(0, (d * (k - 1)) // 2)), dilation=d)
    if kind == "transposed":
        p = draw(st.integers(0, (d * (k - 1)) // 2))
        return nn.ConvTranspose2d(1, 1, k, stride=s, padding=p, dilation=d,
                                  output_padding=draw(st.integers(0, max(0, min(s, d) - 1))))
    if kind in ("maxpool", "avgpool"):
        k = max(k, 2)
        p = draw(st.integers(0, k // 2))
        return nn.MaxPool2d(k, s, p) if kind == "maxpool" else nn.AvgPool2d(k, s, p)
    return Residual(nn.Conv2d(1, 1, 2 * (k // 2) + 1, padding=d * (k // 2), dilation=d))


@settings(max_examples=40, deadline=None)
@given(layers=st.lists(_layer(), min_size=1, max_size=4), h=st.integers(6, 20), w=st.integers(6, 20))
def test_random_single_channel_stacks_count_paths_exactly(layers, h, w):
    model = nn.Sequential(*layers)
    try:
        out = model(torch.zeros(1, 1, h, w))
    except RuntimeError:
        return  # the stack shrinks the map below one position: nothing to count
    if out.numel() == 0:
        return
    _check_counts(model, (1, 1, h, w))
