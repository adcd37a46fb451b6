"""Networks the 10,000-network runs found convlens wrong on, kept as cases (expected values from the
oracle via checks.py, or torch's own indexing)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convlens
from convlens.geometry import Unknown
from checks import check_against_oracle
from oracle import probe


class AttentionAddedBack(nn.Module):
    """A global axis with positions (pooled, then padded by a conv) plus attention over them: the
    attention output reaches every position, padding ones included."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 1, padding=1)
        self.q, self.k, self.v = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        x = self.conv(F.adaptive_avg_pool1d(x, 1))
        t = x.transpose(1, 2)
        a = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), dim=-1)
        return x + (a @ self.v(t)).transpose(1, 2)


class GapsBeforeGlobalPool(nn.Module):
    """Every output of the transposed conv is a phase gap: the pooled value sees nothing."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=(2, 1), padding=(3, 0), dilation=2)

    def forward(self, x):
        return self.up(F.pixel_shuffle(x, 3)).mean((2, 3))


class LostLabel(nn.Module):
    """A size-1 axis through flatten and back loses its dim; then a pad, a cat, or a conv that keeps
    its size 1 but reads only padding (kernel 1, padding 1, stride 3), along it."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(1, 1, (2, 1), padding="same")
        self.shift = nn.Conv2d(1, 1, 1, stride=(1, 3), padding=(0, 1))

    def forward(self, x):
        y = x.flatten(2).unflatten(2, x.shape[2:])
        if self.kind == "pad":
            return F.pad(y, (1, 0))
        if self.kind == "shift":
            return self.shift(y)
        return torch.cat([y, self.conv(self.conv(y))], 3)


class LabelOnTwoDims(nn.Module):
    """A pooled-to-1 axis through a Linear, added to itself unchanged. The Linear's reshape
    (1, 1, 2) -> (1, 2) cannot tell the batch's size-1 dim from the axis's; it once put the label on
    the batch dim, so the sum carried the axis on two dims. Then a circular pad grows one of them
    and a roll moves it."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        y = F.adaptive_max_pool1d(x, 1)
        y = y + self.fc(y.transpose(1, 2)).transpose(1, 2)
        return torch.roll(F.pad(y, (1, 1), mode="circular"), -2, 2).mean(2)


class PaddedAfterLinear(nn.Module):
    """A pooled-to-1 axis through a Linear over channels (permuted there and back), then a conv that
    pads it to 3 positions: positions 0 and 2 read only padding. The Linear's reshape had put the
    axis's label on the batch dim, so the conv seemed to pad a plain dim and every position was
    reported as seeing the whole axis (the 10,000-network run, seed 16)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.conv = nn.Conv1d(2, 2, 1, padding=1)

    def forward(self, x):
        y = F.adaptive_max_pool1d(x, 1)
        return self.conv(self.fc(y.permute(0, 2, 1)).permute(0, 2, 1))


class WriteOverCatPieces(nn.Module):
    """A cat along channels of a pooled copy (windows of 3) and the input itself, then the pooled
    channels overwritten with a constant: the channels left see one pixel each, not the union over the
    cat (the 10,000-network run, seed 16: a unit there saw only padding). Named untracked."""

    def forward(self, x):
        y = torch.cat([F.avg_pool1d(x, 3, 1, 1), x], 1)
        y[:, :1] = 0.5
        return y


