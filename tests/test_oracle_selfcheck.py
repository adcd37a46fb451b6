"""Self-checks of the gradient oracle (tests/oracle.py) against facts worked out by hand here.

Each expected value is derived in the comment next to it from the op's definition, not from the
oracle or from convlens.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from oracle import linearized, probe, probe_many, torch_shapes, unbounded_geometry


def test_conv3x3_corner_unit():
    # out[0,0] = sum over x[0..2, 0..2]
    r = probe(nn.Conv2d(2, 3, 3), (1, 2, 8, 8), unit=(0, 0))
    assert r.bbox == [(0, 2), (0, 2)]
    assert r.support.sum() == 9
    assert r.shape == (1, 3, 6, 6)


def test_padded_conv_corner_is_clipped():
    # padding 1: window(0) = [-1, 1]; the real pixels in it are [0, 1]
    r = probe(nn.Conv2d(1, 1, 3, padding=1), (1, 1, 6, 6), unit=(0, -1))
    assert r.bbox == [(0, 1), (4, 5)]


def test_two_convs_rf5():
    m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3))
    g = unbounded_geometry(m, (1, 1, 24, 24), None, 0)
    # window(u) = [u, u + 4]: rf 5, stride 1, centre u + 2
    assert (g.rf, g.stride, g.offset) == (5, Fraction(1), Fraction(2))


def test_dilated_conv_gridding():
    # taps at 0, 2, 4 per axis: 9 pixels in a 5x5 box
    r = probe(nn.Conv2d(1, 1, 3, dilation=2), (1, 1, 9, 9), unit=(0, 0))
    assert r.bbox == [(0, 4), (0, 4)]
    assert r.support.sum() == 9
    assert r.support[::2, ::2][:3, :3].all()


def test_maxpool_then_conv():
    m = nn.Sequential(nn.MaxPool2d(2, 2), nn.Conv2d(1, 2, 3))
    # conv unit v sees pool units v..v+2, pool unit w sees [2w, 2w+1]: window [2v, 2v+5]
    g = unbounded_geometry(m, (1, 1, 40, 40), None, 1)
    assert (g.rf, g.stride, g.offset) == (6, Fraction(2), Fraction(5, 2))


def test_conv_transpose_stride_half():
    # o = 2i + t, t in 0..2: even o = 2m sees inputs m-1, m; odd o = 2m+1 sees m only
    g = unbounded_geometry(nn.ConvTranspose2d(1, 1, 3, stride=2), (1, 1, 20, 20), None, 0)
    assert g.stride == Fraction(1, 2) and g.period == 2
    assert g.rf == 2
    # centre - o/2: even m - 1/2 - m, odd m - (m + 1/2): both -1/2
    assert g.offset == Fraction(-1, 2)


def test_conv_transpose_phase_gaps_are_unreachable():
    # kernel 1 < stride 3: only o = 3i is reached; units 3i+1, 3i+2 have no support
    m = nn.ConvTranspose1d(1, 1, 1, stride=3)
    rs = probe_many(m, (1, 1, 6), units=[(0,), (1,), (2,), (3,)])
    assert [r.bbox for r in rs] == [[(0, 0)], None, None, [(1, 1)]]


class _NegRelu(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.relu = nn.ReLU()
        self.kind = kind

    def forward(self, x):
        y = self.conv(x) - 1e6  # a constant, not a parameter: linearization cannot make it positive
        if self.kind == "F.relu":
            return F.relu(y)
        if self.kind == "nn.ReLU":
            return self.relu(y)
        if self.kind == "relu_":
            return y.relu_()
        if self.kind == "clamp":
            return torch.clamp(y, min=0)
        if self.kind == "inplace kw":
            F.relu(y, inplace=True)
            return y
        if self.kind == "hardtanh":
            return F.hardtanh(y, 0.0, 1.0)
        raise AssertionError(self.kind)


@pytest.mark.parametrize("kind", ["F.relu", "nn.ReLU", "relu_", "clamp", "inplace kw", "hardtanh"])
def test_relu_on_negative_path_is_linearized(kind):
    m = _NegRelu(kind)
    x = torch.randn(1, 1, 7, 7, requires_grad=True)
    m(x)[0, :, 3, 3].sum().backward()
    assert x.grad.abs().sum() == 0  # the real net: no gradient at all
    assert probe(m, (1, 1, 7, 7)).bbox == [(2, 4), (2, 4)]


def test_inplace_on_identity_result_does_not_touch_input():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(1, 1, 3, padding=1)
            self.b = nn.Conv1d(1, 1, 1)

        def forward(self, x):
            y = self.a(x)
            z = F.relu(y)  # out-of-place: z is a new tensor in the real net
            z += self.b(x)  # must not modify y
            return y  # y sees 3 pixels only

    assert probe(M(), (1, 1, 9)).bbox == [(3, 5)]


class _Signed(nn.Module):
    """conv(x) combined with a second branch by a signed or product op (1-D)."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.a = nn.Conv1d(1, 1, 3, padding=1)
        self.up = nn.ConvTranspose1d(1, 1, 1, stride=2, bias=False)  # zero at odd outputs

    def forward(self, x):
        y = self.a(x)
        if self.kind == "x - relu(x)":
            return y - F.relu(y)
        if self.kind == "-x + x":
            return -y + y
        if self.kind == "x.sub_(x)":
            return y.clone().sub_(y)
        up = self.up(x[..., : x.shape[-1] // 2])  # length 2 * (n // 2) - 1: even outputs read x
        y = y[..., : up.shape[-1]]
        if self.kind == "a * gap":
            return y * up
        if self.kind == "a / gap":
            return y / (up + 1)
        if self.kind == "torch.mul(gap, a)":
            return torch.mul(up, y)
        y *= up
        return y


@pytest.mark.parametrize("kind", ["x - relu(x)", "-x + x", "x.sub_(x)"])
def test_differences_do_not_cancel(kind):
    m = _Signed(kind)
    if kind != "x - relu(x)":  # min(x, 0): the real net has a gradient, its linearization would not
        x = torch.randn(1, 1, 9, requires_grad=True)
        m(x)[0, 0, 4].backward()
        assert x.grad.abs().sum() == 0  # exactly 0 as is
    # conv 3, padding 1: unit 4 reads [3, 5]; a path exists, values ignored (DESIGN)
    assert probe(m, (1, 1, 9), unit=(4,)).bbox == [(3, 5)]


@pytest.mark.parametrize("kind", ["a * gap", "a / gap", "torch.mul(gap, a)", "a *= gap"])
def test_products_keep_paths_through_a_zero_factor(kind):
    # up[o] = w * x[o / 2] at even o, exactly 0 at odd o (no bias); unit 3 of the product reads
    # a's window [2, 4] and nothing of up: the real product's gradient there is 0
    m = _Signed(kind)
    x = torch.randn(1, 1, 12, requires_grad=True)
    if kind != "a / gap":
        m(x)[0, 0, 3].backward()
        assert x.grad.abs().sum() == 0
    assert probe(m, (1, 1, 12), unit=(3,)).bbox == [(2, 4)]
    # unit 4: a's window [3, 5] and up's tap x[2]
    assert probe(m, (1, 1, 12), unit=(4,)).bbox == [(2, 5)]


class _ChannelsReadAlike(nn.Module):
    """Channel 0 reads x[u], channel 1 reads x[u] and x[u - 1]; a layer norm over the channels then
    centres them. A norm is blind to a shift of its whole group, so run as is its
    gradient at x[u] is zero but for rounding (exactly zero in a 3-D net of the 10,000-network run),
    although x[u] has a path (DESIGN: windows are paths)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.LayerNorm(2)

    def forward(self, x):
        y = torch.cat([x, x + F.pad(x[..., :-1], (1, 0))], 1)
        return self.norm(y.movedim(1, -1)).movedim(-1, 1)


def test_norms_keep_a_path_their_whole_group_reads_alike():
    grad = probe(_ChannelsReadAlike(), (1, 1, 8), unit=(3,)).grad
    assert grad[3] > 1e-6 * grad.max()  # not a rounding residue: the linearized norm keeps the path


class _NormalizedBesidePadding(nn.Module):
    """x beside a channel of zero padding, normalized over the channels: every position holds
    (x / |x|, 0) = (sign x, 0), a constant, so the real gradient is zero although each output reads
    its own pixel (a path, DESIGN)."""

    def forward(self, x):
        return F.normalize(torch.cat([x, torch.zeros_like(x)], 1), dim=1)


def test_normalize_keeps_the_path_of_a_constant_result():
    # output position 3 reads input position 3 alone, with a gradient of order 1 (a constant's real
    # gradient is zero up to rounding, about 1e-16)
    found = probe(_NormalizedBesidePadding(), (1, 1, 8), unit=(3,))
    assert found.bbox == [(3, 3)] and found.grad[3] > 1e-3


class _AttentionOverOneToken(nn.Module):
    """A 3-tap conv, pooled to one position, then attention over that one token."""

    def __init__(self):
        super().__init__()
        self.conv, self.qkv = nn.Conv1d(2, 2, 3), nn.Linear(2, 6)

    def forward(self, x):
        t = F.avg_pool1d(self.conv(x)[..., :3], 3).transpose(1, 2)  # (1, 1 token, 2): reads x[0..4]
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return (torch.softmax(q @ k.transpose(1, 2), dim=-1) @ v).transpose(1, 2)


@pytest.mark.parametrize("detach_global", [False, True])
def test_attention_over_one_token_is_no_global_path(detach_global):
    # the weight of the only key is 1, the output is its value: positions 0..4 (conv taps 0..2 of
    # units 0..2), which the copy with global paths cut keeps too (its products over one position
    # mix nothing)
    (res,) = probe_many(_AttentionOverOneToken(), (1, 2, 9), units=[(0,)], detach_global=detach_global)
    assert res.bbox == [(0, 4)]


def test_bilinear_upsample_x2():
    # src = o/2 - 1/4: o = 2m sees m-1, m; o = 2m+1 sees m, m+1
    g = unbounded_geometry(nn.Upsample(scale_factor=2, mode="bilinear"), (1, 1, 16, 16), None, 0)
    assert (g.rf, g.stride) == (2, Fraction(1, 2))
    # centres - o/2: even -1/2, odd 0
    assert g.offset == Fraction(-1, 4)


def test_bicubic_negative_taps_do_not_cancel():
    # 4 taps floor(src)-1 .. floor(src)+2, all weights nonzero at src = o/2 - 1/4
    g = unbounded_geometry(nn.Upsample(scale_factor=2, mode="bicubic"), (1, 1, 16, 16), None, 1)
    assert (g.rf, g.stride, g.offset) == (4, Fraction(1, 2), Fraction(-1, 4))


def test_resnet_basic_block_rf5():
    from torchvision.models.resnet import BasicBlock

    # two 3x3 convs (padding 1) in series, identity shortcut in parallel: [u-2, u+2]
    g = unbounded_geometry(BasicBlock(4, 4), (1, 4, 20, 20), None, 0)
    assert (g.rf, g.stride, g.offset) == (5, Fraction(1), Fraction(0))


def test_strided_conv_stride_offset():
    # window(u) = [2u - 1, 2u + 1], centre 2u
    g = unbounded_geometry(nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 1, 40, 40), None, 0)
    assert (g.rf, g.stride, g.offset) == (3, Fraction(2), Fraction(0))


def test_max_pool_variants():
    # dilation 2, padding 1, stride 2, ceil_mode: output o covers 2o - 1 + {0, 2, 4}
    m = nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True)
    assert F.max_pool1d(torch.zeros(1, 1, 11), 3, 2, 1, 2, True).shape[-1] == 5
    rs = probe_many(m, (1, 1, 11))
    got = [np.nonzero(r.support)[0].tolist() for r in rs]
    assert got == [[1, 3], [1, 3, 5], [3, 5, 7], [5, 7, 9], [7, 9]]
    # functional call with return_indices
    r = probe(lambda_module(lambda x: F.max_pool2d(x, 3, 2, return_indices=True)[0]), (1, 1, 9, 9), unit=(1, 2))
    assert r.bbox == [(2, 4), (4, 6)]


def test_adaptive_max_lp_pool_and_unpool():
    # adaptive n -> o: unit i sees [floor(i*n/o), ceil((i+1)*n/o)): 7 -> 3, i=1: [2, 5); 7 -> 2, i=1: [3, 7)
    r = probe(nn.AdaptiveMaxPool2d((3, 2)), (1, 1, 7, 7), unit=(1, 1))
    assert r.bbox == [(2, 4), (3, 6)]
    r = probe(nn.LPPool2d(2, 3, 2), (1, 1, 9, 9), unit=(1, 1))
    assert r.bbox == [(2, 4), (2, 4)]

    class U(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2, 2, return_indices=True)
            self.unpool = nn.MaxUnpool2d(2, 2)

        def forward(self, x):
            y, i = self.pool(x)
            return self.unpool(y, i)

    # every position of the 2x2 unpool window receives from pool unit 1, which sees [2, 3]
    r = probe(U(), (1, 1, 8, 8), unit=(3, 2))
    assert r.bbox == [(2, 3), (2, 3)] and r.support.sum() == 4


def test_ones_mode_counts_paths():
    m = nn.Sequential(nn.Conv2d(1, 1, 3), nn.BatchNorm2d(1), nn.Conv2d(1, 1, 3))
    r = probe(m, (1, 1, 9, 9), unit=(2, 2), weights="ones")
    tri = np.array([1, 2, 3, 2, 1.0])  # [1,1,1] * [1,1,1] per axis
    assert np.array_equal(r.grad[2:7, 2:7], np.outer(tri, tri))
    assert r.grad.sum() == 81
    # sum pooling: average and max pooling both count 4 paths per 2x2 window
    for pool in (nn.AvgPool2d(2), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(4)):
        r = probe(nn.Sequential(pool), (1, 1, 8, 8), unit=(1, 1), weights="ones")
        assert r.grad.sum() == 4 and r.bbox == [(2, 3), (2, 3)]


def test_layer_names_and_outputs():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return {"a": self.c(self.c(x)), "b": x}

    m = Twice()
    assert probe(m, (1, 1, 9, 9), "c").bbox == [(3, 5), (3, 5)]
    assert probe(m, (1, 1, 9, 9), "c#2").bbox == [(2, 6), (2, 6)]
    assert probe(m, (1, 1, 9, 9), "", output_index="a").bbox == [(2, 6), (2, 6)]
    assert probe(m, (1, 1, 9, 9), "[b]").bbox == [(4, 4), (4, 4)]
    assert torch_shapes(m, (1, 1, 5, 5), all_calls=True) == {"c": (1, 1, 5, 5), "c#2": (1, 1, 5, 5), "": (1, 1, 5, 5)}


def test_layernorm_over_channels_keeps_support():
    # a plain channel sum after layer norm over channels has zero gradient; r is random
    class LN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3, padding=1)
            self.ln = nn.LayerNorm(4)

        def forward(self, x):
            return self.ln(self.c(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    assert probe(LN(), (1, 1, 8, 8)).bbox == [(3, 5), (3, 5)]


def test_attention_over_positions_is_global():
    class Att(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (nn.Conv1d(2, 4, 1) for _ in range(3))

        def forward(self, x):
            a = torch.softmax(self.q(x).transpose(1, 2) @ self.k(x), dim=-1)
            return (a @ self.v(x).transpose(1, 2)).transpose(1, 2)

    assert probe(Att(), (1, 2, 12)).bbox == [(0, 11)]


def test_flatten_linear_and_3d():
    assert probe(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)), (1, 3, 2, 2)).bbox == [(0, 1), (0, 1)]
    assert probe(nn.Conv3d(1, 1, 3), (1, 1, 5, 6, 7), unit=(0, 1, 2)).bbox == [(0, 2), (1, 3), (2, 4)]


def test_model_is_not_modified():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    m.train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    lin = linearized(m)
    probe(lin, (1, 3, 8, 8))
    probe(m, (1, 3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert m.training and next(m.parameters()).dtype == torch.float32
    assert all(p.min() > 0 for p in lin.parameters()) and lin[1].running_var.min() > 0
    assert [n for n, _ in lin.named_modules()] == [n for n, _ in m.named_modules()]


def test_torch_shapes():
    m = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    # (9 - 3) // 2 + 1 = 4
    assert torch_shapes(m, (2, 3, 9, 9)) == {"0": (2, 4, 4, 4), "1": (2, 4, 1, 1), "2": (2, 4), "": (2, 4)}


def lambda_module(fn):
    class L(nn.Module):
        def forward(self, x):
            return fn(x)

    return L()
