"""Attention masks (issue 17, point 3): a query-key pair that a constant additive mask of -80 or
less suppresses is no path, when convlens can read the mask (``rules.masks``). The oracle applies
the same convention independently: it reads the mask from the model as it runs and makes entries at
or below -80 ``-inf`` (tests/oracle.py, ``_masking``). A mask convlens cannot read removes no pair,
and the rows after it say so."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convlens
import convlens.capture
from convlens.geometry import Unknown
from checks import check_against_oracle
from test_windows import partition, reverse


def shift_mask(h: int, w: int, ws: int, shift: int, fill: float = -100.0) -> torch.Tensor:
    """timm's Swin mask, (windows, ws*ws, ws*ws): pairs from different regions of the rolled map
    get ``fill``."""
    regions = torch.zeros(1, h, w, 1)
    n = 0
    for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            regions[:, hs, wsl, :] = n
            n += 1
    windows = partition(regions, ws).squeeze(-1)
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, fill).masked_fill(diff == 0, 0.0)


class MaskedShiftedWindows(nn.Module):
    """Swin's shifted-window attention on an NCHW map with its mask, written out (scores + bias +
    mask, softmax, product with the values: timm's SwinV1 and V2, torchvision) or through SDPA with
    the mask as a float ``attn_mask``. The mask is a buffer (``persistent=False``), as in timm."""

    def __init__(self, h: int, w: int, c: int = 4, ws: int = 4, shift: int = 2, sdpa: bool = False,
                 fill: float = -100.0):
        super().__init__()
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.bias = nn.Parameter(torch.randn(ws * ws, ws * ws) * 0.02)  # (a relative-position bias)
        self.ws, self.shift, self.sdpa = ws, shift, sdpa
        self.register_buffer("mask", shift_mask(h, w, ws, shift, fill), persistent=False)

    def forward(self, x):
        b, c, h, w = x.shape
        ws = self.ws
        y = torch.roll(x.permute(0, 2, 3, 1), (-self.shift, -self.shift), dims=(1, 2))
        t = partition(y, ws)
        q, k, v = self.qkv(t).reshape(t.shape[0], ws * ws, 3, 1, c).permute(2, 0, 3, 1, 4).unbind(0)
        nw = self.mask.shape[0]
        if self.sdpa:
            mask = (self.bias + self.mask).unsqueeze(1).repeat(t.shape[0] // nw, 1, 1, 1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            attn = q @ k.transpose(-2, -1) * 0.5 + self.bias
            attn = attn.view(-1, nw, 1, ws * ws, ws * ws) + self.mask.unsqueeze(1).unsqueeze(0)
            o = attn.view(-1, 1, ws * ws, ws * ws).softmax(-1) @ v
        o = self.proj(o.transpose(1, 2).reshape(-1, ws * ws, c))
        y = torch.roll(reverse(o, ws, h, w), (self.shift, self.shift), dims=(1, 2))
        return x + y.permute(0, 3, 1, 2)


def _net(block: nn.Module, c_in: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, 4, 3, padding=1), block, nn.Conv2d(4, 4, 3, padding=1))


@pytest.mark.parametrize("sdpa", [False, True], ids=["written out", "sdpa"])
@pytest.mark.parametrize("fill", [-100.0, float("-inf")], ids=["-100", "-inf"])
def test_shifted_windows_with_their_mask_match_the_oracle(sdpa, fill):
    torch.manual_seed(0)
    shape = (1, 3, 12, 8)
    model = _net(MaskedShiftedWindows(12, 8, sdpa=sdpa, fill=fill)).eval()
    checked = check_against_oracle(model, shape)
    assert checked.windows > 0 and not [s for s in checked.skipped if "unknown" in s]
    # (the test can fail: the mask narrows the windows of the units the shift wrapped around)
    report = convlens.analyze(model, shape)
    assert report["1"].window(11, 7) != report["1"].window(6, 4)
    assert not [n for n in report.notes if "mask" in n]


def test_a_masked_border_unit_sees_only_its_own_region():
    # rolled by 2, windows of 4 on 12 rows: the last window holds original rows 10, 11 and 0, 1 -
    # which the mask keeps apart. A unit of the block in row 0 sees rows 0..1 of its input (through
    # the first 3x3 conv: rows 0..2 of the image), never the bottom border; one in row 11 rows 10..11
    # (9..11)
    torch.manual_seed(0)
    report = convlens.analyze(_net(MaskedShiftedWindows(12, 8)).eval(), (1, 3, 12, 8))
    (r0, r1), _ = report["1"].window(0, 4)
    assert (r0, r1) == (0, 2)
    (r0, r1), _ = report["1"].window(11, 4)
    assert (r0, r1) == (9, 11)


class Patterned(nn.Module):
    """Attention within 4 x 4 windows with a mask that keeps a checkerboard of pairs: no box."""

    def __init__(self, c: int = 4, ws: int = 4):
        super().__init__()
        self.qkv, self.ws = nn.Linear(c, 3 * c), ws
        i = torch.arange(ws * ws)
        self.register_buffer("mask", ((i[:, None] + i[None, :]) % 2 * -100.0), persistent=False)

    def forward(self, x):
        b, c, h, w = x.shape
        t = partition(x.permute(0, 2, 3, 1), self.ws)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        o = (q @ k.transpose(-2, -1) + self.mask).softmax(-1) @ v
        return reverse(o, self.ws, h, w).permute(0, 3, 1, 2)


def test_a_mask_that_is_no_box_is_named():
    # (along W the kept keys are every other one: holes inside the window)
    report = convlens.analyze(_net(Patterned()).eval(), (1, 3, 8, 8))
    assert isinstance(report["1"].axes[0], Unknown)
    assert any("holes inside the window" in n for n in report.notes)


class Diagonal(Patterned):
    """A mask that keeps the pairs whose row and column offsets are equal: no product of per-axis runs."""

    def __init__(self, c: int = 4, ws: int = 4):
        super().__init__(c, ws)
        i = torch.arange(ws * ws)
        r, col = i // ws, i % ws
        keep = (r[:, None] - r[None, :]) == (col[:, None] - col[None, :])
        self.mask = torch.zeros(ws * ws, ws * ws).masked_fill(~keep, float("-inf"))


def test_a_mask_that_no_box_per_axis_states_is_named():
    report = convlens.analyze(_net(Diagonal()).eval(), (1, 3, 8, 8))
    assert isinstance(report["1"].axes[0], Unknown)
    assert any("no box per axis" in n for n in report.notes)


class Causal(nn.Module):
    """Global attention along a 1-D sequence with a causal mask (SDPA's ``is_causal``)."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.qkv = nn.Conv1d(c, 3 * c, 1)

    def forward(self, x):
        q, k, v = self.qkv(x).transpose(1, 2).chunk(3, dim=-1)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)


