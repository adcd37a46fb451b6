"""Attention within windows (issue 17): window partitions split a spatial axis into digits on the
batch and token dims (``rules.registry.Digit``); windows, coverage and tensor indices are checked
against the gradient oracle and torch's own indexing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import convlens
from convlens.geometry import Local, Paired, Unknown
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


class ConvInWindows(nn.Module):
    """A depthwise conv inside each window (EfficientViT-MSRA's cascaded group attention): zero
    padding at every window's border, so no unit sees past its window."""

    def __init__(self, c: int = 4, ws: int = 4, k: int = 3):
        super().__init__()
        self.conv, self.ws = nn.Conv2d(c, c, k, padding=k // 2, groups=c), ws

    def forward(self, x):
        b, c, h, w = x.shape
        ws = self.ws
        t = x.view(b, c, h // ws, ws, w // ws, ws).permute(0, 2, 4, 1, 3, 5).reshape(-1, c, ws, ws)
        t = self.conv(t)
        return t.view(b, h // ws, w // ws, c, ws, ws).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


CASES = {
    "conv in windows": (ConvInWindows(), (1, 3, 12, 16)),
    "wide conv in windows": (ConvInWindows(ws=3, k=5), (1, 3, 9, 6)),
    "windows": (WindowAttention(), (1, 3, 16, 12)),
    "sdpa": (WindowAttention(sdpa=True), (1, 3, 16, 12)),
    "padded": (WindowAttention(ws=5), (1, 3, 13, 11)),
    "shifted": (WindowAttention(shift=2), (1, 3, 16, 12)),
    "shifted, padded": (WindowAttention(ws=3, shift=1, sdpa=True), (1, 3, 10, 8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_window_attention_matches_the_oracle(name):
    # rf, stride and offset too, on an input of 12 x 12 windows: the window is the period
    block, shape = CASES[name]
    model = nn.Sequential(nn.Conv2d(shape[1], 4, 3, padding=1), block, nn.Conv2d(4, 4, 3, padding=1))
    ws = block.ws
    checked = check_against_oracle(model, shape, big_shape=(1, shape[1], 12 * ws, 12 * ws))
    assert checked.windows > 0 and checked.unbounded > 0 and not [s for s in checked.skipped if "unknown" in s]


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


# Slim configurations of timm's windowed models (weights=None: nothing downloads). ``local`` marks
# models with global context (squeeze-excitation, channel attention) beside attention within
# windows: the oracle's detached copy cuts every product, so there it bounds the local windows from
# both sides (see ``check_against_oracle``).
TIMM = {
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=56, embed_dim=8, depths=(2, 2), num_heads=(1, 1),
                                                 window_size=7), (1, 3, 56, 56),
             r"layers\.\d+|layers\.0\.blocks\.1(\.attn)?", False),
    "swin v2": ("swinv2_tiny_window8_256", dict(img_size=64, embed_dim=8, depths=(2, 2), num_heads=(1, 1),
                                                window_size=8), (1, 3, 64, 64), r"layers\.\d+|layers\.0\.blocks\.1",
                False),
    # (shifted windows masked by -100 in both: read by the convention of rules.masks)
    "swin cr": ("swinv2_cr_tiny_ns_224", dict(img_size=(56, 56), embed_dim=8, depths=(2, 2), num_heads=(1, 1),
                                              window_size=7), (1, 3, 56, 56), r"stages\.0(\.blocks\.1)?", False),
    "davit": ("davit_tiny", dict(embed_dims=(8, 16), depths=(1, 1), num_heads=(1, 2), window_size=4),
              (1, 3, 64, 64), r"stages\.\d+", True),
    "tinyvit": ("tiny_vit_5m_224", dict(embed_dims=(8, 16, 16, 16), depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                                        window_sizes=(4, 4, 4, 4)), (1, 3, 64, 64), r"stages\.[01]", False),
    "twins": ("twins_svt_small", dict(img_size=64, embed_dims=(8, 16), depths=(1, 1), num_heads=(1, 2),
                                      mlp_ratios=(2, 2), sr_ratios=(2, 1), wss=(4, 4)), (1, 3, 64, 64),
              r"blocks\.\d+\.0|pos_block\.\d", False),
    "sam (padded windows)": ("samvit_base_patch16", dict(img_size=64, embed_dim=16, depth=2, num_heads=1,
                                                         window_size=3, global_attn_indexes=(1,)),
                             (1, 3, 64, 64), r"blocks\.\d+|neck", False),
    "maxvit": ("maxvit_rmlp_pico_rw_256", dict(img_size=64), (1, 3, 64, 64), r"stages\.0(\.blocks\.0\.attn_block)?",
               True),
    "efficientvit msra": ("efficientvit_m0", dict(img_size=128), (1, 3, 128, 128), r"stages\.[01]", False),
    "mobilevit": ("mobilevit_xxs", dict(), (1, 3, 64, 64), r"stages\.[23]", False),
    "mobilevit v2": ("mobilevitv2_050", dict(), (1, 3, 64, 64), r"stages\.[23](\.1\.transformer\.0)?", False),
    # (pooled queries attend to the keys of their mask unit, and in later stages to every key)
    "hiera": ("hiera_tiny_224", dict(img_size=(64, 64), embed_dim=8, num_heads=1, stages=(1, 1, 2, 1)),
              (1, 3, 64, 64), r"blocks\.\d", True),
    # (queries pooled inside each window by a max pool)
    "sam2 hiera": ("sam2_hiera_tiny", dict(embed_dim=8, num_heads=1, stages=(1, 1, 2, 1), window_spec=(4, 2, 2, 2),
                                           global_att_blocks=(3,), global_pos_size=(4, 4)),
                   (1, 3, 64, 64), r"blocks\.\d|blocks\.[01]\.attn", True),
    # (MBConv with squeeze-excitation, then block and grid attention)
    "coatnet": ("coatnet_nano_rw_224", dict(img_size=64), (1, 3, 64, 64), r"stages\.\d", True),
    # (pooling of reshaped tokens by a depthwise conv; each stage returns (tokens, class token))
    "pit": ("pit_ti_224", dict(img_size=64), (1, 3, 64, 64), r"transformers\.\d\[0\]", False),
    "tresnet (space to depth)": ("tresnet_m", dict(), (1, 3, 64, 64), r"body\.(s2d|conv1|layer1\.0)", False),
}


@pytest.mark.parametrize("name", list(TIMM))
def test_timm_windowed_models_match_the_oracle(name):
    import re

    import timm

    arch, kwargs, shape, rows, local = TIMM[name]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval()
    report = convlens.analyze(model, shape)
    unknown = [(layer.name, layer.notes) for layer in report
               if any(isinstance(s, Unknown) and not isinstance(s, Paired) for s in layer.axes)]
    assert not unknown, unknown[:3]
    picked = [layer.name for layer in report if re.fullmatch(rows, layer.name)]
    assert picked
    checked = check_against_oracle(model, shape, rows=picked, local_products=local)
    assert checked.windows >= len(picked) and not checked.skipped, checked


def test_nest_nested_blocks_match_the_oracle():
    # NesT (timm's nest_tiny's keyword arguments cannot be overridden: the class, slim): attention
    # within blocks, then block aggregation by a conv and a pool across the blocks' borders
    import re

    from timm.models.nest import Nest

    torch.manual_seed(0)
    model = Nest(img_size=64, patch_size=4, num_levels=3, embed_dims=(8, 16, 32), num_heads=(1, 1, 2),
                 depths=(1, 1, 1)).eval()
    shape = (1, 3, 64, 64)
    report = convlens.analyze(model, shape)
    assert not [layer.name for layer in report if any(isinstance(s, Unknown) for s in layer.axes)]
    rows = [layer.name for layer in report if re.fullmatch(r"levels\.\d", layer.name)]
    checked = check_against_oracle(model, shape, rows=rows)
    assert checked.windows >= len(rows) and not checked.skipped, checked


@pytest.mark.parametrize("stride, halo", [(1, 1), (1, 2), (2, 1)])
def test_halo_attention_matches_the_oracle(stride, halo):
    # HaloNet's attention (timm's HaloAttn): queries in blocks of 4, keys and values in blocks of
    # 4 + 2 * halo cut by Tensor.unfold (overlapping digits), relative positions by a skew of
    # flattened logits; with stride 2 the queries come from a strided conv, blocks of 2 (its
    # keys' blocks stay 4 + 2 * halo). Every unit sees its block and the halo around it.
    from timm.layers.halo_attn import HaloAttn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1),
                          HaloAttn(8, 8, feat_size=(16, 16), num_heads=2, dim_head=4, stride=stride, block_size=4,
                                   halo_size=halo),
                          nn.Conv2d(8, 8, 3, padding=1)).eval()
    shape = (1, 3, 16, 16)
    report = convlens.analyze(model, shape)
    assert not [layer.name for layer in report if any(isinstance(s, Unknown) for s in layer.axes)], report.notes
    checked = check_against_oracle(model, shape, big_shape=(1, 3, 64, 64))
    # (the relative logits' row, (batch x blocks, queries, keys), has no layout the harness probes)
    assert checked.windows >= 5 and checked.unbounded >= 10, checked
    assert all(s.startswith("1.pos_embed: layout") for s in checked.skipped), checked
    assert report["1"].rf == (4 + 2 * halo + 2,) * 2  # (a block with its halo, and the 3x3 conv before)


@pytest.mark.parametrize("se", [False, True])
def test_halonet_matches_the_oracle(se):
    # a slim HaloNet (timm's ByobNet with halo attention blocks, as halonet26t; with squeeze-excitation
    # gates, as sehalonet33ts); block 4 with a halo of 1 in the stride-1 stage, of 2 after stride 2
    import re

    from timm.models.byobnet import ByobNet, ByoBlockCfg, ByoModelCfg

    cfg = ByoModelCfg(blocks=(ByoBlockCfg(type="bottle", d=1, c=16, s=1, gs=0, br=0.25),
                              ByoBlockCfg(type="self_attn", d=1, c=16, s=1, gs=0, br=0.5),
                              ByoBlockCfg(type="self_attn", d=1, c=32, s=2, gs=0, br=0.5,
                                          self_attn_kwargs=dict(block_size=4, halo_size=2, num_heads=2))),
                      stem_chs=8, stem_type="tiered", stem_pool="maxpool", self_attn_layer="halo",
                      self_attn_kwargs=dict(block_size=4, halo_size=1, num_heads=2), attn_layer="se" if se else None)
    torch.manual_seed(0)
    model = ByobNet(cfg, num_classes=4).eval()
    shape = (1, 3, 64, 64)
    report = convlens.analyze(model, shape)
    assert not [layer.name for layer in report if any(isinstance(s, Unknown) for s in layer.axes)], report.notes
    rows = [layer.name for layer in report if re.fullmatch(r"stem|stages\.\d|stages\.2\.0\.self_attn", layer.name)]
    checked = check_against_oracle(model, shape, rows=rows, local_products=se)
    assert checked.windows >= len(rows) == 5 and not checked.skipped, checked


class Outlook(nn.Module):
    """VOLO's outlook attention in miniature: ``F.unfold`` into k x k neighbourhoods, a mix of the
    kernel offsets per position (or none), ``F.fold`` back (overlaps summed)."""

    def __init__(self, c: int = 2, k: int = 3, stride: int = 1, mix: bool = True):
        super().__init__()
        self.k, self.stride, self.mix = k, stride, mix
        self.offsets = nn.Linear(k * k, k * k)

    def forward(self, x):
        b, c, h, w = x.shape
        u = F.unfold(x, self.k, padding=self.k // 2, stride=self.stride)
        blocks = u.shape[-1]
        u = u.reshape(b, c, self.k * self.k, blocks)
        if self.mix:
            u = self.offsets(u.transpose(2, 3)).transpose(2, 3)
        return F.fold(u.reshape(b, -1, blocks), (h, w), self.k, padding=self.k // 2, stride=self.stride)


@pytest.mark.parametrize("stride", [1, 2])
def test_unfold_mix_fold_matches_the_oracle(stride):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), Outlook(stride=stride), nn.Conv2d(2, 2, 1))
    checked = check_against_oracle(model, (1, 1, 10, 8))
    assert checked.windows > 0 and not [s for s in checked.skipped if "unknown" in s]


def test_a_fold_of_unmixed_offsets_is_named_not_overstated():
    # fold(unfold(x)) sums copies of x[p] only: a union over each block's channels would say the
    # whole 5 x 5 neighbourhood, so convlens names the op instead
    report = convlens.analyze(Outlook(mix=False), (1, 2, 10, 8))
    assert any("fold of channels that see different windows" in n for n in report.notes), report.notes
    check_against_oracle(Outlook(mix=False), (1, 2, 10, 8))


def test_volo_matches_the_oracle():
    from timm.models.volo import VOLO

    torch.manual_seed(0)
    model = VOLO(layers=[1, 1, 1, 1], img_size=64, embed_dims=[16, 32, 32, 32], num_heads=[1, 2, 2, 2],
                 stem_hidden_dim=8, num_classes=10).eval()
    report = convlens.analyze(model, (1, 3, 64, 64))
    assert not [layer.name for layer in report
                if any(isinstance(s, Unknown) and not isinstance(s, Paired) for s in layer.axes)]
    rows = [layer.name for layer in report if layer.depth == 2 and layer.name.startswith("network")]
    checked = check_against_oracle(model, (1, 3, 64, 64), rows=rows)
    assert checked.windows >= len(rows) and not checked.skipped, checked


class Scores(nn.Module):
    """The scores of attention within windows, as a row of their own (before any softmax)."""

    def __init__(self):
        super().__init__()
        self.scores = nn.Identity()

    def forward(self, x):
        t = partition(x.permute(0, 2, 3, 1), 4)
        return self.scores(t @ t.transpose(1, 2))


def test_scores_within_windows_are_pairs_not_windows():
    # a unit of q kᵀ sees its query's window and its key's, no single box: the row says so (the walk
    # keeps the whole window for the softmax that follows, which must not show here)
    layer = convlens.analyze(Scores(), (1, 2, 8, 8))["scores"]
    assert all(isinstance(s, Paired) for s in layer.axes)
    assert any("pairs a query position with a key position" in note for note in layer.notes)


# ---------------------------------------------------------------- unit tools on token and window rows

def _brute_erf(model, x, index) -> "torch.Tensor":
    """The mean over samples of |d sum(T[index]) / d x|, summed over input channels: the real model."""
    total = torch.zeros(x.shape[2:], dtype=torch.float64)
    for sample in x:
        xs = sample[None].clone().requires_grad_(True)
        out = {}
        handle = model.get_submodule(index[0]).register_forward_hook(lambda m, i, o: out.setdefault("t", o))
        try:
            model(xs)
        finally:
            handle.remove()
        (g,) = torch.autograd.grad(out["t"][index[1]].sum(), xs)
        total += g.abs().sum(dim=(0, 1)).double()
    return total / len(x)


@pytest.mark.parametrize("case", ["vit block", "swin stage"])
def test_erf_picks_a_token_rows_unit_by_grid_position(case):
    import timm

    torch.manual_seed(0)
    if case == "vit block":
        model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, embed_dim=16, depth=2,
                                  num_heads=1, reg_tokens=1).eval()
        row, unit = "blocks.0", (1, 2)  # (B, 1 class + 1 register + 16 patches, C)
    else:
        model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, embed_dim=8,
                                  depths=(2, 2), num_heads=(1, 1), window_size=7).eval()
        row, unit = "layers.0", (3, 12)  # (B, H, W, C): channels last
    shape = (1, 3, 64, 64) if case == "vit block" else (1, 3, 56, 56)
    layer = convlens.analyze(model, shape)[row]
    x = torch.randn((4,) + shape[1:])
    got = convlens.erf(model, shape, row, unit, samples=4, inputs=x)
    where = tuple(slice(None) if i is None else i for i in layer.tensor_index(*unit))
    want = _brute_erf(model, x, (row, where))
    np.testing.assert_allclose(got.map, want.numpy(), rtol=1e-4, atol=1e-9)  # (float32, batched there)
    if case == "swin stage":  # inside its shifted window's span, which the real gradient fills
        (r0, r1), (c0, c1) = layer.window(*unit)
        support = np.argwhere(want.numpy() > MASKED * want.numpy().max())
        assert support[:, 0].min() >= r0 and support[:, 0].max() <= r1
        assert support[:, 1].min() >= c0 and support[:, 1].max() <= c1


MASKED = 1e-30
"""Issue 17's mask convention, on a real model's gradient: a pair that Swin's -100 mask suppresses
(weight e^-100 ~ 4e-44 in float64, 0 in float32) is no path, so the support of a real gradient is
where it exceeds this fraction of the unit's largest."""


def test_coverage_of_a_swin_stage_unit_is_the_support_of_the_real_gradient():
    # every pair within a (shifted) window is a path except those the shift's mask suppresses (read
    # from the model's -100 mask): the real model's float64 gradient, averaged over inputs, is above
    # MASKED of its largest on exactly those pixels
    import timm

    torch.manual_seed(0)
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=56, embed_dim=8,
                              depths=(2, 2), num_heads=(1, 1), window_size=7).eval().double()
    shape, row = (1, 3, 56, 56), "layers.0"
    layer = convlens.analyze(model, shape, dtype=torch.float64)[row]
    for unit in [(3, 12), (13, 13), (0, 6)]:
        cover = convlens.analyze(model, shape, dtype=torch.float64).coverage(row, unit).map != 0
        where = tuple(slice(None) if i is None else i for i in layer.tensor_index(*unit))
        grad = _brute_erf(model, torch.randn((2,) + shape[1:], dtype=torch.float64), (row, where)).numpy()
        real = grad > MASKED * grad.max()
        np.testing.assert_array_equal(cover, real)