class AttendedTimesLocal(nn.Module):
    """Attention's output padded on the left (positions 0, 1 read only padding), times a conv that
    reaches those positions (the 10,000-network run, seed 16: the product was called global, and its
    positions 0, 1 reached by nothing real). Units 0 and 1 see only the conv's window, the others the whole axis: named
    untracked."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)
        self.conv = nn.Conv1d(2, 2, 3, padding=2)

    def forward(self, x):
        t = x.transpose(1, 2)
        o = (torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), -1) @ self.v(t)).transpose(1, 2)
        return F.pad(o, (2, 0)) * self.conv(x)


class CatGlobalPieces(nn.Module):
    """Pieces of a pooled-to-1 axis concatenated along it: each position comes from one piece."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, stride=2)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, (x.shape[2], 1))
        return torch.cat([y[:, :, : (x.shape[2] + 1) // 2], self.conv(y)], 3)


class LinearOnLastStep(nn.Module):
    """A TCN's head: the last time step (``select``) through a linear layer (found by the zoo tests)."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv1d(1, 4, 3), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(x)[:, :, -1])


def test_a_matrix_product_keeps_an_axis_held_at_one_position():
    model, shape = LinearOnLastStep(), (1, 1, 16)
    layer = convlens.analyze(model, shape)[""]
    assert layer.window(0) == tuple(probe(model, shape, unit=(0,), channel_dim=None).bbox)


class Resample(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, x):
        return F.interpolate(x, **self.kwargs)


@pytest.mark.parametrize("kwargs, shape", [
    # align_corners: src = 35 * (47 / 35) = 46.99999999999999 in double; torch's floorf rounds it to
    # float32 first and reads pixel 47 only
    (dict(scale_factor=(1, 0.75), mode="bilinear", align_corners=True), (1, 1, 2, 48)),
    (dict(scale_factor=(1, 0.75), mode="bicubic", align_corners=True), (1, 1, 2, 48)),
    # the size is kept (3 * 1.2 -> 3): torch copies instead of resampling
    (dict(scale_factor=1.2, mode="bilinear"), (1, 1, 3, 3)),
    (dict(scale_factor=1.2, mode="linear"), (1, 1, 3)),
    # nearest computes its scale in float32 whatever the dtype
    (dict(scale_factor=2.6, mode="nearest"), (1, 1, 16)),
    (dict(scale_factor=1.3, mode="nearest-exact"), (1, 1, 16)),
])
def test_resampling_indices_follow_torchs_float32_floor(kwargs, shape):
    checked = check_against_oracle(Resample(**kwargs), shape)
    assert checked.windows > 0


class ResampleFrom(Resample):
    """Outputs from ``start`` on, so that the probed first unit is output ``start`` of the resampling."""

    def __init__(self, start: int, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def forward(self, x):
        return super().forward(x)[..., self.start:]


@pytest.mark.parametrize("kwargs, shape", [
    # output 2: src = 0.2 * 2.5 - 0.5 is 0 rounded twice, 2.8e-17 as torch's fused multiply-add:
    # two taps
    (dict(scale_factor=5, mode="linear"), (1, 1, 3)),
    (dict(scale_factor=(1, 5), mode="bilinear"), (1, 1, 2, 3)),
    # bicubic's kernel is not fused: one tap there
    (dict(scale_factor=(1, 5), mode="bicubic"), (1, 1, 2, 3)),
    # bicubic copies only when no axis changes size (bilinear copies per axis)
    (dict(scale_factor=(1, 1.2), mode="bicubic"), (1, 1, 2, 4)),
    (dict(scale_factor=(1.2, 2), mode="bicubic"), (1, 1, 3, 4)),
    (dict(scale_factor=(1.2, 2), mode="bilinear"), (1, 1, 3, 4)),
])
def test_resampling_rounds_its_source_index_as_torch(kwargs, shape):
    checked = check_against_oracle(ResampleFrom(2, **kwargs), shape)
    assert checked.windows > 0


def _torch_taps(n_in: int, n_out: int, scale, mode: str, align: bool, dtype) -> list[tuple[int, int]]:
    """First and last input each output reads along the last axis, from torch's own gradient: batch
    row b asks for output b (the other axes keep their size 1)."""
    rank = {"linear": 1, "bilinear": 2, "bicubic": 2}[mode]
    x = torch.randn((n_out, 1) + (1,) * (rank - 1) + (n_in,), dtype=dtype, requires_grad=True)
    if scale is None:
        y = F.interpolate(x, size=(1,) * (rank - 1) + (n_out,), mode=mode, align_corners=align)
    else:
        y = F.interpolate(x, scale_factor=(1.0,) * (rank - 1) + (scale,), mode=mode, align_corners=align)
    y.reshape(n_out, n_out).diagonal().sum().backward()
    rows = [torch.nonzero(g).flatten().tolist() for g in x.grad.reshape(n_out, n_in)]
    return [(r[0], r[-1]) for r in rows]


@pytest.mark.parametrize("mode", ["linear", "bilinear", "bicubic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resampling_taps_match_torchs_gradient_on_every_output(mode, dtype):
    """Every output of every size from 1 to 24 inputs, at scale factors the generator draws and odd
    ones whose source index lands on an integer (5, 7, 1/3) or a hair off one (24 -> 168 in float32:
    a far bicubic weight rounds to 0), and at every output size up to 2 n + 2."""
    import numpy as np
    from convlens.rules.spatial import cubic_taps, linear_taps, resample_ratio

    ftype = np.float64 if dtype == torch.float64 else np.float32
    scales = [2, 3, 0.5, 1.5, 0.75, 2.5, 5, 7, 1.2, 0.3, 4.5, 1 / 3, 2 / 3, 11]
    wrong = []
    for align in (False, True):
        for n_in in range(1, 25):
            cases = [(s, int(n_in * s)) for s in scales] + [(None, o) for o in range(1, 2 * n_in + 3)]
            for scale, n_out in cases:
                if n_out < 1:
                    continue
                ratio = resample_ratio(n_in, n_out, scale, align)
                if mode == "bicubic":
                    fn = cubic_taps(n_in, n_out, scale, align, ftype, ratio, copy=n_out == n_in)
                else:
                    fn = linear_taps(n_in, n_out, scale, align, ftype, ratio)
                a, b, _ = fn(np.arange(n_out), True)
                got = list(zip(a.tolist(), b.tolist()))
                if got != _torch_taps(n_in, n_out, scale, mode, align, dtype):
                    wrong.append((align, n_in, n_out, scale))
    assert not wrong, wrong[:5]


class PaddedGlobalMerge(nn.Module):
    """Axis 1 pooled to one position and padded in two ways: at (u, 0) only the first piece is real,
    so the second one's (shifted) axis-0 window must not count there."""

    def forward(self, x):
        g = F.adaptive_avg_pool2d(x, (x.shape[2], 1))
        return F.pad(g, (0, 3)) + F.pad(g[:, :, 2:], (1, 2, 0, 2))


def test_pieces_that_read_only_padding_along_a_global_axis_are_named():
    model, shape = PaddedGlobalMerge(), (1, 1, 8, 6)
    check_against_oracle(model, shape)
    assert any("padded global axis" in note for note in convlens.analyze(model, shape).notes)


class PoolPiecesAlongTheOtherAxis(nn.Module):
    """Rows pooled after a cat along columns of pieces from different rows: units at columns 0..3 see
    rows 0..3 and the others rows 4..7, which no single span along the pooled axis says."""

    def forward(self, x):
        y = torch.cat([x[:, :, :4, :4], x[:, :, 4:, 4:]], dim=3)
        return y.mean(dim=2, keepdim=True) * 2


def test_a_reduction_over_pieces_with_different_spans_is_named():
    model, shape = PoolPiecesAlongTheOtherAxis(), (1, 1, 8, 8)
    check_against_oracle(model, shape)
    report = convlens.analyze(model, shape)
    assert report[""].rf[0] is None and any("pools pieces" in note for note in report.notes)


class ShuffleAfter(nn.Module):
    """pixel_shuffle of channels from a cat (or an unshuffle), with or without a dense conv between."""

    def __init__(self, kind: str, mix: bool):
        super().__init__()
        self.kind = kind
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(1, 2, 5, padding=6, dilation=3)
        self.mix = nn.Conv2d(4, 4, 1) if mix else nn.Identity()

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1) if self.kind == "cat" else F.pixel_unshuffle(x, 2)
        return F.pixel_shuffle(self.mix(y), 2)


@pytest.mark.parametrize("kind", ["cat", "unshuffle"])
def test_pixel_shuffle_of_channels_with_different_windows_is_named(kind):
    shape = (1, 1, 12, 12)
    unmixed = ShuffleAfter(kind, mix=False)
    check_against_oracle(unmixed, shape)
    assert any("pixel_shuffle of channels" in note for note in convlens.analyze(unmixed, shape).notes)
    mixed = ShuffleAfter(kind, mix=True)  # a dense conv between: every channel sees the union, exactly
    assert check_against_oracle(mixed, shape).windows > 0
    assert not any("pixel_shuffle" in note for note in convlens.analyze(mixed, shape).notes)


class ContextOnOnePiece(nn.Module):
    """Rows pooled over a cat along columns of two pieces with the same rows (1..3), one of which also
    carries a GroupNorm's statistics over rows 0..5: columns 0..3 see rows 0..5, columns 4..7 rows 1..3."""

    def __init__(self):
        super().__init__()
        self.gn = nn.GroupNorm(1, 1)

    def forward(self, x):
        pieces = [self.gn(x)[:, :, 1:4, :4], x[:, :, 1:4, 4:]]
        return torch.cat(pieces, dim=3).mean(dim=2, keepdim=True)


def test_a_reduction_over_pieces_with_context_on_some_is_named():
    model, shape = ContextOnOnePiece(), (1, 1, 6, 8)
    check_against_oracle(model, shape)
    # one span for the pooled rows cannot hold both: the oracle's (0, 5) at column 1, (1, 3) at column 5
    assert [probe(model, shape, unit=(0, v)).bbox[0] for v in (1, 5)] == [(0, 5), (1, 3)]
    report = convlens.analyze(model, shape)
    assert report[""].rf[0] is None and any("pools pieces" in note for note in report.notes)


def test_attention_output_reaches_every_position():
    model, shape = AttentionAddedBack(), (1, 2, 4)
    report = convlens.analyze(model, shape)
    for u in range(3):  # position 0 and 2 are the conv's padding, yet attention brings everything there
        assert report[""].window(u) == tuple(probe(model, shape, unit=(u,)).bbox)


class ContextOnlyThroughPadding(nn.Module):
    """x - mean(x) (global context), then a conv that reads only padding along W (kernel 1, stride 3,
    padding 2 over W = 1), then attention with a residual: neither the context nor anything else real
    reaches the attention, whose output is global over nothing real (the 10,000-network run, seed 17)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, stride=3, padding=(0, 2))
        self.q, self.k, self.v = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        y = self.conv(x - x.mean((2, 3), keepdim=True))
        t = y.flatten(2).transpose(1, 2)
        o = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), -1) @ self.v(t)
        return (t + o).transpose(1, 2).reshape(y.shape)


class CatAttentionBesideConv(nn.Module):
    """Attention's output (every unit sees the whole axis) and a conv's (local windows) concatenated along
    the axis: one tensor with both kinds of unit, named untracked (the 10,000-network run, seed 16)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 3)
        self.q, self.k, self.v = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        t = x.transpose(1, 2)
        o = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), -1) @ self.v(t)
        return torch.cat([o.transpose(1, 2), self.conv(x)], 2)


