"""Zoo models (WaveNet, TCN, U-Net, SegNet, DRN, DeepLabv3): parameter counts against the recorded
paper / reference-code numbers and against formulas written here from the layer tables; output shapes
against the papers and torch; receptive fields against the gradient oracle (on slim copies) and
against numbers derived here by hand from the layer tables."""

from __future__ import annotations

import functools

import pytest
import torch
from checks import check_against_oracle
from oracle import probe, unbounded_geometry

import convlens
from convlens.zoo import deeplab, drn, segnet, tcn, unet, wavenet

ENTRIES = {e.name: e for mod in (wavenet, tcn, unet, segnet, drn, deeplab) for e in mod.ENTRIES}

# what each paper / reference code says the default build outputs, batch 1
PAPER_OUTPUT = {
    "wavenet": (1, 256, 16000),  # logits over 256 mu-law levels per sample (causal padding keeps T)
    "tcn_seqmnist": (1, 10),
    "unet": (1, 2, 388, 388),  # Fig. 1
    "segnet_camvid": (1, 11, 360, 480),
    "drn_c_26": (1, 1000),
    "drn_d_22": (1, 1000),
    "deeplabv3_aspp_resnet50": (1, 21, 513, 513),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.cache
def default_report(name: str) -> convlens.Report:
    entry = ENTRIES[name]
    with torch.device("meta"):
        model = entry.build()
    return convlens.analyze(model, (1, *entry.input_shape))


def test_the_expected_entries_are_registered():
    assert set(ENTRIES) == set(PAPER_OUTPUT)


# ---------------------------------------------------------------------------------------------------
# parameter counts


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_default_build_has_the_recorded_parameter_count(name):
    entry = ENTRIES[name]
    with torch.device("meta"):
        model = entry.build()
    assert n_params(model) == entry.params
    assert default_report(name).totals.params == entry.params


def wavenet_count(stacks, layers, res, dil, skip, quant, width=2, bias=True):
    b = int(bias)
    per_layer = 2 * (width * res * dil + b * dil) + (dil * res + b * res) + (dil * skip + b * skip)
    return width * quant * res + stacks * layers * per_layer + (skip * skip + b * skip) + (skip * quant + b * quant)


def test_wavenet_count_follows_the_layer_table():
    assert wavenet_count(5, 10, 32, 32, 512, 256) == ENTRIES["wavenet"].params == 1_515_968
    assert wavenet_count(5, 10, 32, 32, 512, 256, bias=False) == 1_484_800
    for kw in [{"stacks": 2, "layers_per_stack": 4, "residual_channels": 4, "dilation_channels": 6,
                "skip_channels": 8, "quantization_channels": 10},
               {"stacks": 1, "layers_per_stack": 3, "bias": False}]:
        with torch.device("meta"):
            model = wavenet.wavenet(**kw)
        want = wavenet_count(kw["stacks"], kw["layers_per_stack"], kw.get("residual_channels", 32),
                             kw.get("dilation_channels", 32), kw.get("skip_channels", 512),
                             kw.get("quantization_channels", 256), bias=kw.get("bias", True))
        assert n_params(model) == want


def tcn_count(levels, hidden, k, c_in, classes, weight_norm=True):
    g = hidden if weight_norm else 0  # weight norm's g: one per output channel
    conv = hidden * hidden * k + hidden + g
    first = (c_in * hidden * k + hidden + g) + conv + (c_in * hidden + hidden if c_in != hidden else 0)
    return first + (levels - 1) * 2 * conv + hidden * classes + classes


def test_tcn_count_follows_the_layer_table():
    assert tcn_count(8, 25, 7, 1, 10) == ENTRIES["tcn_seqmnist"].params == 66_910
    assert round(ENTRIES["tcn_seqmnist"].params, -4) == 70_000  # the paper's Table 1: "70K"
    for kw in [{"levels": 3, "hidden": 4, "kernel_size": 3},
               {"levels": 2, "hidden": 5, "kernel_size": 2, "input_channels": 3, "num_classes": 4,
                "weight_norm": False}]:
        with torch.device("meta"):
            model = tcn.tcn_seqmnist(**kw)
        assert n_params(model) == tcn_count(kw["levels"], kw["hidden"], kw["kernel_size"], kw.get("input_channels", 1),
                                            kw.get("num_classes", 10), kw.get("weight_norm", True))


def unet_count(c_in, classes, base, depth):
    def conv(i, o, k):
        return k * k * i * o + o

    widths = [base * 2 ** i for i in range(depth + 1)]
    total, c = 0, c_in
    for w in widths:  # contracting path and bottom: two 3x3 convs
        total += conv(c, w, 3) + conv(w, w, 3)
        c = w
    for w in reversed(widths[:-1]):  # 2x2 up-conv halving the maps, two 3x3 convs on the concat
        total += conv(2 * w, w, 2) + conv(2 * w, w, 3) + conv(w, w, 3)
    return total + conv(base, classes, 1)


def test_unet_count_follows_the_layer_table():
    assert unet_count(1, 2, 64, 4) == ENTRIES["unet"].params == 31_030_658
    with torch.device("meta"):
        model = unet.unet(in_channels=3, num_classes=5, base=3, depth=3)
    assert n_params(model) == unet_count(3, 5, 3, 3)


def segnet_count(classes, c_in, widths, convs):
    def conv(i, o):
        return 9 * i * o + o

    encoder_convs = encoder_bn = decoder = 0
    c = c_in
    for w, n in zip(widths, convs):
        for _ in range(n):
            encoder_convs += conv(c, w)
            encoder_bn += 2 * w
            c = w
    for i in reversed(range(len(widths))):
        w, n = widths[i], convs[i]
        decoder += (n - 1) * (conv(w, w) + 2 * w)
        decoder += conv(w, widths[i - 1]) + 2 * widths[i - 1] if i else conv(w, classes)  # classifier: no BN
    return encoder_convs, encoder_bn, decoder


def test_segnet_count_follows_the_layer_table():
    enc_convs, enc_bn, dec = segnet_count(11, 3, segnet.VGG16_WIDTHS, segnet.VGG16_CONVS)
    assert enc_convs == 14_714_688  # VGG-16's 13 conv layers: the paper's "14.7M" encoder
    assert enc_convs + enc_bn + dec == ENTRIES["segnet_camvid"].params == 29_449_355
    # the paper says 29.5M: 0.2 % more than the table's 29.45M
    assert abs(ENTRIES["segnet_camvid"].params - 29.5e6) / 29.5e6 < 0.002
    with torch.device("meta"):
        model = segnet.segnet(num_classes=4, in_channels=2, widths=(3, 5, 6), convs=(1, 2, 3))
    assert n_params(model) == sum(segnet_count(4, 2, (3, 5, 6), (1, 2, 3)))


def drn_count(arch, channels, classes, layers=(1, 1, 2, 2, 2, 2, 1, 1), c_in=3):
    def conv(i, o, k):  # no bias
        return k * k * i * o

    def block(i, o, shortcut):
        return conv(i, o, 3) + 2 * o + conv(o, o, 3) + 2 * o + (conv(i, o, 1) + 2 * o if shortcut else 0)

    def stage(i, o, n, stride):
        return block(i, o, stride != 1 or i != o) + (n - 1) * block(o, o, False)

    def convs(i, o, n):
        return conv(i, o, 3) + 2 * o + (n - 1) * (conv(o, o, 3) + 2 * o)

    ch = channels
    total = conv(c_in, ch[0], 7) + 2 * ch[0]
    if arch == "C":
        total += stage(ch[0], ch[0], layers[0], 1) + stage(ch[0], ch[1], layers[1], 2)
    else:
        total += convs(ch[0], ch[0], layers[0]) + convs(ch[0], ch[1], layers[1])
    for i in range(2, 6):
        total += stage(ch[i - 1], ch[i], layers[i], 2 if i < 4 else 1)
    if arch == "C":
        total += stage(ch[5], ch[6], layers[6], 1) + stage(ch[6], ch[7], layers[7], 1)
    else:
        total += convs(ch[5], ch[6], layers[6]) + convs(ch[6], ch[7], layers[7])
    return total + ch[7] * classes + classes


def test_drn_counts_follow_the_layer_table():
    assert drn_count("C", drn.CHANNELS, 1000) == ENTRIES["drn_c_26"].params == 21_126_584
    assert drn_count("D", drn.CHANNELS, 1000) == ENTRIES["drn_d_22"].params == 16_393_752
    assert round(ENTRIES["drn_c_26"].params / 1e6, 1) == 21.1  # the paper's Table 1
    assert round(ENTRIES["drn_d_22"].params / 1e6, 1) == 16.4
    slim = (2, 3, 4, 5, 6, 7, 7, 8)
    for arch, build in (("C", drn.drn_c_26), ("D", drn.drn_d_22)):
        with torch.device("meta"):
            model = build(num_classes=9, channels=slim)
        assert n_params(model) == drn_count(arch, slim, 9)


def test_deeplab_count_against_torchvision():
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    with torch.device("meta"):
        tv = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False)
        ours = deeplab.deeplabv3_aspp_resnet50()
        ours_tv_head = deeplab.deeplabv3_aspp_resnet50(torchvision_head=True)
        tv_aux = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    assert n_params(tv_aux) == 42_004_074  # torchvision's documented count (with the auxiliary head)
    assert n_params(ours_tv_head) == n_params(tv) == 39_638_869
    extra = 256 * 256 * 9 + 2 * 256  # torchvision's 3x3 conv + BN between the ASPP and the classifier
    assert n_params(ours) == n_params(tv) - extra == ENTRIES["deeplabv3_aspp_resnet50"].params
    assert n_params(ours.backbone) == n_params(tv.backbone)


