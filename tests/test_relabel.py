"""Chains of ops that only move elements, read through an index map (rules.relabel), against the
oracle: the relative-position skew of BoTNet and HaloNet, and chains that do not come back to a
layout (named untracked, never a number)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convlens
from convlens.geometry import Local, Unknown
from checks import check_against_oracle


class RelativeLogits(nn.Module):
    """timm's relative-position logits (``rel_logits_1d``: pad, flatten, pad, reshape, slice) of a
    conv's features, along the width of the whole map (BoTNet) or of blocks of ``block`` positions
    (HaloNet, keys in a window of ``block + 2 * halo``), summed over the key offsets: each unit reads
    its own query only."""

    def __init__(self, block: int | None = None, halo: int = 1, size: int = 8, gated: bool = False):
        super().__init__()
        self.block, self.gated = block, gated
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        win = size if block is None else block + 2 * halo
        self.rel_k = nn.Parameter(torch.randn(2 * win - 1, 4))

    def forward(self, x):
        from timm.layers.halo_attn import rel_logits_1d

        q = self.conv(x)
        if self.gated:  # (squeeze-excitation's global context, as in ECA- and SE-BoTNet)
            q = q * torch.sigmoid(q.mean(dim=(2, 3), keepdim=True))
        b, c, h, w = q.shape
        if self.block is None:
            q = q.permute(0, 2, 3, 1)
        else:
            s = self.block
            q = q.view(b, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1).reshape(-1, s, s, c)
        logits = rel_logits_1d(q, self.rel_k, permute_mask=(0, 1, 3, 2, 4)).sum(dim=(3, 4))
        if self.block is None:
            return logits.unsqueeze(1)
        s = self.block
        return logits.view(b, h // s, w // s, s, s).permute(0, 1, 3, 2, 4).reshape(b, 1, h, w)


@pytest.mark.parametrize("block, gated", [(None, False), (4, False), (4, True)],
                         ids=["whole width", "blocks", "blocks after a gate"])
def test_the_relative_position_skew_reads_each_query(block, gated):
    model, shape = RelativeLogits(block, gated=gated).eval(), (1, 1, 8, 8)
    report = convlens.analyze(model, shape)
    assert all(isinstance(s, Local) for layer in report for s in layer.axes)
    assert not [n for n in report.notes if "untracked" in n]  # (the chain's steps, once it comes back)
    # (after the gate, the oracle's copy with global paths detached cuts the logits' product too:
    # there it bounds the windows from both sides)
    checked = check_against_oracle(model, shape, local_products=gated)
    assert checked.windows >= 2 and not checked.skipped, checked


class ShiftedRows(nn.Module):
    """A flattened map padded and reshaped: rows that hold padding (``ends`` "padding"), or every
    element moved one position along the flattened order (``ends`` "wrapped"), which no digits
    describe."""

    def __init__(self, ends: str):
        super().__init__()
        self.ends = ends
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        b, c, h, w = y.shape
        flat = y.flatten(2)
        if self.ends == "padding":
            return F.pad(flat, (0, w)).view(b, c, h + 1, w)
        return F.pad(flat, (1, 0))[..., :h * w].view(b, c, h, w)


@pytest.mark.parametrize("ends", ["padding", "wrapped"])
def test_a_chain_that_comes_back_to_no_layout_is_named(ends):
    model, shape = ShiftedRows(ends).eval(), (1, 1, 6, 4)
    report = convlens.analyze(model, shape)
    assert all(isinstance(s, Unknown) for s in report[""].axes)
    assert any("untracked" in n for n in report.notes)
    check_against_oracle(model, shape, rows=["conv"])
