"""Cost rules: multiply-accumulates (MACs) and bias additions per op.

Conventions match ``torch.utils.flop_counter`` (FLOPs = 2 x MACs, bias not included):
a convolution costs one MAC per weight tap per *output* position; a transposed convolution one per
weight tap per *input* position (each input pixel is spread over the kernel once). Groups are in the
weight's shape. Bias adds are their own figure (one per output element).
"""

from __future__ import annotations

from math import prod

import torch

from .args import CONVOLUTIONS, conv_args
from ..capture import RNN
from .registry import Cost, RuleContext, attention_targets, register_cost

aten = torch.ops.aten


def conv_macs(x_shape, w_shape, out_shape, transposed: bool) -> int:
    """MACs of a (transposed) convolution from the aten shapes.

    Direct: N * C_out * prod(out spatial) * (C_in / groups) * prod(kernel) = N * prod(w) * prod(out sp).
    Transposed (weight is (C_in, C_out / groups, *k)): every input element meets C_out/groups * prod(k)
    taps, so N * prod(w) * prod(in spatial).
    """
    k = len(w_shape) - 2
    batch = prod(x_shape[:-k - 1]) if len(x_shape) > k + 1 else 1
    spatial = x_shape[-k:] if transposed else out_shape[-k:]
    return batch * prod(w_shape) * prod(spatial)


@register_cost(list(CONVOLUTIONS))
def convolution(ctx: RuleContext) -> Cost:
    c = conv_args(ctx.node, ctx.tensors)
    macs = conv_macs(ctx.shape(c.input), ctx.shape(c.weight), ctx.out_shape, c.transposed)
    return Cost(macs, prod(ctx.out_shape) if c.bias is not None else 0)


def _matmul_macs(a_shape, b_shape, out_shape) -> int:
    inner = a_shape[-1]
    return prod(out_shape) * inner


@register_cost([aten.mm, aten.bmm, aten.matmul])
def matmul(ctx: RuleContext) -> Cost:
    n = ctx.node
    return Cost(_matmul_macs(ctx.shape(n.arg(0, "self")), ctx.shape(n.arg(1, "mat2")), ctx.out_shape))


@register_cost([aten.addmm, aten.baddbmm])
def addmm(ctx: RuleContext) -> Cost:
    n = ctx.node
    macs = _matmul_macs(ctx.shape(n.arg(1, "mat1")), ctx.shape(n.arg(2, "mat2")), ctx.out_shape)
    return Cost(macs, prod(ctx.out_shape))


@register_cost(attention_targets())
def attention(ctx: RuleContext) -> Cost:
    """q k^T then (.) v: B*H*L*S*E + B*H*L*S*Ev."""
    n = ctx.node
    q, k, v = (ctx.shape(n.arg(i, name)) for i, name in ((0, "query"), (1, "key"), (2, "value")))
    batch = prod(q[:-2])
    return Cost(batch * q[-2] * k[-2] * (q[-1] + v[-1]))


@register_cost(RNN)
def recurrent(ctx: RuleContext) -> Cost:
    """Every step multiplies each weight matrix (input-hidden, hidden-hidden, LSTM's projection) by one
    vector per sequence: steps x batch x (their elements); the biases are added as often."""
    n = ctx.node
    x, params, batch_first = n.args[1], n.args[3], n.args[9]
    shape = ctx.shape(x)
    steps = shape[1] if len(shape) == 3 and batch_first else shape[0]
    batch = 1 if len(shape) == 2 else shape[0 if batch_first else 1]
    weights = sum(prod(ctx.shape(p)) for p in params if len(ctx.shape(p)) == 2)
    biases = sum(prod(ctx.shape(p)) for p in params if len(ctx.shape(p)) == 1)
    return Cost(steps * batch * weights, steps * batch * biases)