# ---------------------------------------------------------------------------------------------------
# output shapes

# slim copies (few channels) at small inputs: real forwards and the oracle run on these
SLIM = {
    "wavenet": (lambda: wavenet.wavenet(stacks=2, layers_per_stack=4, residual_channels=3, dilation_channels=4,
                                        skip_channels=5, quantization_channels=6), (1, 6, 64)),
    "tcn_seqmnist": (lambda: tcn.tcn_seqmnist(levels=3, hidden=4, kernel_size=3), (1, 1, 64)),
    "unet": (lambda: unet.unet(base=2), (1, 1, 188, 188)),  # the smallest valid input: 188 -> 4
    "segnet_camvid": (lambda: segnet.segnet(num_classes=3, widths=(2, 2, 3, 3, 3)), (1, 3, 36, 44)),
    "drn_c_26": (lambda: drn.drn_c_26(num_classes=5, channels=(2, 2, 3, 3, 4, 4, 4, 4), pool_size=8), (1, 3, 64, 64)),
    "drn_d_22": (lambda: drn.drn_d_22(num_classes=5, channels=(2, 2, 3, 3, 4, 4, 4, 4), pool_size=8), (1, 3, 64, 64)),
    "deeplabv3_aspp_resnet50": (lambda: deeplab.deeplabv3_aspp_resnet50(num_classes=3, width=2, aspp_channels=4),
                                (1, 3, 65, 65)),
}
SLIM_OUTPUT = {"wavenet": (1, 6, 64), "tcn_seqmnist": (1, 10), "unet": (1, 2, 4, 4), "segnet_camvid": (1, 3, 36, 44),
               "drn_c_26": (1, 5), "drn_d_22": (1, 5), "deeplabv3_aspp_resnet50": (1, 3, 65, 65)}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_output_shape_at_the_default_input_is_the_papers(name):
    entry = ENTRIES[name]
    assert tuple(default_report(name).output.output_shape) == PAPER_OUTPUT[name]
    with torch.device("meta"):  # torch's own forward (shapes only)
        out = entry.build().eval()(torch.empty(1, *entry.input_shape))
    assert tuple(out.shape) == PAPER_OUTPUT[name]


