"""Plan builders shared by the per-op rules: elementwise merges, windowed ops, views, concatenation.

A rule states only what is particular to its op (an index map per spatial dimension, which
dimensions it mixes or drops); these builders carry every other dimension through unchanged.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import numpy as np

from ..capture import TRef
from ..geometry import IndexFn, clip_taps
from .registry import Channels, Dim, Plan, RuleContext, Source


def axes_of(dim: Dim) -> tuple[int, ...]:
    return tuple(a for a, _ in dim if a is not None)


def plain(size: int) -> Dim:
    """A dimension that carries no spatial axis."""
    return () if size == 1 else ((None, size),)


def identity(v: np.ndarray, finite: bool):
    return v, v, 1


def broadcast(v: np.ndarray, finite: bool):
    zero = np.zeros_like(v)
    return zero, zero, 1


def constant_index(i: int) -> IndexFn:
    def fn(v: np.ndarray, finite: bool):
        at = np.full_like(v, i)
        return at, at, 1
    return fn


def affine(scale: int, shift: int, width: int = 1, step: int = 1) -> IndexFn:
    """Output v reads taps ``scale*v + shift + step*t`` for t in [0, width): convs, pools, slices."""
    def fn(v: np.ndarray, finite: bool):
        a = v * scale + shift
        return a, a + step * (width - 1), step
    return fn


def _tracked(ctx: RuleContext, ref: TRef) -> set[int]:
    """Axes whose positions ``ref`` keeps: those its dims carry (local, or global with positions)
    and its local axes carried by no dim."""
    return {a for dim in ctx.dims(ref) for a in axes_of(dim)} | set(ctx.local_axes(ref))


def virtual_axes(ctx: RuleContext, ref: TRef) -> set[int]:
    """Local axes of ``ref`` carried by no dimension (a single position, e.g. after ``select``)."""
    carried = {a for dim in ctx.dims(ref) for a in axes_of(dim)}
    return set(ctx.local_axes(ref)) - carried


def windowed(ctx: RuleContext, x: TRef, maps: dict[int, tuple[IndexFn, Fraction]] | None = None,
             fold: Sequence[int] = (), drop: Sequence[int] = (), out_shape: Sequence[int] | None = None,
             extra: Sequence[TRef] = ()) -> Plan:
    """Output dims follow ``x``'s dims one to one, except ``drop`` (removed).

    ``maps[d]`` = (fn, scale): positions along dim d follow fn (convs, pools, resampling, slicing);
    ``fold``: dims the op mixes (channels of a conv, reduced dims) — their axes become global;
    a dropped dim with a map keeps its axis local at one position (``select``). ``extra`` tensors
    are read through the same maps (max-unpooling's indices).
    """
    maps = maps or {}
    out_shape = list(ctx.out_shape if out_shape is None else out_shape)
    in_shape = ctx.shape(x)
    carried = {a for dim in ctx.dims(x) for a in axes_of(dim)}
    kept = [d for d in range(len(in_shape)) if d not in drop]
    unlabeled = (ctx.global_axes(x) | ctx.local_axes(x)) - carried
    if unlabeled and any(d in maps and not axes_of(dim) and _moves(maps[d][0], out_shape[kept.index(d)], in_shape[d])
                         for d, dim in enumerate(ctx.dims(x)) if d in kept):
        # a spatial axis lost its dim (a size-1 axis through a flatten and back), and this op pads,
        # shifts or resamples an unlabeled dim: it may be that axis, whose windows it would change
        return Plan(dims=tuple(plain(s) for s in out_shape),
                    unsupported="moves positions along a dim that lost its spatial label")
    plan = Plan(dims=())
    dims: list[Dim] = []
    for d, dim in enumerate(ctx.dims(x)):
        axes = axes_of(dim)
        size = out_shape[kept.index(d)] if d in kept else None
        out_dim = plain(size) if size is not None else None
        if d in fold:
            plan.fold.update(axes)
            if size == 1 and axes:  # a pooled-to-1 dim keeps its (now global) axes
                out_dim = tuple((a, 1) for a in axes)
        elif d in maps and axes and len(dim) == 1:
            plan.local[axes[0]] = [Source(t.id, *maps[d]) for t in (x, *extra)]
            out_dim = ((axes[0], size),) if size is not None else None
        elif d in maps:
            plan.untracked.update({a: "moves positions along a flattened spatial dim" for a in axes})
        elif size == in_shape[d]:
            out_dim = dim
            for a in axes:
                plan.local[a] = [Source(t.id, identity) for t in (x, *extra)]
        if out_dim is not None:
            dims.append(out_dim)
    for a in virtual_axes(ctx, x):
        plan.local[a] = [Source(t.id, identity) for t in (x, *extra)]
    plan.dims = tuple(dims)
    return plan


def _moves(fn: IndexFn, n_out: int, n_in: int) -> bool:
    """The map may change a lost spatial axis's windows. A label is lost only at size 1 (a size-1
    factor through a flatten and back), so only a dim of size 1 can be that axis (a conv across
    ECA's channels, a split of a GLU's features cannot), and the map changes it when it resizes it
    or reads anything but position 0 (in either model: a kernel-1 conv with padding 1 and stride 3
    keeps size 1 but reads only padding)."""
    if n_in != 1:
        return False
    if n_out != n_in:
        return True
    v = np.arange(n_out, dtype=np.int64)
    for finite in (False, True):
        a, b, step = fn(v, finite)
        if finite:
            a, b = clip_taps(a, b, step, n_in)
        if not (np.array_equal(a, v) and np.array_equal(b, v)):
            return True
    return False


def pointwise(ctx: RuleContext, refs: Sequence[TRef], out_shape: Sequence[int] | None = None) -> Plan:
    """Elementwise op with broadcasting: every local axis is the union of its inputs' windows."""
    out_shape = tuple(ctx.out_shape if out_shape is None else out_shape)
    rank = len(out_shape)
    dims: list[Dim] = []
    conflicted: set[int] = set()
    for d, size in enumerate(out_shape):
        chosen: Dim | None = None
        for ref in refs:
            k = d - (rank - len(ctx.shape(ref)))
            if k < 0 or ctx.shape(ref)[k] != size:
                continue
            dim = ctx.dims(ref)[k]
            if chosen is None or (not axes_of(chosen) and axes_of(dim)):
                chosen = dim if chosen is None or axes_of(dim) else chosen
            elif axes_of(dim) and dim != chosen:
                conflicted.update(axes_of(dim) + axes_of(chosen))
        dims.append(chosen if chosen is not None else plain(size))
    plan = Plan(dims=tuple(dims), untracked={a: "merges inputs whose spatial axes lie on different dims"
                                             for a in conflicted})
    carried = {a: d for d, dim in enumerate(dims) for a in axes_of(dim)}
    for a in sorted(set().union(*(_tracked(ctx, r) for r in refs)) - conflicted):
        sources = []
        for ref in refs:
            if a not in _tracked(ctx, ref):
                continue
            where = [k for k, dim in enumerate(ctx.dims(ref)) if a in axes_of(dim)]
            if not where:  # carried by no dim: one position, seen by every output unit
                sources.append(Source(ref.id, broadcast))
                continue
            k = where[0]
            d = k + rank - len(ctx.shape(ref))
            if carried.get(a) != d:
                break  # the axis sits on another dimension in this input: leave it Unknown
            same = ctx.shape(ref)[k] == out_shape[d]
            sources.append(Source(ref.id, identity if same else broadcast))
        else:
            plan.local[a] = sources
    return plan


