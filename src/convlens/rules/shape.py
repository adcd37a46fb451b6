"""Rules for ops that move data between dimensions without computing: views, permutes, slices,
selection, concatenation and splitting."""

from __future__ import annotations

from fractions import Fraction

import torch

from .plans import (affine, axes_of, concat, constant_index, identity, is_tokens, normalize, permute, pick_channels,
                    plain, pointwise, squeeze_unsqueeze, stacked, token_slice, tracked, view, windowed)
from .spatial import pad_taps
from .registry import Digit, Plan, RuleContext, Source, digit_axes, extras, register_geometry

aten = torch.ops.aten


def _ops(*names: str) -> list:
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


@register_geometry(_ops("view", "_unsafe_view", "reshape", "flatten", "unflatten", "view_as", "_reshape_alias"))
def reshape(ctx: RuleContext) -> Plan:
    return view(ctx, ctx.node.arg(0, "self"))


@register_geometry(_ops("unsqueeze"))
def unsqueeze(ctx: RuleContext) -> Plan:
    x = ctx.node.arg(0, "self")
    return squeeze_unsqueeze(ctx, x, insert=[ctx.node.arg(1, "dim") % (len(ctx.shape(x)) + 1)])


@register_geometry(_ops("squeeze"))
def squeeze(ctx: RuleContext) -> Plan:
    x = ctx.node.arg(0, "self")
    shape = ctx.shape(x)
    dims = ctx.node.arg(1, "dim", None)
    dims = range(len(shape)) if dims is None else [dims] if isinstance(dims, int) else dims
    return squeeze_unsqueeze(ctx, x, remove=[d % len(shape) for d in dims if shape[d % len(shape)] == 1])


@register_geometry(_ops("expand", "expand_as", "broadcast_to"))
def expand(ctx: RuleContext) -> Plan:
    return pointwise(ctx, [ctx.node.arg(0, "self")])


@register_geometry(_ops("permute"))
def permute_rule(ctx: RuleContext) -> Plan:
    x = ctx.node.arg(0, "self")
    rank = len(ctx.shape(x))
    return permute(ctx, x, [d % rank for d in ctx.node.arg(1, "dims")])


@register_geometry(_ops("transpose", "swapaxes", "t", "numpy_T"))
def transpose(ctx: RuleContext) -> Plan:
    x = ctx.node.arg(0, "self")
    rank = len(ctx.shape(x))
    order = list(range(rank))
    if rank >= 2:
        d0, d1 = (ctx.node.arg(1, "dim0", 0) % rank, ctx.node.arg(2, "dim1", 1) % rank)
        order[d0], order[d1] = order[d1], order[d0]
    return permute(ctx, x, order)


def _pick(ctx: RuleContext, x, dim: int, picked: range | None, plan: Plan, out_shape=None) -> Plan:
    """``plan``, the pick of ``picked`` along ``dim``, reading the channel pieces it picks where the
    dim holds no spatial axis (:func:`~convlens.rules.plans.pick_channels`)."""
    return plan if axes_of(ctx.dims(x)[dim]) else pick_channels(ctx, x, dim, picked, plan, out_shape)


@register_geometry(_ops("slice"))
def slice_rule(ctx: RuleContext) -> Plan:
    """``x[..., start:end:step]``: output v reads start + v*step (U-Net crops, strided subsampling)."""
    n = ctx.node
    x = n.arg(0, "self")
    size = ctx.shape(x)[n.arg(1, "dim", 0) % len(ctx.shape(x))]
    dim = n.arg(1, "dim", 0) % len(ctx.shape(x))
    start, step = n.arg(2, "start"), n.arg(4, "step", 1) or 1
    start = 0 if start is None else start
    start = min(max(start + size if start < 0 else start, 0), size)
    if is_tokens(ctx.dims(x)[dim]) and step == 1:
        return token_slice(ctx, x, dim, start, start + ctx.out_shape[dim])
    picked = range(start, start + step * ctx.out_shape[dim], step)
    return _pick(ctx, x, dim, picked, windowed(ctx, x, {dim: (affine(step, start), Fraction(step))}, per_channel=True))


