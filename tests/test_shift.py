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
