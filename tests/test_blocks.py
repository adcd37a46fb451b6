"""The building blocks and the claims the literature makes about them.

Expected values come from torch (real forwards, torch.kron), the gradient oracle (tests/oracle.py),
or arithmetic written here from the papers' formulas - never from convlens itself.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import convlens
from checks import check_against_oracle
from convlens.blocks import (ASPP, ContextModule, DepthwiseSeparableConv2d, KroneckerConv2d, ResizeConv2d,
                             ShuffledGroupConv2d, SpatiallySeparableConv2d, compose, dilation_net)
from oracle import probe

DOUBLE = torch.float64


def _weights(module: nn.Module) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if n.endswith("weight"))


# --- the context module (Yu & Koltun 2016, section 3) -------------------------------------------------

@pytest.mark.parametrize("padding", ["input", "layer", "none"])
def test_identity_initialised_basic_module_computes_relu(padding):
    torch.manual_seed(0)
    module = ContextModule(5, padding=padding).to(DOUBLE)
    x = torch.randn(2, 5, 80, 80, dtype=DOUBLE)
    expected = F.relu(x)
    if padding == "none":  # the map shrinks by the module's radius, 33, on each side
        expected = expected[..., 33:-33, 33:-33]
    assert torch.equal(module(x), expected)


def test_identity_initialised_large_module_computes_relu_with_sigma_zero():
    torch.manual_seed(0)
    module = ContextModule(3, "large", padding="layer", sigma=0.0).to(DOUBLE)
    x = torch.randn(2, 3, 40, 40, dtype=DOUBLE)
    torch.testing.assert_close(module(x), F.relu(x), rtol=0, atol=1e-12)


def test_large_module_initialisation_follows_the_paper():
    torch.manual_seed(0)
    C = 2
    module = ContextModule(C, "large", sigma=1e-3)
    conv = module.conv3  # 2C -> 4C maps: c_i = 4, c_{i+1} = 8
    w = conv.weight.detach()
    for b in range(8):
        for a in range(4):
            if (a * C) // 4 == (b * C) // 8:
                assert w[b, a, 1, 1] == C / 8
            else:
                assert abs(w[b, a, 1, 1]) < 1e-2
    off_centre = w.clone()
    off_centre[:, :, 1, 1] = 0
    assert 0 < off_centre.abs().max() < 1e-2  # eps ~ N(0, sigma^2): present and small
    x = torch.randn(1, C, 40, 40)
    assert not torch.equal(module(x), F.relu(x))  # the noise is really there
    torch.testing.assert_close(module(x), F.relu(x), rtol=0, atol=0.2)


@pytest.mark.parametrize("C", [1, 3, 21])
def test_context_module_weights_match_table_1(C):
    assert _weights(ContextModule(C)) == 64 * C * C
    assert _weights(ContextModule(C, "large")) == 15_422 * C * C


def test_large_variant_needs_seven_layers():
    with pytest.raises(ValueError, match="large variant is defined for 7"):
        ContextModule(4, "large", dilations=(1, 2, 4))


@pytest.mark.parametrize("padding", ["input", "layer"])
def test_context_module_geometry_against_the_oracle(padding):
    module = ContextModule(2, padding=padding, init="default")
    check_against_oracle(module, (1, 2, 24, 24), big_shape=(1, 2, 150, 150))
    report = convlens.analyze(module, (1, 2, 150, 150))
    assert report[""].rf == (67, 67)  # 1 + 2 * (1 + 1 + 2 + 4 + 8 + 16 + 1)
    assert report[""].output_shape == (1, 2, 150, 150)


def test_exponential_stack_receptive_field():
    """3x3 layers with dilations 2^i: layer i sees 2^(i+2) - 1 pixels (paper, section 3)."""
    n = 6
    model = nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=2 ** i, padding=2 ** i) for i in range(n)])
    shape = (1, 1, 300, 300)
    report = convlens.analyze(model, shape)
    for i in range(n):
        assert report[str(i)].rf == (2 ** (i + 2) - 1,) * 2
    centre = probe(model, shape, unit=(150, 150))
    assert [hi - lo + 1 for lo, hi in centre.bbox] == [2 ** (n + 1) - 1] * 2


def test_dilation_networks_shapes_and_params():
    slim = dilation_net(8, 3, width=1 / 16, fc_channels=8)
    x = torch.randn(1, 3, 420, 420)
    # the front-end loses 372 pixels and divides by 8 (900 -> 66 in the paper): 420 -> 6
    assert tuple(slim(x).shape) == convlens.analyze(slim, (1, 3, 420, 420))[""].output_shape == (1, 3, 6, 6)
    with torch.device("meta"):
        full = dilation_net(10, 19)
    vgg = 14_714_688
    fc = (512 * 4096 * 49 + 4096) + (4096 * 4096 + 4096) + (4096 * 19 + 19)
    context = (9 * 9 + 1) * 19 ** 2 + 10 * 19  # nine 3x3 layers and the 1x1, biases
    assert sum(p.numel() for p in full.parameters()) == vgg + fc + context


def test_dilation_network_geometry_against_the_oracle():
    slim = dilation_net(7, 2, width=1 / 32, fc_channels=2)
    check_against_oracle(slim, (1, 3, 404, 404), max_rows=12)


# --- Kronecker products and composed kernels ---------------------------------------------------------

def _single_channel_stack(dilations, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Conv2d(1, 1, 3, dilation=d, bias=False) for d in dilations]).to(DOUBLE)


def test_dilations_1_3_9_are_one_27x27_kronecker_kernel():
    stack = _single_channel_stack((1, 3, 9))
    single = compose(stack)
    k1, k3, k9 = (m.weight[0, 0].detach() for m in stack)
    assert single.kernel_size == (27, 27)
    assert torch.equal(single.weight[0, 0], torch.kron(k9, torch.kron(k3, k1)))
    x = torch.randn(1, 1, 64, 64, dtype=DOUBLE)
    torch.testing.assert_close(single(x), stack(x), rtol=0, atol=1e-12)


def _rearrangement_rank(kernel: torch.Tensor, a: int, b: int) -> int:
    """Rank of Van Loan & Pitsianis's rearrangement of an (ab x ab) kernel into (a^2 x b^2): 1 exactly
    when the kernel is kron(A, B) with A a x a and B b x b."""
    blocks = kernel.reshape(a, b, a, b).permute(0, 2, 1, 3).reshape(a * a, b * b)
    return int(torch.linalg.matrix_rank(blocks))


def test_dilations_1_2_4_are_not_a_kronecker_product():
    single = compose(_single_channel_stack((1, 2, 4)))
    assert single.kernel_size == (15, 15)  # 1 + 2 * (1 + 2 + 4): the taps overlap, 15 is not 27
    kernel = single.weight[0, 0].detach()
    assert _rearrangement_rank(kernel, 3, 5) > 1 and _rearrangement_rank(kernel, 5, 3) > 1
    kron = compose(_single_channel_stack((1, 3))).weight[0, 0].detach()
    assert _rearrangement_rank(kron, 3, 3) == 1  # the test can tell a Kronecker product


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2 ** 31), k=st.sampled_from([1, 2, 3]), depth=st.integers(1, 4),
       padded=st.booleans(), bias=st.booleans())
def test_compose_equals_any_linear_stack(seed, k, depth, padded, bias):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[k]

    def draw(lo, hi):
        return tuple(int(v) for v in rng.integers(lo, hi + 1, k))
    layers, c = [], int(rng.integers(1, 4))
    for _ in range(depth):
        groups = int(rng.choice([g for g in (1, 2, 3) if c % g == 0]))
        cout = groups * int(rng.integers(1, 3))
        layers.append(conv(c, cout, draw(1, 3), draw(1, 2), draw(0, 2) if padded else 0, draw(1, 3),
                           groups=groups, bias=bias))
        c = cout
    stack = nn.Sequential(*layers).to(DOUBLE)
    size = 40 if k < 3 else 18
    x = torch.randn(1, layers[0].in_channels, *[size] * k, dtype=DOUBLE)
    try:
        expected = stack(x)
    except RuntimeError:
        return  # the stack does not fit this input
    single = compose(stack)
    got = single(x)
    assert got.shape == expected.shape and single.dilation == (1,) * k and single.groups == 1
    if padded:
        # the stack's inner padding zeros are not the input's: compare the units whose window
        # (u * S - P ... u * S - P + K - 1) holds no padding
        keep = [[u for u in range(n) if 0 <= u * s - p and u * s - p + kk <= size]
                for n, s, p, kk in zip(expected.shape[2:], single.stride, single.padding, single.kernel_size)]
        if not all(keep):
            return
        index = np.ix_(*keep)
        got, expected = got[(..., *index)], expected[(..., *index)]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)


def test_compose_refuses_what_has_no_single_kernel():
    with pytest.raises(ValueError, match="ReLU"):
        compose(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU(), nn.Conv2d(1, 1, 3)))
    with pytest.raises(ValueError, match="padding"):
        compose(nn.Sequential(nn.Conv2d(1, 1, 3, padding="same")))
    with pytest.raises(ValueError, match="takes 3 maps"):
        compose([nn.Conv2d(1, 2, 3), nn.Conv2d(3, 1, 3)])


def test_kronecker_conv_kernel_is_the_kronecker_product_of_its_factors():
    torch.manual_seed(0)
    layer = KroneckerConv2d(2, 3, ((3, 3), (2, 3)), rank=2, padding=2).to(DOUBLE)
    a, b = (f.detach() for f in layer.factors)
    assert layer.weight.shape == (3, 2, 6, 9)
    for o in range(3):
        for i in range(2):
            expected = sum(torch.kron(a[r, o, i], b[r, o, i]) for r in range(2))
            torch.testing.assert_close(layer.weight[o, i], expected, rtol=0, atol=1e-15)
    x = torch.randn(1, 2, 20, 20, dtype=DOUBLE)
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight, layer.bias, padding=2))
    check_against_oracle(layer, (1, 2, 20, 20), big_shape=(1, 2, 60, 60))


def test_one_kronecker_factor_pair_equals_a_stack_with_dilation_equal_to_the_inner_size():
    """kron(A, B) with B 3x3: the stack B (dilation 1) then A (dilation 3) - the cascade of the seed."""
    torch.manual_seed(0)
    layer = KroneckerConv2d(1, 1, (3, 3), bias=False).to(DOUBLE)
    a, b = (f.detach()[0, 0, 0] for f in layer.factors)
    stack = nn.Sequential(nn.Conv2d(1, 1, 3, bias=False), nn.Conv2d(1, 1, 3, dilation=3, bias=False)).to(DOUBLE)
    with torch.no_grad():
        stack[0].weight.copy_(b)
        stack[1].weight.copy_(a)
    x = torch.randn(1, 1, 30, 30, dtype=DOUBLE)
    torch.testing.assert_close(layer(x), stack(x), rtol=0, atol=1e-12)


def test_fully_connected_layers_as_convolutions_give_identical_outputs():
    """fc6 of the dilated front-end is VGG's first FC layer written as a 7x7 convolution."""
    torch.manual_seed(0)
    fc = nn.Linear(8 * 7 * 7, 5).to(DOUBLE)
    conv = nn.Conv2d(8, 5, 7).to(DOUBLE)
    with torch.no_grad():
        conv.weight.copy_(fc.weight.view(5, 8, 7, 7))
        conv.bias.copy_(fc.bias)
    x = torch.randn(4, 8, 7, 7, dtype=DOUBLE)
    torch.testing.assert_close(conv(x).flatten(1), fc(x.flatten(1)), rtol=0, atol=1e-12)
    # on a larger map the convolution slides: every position is the FC layer applied to its window
    big = torch.randn(1, 8, 10, 12, dtype=DOUBLE)
    out = conv(big)
    assert out.shape == (1, 5, 4, 6)
    torch.testing.assert_close(out[0, :, 2, 3], fc(big[:, :, 2:9, 3:10].flatten(1))[0], rtol=0, atol=1e-12)