def test_a_causal_mask_over_a_whole_axis_is_named_never_counted():
    report = convlens.analyze(nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), Causal()), (1, 2, 16))
    assert isinstance(report["1"].axes[0], Unknown)
    assert any("limits which keys a query sees over a whole axis" in n for n in report.notes)


def test_a_mask_convlens_cannot_read_counts_every_pair_and_says_so(monkeypatch):
    torch.manual_seed(0)
    shape = (1, 3, 12, 8)
    model = _net(MaskedShiftedWindows(12, 8)).eval()
    read = convlens.analyze(model, shape)
    monkeypatch.setattr(convlens.capture, "VALUE_LIMIT", 0)  # (no value kept)
    unread = convlens.analyze(model, shape)
    said = "an attention mask convlens does not read here: every query-key pair counts as a path"
    assert any(said in n for n in unread["1"].notes) and any(said in n for n in unread["2"].notes)
    assert any(said in n for n in unread.notes)
    assert not any(said in n for n in unread["0"].notes)
    # every pair of the window a path: the border unit sees the rows the shift wrapped around
    (r0, r1), _ = unread["1"].window(0, 4)
    assert (r0, r1) == (0, 11) and read["1"].window(0, 4)[0] == (0, 2)


def test_the_capture_keeps_the_masks_values_and_no_activation():
    torch.manual_seed(0)
    model = _net(MaskedShiftedWindows(12, 8)).eval()
    cap = convlens.capture.capture(model, (1, 3, 12, 8))
    kept = list(cap.values.values())
    assert any(v.shape == model[1].mask.unsqueeze(1).unsqueeze(0).shape and torch.equal(v, model[1].mask[None, :, None])
               for v in kept)
    assert all(v.device.type != "meta" for v in kept)


# Slim Swin configurations from torchvision (V1 and V2 blocks: the mask added to written-out scores).
TORCHVISION = {
    "swin": dict(),
    "swin v2": dict(v2=True),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_swin_with_its_masks_matches_the_oracle(name):
    from torchvision.models.swin_transformer import (PatchMergingV2, SwinTransformer, SwinTransformerBlockV2)

    torch.manual_seed(0)
    extra = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if TORCHVISION[name] else {}
    model = SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 1], window_size=[4, 4],
                            **extra).eval()
    shape = (1, 3, 48, 48)
    report = convlens.analyze(model, shape)
    assert not [n for n in report.notes if "mask" in n or "untracked" in n], report.notes
    rows = [layer.name for layer in report if layer.name in ("features.1", "features.3")]
    checked = check_against_oracle(model, shape, rows=rows)
    assert checked.windows >= len(rows) and not checked.skipped, checked
