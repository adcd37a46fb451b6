"""Rules for writes through views: ``y[:, :, :8] = z``, ``x[:, :2].mul_(g)``, ``buf[i].copy_(img)``.

The capture records an in-place op on a view as the op on the view, then one ``VIEW_WRITE`` op per
link of the view chain: the parent with the region that the link's view op selects replaced by the
view's new value (see :mod:`convlens.capture`). A link is one view op, so a region is always along
one dim:

- ``slice`` / ``split`` (a slice at an offset) / ``select`` / ``unbind``: positions ``start + step*i``
  (one position for a select) along one dim come from the view, the rest from the old parent.
  Along a spatial axis that is piecewise, as a cat along it is: units in the region see the view's
  windows, the others the parent's. Along channels (or the batch) it is a merge: a unit's window is
  the union over its channels. A region that covers the whole dim overwrites the parent: it is not read.
- views that keep every element (``view``/``reshape``, ``permute``/``transpose``, ``alias``,
  ``unsqueeze``/``squeeze``): the parent is overwritten by the view's value, mapped back.
- anything else (``as_strided`` that reorders, ``diagonal``, ``unfold``, ``expand``, a region of a
  flattened spatial dim): the axes it touches are unknown, named as such.

In the unbounded model (padding read by a later op) a region that starts at the first position
continues to the left, and one that ends at the last position continues to the right, as the pieces
of a cat do.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from ..capture import VIEW_WRITE, OpNode, TRef
from .plans import axes_of, broadcast, identity, permute, plain, view
from .registry import Channels, Plan, RuleContext, Source, register_geometry

_FULL = {"alias", "detach", "lift_fresh", "view", "_unsafe_view", "reshape", "_reshape_alias", "view_as", "flatten",
         "unflatten", "unsqueeze", "squeeze"}
_PERMUTES = {"permute", "transpose", "swapaxes", "t", "numpy_T"}
_SPLITS = {"split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "chunk", "tensor_split"}


def _op_name(node: OpNode) -> str:
    parts = node.name.split(".")
    return parts[1] if len(parts) > 1 else node.name


def _unknown(ctx: RuleContext, reason: str) -> Plan:
    """Every axis the parent or the view carries becomes unknown, named by ``reason``."""
    base, src = ctx.node.args[0], ctx.node.args[1]
    axes = {a for dim in (*ctx.dims(base), *ctx.dims(src)) for a in axes_of(dim)}
    return Plan(dims=ctx.dims(base), untracked={a: reason for a in axes | ctx.local_axes(base) | ctx.local_axes(src)})


@register_geometry(VIEW_WRITE)
def view_write(ctx: RuleContext) -> Plan:
    base, src, link, index = ctx.node.args
    name = _op_name(link)
    rank = len(ctx.shape(base))
    if name in _FULL:
        return _overwrite(view(ctx, src, out_shape=ctx.shape(base)), base)
    if name in _PERMUTES:
        order = list(range(rank))
        if name == "permute":
            order = [d % rank for d in link.param("dims")]
        elif rank >= 2:
            d0, d1 = (link.param("dim0", 0) % rank, link.param("dim1", 1) % rank) if name != "t" else (0, 1)
            order[d0], order[d1] = order[d1], order[d0]
        inverse = [order.index(d) for d in range(rank)]
        return _overwrite(permute(ctx, src, inverse), base)
    if name == "as_strided" and ctx.shape(src) == ctx.shape(base) and \
            tuple(link.param("stride")) == ctx.info(base).stride:
        return _overwrite(view(ctx, src, out_shape=ctx.shape(base)), base)
    if name == "slice":
        d = link.param("dim", 0) % rank
        n = ctx.shape(base)[d]
        start = link.param("start")
        start = 0 if start is None else start
        start = min(max(start + n if start < 0 else start, 0), n)
        step = link.param("step", 1) or 1
        return region_write(ctx, base, src, d, start, step, ctx.shape(src)[d], selected=False)
    if name in _SPLITS:
        d = link.param("dim", 0) % rank
        start = sum(ctx.info(t).shape[d] for t in link.outputs[:index])
        return region_write(ctx, base, src, d, start, 1, ctx.shape(src)[d], selected=False)
    if name in ("select", "unbind"):
        d = link.param("dim", 0) % rank
        at = index if name == "unbind" else link.param("index") % ctx.shape(base)[d]
        return region_write(ctx, base, src, d, at, 1, 1, selected=True)
    return _unknown(ctx, f"a write through a {name} view")


def _overwrite(plan: Plan, base: TRef) -> Plan:
    plan.unread.add(base.id)
    return plan


def _region(start: int, step: int, count: int, n: int, selected: bool):
    """Index maps for a region write: which parent positions the view covers (in the unbounded model
    the region continues past an edge it touches), the view position each of them reads (``from_view``;
    ``from_one``: position 0, for an axis the view holds at one position), and the parent positions
    that keep the old value (``from_parent``)."""
    end = start + step * count
    left = start == 0 if selected else start < step
    right = start == n - 1 if selected else end >= n

    def covered(v: np.ndarray, finite: bool) -> np.ndarray:
        rel = v - start
        on = rel % step == 0
        inside = on & (rel >= 0) & (rel < step * count)
        if not finite:
            inside |= on & (((rel < 0) & left) | ((rel >= step * count) & right))
        return inside

    def from_view(v: np.ndarray, finite: bool):
        inside, at = covered(v, finite), (v - start) // step
        return np.where(inside, at, 1), np.where(inside, at, 0), 1

    def from_one(v: np.ndarray, finite: bool):
        inside = covered(v, finite)
        return np.where(inside, 0, 1), np.zeros_like(v), 1

    def from_parent(v: np.ndarray, finite: bool):
        inside = covered(v, finite)
        return np.where(inside, 1, v), np.where(inside, 0, v), 1

    return from_view, from_one, from_parent


def _where(dims, a: int) -> int | None:
    return next((e for e, dim in enumerate(dims) if a in axes_of(dim)), None)


MOVED = "a write through a view moves a spatial axis to another dim"
FLAT = "a write into a region of a flattened spatial dim"


def region_write(ctx: RuleContext, base: TRef, src: TRef, d: int, start: int, step: int, count: int,
                 selected: bool) -> Plan:
    """The parent ``base`` with positions ``start + step*i`` (i < count) along dim ``d`` replaced by
    ``src`` (the view's new value; ``selected``: the view dropped dim ``d``)."""
    shape = ctx.shape(base)
    n = shape[d]
    # (every position: a step longer than the dim covers its one position too, the 10,000-network run)
    full = n == 1 if selected else (start == 0 and count == n and (step == 1 or n == 1))
    base_dims, src_dims = ctx.dims(base), ctx.dims(src)

    def src_dim(e: int) -> int | None:
        if not selected:
            return e
        return None if e == d else (e if e < d else e - 1)

    dims = list(base_dims)
    for e in range(len(shape)):  # a parent that carries no axis (a constant) takes the view's labels
        se = src_dim(e)
        if axes_of(base_dims[e]) or se is None or not axes_of(src_dims[se]):
            continue
        if e != d:
            dims[e] = src_dims[se]
        elif len(src_dims[se]) == 1:
            dims[e] = ((axes_of(src_dims[se])[0], n),)
    if not full and not axes_of(dims[d]) and ctx.channels_split(base):
        # the channels left unwritten may see less than the union over all of the parent's (a cat along
        # channels, then a write over the pieces of one input: the 10,000-network run), and convlens
        # does not know which came from where
        return Plan(dims=tuple(plain(size) for size in shape),
                    unsupported="writes into part of the channels of a tensor whose channels may see other "
                                "windows than the rest (after a cat or a write along channels)")
    plan = Plan(dims=tuple(dims))
    from_view, from_one, from_parent = _region(start, step, count, n, selected)
    if full:
        plan.unread.add(base.id)
    elif not axes_of(dims[d]):
        plan.channels = Channels.SPLIT  # channels (or samples) in the region see other windows than the rest
    base_local, src_local, src_global = set(ctx.local_axes(base)), set(ctx.local_axes(src)), ctx.global_axes(src)
    tracked = {a for dim in (*dims, *src_dims) for a in axes_of(dim)} | base_local | src_local
    for a in sorted(tracked):
        e, eb, es = _where(dims, a), _where(base_dims, a), _where(src_dims, a)
        in_region = e is not None and e == d
        sources: list[Source] = []
        reason = None
        if not full:  # the old parent, outside the region
            if eb is None and a in base_local:
                sources.append(Source(base.id, broadcast))
            elif eb is not None and in_region:
                if len(dims[d]) > 1:
                    reason = FLAT
                sources.append(Source(base.id, from_parent))
            elif eb is not None:
                sources.append(Source(base.id, identity))
        if es is None:  # the view's value: one position (a select), or an axis it does not carry
            if a in src_local or a in src_global:
                # (a global value too: it reaches the region's positions only, which the reach of a
                # global output must say; unmapped, it would reach every one, the 10,000-network run)
                sources.append(Source(src.id, from_one if in_region else broadcast))
        elif in_region and not selected and es == d and len(src_dims[es]) == 1 and len(dims[d]) == 1:
            sources.append(Source(src.id, from_view, Fraction(1, step)))
        elif not in_region and e is not None and src_dim(e) == es and src_dims[es] == dims[e]:
            sources.append(Source(src.id, identity))
        else:
            reason = reason or (FLAT if in_region and len(dims[d]) > 1 else MOVED)
        if reason is not None:
            plan.untracked[a] = reason
            continue
        if sources:
            plan.local[a] = sources
        if in_region and not full:
            plan.piecewise.add(a)
    return plan
