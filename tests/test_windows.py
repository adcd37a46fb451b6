"""Attention within windows (issue 17): window partitions split a spatial axis into digits on the
batch and token dims (``rules.registry.Digit``); windows, coverage and tensor indices are checked
against the gradient oracle and torch's own indexing."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convlens
from convlens.geometry import Local
from checks import check_against_oracle


def partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, ws * ws, C), as timm's window_partition."""
    b, h, w, c = x.shape
    x = x.view(b, h // ws, ws, w // ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)


def reverse(t: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """(B * windows, ws * ws, C) -> (B, H, W, C), as timm's window_reverse."""
    c = t.shape[-1]
    x = t.view(-1, h // ws, w // ws, ws, ws, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class WindowAttention(nn.Module):
    """Attention within ws x ws windows of an NCHW map: padded to a multiple of the window (SAM,
    ViTDet), optionally shifted by ``shift`` (Swin: every pair a path, the float mask is not read),
    by ``q @ k^T`` and softmax or by SDPA."""

    def __init__(self, c: int = 4, ws: int = 4, shift: int = 0, sdpa: bool = False):
        super().__init__()
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.ws, self.shift, self.sdpa = ws, shift, sdpa

    def forward(self, x):
        b, c, h, w = x.shape
        ws = self.ws
        y = x.permute(0, 2, 3, 1)
        ph, pw = -h % ws, -w % ws
        y = F.pad(y, (0, 0, 0, pw, 0, ph))
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        t = partition(y, ws)
        q, k, v = self.qkv(t).reshape(t.shape[0], ws * ws, 3, 1, c).permute(2, 0, 3, 1, 4).unbind(0)
        if self.sdpa:
            o = F.scaled_dot_product_attention(q, k, v)
        else:
            o = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        o = self.proj(o.transpose(1, 2).reshape(-1, ws * ws, c))
        y = reverse(o, ws, h + ph, w + pw)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        return x + y[:, :h, :w].permute(0, 3, 1, 2)


CASES = {
    "windows": (WindowAttention(), (1, 3, 16, 12)),
    "sdpa": (WindowAttention(sdpa=True), (1, 3, 16, 12)),
    "padded": (WindowAttention(ws=5), (1, 3, 13, 11)),
    "shifted": (WindowAttention(shift=2), (1, 3, 16, 12)),
    "shifted, padded": (WindowAttention(ws=3, shift=1, sdpa=True), (1, 3, 10, 8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_window_attention_matches_the_oracle(name):
    block, shape = CASES[name]
    model = nn.Sequential(nn.Conv2d(shape[1], 4, 3, padding=1), block, nn.Conv2d(4, 4, 3, padding=1))
    checked = check_against_oracle(model, shape, big_shape=None)
    assert checked.windows > 0 and not [s for s in checked.skipped if "unknown" in s]


def test_a_unit_sees_its_whole_window_and_no_other():
    # one window attention, no conv: unit (h, w) sees exactly the 4 x 4 window that holds it
    report = convlens.analyze(WindowAttention(), (1, 4, 16, 12))
    layer = report[""]
    assert all(isinstance(s, Local) for s in layer.axes)
    for h, w in [(0, 0), (5, 6), (15, 11), (7, 8)]:
        assert layer.window(h, w) == ((h // 4 * 4, h // 4 * 4 + 3), (w // 4 * 4, w // 4 * 4 + 3))


class Partitioned(nn.Module):
    def forward(self, x):
        return partition(x.permute(0, 2, 3, 1), 4) * 1.0


def test_tensor_index_of_a_window_row_follows_torchs_indexing():
    """The input holds its own coordinates; after the partition, the element that tensor_index names
    for grid position (h, w) must hold (h, w)."""
    h, w = 8, 12
    layer = convlens.analyze(Partitioned(), (1, 2, h, w))[""]
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).float()[None]
    out = Partitioned()(coords)
    for u in [(0, 0), (3, 5), (7, 11), (4, 4)]:
        b, n, _ = layer.tensor_index(*u)
        assert out[b, n].tolist() == [float(u[0]), float(u[1])]
