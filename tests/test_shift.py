"""Shift equivariance, measured with the real model (convlens.shift_check)."""

from __future__ import annotations

import pytest
import torch.nn as nn

import convlens


def test_dilated_stack_without_pooling_follows_every_shift():
    model = nn.Sequential(*[m for d in (1, 2, 4) for m in (nn.Conv2d(2, 2, 3, padding=d, dilation=d), nn.ReLU())])
    result = convlens.shift_check(model, (1, 2, 40, 36), shift=5)
    for axis in result.axes:
        assert axis.equivariant and axis.smallest == 1
        assert max(axis.errors.values()) < 1e-6


@pytest.mark.parametrize("model, stride", [
    (nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2)), 4),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(3, stride=3)), 3),
])
def test_pooled_and_strided_nets_follow_only_multiples_of_their_stride(model, stride):
    result = convlens.shift_check(model, (1, 1, 48, 48), shift=2 * stride)
    for axis in result.axes:
        assert axis.smallest == stride and axis.stride == stride
        assert axis.errors[2 * stride] < 1e-6
        assert all(axis.errors[t] > 1e-3 for t in axis.errors if t % stride)  # measured, clearly off


def test_global_output_is_refused_with_a_hint():
    head = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(convlens.ConvlensError, match="before the global pooling"):
        convlens.shift_check(head, (1, 1, 16, 16))


class ChannelsLast(nn.Module):
    """A strided conv whose output is returned channels last (as a Swin or ConvNeXt stage's)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x).permute(0, 2, 3, 1)


def test_channels_last_rows_shift_along_their_own_dims():
    result = convlens.shift_check(ChannelsLast(), (1, 1, 40, 36), shift=4)
    for axis in result.axes:
        assert axis.smallest == 2 and axis.errors[2] < 1e-6 and axis.errors[1] > 1e-3


class Windows(nn.Module):
    """Windows of 4 x 4 folded into the batch dim: no dim holds an axis whole."""

    def forward(self, x):
        b, c, h, w = x.shape
        return x.view(b, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, 16) * 2


def test_a_window_row_is_refused_with_a_hint():
    with pytest.raises(convlens.ConvlensError, match="grid layout"):
        convlens.shift_check(Windows(), (1, 1, 16, 16))
