"""Transformers and hybrids nobody here wrote, in slim configurations, against the gradient oracle.

Token layouts (a grid flattened into tokens, class / distillation / register tokens before it, sliced
off again, tokens back to a grid) and global attention (SDPA, q @ kᵀ with softmax, channel attention,
spatial-reduction attention, class attention, talking heads): the clipped windows of corner, edge and
centre units of every stage output, token rows probed at the token that holds the unit (the row's
layout says which). Attention is data-dependent mixing: the oracle probes two random inputs and unites
the supports (DESIGN.md). Slim means small depth, width and input, so that the whole file runs in
about a minute; the geometry rules do not depend on width.
"""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

import convlens
from checks import check_against_oracle
from convlens.geometry import Global, Local, Paired, Unknown

TIMM = {
    # name: (timm model, slim keyword arguments, input shape)
    "vit_class_and_register_tokens": ("vit_small_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=16,
                                                                     num_heads=2, reg_tokens=2), (1, 3, 32, 32)),
    "deit_distillation_token": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8, depth=2,
                                                                        embed_dim=16, num_heads=2), (1, 3, 32, 32)),
    "beit_relative_position_bias": ("beit_base_patch16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=16,
                                                                  num_heads=2), (1, 3, 32, 32)),
    "eva_rope": ("eva02_tiny_patch14_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=16, num_heads=2),
                 (1, 3, 32, 32)),
    "cait_class_attention_talking_heads": ("cait_xxs24_224", dict(img_size=32, patch_size=8, depth=2,
                                                                  depth_token_only=1, embed_dim=16, num_heads=2),
                                           (1, 3, 32, 32)),
    "xcit_channel_attention": ("xcit_nano_12_p16_224", dict(img_size=32, patch_size=8, depth=2, embed_dim=16,
                                                            num_heads=2, cls_attn_layers=1), (1, 3, 32, 32)),
    "pvt_v2_spatial_reduction": ("pvt_v2_b0", dict(depths=(1, 1, 1, 1), embed_dims=(8, 16, 16, 16),
                                                   num_heads=(1, 1, 1, 1)), (1, 3, 64, 64)),
    "coat_lite_conv_relative_positions": ("coat_lite_tiny", dict(img_size=64, embed_dims=(16, 16, 16, 16),
                                                                 serial_depths=(1, 1, 1, 1), num_heads=8),
                                          (1, 3, 64, 64)),
    "levit_attention_biases": ("levit_128s", dict(img_size=64, embed_dim=(16, 24, 32), key_dim=4,
                                                  num_heads=(2, 2, 2), depth=(1, 1, 1)), (1, 3, 64, 64)),
    "convnextv2_grn": ("convnextv2_atto", dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16)), (1, 3, 32, 32)),
    "crossvit_two_branches": ("crossvit_tiny_240", dict(img_size=48, img_scale=(1.0, 2 / 3), patch_size=(12, 16),
                                                        embed_dim=(16, 16), depth=((1, 1, 0),), num_heads=(2, 2),
                                                        mlp_ratio=(2, 2, 1)), (1, 3, 48, 48)),
}

STAGE_PARENTS = {"blocks", "stages", "blocks_token_only", "cls_attn_blocks", "serial_blocks1", "serial_blocks2",
                 "serial_blocks3", "serial_blocks4"}


def _stage_rows(report: convlens.Report) -> list[str]:
    """The model's children and the blocks of its stage lists."""
    return [layer.name for layer in report
            if layer.depth == 1 or (layer.depth == 2 and layer.name.split(".")[0] in STAGE_PARENTS)]


def _known(report: convlens.Report) -> None:
    """No unknown axis in any row (attention scores are pairs of windows, and say so)."""
    for layer in report:
        for state in layer.axes:
            assert not isinstance(state, Unknown) or isinstance(state, Paired), (layer.name, layer.notes)


@pytest.mark.parametrize("case", sorted(TIMM))
def test_timm_transformers_match_the_oracle(case):
    name, kwargs, shape = TIMM[case]
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    report = convlens.analyze(model, shape)
    _known(report)
    checked = check_against_oracle(model, shape, rows=_stage_rows(report))
    assert checked.windows > 0 and checked.shapes > 0, checked