class AttentionOverOddPixels(nn.Module):
    """Attention over every other pixel (1, 3, 5, ...), upsampled and added to a 1x1 conv of every
    pixel: pixel 0 reaches unit 0 only through its own conv, not the others, so the sum is not global
    over one span (the 10,000-network run, seed 16); named untracked."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 2, 1)
        self.q, self.k, self.v = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        t = x[:, :, 1::2].transpose(1, 2)
        o = torch.softmax(self.q(t) @ self.k(t).transpose(1, 2), -1) @ self.v(t)
        return self.conv(x) + F.interpolate(o.transpose(1, 2), scale_factor=2)


@pytest.mark.parametrize("model, shape", [
    (ContextOnlyThroughPadding(), (1, 1, 4, 1)),
    (AttentionOverOddPixels(), (1, 2, 8)),
    (CatAttentionBesideConv(), (1, 2, 6)),
    (GapsBeforeGlobalPool(), (1, 18, 1, 1)),
    (LostLabel("pad"), (1, 1, 2, 1)),
    (LostLabel("cat"), (1, 1, 2, 1)),
    (LostLabel("shift"), (1, 1, 2, 1)),
    (LabelOnTwoDims(), (1, 2, 9)),
    (PaddedAfterLinear(), (1, 2, 5)),
    (WriteOverCatPieces(), (1, 1, 8)),
    (AttendedTimesLocal(), (1, 2, 6)),
    (CatGlobalPieces(), (1, 1, 3, 1)),
])
def test_found_by_long_runs(model, shape):
    checked = check_against_oracle(model, shape)
    assert checked.windows + len(checked.skipped) > 0


@pytest.mark.parametrize("model, shape", [(LostLabel("pad"), (1, 1, 2, 1)), (LostLabel("cat"), (1, 1, 2, 1)),
                                          (LostLabel("shift"), (1, 1, 2, 1)), (PaddedAfterLinear(), (1, 2, 5)),
                                          (WriteOverCatPieces(), (1, 1, 8)), (AttendedTimesLocal(), (1, 2, 6)),
                                          (CatGlobalPieces(), (1, 1, 3, 1)), (CatAttentionBesideConv(), (1, 2, 6)),
                                          (AttentionOverOddPixels(), (1, 2, 8))])
def test_untracked_cases_are_named(model, shape):
    report = convlens.analyze(model, shape)
    assert any("untracked" in note for note in report.notes), report.notes


def test_nearest_copies_or_halves_the_index_whatever_the_scale():
    # torch: out == 2 * in -> index v >> 1, even with scale_factor=2.5 (its own fast path)
    x = torch.arange(1.0, 2.0).reshape(1, 1, 1)
    y = F.interpolate(x, scale_factor=2.5, mode="nearest")
    assert y.shape[-1] == 2 and y.flatten().tolist() == [1.0, 1.0]

    class Up(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2.5, mode="nearest")

    assert convlens.analyze(Up(), (1, 1, 1))[""].stride == (Fraction(1, 2),)
    assert convlens.analyze(Up(), (1, 1, 4))[""].stride == (Fraction(2, 5),)


class PickAfterChannelWrite(nn.Module):
    """Found by the 10,000-network run (issue 12): channel 3 is written with a 3x3 conv, then channel
    1 alone, which that write never touched, is read. A unit's window is the union over its channels,
    so convlens cannot say what channel 1 alone sees: named, not the union (which is too wide)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.c0, self.c1 = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        if self.kind == "write":
            y = x.clone()
            y[:, 3:4].mul_(self.c0(x[:, 3:4]))
        else:
            y = torch.cat([x[:, :3], self.c0(x[:, 3:4])], 1)
        return self.c1(y[:, 1:2])