# --- cheaper convolutions ----------------------------------------------------------------------------

@pytest.mark.parametrize("block, shape, weights", [
    (DepthwiseSeparableConv2d(8, 16, 3, padding=1), (1, 8, 20, 20), 8 * 9 + 8 * 16),
    (DepthwiseSeparableConv2d(4, 6, 5, stride=2, dilation=2, multiplier=2), (1, 4, 30, 30), 8 * 25 + 8 * 6),
    (SpatiallySeparableConv2d(8, 16, 5, 2, 2), (1, 8, 21, 21), 8 * 16 * 5 + 16 * 16 * 5),
    (ShuffledGroupConv2d(8, 12, 3, groups=4), (1, 8, 20, 20), 12 * 2 * 9),
    (ResizeConv2d(6, 4), (1, 6, 10, 10), 6 * 4 * 9),
])
def test_cheap_convolutions_shapes_weights_and_geometry(block, shape, weights):
    assert _weights(block) == weights
    x = torch.randn(*shape)
    assert convlens.analyze(block, shape)[""].output_shape == tuple(block(x).shape)
    big = tuple(shape[:2]) + tuple(3 * s for s in shape[2:])
    check_against_oracle(block, shape, big_shape=big)


def test_spatially_separable_conv_reads_the_window_of_the_square_one():
    sep = SpatiallySeparableConv2d(2, 2, 5, stride=2, padding=2, dilation=3)
    square = nn.Conv2d(2, 2, 5, stride=2, padding=2, dilation=3)
    shape = (1, 2, 40, 40)
    assert probe(sep, shape, unit=(5, 7)).bbox == probe(square, shape, unit=(5, 7)).bbox
    a, b = (convlens.analyze(m, shape) for m in (sep, square))
    assert a[""].output_shape == b[""].output_shape and a[""].rf == b[""].rf