def test_mvitv2_pooling_attention_with_relative_positions():
    from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg

    # pooled keys and values (a strided conv of the reshaped tokens), relative positions from the
    # queries added to the scores
    model = MultiScaleVit(MultiScaleVitCfg(depths=(1, 1), embed_dim=8, num_heads=1), img_size=(64, 64),
                          num_classes=4).eval()
    report = convlens.analyze(model, (1, 3, 64, 64))
    _known(report)
    checked = check_against_oracle(model, (1, 3, 64, 64), rows=_stage_rows(report))
    assert checked.windows > 0


def test_a_vit_patch_token_sees_its_patch_then_everything():
    model = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                              embed_dim=16, num_heads=2, reg_tokens=2).eval()
    report = convlens.analyze(model, (1, 3, 32, 32))
    embed = report["patch_embed"]
    assert embed.rf == (8, 8) and embed.window(1, 2) == ((8, 15), (16, 23))
    # the class token and two register tokens sit before the 4 x 4 grid of patches
    assert report["norm_pre"].tensor_index(1, 2) == (None, 3 + 1 * 4 + 2, None)
    assert report["blocks.0"].rf == ("global", "global")


class SamNeck(nn.Module):
    """A ViT's patch tokens back to a grid through a conv neck (SAM's image encoder, ViTDet)."""

    def __init__(self):
        super().__init__()
        self.vit = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2,
                                     embed_dim=16, num_heads=2, num_classes=0, global_pool="")
        self.neck = nn.Sequential(nn.Conv2d(16, 8, 1), nn.Conv2d(8, 8, 3, padding=1))

    def forward(self, x):
        t = self.vit.forward_features(x)[:, self.vit.num_prefix_tokens:]
        b, n, c = t.shape
        side = int(n ** 0.5)
        return self.neck(t.transpose(1, 2).reshape(b, c, side, side))


