"""convlens.arith against independent oracles: torch's real tensor shapes, values and gradients.

Combinations torch rejects are skipped (torch raises RuntimeError); whenever torch accepts one,
arith must accept it too and agree.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from convlens.arith import (
    Relationship,
    conv_output_size,
    effective_kernel,
    output_padding_for,
    padding_for_output,
    pool_output_size,
    relationships,
    same_padding,
    transposed_conv_output_size,
    unread_border,
)
from convlens.errors import ConvlensError

SETTINGS = settings(max_examples=300, deadline=None)
sizes = st.integers(1, 40)
kernels = st.integers(1, 7)
strides = st.integers(1, 5)
big_strides = st.integers(2, 5)
pads = st.integers(0, 6)
dilations = st.integers(1, 4)
extras = st.integers(0, 30)
REL = {r.number: r for r in relationships()}


def ones(n: int) -> torch.Tensor:
    return torch.ones(1, 1, n)


def torch_len(make: Callable[[], torch.Tensor]) -> int | None:
    """Last-axis length of the tensor torch makes, or None when torch rejects the arguments."""
    try:
        return make().shape[-1]
    except RuntimeError:
        return None


def conv_len(i: int, k: int, s: int = 1, pl: int = 0, pr: int | None = None, d: int = 1) -> int | None:
    x = F.pad(ones(i), (pl, pl if pr is None else pr))
    return torch_len(lambda: F.conv1d(x, ones(k), stride=s, dilation=d))


def tconv_len(i: int, k: int, s: int = 1, p: int = 0, op: int = 0, d: int = 1) -> int | None:
    return torch_len(
        lambda: F.conv_transpose1d(ones(i), ones(k), stride=s, padding=p, output_padding=op, dilation=d)
    )


# ---------------------------------------------------------------- forward sizes vs torch shapes


@SETTINGS
@given(i=sizes, k=kernels, s=strides, pl=pads, pr=pads, d=dilations)
def test_conv_output_size_matches_conv1d(i, k, s, pl, pr, d):
    expected = conv_len(i, k, s, pl, pr, d)
    if expected is None:
        return
    assert conv_output_size(i, k, s, pl, d, padding_right=pr) == expected
    if pl == pr:
        assert conv_output_size(i, k, stride=s, padding=pl, dilation=d) == expected


@SETTINGS
@given(ih=sizes, iw=sizes, kh=kernels, kw=kernels, sh=strides, sw=strides, ph=pads, pw=pads,
       dh=dilations, dw=dilations)
def test_conv_output_size_per_axis_matches_conv2d(ih, iw, kh, kw, sh, sw, ph, pw, dh, dw):
    try:
        y = F.conv2d(torch.ones(1, 1, ih, iw), torch.ones(1, 1, kh, kw), stride=(sh, sw),
                     padding=(ph, pw), dilation=(dh, dw))
    except RuntimeError:
        return
    assert conv_output_size(ih, kh, sh, ph, dh) == y.shape[-2]
    assert conv_output_size(iw, kw, sw, pw, dw) == y.shape[-1]


@SETTINGS
@given(i=sizes, k=kernels, s=strides, p=st.integers(0, 4), d=dilations, ceil=st.booleans())
def test_pool_output_size_matches_max_pool1d(i, k, s, p, d, ceil):
    expected = torch_len(lambda: F.max_pool1d(ones(i), k, s, p, d, ceil_mode=ceil))
    if expected is None:
        return
    assert pool_output_size(i, k, s, p, d, ceil_mode=ceil) == expected
    assert conv_output_size(i, k, s, p, d, ceil_mode=ceil) == expected


@SETTINGS
@given(i=sizes, k=kernels, s=strides, p=st.integers(0, 4), ceil=st.booleans())
def test_pool_output_size_matches_avg_pool1d(i, k, s, p, ceil):
    expected = torch_len(lambda: F.avg_pool1d(ones(i), k, s, p, ceil_mode=ceil))
    if expected is None:
        return
    assert pool_output_size(i, k, stride=s, padding=p, ceil_mode=ceil) == expected


@SETTINGS
@given(i=sizes, k=kernels, s=strides, p=pads, op=st.integers(0, 4), d=dilations)
def test_transposed_conv_output_size_matches_conv_transpose1d(i, k, s, p, op, d):
    expected = tconv_len(i, k, s, p, op, d)
    if expected is None:
        return
    assert transposed_conv_output_size(i, k, s, p, op, d) == expected
    assert transposed_conv_output_size(i, k, stride=s, padding=p, output_padding=op, dilation=d) == expected


@SETTINGS
@given(k=kernels, d=dilations)
def test_effective_kernel_is_the_span_of_a_dilated_kernel(k, d):
    # A dilated kernel on an input exactly its span yields one output, on one pixel less none.
    k_eff = effective_kernel(k, d)
    assert conv_len(k_eff, k, d=d) == 1
    if k_eff > 1:
        assert conv_len(k_eff - 1, k, d=d) is None


# ---------------------------------------------------------------- Dumoulin & Visin relationships


def test_relationships_are_the_fifteen_of_the_paper():
    rels = relationships()
    assert [r.number for r in rels] == list(range(1, 16))
    assert all(isinstance(r, Relationship) and r.title and r.condition and r.formula for r in rels)
    assert [r.kind for r in rels] == ["conv"] * 6 + ["pool"] + ["transposed"] * 7 + ["conv"]
    with pytest.raises(AttributeError):
        rels[0].number = 2  # frozen


@SETTINGS
@given(k=kernels, extra=extras)
def test_rel1_no_padding_unit_stride(k, extra):
    i = k + extra
    assert REL[1].check(i=i, k=k) == conv_len(i, k)


@SETTINGS
@given(k=kernels, p=pads, extra=extras)
def test_rel2_padding_unit_stride(k, p, extra):
    i = max(1, k - 2 * p) + extra
    assert REL[2].check(i=i, k=k, p=p) == conv_len(i, k, pl=p)


@SETTINGS
@given(n=st.integers(0, 4), i=sizes)
def test_rel3_half_padding(n, i):
    k = 2 * n + 1
    assert REL[3].check(i=i, k=k) == conv_len(i, k, pl=k // 2) == i


@SETTINGS
@given(k=kernels, i=sizes)
def test_rel4_full_padding(k, i):
    assert REL[4].check(i=i, k=k) == conv_len(i, k, pl=k - 1)


@SETTINGS
@given(k=kernels, s=big_strides, extra=extras)
def test_rel5_no_padding_strided(k, s, extra):
    i = k + extra
    assert REL[5].check(i=i, k=k, s=s) == conv_len(i, k, s)


@SETTINGS
@given(k=kernels, s=strides, p=pads, extra=extras)
def test_rel6_general(k, s, p, extra):
    i = max(1, k - 2 * p) + extra
    assert REL[6].check(i=i, k=k, s=s, p=p) == conv_len(i, k, s, p)


@SETTINGS
@given(k=kernels, s=strides, extra=extras)
def test_rel7_pooling(k, s, extra):
    i = k + extra
    assert REL[7].check(i=i, k=k, s=s) == torch_len(lambda: F.max_pool1d(ones(i), k, s))


def transpose_round_trip(i: int, k: int, s: int = 1, p: int = 0, a: int = 0) -> tuple[int, int]:
    """(i', o'): size after the direct conv, then after its transposed conv (torch)."""
    i_prime = conv_len(i, k, s, p)
    assert i_prime is not None
    o_prime = tconv_len(i_prime, k, s, p, a)
    assert o_prime is not None
    return i_prime, o_prime


@SETTINGS
@given(k=kernels, extra=extras)
def test_rel8_transposed_no_padding_unit_stride(k, extra):
    i_prime, o_prime = transpose_round_trip(k + extra, k)
    assert REL[8].check(i_prime=i_prime, k=k) == o_prime == k + extra


@SETTINGS
@given(k=kernels, p=pads, extra=extras)
def test_rel9_transposed_padding_unit_stride(k, p, extra):
    i = max(1, k - 2 * p) + extra
    i_prime, o_prime = transpose_round_trip(i, k, p=p)
    assert REL[9].check(i_prime=i_prime, k=k, p=p) == o_prime == i


@SETTINGS
@given(n=st.integers(0, 4), i=sizes)
def test_rel10_transposed_half_padding(n, i):
    k = 2 * n + 1
    i_prime, o_prime = transpose_round_trip(i, k, p=k // 2)
    assert REL[10].check(i_prime=i_prime, k=k) == o_prime == i


@SETTINGS
@given(k=kernels, i=sizes)
def test_rel11_transposed_full_padding(k, i):
    i_prime, o_prime = transpose_round_trip(i, k, p=k - 1)
    assert REL[11].check(i_prime=i_prime, k=k) == o_prime == i


@SETTINGS
@given(k=kernels, s=big_strides, m=st.integers(0, 8))
def test_rel12_transposed_no_padding_strided_exact(k, s, m):
    i = k + m * s
    i_prime, o_prime = transpose_round_trip(i, k, s)
    assert REL[12].check(i_prime=i_prime, k=k, s=s) == o_prime == i


@SETTINGS
@given(k=kernels, s=big_strides, p=pads, m=st.integers(0, 8))
def test_rel13_transposed_padding_strided_exact(k, s, p, m):
    m += max(0, math.ceil((1 - k + 2 * p) / s))  # keep i >= 1
    i = k - 2 * p + m * s
    i_prime, o_prime = transpose_round_trip(i, k, s, p)
    assert REL[13].check(i_prime=i_prime, k=k, s=s, p=p) == o_prime == i


@SETTINGS
@given(k=kernels, s=big_strides, p=pads, extra=extras)
def test_rel14_transposed_general(k, s, p, extra):
    i = max(1, k - 2 * p) + extra
    a = (i + 2 * p - k) % s
    i_prime, o_prime = transpose_round_trip(i, k, s, p, a)
    assert REL[14].check(i_prime=i_prime, k=k, s=s, p=p, a=a) == o_prime == i


@SETTINGS
@given(k=kernels, s=strides, p=pads, d=dilations, extra=extras)
def test_rel15_dilated(k, s, p, d, extra):
    i = max(1, d * (k - 1) + 1 - 2 * p) + extra
    assert REL[15].check(i=i, k=k, s=s, p=p, d=d) == conv_len(i, k, s, p, d=d)


# ---------------------------------------------------------------- inverse solvers


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@SETTINGS
@given(i=sizes, k=kernels, d=dilations, seed=st.integers(0, 2**16))
def test_same_padding_matches_torch_padding_same(i, k, d, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 1, i, generator=gen, dtype=torch.float64)
    w = torch.randn(1, 1, k, generator=gen, dtype=torch.float64)  # asymmetric: a shift would show
    left, right = same_padding(k, dilation=d)
    assert same_padding(k, 1, d, i=i) == (left, right)
    expected = F.conv1d(x, w, padding="same", dilation=d)
    torch.testing.assert_close(F.conv1d(F.pad(x, (left, right)), w, dilation=d), expected)


@SETTINGS
@given(i=sizes, k=kernels, s=big_strides, d=dilations)
def test_same_padding_strided_is_minimal_ceil_padding(i, k, s, d):
    left, right = same_padding(k, s, d, i=i)
    assert left <= right <= left + 1
    assert conv_len(i, k, s, left, right, d) == math.ceil(i / s)
    if left + right:  # one pixel less of padding no longer reaches ceil(i / s)
        assert conv_len(i, k, s, left, right - 1, d) != math.ceil(i / s)


@SETTINGS
@given(i=sizes, o=st.integers(1, 30), k=kernels, s=strides, d=dilations)
def test_padding_for_output_reaches_target_with_minimal_padding(i, o, k, s, d):
    try:
        left, right = padding_for_output(i, o, k, s, d)
    except ConvlensError:
        span = d * (k - 1) + 1
        assert all(conv_len(i, k, s, 0, t, d) != o for t in range(o * s + span + 1))
        return
    assert right - left in (0, 1)
    assert conv_len(i, k, s, left, right, d) == o
    assert all(conv_len(i, k, s, 0, t, d) != o for t in range(left + right))


@SETTINGS
@given(i=sizes, o=st.integers(1, 60), k=kernels, s=strides, p=pads, d=dilations)
def test_output_padding_for_reaches_target(i, o, k, s, p, d):
    try:
        op = output_padding_for(i, o, k, s, p, d)
    except ConvlensError:
        assert all(tconv_len(i, k, s, p, a, d) != o for a in range(max(s, d) + 2))
        return
    assert 0 <= op < max(s, d)
    assert tconv_len(i, k, s, p, op, d) == o


@SETTINGS
@given(i=sizes, k=kernels, s=strides, pl=pads, pr=pads, d=dilations)
def test_unread_border_matches_gradient(i, k, s, pl, pr, d):
    x = torch.ones(1, 1, i, dtype=torch.float64, requires_grad=True)
    try:
        y = F.conv1d(F.pad(x, (pl, pr)), torch.ones(1, 1, k, dtype=torch.float64), stride=s, dilation=d)
    except RuntimeError:
        return
    y.sum().backward()
    read = (x.grad[0, 0] != 0).tolist()
    trailing = len(read) - (max(j for j, r in enumerate(read) if r) + 1) if any(read) else i
    assert unread_border(i, k, s, pl, d, padding_right=pr) == trailing
    if pl == pr:
        assert unread_border(i, k, stride=s, padding=pl, dilation=d) == trailing


def test_unread_border_examples():
    assert unread_border(10, 3, stride=2) == 1  # windows end at pixel 8; pixel 9 is skipped
    assert unread_border(224, 7, stride=2, padding=3) == 0
    assert unread_border(2, 1, stride=3, padding=0, padding_right=2) == 1  # 2nd window in padding


# ---------------------------------------------------------------- errors


INVALID = {
    "kernel 0": lambda: effective_kernel(0),
    "dilation 0": lambda: effective_kernel(3, dilation=0),
    "float kernel": lambda: conv_output_size(10, 2.5),
    "bool stride": lambda: conv_output_size(10, 3, stride=True),
    "stride 0": lambda: conv_output_size(10, 3, stride=0),
    "negative padding": lambda: conv_output_size(10, 3, padding=-1),
    "negative right padding": lambda: conv_output_size(10, 3, padding_right=-1),
    "input 0": lambda: conv_output_size(0, 1),
    "kernel larger than input": lambda: conv_output_size(2, 5),
    "kernel larger than input, ceil": lambda: pool_output_size(2, 5, ceil_mode=True),
    "dilated kernel larger than input": lambda: conv_output_size(5, 3, dilation=3),
    "output_padding too large": lambda: transposed_conv_output_size(5, 3, stride=2, output_padding=2),
    "negative output_padding": lambda: transposed_conv_output_size(5, 3, output_padding=-1),
    "transposed output < 1": lambda: transposed_conv_output_size(1, 1, padding=3),
    "same padding strided without i": lambda: same_padding(3, stride=2),
    "same padding kernel 0": lambda: same_padding(0),
    "padding for unreachable output": lambda: padding_for_output(100, 2, 3),
    "padding for output 0": lambda: padding_for_output(10, 0, 3),
    "unreachable transposed output": lambda: output_padding_for(5, 100, 3, stride=2),
    "transposed output too small": lambda: output_padding_for(5, 2, 3, stride=2),
    "unread border of an empty output": lambda: unread_border(2, 5),
    "relationship 3 even kernel": lambda: REL[3].check(i=5, k=4),
    "relationship 10 even kernel": lambda: REL[10].check(i_prime=5, k=2),
    "relationship 14 a >= s": lambda: REL[14].check(i_prime=5, k=3, s=2, p=0, a=2),
}


@pytest.mark.parametrize("call", INVALID.values(), ids=INVALID.keys())
def test_invalid_arguments_raise_one_line_convlens_error(call):
    with pytest.raises(ConvlensError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message and message.endswith(".")