def view(ctx: RuleContext, x: TRef, out_shape: Sequence[int] | None = None) -> Plan:
    """Reshape: regroup the row-major factors of ``x``'s dims into the new dims.

    Flattening H and W into one dim keeps both axes (positions split back exactly); splitting a
    spatial factor (H -> (H/2, 2), window partitions) cannot be tracked per axis, so that axis
    becomes Unknown. A spatial factor of size 1 goes to a new dim of size 1 where one comes next,
    else it is carried by no dim (every unit sees its single position).
    """
    out_shape = list(ctx.out_shape if out_shape is None else out_shape)
    factors = [f for dim in ctx.dims(x) for f in dim if f[1] != 1 or f[0] is not None]
    dims: list[Dim] = []
    broken: set[int] = set()
    lost = False
    i = 0
    for size in out_shape:
        group: list = []
        if size == 1 and not lost:
            if i < len(factors) and factors[i][1] == 1:
                group.append(factors[i])
                i += 1
            dims.append(tuple(group))
            continue
        prod = 1
        while prod < size and i < len(factors):
            axis, f = factors[i]
            if f == 1:
                i += 1  # a size-1 spatial factor inside a longer dim: carried by no dim
            elif size % (prod * f) == 0:
                group.append(factors[i])
                prod *= f
                i += 1
            elif f % (size // prod) == 0:  # the factor is split across this dim and the next
                part = size // prod
                if axis is not None:
                    broken.add(axis)
                group.append((None, part))
                factors[i] = (None, f // part)
                prod = size
            else:  # no common factorisation: give up on the structure of everything left
                broken.update(a for a, _ in factors[i:] if a is not None)
                lost = True
                break
        if lost:
            group = [(None, size)]
        dims.append(tuple(group))
    dims = [tuple((None, f) if a in broken else (a, f) for a, f in dim) for dim in dims]
    dims = [dim if any(a is not None for a, _ in dim) or len(dim) <= 1 else ((None, out_shape[d]),)
            for d, dim in enumerate(dims)]
    plan = Plan(dims=tuple(dims), untracked={a: "splits a spatial axis across dims" for a in broken})
    for a in _tracked(ctx, x) - broken:
        plan.local[a] = [Source(x.id, identity)]
    return plan


def permute(ctx: RuleContext, x: TRef, order: Sequence[int]) -> Plan:
    in_dims = ctx.dims(x)
    plan = Plan(dims=tuple(in_dims[d] for d in order))
    for a in _tracked(ctx, x):
        plan.local[a] = [Source(x.id, identity)]
    return plan


def concat(ctx: RuleContext, refs: Sequence[TRef], dim: int) -> Plan:
    """``torch.cat``: along channels a merge; along a spatial dim piecewise (each part keeps the
    geometry of the tensor it comes from)."""
    rank = len(ctx.out_shape)
    dim = dim % rank
    refs = [r for r in refs if ctx.shape(r) != (0,)]  # torch.cat ignores legacy empty tensors
    axes = {axes_of(ctx.dims(r)[dim]) for r in refs}
    pieces = [ctx.dims(r)[dim] for r in refs]
    spatial = axes != {()}
    if spatial and (len(axes) != 1 or any(len(p) != 1 for p in pieces)):
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="cat along a flattened or mixed spatial dimension")
    lost = set().union(*((ctx.local_axes(r) | ctx.global_axes(r)) - {a for d in ctx.dims(r) for a in axes_of(d)}
                         for r in refs))
    if not spatial and lost and any(ctx.shape(r)[dim] == 1 for r in refs):
        # a size-1 spatial axis that lost its dim (through a flatten and back) may be this one: its
        # pieces could not be told apart
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="cat along a dim that may be a spatial axis that lost its label")
    # every other dim is an elementwise merge: pretend each input spans the whole cat dim
    stretched = [tuple(ctx.out_shape[dim] if d == dim else s for d, s in enumerate(ctx.shape(r))) for r in refs]
    plan = pointwise(_ReshapedContext(ctx, refs, stretched), refs)
    if not spatial:
        plan.dims = tuple(plain(ctx.out_shape[dim]) if d == dim else dd for d, dd in enumerate(plan.dims))
        if len({r.id for r in refs}) > 1:
            plan.channels = Channels.SPLIT
        return plan
    (axis,) = axes.pop()
    if not any(axis in ctx.local_axes(r) for r in refs) and len({r.id for r in refs}) > 1:
        # each position along the cat dim comes from one piece, but pieces are told apart only along
        # local axes: along a global one the other axes' windows (and reach) would be united
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="cat along a global axis: its pieces see different windows along the others")
    starts = np.cumsum([0] + [ctx.shape(r)[dim] for r in refs])
    plan.piecewise.add(axis)
    plan.dims = tuple(((axis, ctx.out_shape[dim]),) if d == dim else dd for d, dd in enumerate(plan.dims))
    plan.local[axis] = [Source(r.id, _piece(int(starts[k]), int(starts[k + 1]), k == 0, k == len(refs) - 1))
                        for k, r in enumerate(refs)]
    return plan