class TokensBeforeAttention(nn.Module):
    """A grid into tokens with a class token, a per-token MLP, back to a grid: local throughout."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.mlp = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 8))
        self.neck = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        g = self.stem(x)
        b, c, h, w = g.shape
        t = torch.cat([self.cls.expand(b, -1, -1), g.flatten(2).transpose(1, 2)], 1)
        t = self.mlp(t)
        return self.neck(t[:, 1:].transpose(1, 2).reshape(b, c, h, w))


@pytest.mark.parametrize("model, shape", [(SamNeck(), (1, 3, 32, 32)), (TokensBeforeAttention(), (1, 3, 32, 24))],
                         ids=["sam_neck", "tokens_before_attention"])
def test_tokens_back_to_a_grid(model, shape):
    report = convlens.analyze(model.eval(), shape)
    _known(report)
    checked = check_against_oracle(model, shape, rows=[layer.name for layer in report if layer.depth <= 2])
    assert checked.windows > 0
    if isinstance(model, TokensBeforeAttention):
        assert checked.tokens > 0  # token rows were probed at their tokens
        assert all(isinstance(s, Local) for s in report[""].axes)
    else:
        assert all(isinstance(s, Global) for s in report[""].axes)


def test_huggingface_segformer_from_a_config():
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
                             decoder_hidden_size=16, num_labels=3)
    model = SegformerForSemanticSegmentation(config).eval()
    report = convlens.analyze(model, (1, 3, 32, 32))
    _known(report)
    checked = check_against_oracle(model, (1, 3, 32, 32), rows=[layer.name for layer in report if layer.depth <= 2])
    assert checked.windows > 0


@pytest.mark.parametrize("decoder", ["FPN", "MAnet"])
def test_segmentation_models_pytorch_decoders(decoder):
    import segmentation_models_pytorch as smp

    if decoder == "FPN":  # stacks its pyramid and sums it; group norm gives global context
        model = smp.FPN("resnet18", encoder_weights=None, classes=2, decoder_pyramid_channels=32,
                        decoder_segmentation_channels=32)
    else:  # position attention (a q kᵀ softmax over positions) in its bottleneck
        model = smp.MAnet("resnet18", encoder_weights=None, classes=2, decoder_channels=(16, 8, 8, 8, 8),
                          decoder_pab_channels=8)
    model.eval()
    report = convlens.analyze(model, (1, 3, 64, 64))
    _known(report)
    checked = check_against_oracle(model, (1, 3, 64, 64), rows=[layer.name for layer in report if layer.depth <= 2])
    assert checked.windows > 0


# ---------------------------------------------------------------- recurrent layers along an axis

class RowLSTM(nn.Module):
    """A conv, then an LSTM along each row (the width axis), as Sequencer2D does in both directions."""

    def __init__(self, cls=nn.LSTM, bidirectional: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.rnn = cls(4, 5, batch_first=True, bidirectional=bidirectional)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)  # B H W C
        b, h, w, c = y.shape
        out, _ = self.rnn(y.reshape(b * h, w, c))
        return out.reshape(b, h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_layer_along_an_axis(cls, bidirectional):
    model = RowLSTM(cls, bidirectional).eval()
    report = convlens.analyze(model, (1, 3, 6, 7))
    out = report[""]
    assert out.rf[0] == 3  # rows stay apart
    if bidirectional:
        assert out.rf[1] == "global"
    else:  # step t has read steps 0..t: a half-line, growing windows and no single stride
        assert out.stride[1] is None and out.window(2, 0)[1] == (0, 1) and out.window(2, 4)[1] == (0, 5)
        with pytest.raises(convlens.ConvlensError, match="recurrent layer"):
            report.coverage("", (2, 3))  # its unrolled steps hold paths of their own
    checked = check_against_oracle(model, (1, 3, 6, 7))
    assert checked.windows > 0


@pytest.mark.parametrize("cls, kwargs", [(nn.LSTM, dict(num_layers=2, bidirectional=True, proj_size=3)),
                                         (nn.LSTM, dict(batch_first=True)), (nn.GRU, dict(num_layers=2)),
                                         (nn.RNN, dict(nonlinearity="relu", bidirectional=True))])
def test_recurrent_macs_match_the_flop_counter(cls, kwargs):
    from torch.utils.flop_counter import FlopCounterMode

    shape = (3, 7, 4)  # (time, batch, features), or (batch, time, features) with batch_first
    with FlopCounterMode(display=False) as counter:  # on meta the steps are unrolled into matrix products
        cls(4, 5, **kwargs).to("meta")(torch.empty(shape, device="meta"))
    assert convlens.analyze(cls(4, 5, **kwargs), shape).totals.macs == counter.get_total_flops() // 2


def test_sequencer2d():
    model = timm.create_model("sequencer2d_s", pretrained=False, layers=(1, 1, 1), patch_sizes=(7, 2, 1),
                              embed_dims=(16, 16, 16), hidden_sizes=(8, 8, 8), mlp_ratios=(2, 2, 2)).eval()
    report = convlens.analyze(model, (1, 3, 56, 56))
    _known(report)
    assert report["stem"].rf == (7, 7) and report["stages.0"].rf == ("global", "global")
    checked = check_against_oracle(model, (1, 3, 56, 56), rows=_stage_rows(report))
    assert checked.windows > 0


class ChannelPermutation(nn.Module):
    """A constant index tensor over channels (CSATv2's frequency permutation), then a conv."""

    def __init__(self, after_cat: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.register_buffer("perm", torch.tensor([2, 0, 1, 5, 4, 3, 1]))
        self.after_cat = after_cat
        self.head = nn.Conv2d(7, 2, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        y = torch.cat([y[:, :3], x], 1) if self.after_cat else y
        return self.head(y[:, self.perm])


def test_index_with_constant_indices_over_channels():
    report = convlens.analyze(ChannelPermutation(), (1, 3, 8, 8))
    assert report[""].rf == (5, 5)
    assert check_against_oracle(ChannelPermutation(), (1, 3, 8, 8)).windows > 0
    # channels from a cat may see different windows: picking some of them is named, not guessed
    picked = convlens.analyze(ChannelPermutation(after_cat=True), (1, 3, 8, 8))
    assert picked[""].rf == (None, None) and any("picks channels" in n for n in picked.notes)


class PooledToken(nn.Module):
    """The grid's mean put before it as an extra token (CLIP's attention pool), a per-token layer, then
    the grid and the pooled token apart."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, 4)
        self.mlp = nn.Linear(8, 8)

    def forward(self, x):
        t = self.stem(x).flatten(2).transpose(1, 2)
        t = self.mlp(torch.cat([t.mean(1, keepdim=True), t], 1))
        return t[:, 1:], t[:, 0]


def test_a_pooled_extra_token_sees_everything_and_the_grid_does_not_see_it():
    report = convlens.analyze(PooledToken(), (1, 3, 16, 20))
    assert report["mlp"].rf == (4, 4) and not report["mlp"].global_context
    assert report["[1]"].rf == ("global", "global")
    assert report["[0]"].rf == (4, 4) and not report["[0]"].global_context
    assert check_against_oracle(PooledToken(), (1, 3, 16, 20)).tokens > 0