@register_geometry(_ops("select"))
def select(ctx: RuleContext) -> Plan:
    """``x[:, :, i]``: the dim disappears and its axis stays local at one position."""
    x = ctx.node.arg(0, "self")
    dim = ctx.node.arg(1, "dim") % len(ctx.shape(x))
    index = ctx.node.arg(2, "index") % ctx.shape(x)[dim]
    if is_tokens(ctx.dims(x)[dim]):
        return token_slice(ctx, x, dim, index, index + 1, drop=True)
    return _pick(ctx, x, dim, range(index, index + 1),
                 windowed(ctx, x, {dim: (constant_index(index), Fraction(1))}, drop=[dim], per_channel=True))


@register_geometry(_ops("cat", "concat", "concatenate"))
def cat(ctx: RuleContext) -> Plan:
    return concat(ctx, ctx.node.arg(0, "tensors"), ctx.node.arg(1, "dim", 0))


@register_geometry(_ops("stack"))
def stack(ctx: RuleContext) -> Plan:
    return stacked(ctx, ctx.node.arg(0, "tensors"), ctx.node.arg(1, "dim", 0))


@register_geometry(_ops("split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk",
                        "tensor_split"))
def split(ctx: RuleContext) -> list[Plan]:
    """Each output is a slice of the input along ``dim``."""
    x = ctx.node.arg(0, "self")
    dim = ctx.node.arg(2, "dim", 0) % len(ctx.shape(x))
    plans, start = [], 0
    for shape in ctx.out_shapes():
        if is_tokens(ctx.dims(x)[dim]):
            plans.append(token_slice(_OneOutput(ctx, shape), x, dim, start, start + shape[dim]))
        else:
            plans.append(_pick(ctx, x, dim, range(start, start + shape[dim]),
                               windowed(ctx, x, {dim: (affine(1, start), Fraction(1))}, out_shape=shape,
                                        per_channel=True), shape))
        start += shape[dim]
    return plans


@register_geometry(_ops("unbind"))
def unbind(ctx: RuleContext) -> list[Plan]:
    x = ctx.node.arg(0, "self")
    dim = ctx.node.arg(1, "dim", 0) % len(ctx.shape(x))
    if is_tokens(ctx.dims(x)[dim]):
        return [token_slice(_OneOutput(ctx, shape), x, dim, i, i + 1, drop=True)
                for i, shape in enumerate(ctx.out_shapes())]
    return [_pick(ctx, x, dim, range(i, i + 1), windowed(ctx, x, {dim: (constant_index(i), Fraction(1))}, drop=[dim],
                                                         out_shape=shape, per_channel=True), shape)
            for i, shape in enumerate(ctx.out_shapes())]