def test_a_channel_pick_after_channels_saw_different_windows_is_named():
    report = convlens.analyze(PickAfterChannelWrite("write"), (1, 5, 6, 7))
    assert all(isinstance(s, Unknown) for s in report["c1"].axes)
    assert any("picks channels" in note for note in report.notes), report.notes
    checked = check_against_oracle(PickAfterChannelWrite("write"), (1, 5, 6, 7))
    assert checked.windows > 0  # the rows before the pick still match the oracle


def test_a_channel_pick_after_a_cat_sees_its_piece():
    """The same pick after a cat (issue 17's channel pieces): channel 1 came from the input, so c1
    sees its own 3x3 window alone, not c0's too, and the oracle agrees on every row."""
    report = convlens.analyze(PickAfterChannelWrite("cat"), (1, 5, 6, 7))
    assert report["c1"].rf == (3, 3)
    checked = check_against_oracle(PickAfterChannelWrite("cat"), (1, 5, 6, 7), big_shape=(1, 5, 30, 30))
    assert not checked.skipped and checked.windows > 0


class OneUnitMerge(nn.Module):
    """Two 5-tap convs over a 5-sample input, one with stride 1 and one with stride 2: each gives one
    unit, with the same window [0, 4] and the same centre, so only the strides tell them apart."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(1, 1, 5, stride=1)
        self.b = nn.Conv1d(1, 1, 5, stride=2)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_a_merge_one_unit_long_with_different_strides_is_misaligned():
    # DESIGN: a merge is aligned when its inputs share stride and centres. Here the centres agree at
    # the one unit there is; the strides (1 and 2, the convs' own) do not.
    net = OneUnitMerge()
    with torch.no_grad():
        assert net.a(torch.zeros(1, 1, 5)).shape[-1] == net.b(torch.zeros(1, 1, 5)).shape[-1] == 1
    report = convlens.analyze(net, (1, 1, 5))
    assert report["a"].window(0) == report["b"].window(0) == ((0, 4),)
    assert report[""].aligned is False
    note = next(n for n in report[""].notes if n.startswith("misaligned merge"))
    assert "stride 1," in note and "stride 2," in note, note


class GappedSums(nn.Module):
    """A piece with phase gaps (a transposed conv of stride 2) summed with a copy of itself, again and
    again: each sum would double the pieces kept apart (found by the survey: NASNet's cells made
    83,208 copies of 8 pieces, 175 s for one analysis)."""

    def __init__(self, sums: int = 12):
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 1, 1, stride=2)
        self.sums = sums

    def forward(self, x):
        y = self.up(x)
        for _ in range(self.sums):
            y = y + F.avg_pool2d(y, 1)
        return y


def test_equal_pieces_are_kept_once():
    model, shape = GappedSums(), (1, 1, 5, 5)
    report = convlens.analyze(model, shape)
    parts = report.analysis.geometry.geoms[report[""].tensor].windows.parts
    assert len(parts) == 1
    check_against_oracle(model, shape)


class WriteIntoPartlyReached(nn.Module):
    """Found by the 10,000-network run (issue 17's session): a map of the global mean that real values
    reach at one row only (a transposed conv's gaps), and a write, into every other column, of a conv
    of it that reaches every row. The units reached are a union of boxes (row 1, or the written
    columns); one reach per axis would claim every unit of every row and column. Named untracked."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(1, 1, 5, stride=2, padding=(3, 0), dilation=2, output_padding=(0, 1))
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        v = self.up(x.mean((2, 3), keepdim=True))
        y = v.clone()
        y[..., 1::2] = self.conv(v)[..., 1::2]
        return y


def test_a_write_into_a_partly_reached_map_is_named():
    report = convlens.analyze(WriteIntoPartlyReached(), (1, 1, 6, 6))
    assert all(isinstance(s, Unknown) for s in report[""].axes)
    assert any("several axes" in note for note in report.notes), report.notes
    assert check_against_oracle(WriteIntoPartlyReached(), (1, 1, 6, 6)).windows > 0


class NormOverPaddedUnits(nn.Module):
    """Found by the 10,000-network run (issue 17's session): a conv with padding 1 and kernel 1 over
    attention's output (which sees the whole input) leaves its two border units with padding alone, and a group norm
    after it gives every unit its statistics, which real values reach: every unit sees the input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 1, 1, padding=1)
        self.norm = nn.GroupNorm(1, 1)

    def forward(self, x):
        t = x.transpose(1, 2)
        return self.norm(self.conv(F.scaled_dot_product_attention(t, t, t).transpose(1, 2)))


def test_a_norm_reaches_units_that_read_only_padding():
    report = convlens.analyze(NormOverPaddedUnits(), (1, 2, 10))
    assert report["conv"].window(0) is None and report["norm"].window(0) == ((0, 9),)
    assert check_against_oracle(NormOverPaddedUnits(), (1, 2, 10)).windows > 0


class PaddingPieceFolded(nn.Module):
    """Found by the 10,000-network run (issue 17's session; wrong since windows were kept as pieces):
    a shifted copy that is all padding in the row a slice keeps, then a mean over the rows. The
    copy's piece reaches no real row, so none of its columns reach any unit; once the rows were
    pooled, convlens forgot that and gave each unit the copy's column too."""

    def forward(self, x):
        shifted = F.pad(x[:, :, :1, :5], (1, 0, 0, 1))  # row 1 all padding; column w reads column w - 1
        return (x + shifted)[:, :, 1:].mean(2, keepdim=True)


def test_a_piece_that_is_padding_along_a_pooled_axis_reaches_no_unit():
    report = convlens.analyze(PaddingPieceFolded(), (1, 1, 2, 6))
    assert [report[""].window(0, u) for u in range(3)] == [((1, 1), (u, u)) for u in range(3)]
    assert check_against_oracle(PaddingPieceFolded(), (1, 1, 2, 6)).windows > 0


class CatOfLocalAndGlobalRows(nn.Module):
    """Found by the 10,000-network run (issue 17's session; wrong since cats along a spatial axis were
    piecewise): rows of a 1x1 conv's map stacked on rows that see the whole of W (attention along
    each row). The units of the first rows see one column, those of the last every column; one state
    per axis cannot hold both, and convlens gave every unit all of W. Named untracked."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        rows = x.permute(0, 2, 3, 1)  # (N, H, W, C): attention among the columns of each row
        return torch.cat([self.conv(x), F.scaled_dot_product_attention(rows, rows, rows).permute(0, 3, 1, 2)], 2)


def test_a_cat_of_rows_that_see_one_column_and_rows_that_see_all_is_named():
    report = convlens.analyze(CatOfLocalAndGlobalRows(), (1, 1, 3, 4))
    assert all(isinstance(s, Unknown) for s in report[""].axes)
    assert any("some see the whole of another axis" in note for note in report.notes), report.notes
    assert check_against_oracle(CatOfLocalAndGlobalRows(), (1, 1, 3, 4)).windows > 0


class OnePositionHeldNowhere(nn.Module):
    """An axis of one position that a linear over the flattened grid holds on no dim, added to the
    input: on a larger input both terms move with the unit, but here the linear's term is one pinned
    position, so the sum's windows off the real units (which the padding reads) are not the larger
    input's."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(2, 2)

    def forward(self, x):
        y = x + self.mix(x.movedim(1, -1)).movedim(-1, 1)
        return F.max_pool2d(F.pad(y, (1, 2)), (1, 2), stride=1, padding=(0, 1))


def test_a_pinned_position_leaves_the_unbounded_geometry_unknown():
    model, shape = OnePositionHeldNowhere(), (1, 2, 7, 1)
    # (the larger input is probed for rf, stride and offset of every axis whose stride is given; the
    # windows at this size are checked either way)
    check_against_oracle(model, shape, big_shape=(1, 2, 7, 33))
    layer = convlens.analyze(model, shape)[""]
    assert layer.stride[1] is None and layer.rf[1] is None and layer.offset[1] is None


class FilledWithAStep(nn.Module):
    """A region written through a slice whose step is longer than its dim of one position (a pooled
    axis): the region is the whole dim, so the parent's values there are gone."""

    def forward(self, x):
        g = F.adaptive_avg_pool2d(x, (1, x.shape[3]))
        y = g.clone()
        y[:, :, ::2, :4].fill_(0.5)
        return torch.cat([g, y], dim=3)


def test_a_region_whose_step_passes_a_dim_of_one_position_covers_it():
    model, shape = FilledWithAStep(), (1, 2, 6, 5)
    check_against_oracle(model, shape)
    assert convlens.analyze(model, shape)[""].window(0, 5) is None  # (filled: it sees nothing)


class AttendedRowBeforeTheGrid(nn.Module):
    """A row pooled over H, attended along W (a global axis that keeps its positions), put before the
    grid by a cat along H as an extra token: it reaches no unit of the grid."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        row = x.mean(dim=2, keepdim=True)
        t = row.flatten(2).transpose(1, 2).unsqueeze(1)
        row = F.scaled_dot_product_attention(t, t, t).squeeze(1).transpose(1, 2).unsqueeze(2)
        return torch.cat([row, self.conv(x)], dim=2)


def test_an_extra_token_with_a_global_axis_beside_the_grid():
    model, shape = AttendedRowBeforeTheGrid(), (1, 2, 5, 6)
    report = convlens.analyze(model, shape)
    assert report[""].output_shape == (1, 2, 6, 6)
    check_against_oracle(model, shape)


class WrittenAlongAnAttendedAxis(nn.Module):
    """Found by window stages drawn more often (session 12; wrong since writes into a region were
    piecewise): attention along the columns of each row (every unit sees all of W), then a 3x3 conv's
    values written into the last column. Units there see three rows, the others their own; windows
    per axis cannot hold both, and convlens gave every unit three rows. Named untracked."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        rows = x.permute(0, 2, 3, 1)  # (N, H, W, C)
        y = F.scaled_dot_product_attention(rows, rows, rows).permute(0, 3, 1, 2)
        out = y.clone()
        out[..., -1:] = self.conv(y)[..., -1:]
        return out


def test_a_write_along_an_axis_its_units_see_whole_is_named():
    model, shape = WrittenAlongAnAttendedAxis(), (1, 1, 4, 3)
    report = convlens.analyze(model, shape)
    assert isinstance(report[""].axes[0], Unknown)
    assert any("joins pieces along an axis its units see whole" in note for note in report.notes), report.notes
    assert check_against_oracle(model, shape).windows > 0


class StrideOnALostAxis(nn.Module):
    """Found by the 10,000-network run (seed 17): a kernel of the axis's size leaves one position, a
    flatten and reshape back lose its label, and a conv strides 2 along it. One position here, but a
    stride of 2 on a larger input, where convlens said 1. Named untracked."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Conv2d(1, 2, (4, 3)), nn.Conv2d(2, 2, 1, stride=(2, 1))

    def forward(self, x):
        y = self.first(x)
        return self.second(y.flatten(2).reshape(y.shape))


def test_a_stride_along_an_axis_that_lost_its_label_is_named():
    model, shape = StrideOnALostAxis(), (1, 1, 4, 8)
    report = convlens.analyze(model, shape)
    assert isinstance(report["second"].axes[0], Unknown)
    check_against_oracle(model, shape, big_shape=(1, 1, 24, 16))


class GatedRowsPadded(nn.Module):
    """Found by the 10,000-network run (seed 17, in 3-D): a gate pooled along W (it sees the whole of W
    and rows of H) scales a conv, the result is padded along W and put beside real values by a cat
    along channels. The padding's units read nothing of the gate, but its part, which holds no W,
    gave them the conv's rows. Named untracked."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y = y * torch.sigmoid(y.mean(3, keepdim=True))
        return torch.cat([F.pad(y, (0, 3)), F.pad(x, (3, 0))], 1)


def test_padding_beside_a_piece_that_sees_a_whole_axis_is_named():
    model, shape = GatedRowsPadded(), (1, 1, 4, 6)
    report = convlens.analyze(model, shape)
    assert all(isinstance(s, Unknown) for s in report[""].axes)
    assert any("units that read only padding along an axis a piece sees whole" in note for note in report.notes)
    check_against_oracle(model, shape)


class WindowsInTransposedOrder(nn.Module):
    """Found in review (session 12; wrong since attention within windows): queries in windows ordered
    (row, column), keys and values in windows ordered (column, row). The product pairs window (i, j)'s
    queries with window (j, i)'s keys, where matching the digits axis by axis read each query's own
    window (unit (0, 3) saw rows 0-1 and columns 2-3; the oracle says all four of each). Named
    untracked."""

    def forward(self, x):
        n, c, h, w = x.shape
        blocks = x.reshape(n, c, h // 2, 2, w // 2, 2)
        q = blocks.permute(0, 2, 4, 3, 5, 1).reshape(-1, 4, c)
        k = blocks.permute(0, 4, 2, 3, 5, 1).reshape(-1, 4, c)
        o = torch.softmax(q @ k.transpose(1, 2), -1) @ k
        return o.reshape(n, h // 2, w // 2, 2, 2, c).permute(0, 5, 1, 3, 2, 4).reshape(n, c, h, w)


def test_blocks_paired_in_another_order_are_named():
    model, shape = WindowsInTransposedOrder(), (1, 2, 4, 6)
    report = convlens.analyze(model, shape)
    assert all(isinstance(s, Unknown) for s in report[""].axes), report.notes
    assert any("blocks in different orders" in note for note in report.notes), report.notes
    check_against_oracle(model, shape)


class LiveTokensFirst(nn.Module):
    """The same activation on two token maps of one shape: first one whose class token has seen the
    patches (statistics over the tokens), then one whose class token is still the constant it was.
    The second stays constant (one input's pointwise plans are reused: their key must tell live
    extra tokens from constant ones, which the dims' equality does not)."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.proj = nn.Conv2d(3, 8, 4, 4)

    def forward(self, x):
        t = self.proj(x).flatten(2).transpose(1, 2)
        a = torch.cat([self.cls.expand(1, -1, -1), t], 1)
        seen = torch.relu(a + a.mean(1, keepdim=True))
        still = torch.relu(a)
        return still[:, 0], seen[:, 0]


def test_constant_extra_tokens_after_live_ones_of_the_same_shape_stay_constant():
    check_against_oracle(LiveTokensFirst(), (1, 3, 16, 16))


class GlobalRowWritten(nn.Module):
    """A global map whose rows 1 and 3 only padding reaches (a transposed conv's phase gaps over a
    pooled value), one reached row multiplied in place by a row of another global map (a select),
    then the gap rows cropped: nothing real reaches what is left. The written value, global and
    held on no dim, reaches the written row alone, not every row."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 2, (5, 3), stride=2, padding=(2, 1), output_padding=(0, 1), dilation=(2, 1))
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        g = self.up(F.adaptive_avg_pool2d(x, 1))
        y = g.clone()
        y.select(2, 2).mul_(self.conv(g).select(2, 3))
        return y[:, :, 1::2]


def test_a_global_value_written_into_one_row_reaches_that_row_alone():
    check_against_oracle(GlobalRowWritten(), (1, 2, 15, 23))