def _piece(start: int, end: int, first: bool, last: bool) -> IndexFn:
    """Output positions [start, end) come from this part; in the unbounded model the first part
    extends to the left and the last to the right."""
    def fn(v: np.ndarray, finite: bool):
        inside = (v >= start) & (v < end)
        if not finite:
            inside |= (v < start) & first
            inside |= (v >= end) & last
        a = np.where(inside, v - start, 1)
        b = np.where(inside, v - start, 0)
        return a, b, 1
    return fn


class _ReshapedContext(RuleContext):
    """A view of a context where some inputs pretend to have another shape (for cat's merge)."""

    def __init__(self, ctx: RuleContext, refs: Sequence[TRef], shapes: Sequence[tuple[int, ...]]):
        self.__dict__.update(ctx.__dict__)
        self._override = {r.id: s for r, s in zip(refs, shapes)}
        self._base = ctx

    def shape(self, ref):
        rid = ref.id if isinstance(ref, TRef) else ref
        return self._override.get(rid) or self._base.shape(ref)


def squeeze_unsqueeze(ctx: RuleContext, x: TRef, insert: Sequence[int] = (), remove: Sequence[int] = ()) -> Plan:
    """Exact dim bookkeeping for unsqueeze (a new plain dim) and squeeze (size-1 dims removed; a
    spatial axis they carried stays local at its single position)."""
    dims = [dim for d, dim in enumerate(ctx.dims(x)) if d not in remove]
    for d in sorted(insert):
        dims.insert(d, ())
    plan = Plan(dims=tuple(dims))
    for a in _tracked(ctx, x):
        plan.local[a] = [Source(x.id, identity)]
    return plan