@pytest.mark.parametrize("name", sorted(SLIM))
def test_slim_copy_real_forward_matches_the_report(name):
    build, shape = SLIM[name]
    torch.manual_seed(0)
    model = build().eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert torch.isfinite(out).all()
    assert tuple(out.shape) == SLIM_OUTPUT[name] == tuple(convlens.analyze(model, shape).output.output_shape)


def test_unet_input_sizes():
    """188 is the smallest input with no odd pooling and a non-empty output; 16 m + 124 in general."""
    with torch.device("meta"):
        model = unet.unet(base=2)
        assert tuple(model(torch.empty(1, 1, 188, 188)).shape) == (1, 2, 4, 4)
        assert tuple(model(torch.empty(1, 1, 572, 572)).shape) == (1, 2, 388, 388)
        with pytest.raises(RuntimeError):
            model(torch.empty(1, 1, 172, 172))  # 16 * 3 + 124: the expansive path runs out of pixels


# ---------------------------------------------------------------------------------------------------
# receptive fields derived by hand from the layer tables


def chain_rf(layers) -> int:
    """rf of a plain chain of (kernel, stride, dilation) layers: 1 + sum (k - 1) * d * jump."""
    rf, jump = 1, 1
    for k, s, d in layers:
        rf += (k - 1) * d * jump
        jump *= s
    return rf