def test_channel_shuffle_interleaves_the_groups():
    shuffle = ShuffledGroupConv2d(6, 6, 1, groups=3).shuffle
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert shuffle(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]  # group g holds maps 2g, 2g + 1


def _all_ones_counts(module: nn.Module, shape) -> torch.Tensor:
    """Paths from the input to every output unit: the module with all-ones weights on all-ones input."""
    module = module.to(DOUBLE)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.fill_(1.0 if name.endswith("weight") else 0.0)
        return module(torch.ones(*shape, dtype=DOUBLE))[0, 0]


def test_resize_conv_has_no_checkerboard_where_the_transposed_conv_has_one():
    """Odena et al. 2016: a 3x3 stride-2 transposed conv gives interior units 1, 2 or 4 paths; nearest
    resize then a 3x3 conv gives every one of them 9."""
    transposed = _all_ones_counts(nn.ConvTranspose2d(1, 1, 3, stride=2), (1, 1, 12, 12))[4:-4, 4:-4]
    resized = _all_ones_counts(ResizeConv2d(1, 1), (1, 1, 12, 12))[4:-4, 4:-4]
    assert set(transposed.unique().tolist()) == {1.0, 2.0, 4.0}
    assert set(resized.unique().tolist()) == {9.0}
    report = convlens.analyze(nn.ConvTranspose2d(1, 1, 3, stride=2), (1, 1, 12, 12))
    assert report.checkerboard("").ratio == 4.0
    assert not any(d.kind == "checkerboard" for d in convlens.analyze(ResizeConv2d(1, 1), (1, 1, 12, 12)).diagnostics)


def test_aspp_branches_and_global_context():
    head = ASPP(4, 3, rates=(2, 3)).eval()
    shape = (1, 4, 25, 25)
    report = convlens.analyze(head, shape)
    x = torch.randn(*shape)
    assert report[""].output_shape == tuple(head(x).shape) == (1, 3, 25, 25)
    assert report[""].global_context  # the image-pooling branch sees the whole input
    check_against_oracle(head, shape, big_shape=(1, 4, 80, 80))