class _OneOutput(RuleContext):
    """A view of a context whose output shape is one of the op's several outputs (split, unbind)."""

    def __init__(self, ctx: RuleContext, shape: tuple[int, ...]):
        self.__dict__.update(ctx.__dict__)
        self._shape = tuple(shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self._shape


@register_geometry(_ops("unfold"))
def unfold(ctx: RuleContext) -> Plan:
    """``Tensor.unfold(dim, size, step)``: dim d of n positions becomes (n - size) // step + 1 blocks,
    and a new last dim holds each block's ``size`` elements. No element moves off its position:
    along a dim that holds one spatial axis whole, element (block b, offset j) is position
    b * step + j, two digits of the axis (:class:`~convlens.rules.registry.Digit`, weights step and
    1). They overlap where size > step (HaloNet's blocks with a halo, read by the attention within
    each block as :func:`~convlens.rules.plans.mix_digits` says) and partition the axis where size
    = step. Blocks with gaps between them (size < step) would leave positions no element holds:
    untracked. Along a dim of channels the copies keep every unit's window (channel pieces are
    dropped: the union over the channels stays)."""
    n = ctx.node
    x = n.arg(0, "self")
    if not ctx.shape(x):  # (a 0-dim tensor: one block of its one element)
        return pointwise(ctx, [x])
    d, size, step = n.arg(1, "dimension") % len(ctx.shape(x)), n.arg(2, "size"), n.arg(3, "step")
    blocks = ctx.out_shape[d]
    dims = list(ctx.dims(x))
    dim = dims[d]
    plan = Plan(dims=())
    for a in tracked(ctx, x):
        plan.local[a] = [Source(x.id, identity)]
    axes = axes_of(dim)
    dims[d] = plain(blocks)
    dims.append(plain(size))
    if axes or digit_axes([dim]):
        whole = len(dim) == 1 and len(axes) == 1 and extras(dim) == (0, 0)
        why = ("unfolds a dim that holds no single whole spatial axis (a flattened grid, part of a split axis, "
               "extra tokens)" if not whole else
               "unfolds blocks with gaps between them (positions no element holds)" if size < step else None)
        for a in set(axes) | digit_axes([dim]):
            if why is not None:
                plan.local.pop(a, None)
                plan.untracked[a] = why
        if why is None:
            dims[d] = (Digit(axes[0], blocks, step),) if blocks > 1 else plain(1)
            dims[-1] = (Digit(axes[0], size, 1),)
    plan.dims = normalize(dims)
    return plan


@register_geometry(_ops("as_strided", "as_strided_"))
def as_strided(ctx: RuleContext) -> Plan:
    """Only the harmless case: same sizes, and every dim longer than 1 keeps its stride (a memory
    format change of dims of size 1). Anything else reorders elements and is unsupported."""
    x = ctx.node.arg(0, "self")
    size, stride = list(ctx.node.arg(1, "size")), list(ctx.node.arg(2, "stride"))
    info = ctx.info(x)
    if size == list(info.shape) and all(n == 1 or a == b for n, a, b in zip(size, stride, info.stride)):
        return pointwise(ctx, [x])
    return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported="as_strided that reorders elements")


@register_geometry(_ops("roll"))
def roll(ctx: RuleContext) -> Plan:
    """``torch.roll`` along given dims: a circular shift (Swin's shifted windows)."""
    x = ctx.node.arg(0, "self")
    shifts, dims = list(ctx.node.arg(1, "shifts")), list(ctx.node.arg(2, "dims", []))
    if not dims:
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported="roll of the flattened tensor")
    rank = len(ctx.shape(x))
    return windowed(ctx, x, {d % rank: (pad_taps(shift, ctx.shape(x)[d % rank], "circular"), Fraction(1))
                             for shift, d in zip(shifts, dims)}, per_channel=True)


@register_geometry(_ops("channel_shuffle", "native_channel_shuffle"))
def channel_shuffle(ctx: RuleContext) -> Plan:
    """ShuffleNet's channel shuffle reorders dim 1 and nothing else: per position, unless dim 1 holds
    a spatial axis (then it would move positions, which no rule here tracks)."""
    x = ctx.node.arg(0, "self")
    if axes_of(ctx.dims(x)[1]):
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported="channel shuffle of a spatial dim")
    return pointwise(ctx, [x])


@register_geometry(_ops("index"))
def index(ctx: RuleContext) -> Plan:
    """``x[:, :, idx]`` with one 1-D index tensor on a dim that carries no spatial axis (a fixed
    permutation of channels or features): every position keeps its window, unless the channels may
    see different windows. Indices along a spatial axis (whose values say which positions) and
    several index tensors are unsupported."""
    x, indices = ctx.node.arg(0, "self"), list(ctx.node.arg(1, "indices"))
    used = [(d, i) for d, i in enumerate(indices) if i is not None]
    if len(used) != 1 or len(ctx.shape(used[0][1])) != 1 or ctx.dtype(used[0][1]) == torch.bool:
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported="indexing other than one 1-D index tensor")
    d = used[0][0]
    if axes_of(ctx.dims(x)[d]):
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="indexing along a spatial axis (which positions is not read)")
    return _pick(ctx, x, d, None, windowed(ctx, x))