def window(node: tuple, a: int, b: int) -> tuple[int, int]:
    """Input window of units a..b of ``node`` in a 1-D interval model of a network, a tree of
    ("input",), ("conv", left, right, src): [a - left, b + right]; ("pool", src): 2x2 stride 2,
    [2a, 2b + 1]; ("up", src): 2x2 stride-2 up-conv or unpooling, [a // 2, b // 2];
    ("crop", c, src): [a + c, b + c]; ("cat", src1, src2): the hull of both."""
    kind = node[0]
    if kind == "input":
        return a, b
    if kind == "conv":
        return window(node[3], a - node[1], b + node[2])
    if kind == "pool":
        return window(node[1], 2 * a, 2 * b + 1)
    if kind == "up":
        return window(node[1], a // 2, b // 2)
    if kind == "crop":
        return window(node[2], a + node[1], b + node[1])
    (lo1, hi1), (lo2, hi2) = window(node[1], a, b), window(node[2], a, b)
    return min(lo1, lo2), max(hi1, hi2)


def unet_rf(n: int, depth: int = 4) -> int:
    """Largest window (one axis) over the output units of U-Net on an n-pixel input (valid 3x3 convs:
    two of them read [a, b + 4])."""
    node, size, encoders = ("input",), n, []
    for _ in range(depth):
        node, size = ("conv", 0, 4, node), size - 4
        encoders.append((node, size))
        node, size = ("pool", node), size // 2
    node, size = ("conv", 0, 4, node), size - 4
    for enc, enc_size in reversed(encoders):
        node, size = ("up", node), size * 2
        node = ("cat", ("crop", (enc_size - size) // 2, enc), node)
        node, size = ("conv", 0, 4, node), size - 4
    return max(hi - lo + 1 for lo, hi in (window(node, o, o) for o in range(size)))


def segnet_rf(convs=segnet.VGG16_CONVS) -> int:
    """Largest window over a period of interior units (unbounded: padding ignored); n padded 3x3 convs
    read [a - n, b + n]. The max-unpooling indices come from the encoder maps, inside these windows."""
    node = ("input",)
    for n in convs:
        node = ("pool", ("conv", n, n, node))
    for n in reversed(convs):
        node = ("conv", n, n, ("up", node))
    period = 2 ** len(convs)
    return max(hi - lo + 1 for lo, hi in (window(node, o, o) for o in range(1000, 1000 + period)))


def drn_chain(arch: str):
    base = [(7, 1, 1)] + ([(3, 1, 1)] * 2 + [(3, 2, 1), (3, 1, 1)] if arch == "C" else [(3, 1, 1), (3, 2, 1)])
    body = [(3, 2, 1)] + [(3, 1, 1)] * 3 + [(3, 2, 1)] + [(3, 1, 1)] * 3 + [(3, 1, 2)] * 4 + [(3, 1, 4)] * 4
    degrid = [(3, 1, 2)] * 2 + [(3, 1, 1)] * 2 if arch == "C" else [(3, 1, 2), (3, 1, 1)]
    return base + body + degrid


def dilated_resnet50_chain():
    stem = [(7, 2, 1), (3, 2, 1)]
    layer1 = [(3, 1, 1)] * 3
    layer2 = [(3, 2, 1)] + [(3, 1, 1)] * 3
    layer3 = [(3, 1, 1)] + [(3, 1, 2)] * 5  # stride removed; the first block keeps dilation 1
    layer4 = [(3, 1, 2)] + [(3, 1, 4)] * 2
    return stem + layer1 + layer2 + layer3 + layer4


def test_receptive_fields_by_hand():
    # WaveNet: the reference code's calculate_receptive_field, (w - 1) * sum(dilations) + 1 + (w - 1)
    assert default_report("wavenet").output.rf == ((2 - 1) * 5 * (2 ** 10 - 1) + 1 + (2 - 1),) == (5117,)
    # TCN: two causal convs per level, 1 + 2 (k - 1) (2**levels - 1); the classifier reads the last step
    assert default_report("tcn_seqmnist")["tcn"].rf == (1 + 2 * (7 - 1) * (2 ** 8 - 1),) == (3061,)
    assert default_report("unet").output.rf == (unet_rf(572),) * 2 == (204, 204)
    assert default_report("segnet_camvid").output.rf == (segnet_rf(),) * 2 == (404, 404)
    c26, d22 = default_report("drn_c_26"), default_report("drn_d_22")
    assert c26["layer8"].rf == (chain_rf(drn_chain("C")),) * 2 == (581, 581)
    assert d22["layer8"].rf == (chain_rf(drn_chain("D")),) * 2 == (527, 527)
    # the head: AvgPool2d(28) on the stride-8 map adds 27 * 8
    assert c26.output.rf == (581 + 27 * 8,) * 2 and d22.output.rf == (527 + 27 * 8,) * 2
    report = default_report("deeplabv3_aspp_resnet50")
    backbone = chain_rf(dilated_resnet50_chain())
    assert report["backbone.layer4"].rf == (backbone,) * 2 == (427, 427)  # the undilated ResNet-50's too
    assert report["classifier"].rf == (chain_rf(dilated_resnet50_chain() + [(3, 1, 36)]),) * 2 == (1003, 1003)


def test_hand_rules_on_slim_copies():
    """The slim copies the oracle checks have the hand-derived geometry too (it does not depend on width)."""
    build, shape = SLIM["wavenet"]
    assert convlens.analyze(build(), shape).output.rf == ((2 - 1) * 2 * (2 ** 4 - 1) + 2,)
    build, shape = SLIM["tcn_seqmnist"]
    assert convlens.analyze(build(), shape)["tcn"].rf == (1 + 2 * 2 * (2 ** 3 - 1),)
    # rf is the largest window over the units and a full period of phases (16 here): the 4x4 output at
    # 188 has fewer units than a period, so its rf is the one of a large input, not unet_rf(188) = 188
    build, shape = SLIM["unet"]
    assert convlens.analyze(build(), shape).output.rf == (unet_rf(572),) * 2 == (204, 204)
    assert unet_rf(188) == 188 and unet_rf(636) == 204


# ---------------------------------------------------------------------------------------------------
# the gradient oracle on slim copies


def test_wavenet_matches_the_oracle():
    build, shape = SLIM["wavenet"]
    checked = check_against_oracle(build(), shape, big_shape=(1, 6, 200))
    assert checked.windows > 30 and checked.unbounded > 20, checked


def test_tcn_matches_the_oracle():
    build, shape = SLIM["tcn_seqmnist"]
    checked = check_against_oracle(build(), shape, big_shape=(1, 1, 160))
    assert checked.windows > 20 and checked.unbounded > 10, checked
    # the classifier reads the last step only: (N, classes) has no time dim, so probe it directly
    model = build()
    window = convlens.analyze(model, shape)[""].window(0)
    assert window == tuple(probe(model, shape, unit=(0,), channel_dim=None).bbox)


def test_unet_matches_the_oracle():
    build, shape = SLIM["unet"]
    model = build()
    checked = check_against_oracle(model, shape)
    assert checked.windows > 40 and checked.coverage > 40, checked
    # rf, stride and offset of the output along the first axis at a large input (828 = 16 * 44 + 124); the
    # phase pattern repeats every 16 units, so more units are probed than check_against_oracle's 16
    big = (1, 1, 828, 188)
    geo = unbounded_geometry(model, big, "", axis=0, max_units=48)
    out = convlens.analyze(model, big).output
    assert (out.rf[0], out.stride[0], out.offset[0]) == (geo.rf, geo.stride, geo.offset) == (204, 1, geo.offset)
    assert geo.period == 16


def test_segnet_matches_the_oracle():
    build, shape = SLIM["segnet_camvid"]  # 36x44: ceil-mode pools (9 -> 5, 11 -> 6, 5 -> 3)
    model = build()
    checked = check_against_oracle(model, shape)
    assert checked.windows > 50, checked
    # rf, stride and offset of the output along the first axis, far from the borders: the unpooling
    # phases repeat every 32 units, so more units are probed than check_against_oracle's 16
    big = (1, 3, 1600, 32)
    geo = unbounded_geometry(model, big, "", axis=0, max_units=80)
    out = convlens.analyze(model, big).output
    assert (out.rf[0], out.stride[0], out.offset[0]) == (geo.rf, geo.stride, geo.offset) == (404, 1, geo.offset)
    assert geo.period == 32


@pytest.mark.parametrize("name", ["drn_c_26", "drn_d_22"])
def test_drn_matches_the_oracle(name):
    build, shape = SLIM[name]
    model = build()
    base = ["conv1", "bn1", "relu", "layer1", "layer2"] if name == "drn_c_26" else ["layer0", "layer1", "layer2"]
    blocks = ["layer3.0.conv1", "layer3.0.downsample", "layer5.0.conv1", "layer6.1.conv2"]
    blocks.append("layer7.0.conv1" if name == "drn_c_26" else "layer7.0")
    rows = base + blocks + [f"layer{i}" for i in range(3, 9)] + ["avgpool", "fc", ""]
    checked = check_against_oracle(model, shape, rows=rows)
    assert checked.windows > len(rows), checked
    # rf, stride and offset of the last map along the first axis (rf 581 / 527 at stride 8), far from the borders
    checked = check_against_oracle(model, shape, big_shape=(1, 3, 1900, 24), rows=["layer5", "layer8"])
    assert checked.unbounded == 2, checked


def test_deeplab_matches_the_oracle():
    build, shape = SLIM["deeplabv3_aspp_resnet50"]
    rows = ["backbone.maxpool", "backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4",
            "aspp.branches.0", "aspp.branches.3", "aspp.branches.4", "aspp", "classifier", ""]
    model = build()
    checked = check_against_oracle(model, shape, rows=rows)
    assert checked.windows >= len(rows), checked
    # the dilated backbone keeps ResNet-50's rf (427) at stride 8 instead of 32: far from the borders
    checked = check_against_oracle(model, shape, big_shape=(1, 3, 1400, 24),
                                   rows=["backbone.layer3", "backbone.layer4"])
    assert checked.unbounded == 2, checked