class PaddedGlobalWindows(nn.Module):
    """A pooled (global) map padded on the left and top, then split into windows with a conv inside
    each: units that hold only padding see nothing real, in window layout too (the 10,000-network
    run: their reach was read from whole factors only, and every unit seemed to see the input)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):
        g = F.pad(F.adaptive_avg_pool2d(x, 1), (5, 0, 1, 0))  # (1, 2, 2, 6): only (1, 5) is real
        t = g.view(1, 2, 2, 1, 2, 3).permute(0, 2, 4, 1, 3, 5).reshape(-1, 2, 1, 3)
        return self.conv(t)


def test_units_of_a_padded_global_axis_in_windows_that_read_only_padding_see_nothing():
    layer = convlens.analyze(PaddedGlobalWindows(), (1, 2, 6, 6))["conv"]
    assert layer.window(0, 0) is None and layer.window(1, 4) is None
    assert layer.window(1, 5) == ((0, 5), (0, 5))
    check_against_oracle(PaddedGlobalWindows(), (1, 2, 6, 6))


class SpaceToDepth(nn.Module):
    """TResNet's space-to-depth: each axis split into blocks of ``bs`` whose positions go to the
    channels, then a conv over the blocks that mixes the channels (so reads whole blocks)."""

    def __init__(self, bs: int, kernel: int, stride: int, padding: int, dilation: int):
        super().__init__()
        self.bs = bs
        self.conv = nn.Conv2d(2 * bs * bs, 3, kernel, stride=stride, padding=padding, dilation=dilation)

    def forward(self, x):
        n, c, h, w = x.shape
        bs = self.bs
        x = x.view(n, c, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
        return self.conv(x.reshape(n, c * bs * bs, h // bs, w // bs))


@pytest.mark.parametrize("bs, kernel, stride, padding", [(2, 3, 1, 1), (4, 3, 2, 0), (2, 1, 1, 0), (3, 2, 1, 1)])
def test_a_conv_after_space_to_depth_reads_whole_blocks(bs, kernel, stride, padding):
    model = SpaceToDepth(bs, kernel, stride, padding, 1).eval()
    shape = (1, 2, 4 * bs, 3 * bs)
    assert convlens.analyze(model, shape)["conv"].stride == (bs * stride, bs * stride)
    checked = check_against_oracle(model, shape, big_shape=(1, 2, 24 * bs, 24 * bs))
    assert checked.windows > 0 and checked.unbounded > 0


def test_a_dilated_conv_after_space_to_depth_is_named():
    """Blocks with gaps between them are no window of one step: named, not guessed."""
    report = convlens.analyze(SpaceToDepth(2, 3, 1, 2, 2).eval(), (1, 2, 16, 12))
    assert all(isinstance(s, Unknown) for s in report["conv"].axes)
    assert any("split axis" in op for s in report["conv"].axes for op in s.ops)
