"""Plan builders shared by the per-op rules: elementwise merges, windowed ops, views, concatenation.

A rule states only what is particular to its op (an index map per spatial dimension, which
dimensions it mixes or drops); these builders carry every other dimension through unchanged.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Sequence

import numpy as np

from ..capture import TRef
from ..geometry import IndexFn, clip_taps
from .registry import (Channels, Digit, Dim, Factor, Plan, RuleContext, Source, digit_axes, digits_of, extras,
                       live_extras, radix, retarget, token_dim)


@functools.lru_cache(maxsize=1 << 14)
def axes_of(dim: Dim) -> tuple[int, ...]:
    """The spatial axes a dim holds whole (not as digits). Cached: dims are immutable and few."""
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


class Affine:
    """Output v reads taps ``scale*v + shift + step*t`` for t in [0, width): convs, pools, slices.
    An :data:`IndexFn` whose parameters the walk may read (its demand and its unbounded windows
    follow from them without tap arrays)."""

    __slots__ = ("scale", "shift", "width", "step")

    def __init__(self, scale: int, shift: int, width: int = 1, step: int = 1):
        self.scale, self.shift, self.width, self.step = scale, shift, width, step

    def __call__(self, v: np.ndarray, finite: bool):
        a = v * self.scale + self.shift
        return a, a + self.step * (self.width - 1), self.step

    def forward(self) -> bool:
        """Whether taps move forward with the output, in order, and never run empty (scale, step
        and width at least 1): the first tap of v is the lowest, the last the highest."""
        return self.scale >= 1 and self.step >= 1 and self.width >= 1


def affine(scale: int, shift: int, width: int = 1, step: int = 1) -> IndexFn:
    """Output v reads taps ``scale*v + shift + step*t`` for t in [0, width) (:class:`Affine`)."""
    return Affine(scale, shift, width, step)


def tracked(ctx: RuleContext, ref: TRef) -> set[int]:
    """Axes whose positions ``ref`` keeps: those its dims carry (local, or global with positions)
    and its local axes carried by no dim."""
    return ({a for dim in ctx.dims(ref) for a in axes_of(dim)} | digit_axes(ctx.dims(ref))
            | set(ctx.local_axes(ref)))


def virtual_axes(ctx: RuleContext, ref: TRef) -> set[int]:
    """Local axes of ``ref`` carried by no dimension (a single position, e.g. after ``select``)."""
    carried = {a for dim in ctx.dims(ref) for a in axes_of(dim)} | digit_axes(ctx.dims(ref))
    return set(ctx.local_axes(ref)) - carried


_WINDOWED: dict[tuple, Plan] = {}
"""Plans of :func:`windowed` by what they depend on, where every map is :class:`Affine` (compared by
its parameters), no input rides along (``extra``) and no dim holds digits of a split axis: the input's
shape, dims with their extra tokens' liveness, local and global axes, the maps, fold, drop, output
shape and per channel. The stored plan reads input id -1 (:func:`_as_read_by`). Convs and pools
repeat them through a whole network."""
MAX_WINDOWED = 1 << 14


def windowed(ctx: RuleContext, x: TRef, maps: dict[int, tuple[IndexFn, Fraction]] | None = None,
             fold: Sequence[int] = (), drop: Sequence[int] = (), out_shape: Sequence[int] | None = None,
             extra: Sequence[TRef] = (), per_channel: bool = False) -> Plan:
    """Output dims follow ``x``'s dims one to one, except ``drop`` (removed).

    ``maps[d]`` = (fn, scale): positions along dim d follow fn (convs, pools, resampling, slicing);
    ``fold``: dims the op mixes (channels of a conv, reduced dims) — their axes become global;
    a dropped dim with a map keeps its axis local at one position (``select``). ``extra`` tensors
    are read through the same maps (max-unpooling's indices). ``per_channel``: the op reads each
    index of the dims it neither maps nor folds at that index only (a pool, a depthwise conv; not
    attention, whose features mix): ``Plan.same_index``.
    """
    maps = maps or {}
    out_shape = tuple(ctx.out_shape if out_shape is None else out_shape)
    dims = ctx.dims(x)
    if extra or not all(type(fn) is Affine for fn, _ in maps.values()) or digit_axes(dims):
        return _windowed(ctx, x, maps, fold, drop, out_shape, extra, per_channel)
    key = (tuple(ctx.shape(x)), tuple(dims), tuple(map(live_extras, dims)), ctx.local_axes(x), ctx.global_axes(x),
           tuple((d, fn.scale, fn.shift, fn.width, fn.step, scale) for d, (fn, scale) in sorted(maps.items())),
           tuple(fold), tuple(drop), out_shape, per_channel)
    known = _WINDOWED.get(key)
    if known is None:
        plan = _windowed(ctx, x, maps, fold, drop, out_shape, extra, per_channel)
        if len(_WINDOWED) >= MAX_WINDOWED:
            _WINDOWED.clear()
        _WINDOWED[key] = _as_read_by(plan, x.id, -1)
        return plan
    return _as_read_by(known, -1, x.id)


def _as_read_by(plan: Plan, old: int, new: int) -> Plan:
    """A copy of a :func:`windowed` plan (of the fields it sets) that reads input ``new`` where
    ``plan`` reads ``old``; its own containers (the caller may add to the plan it gets)."""
    return Plan(dims=plan.dims, local={a: [Source(new if s.tid == old else s.tid, s.fn, s.scale, s.counted, s.period)
                                           for s in srcs] for a, srcs in plan.local.items()},
                fold=set(plan.fold), unsupported=plan.unsupported, untracked=dict(plan.untracked),
                same_index={new if t == old else t: dict(same) for t, same in plan.same_index.items()})


def _windowed(ctx: RuleContext, x: TRef, maps: dict[int, tuple[IndexFn, Fraction]],
              fold: Sequence[int], drop: Sequence[int], out_shape: Sequence[int], extra: Sequence[TRef],
              per_channel: bool) -> Plan:
    """:func:`windowed`, computed."""
    out_shape = list(out_shape)
    in_shape = ctx.shape(x)
    carried = {a for dim in ctx.dims(x) for a in axes_of(dim)} | digit_axes(ctx.dims(x))
    kept = [d for d in range(len(in_shape)) if d not in drop]
    unlabeled = (ctx.global_axes(x) | ctx.local_axes(x)) - carried
    if unlabeled and any(d in maps and not axes_of(dim) and _moves(*maps[d], out_shape[kept.index(d)], in_shape[d])
                         for d, dim in enumerate(ctx.dims(x)) if d in kept):
        # a spatial axis lost its dim (a size-1 axis through a flatten and back), and this op pads,
        # shifts or resamples an unlabeled dim: it may be that axis, whose windows it would change
        return Plan(dims=tuple(plain(s) for s in out_shape),
                    unsupported="moves positions along a dim that lost its spatial label")
    plan = Plan(dims=())
    dims: list[Dim] = []
    within: dict[int, IndexFn] = {}
    shrunk: dict[int, tuple[IndexFn, int]] = {}
    for d, dim in enumerate(ctx.dims(x)):
        axes = axes_of(dim)
        size = out_shape[kept.index(d)] if d in kept else None
        out_dim = plain(size) if size is not None else None
        if d in fold:
            plan.fold.update(axes)
            if size == 1 and axes:  # a pooled-to-1 dim keeps its (now global) axes
                out_dim = tuple((a, 1) for a in axes)
        elif d in maps and len(dim) + sum(extras(dim)) > 1 and _still(maps[d][0], out_shape[kept.index(d)]
                                                                     if d in kept else None, in_shape[d]):
            out_dim = dim  # a map that moves nothing (a 1x1 conv over attention scores' query x key dims)
            for a in axes:
                plan.local[a] = [Source(t.id, identity) for t in (x, *extra)]
        elif d in maps and len(dim) > 1 and extras(dim) == (0, 0) and axes_of(dim[-1:]) \
                and _row_blocks(maps[d][0], size, in_shape[d], dim[-1][1]):
            # blocks of s tokens that never cross a row of the grid (NextViT's AvgPool1d over tokens
            # with kernel = stride = s, s dividing the row): a pool along the innermost axis
            step = in_shape[d] // size
            (axis, n), = dim[-1:]
            out_dim = tuple(dim[:-1]) + ((axis, n // step),)
            plan.local[axis] = [Source(t.id, affine(step, 0, step), Fraction(step)) for t in (x, *extra)]
            for a in axes_of(dim[:-1]):
                plan.local[a] = [Source(t.id, identity) for t in (x, *extra)]
        elif d in maps and _one_digit(dim) and size == in_shape[d]:
            out_dim = dim  # positions within a window (EfficientViT-MSRA's convs inside each window)
            if not _still(maps[d][0], size, in_shape[d]):
                within[d] = maps[d][0]
        elif d in maps and _one_digit(dim) and size and _inside(maps[d][0], size, in_shape[d]):
            # a pool inside each window that never reads past its border (SAM2-Hiera's pooled queries)
            (digit,) = [f for f in dim if f[1] > 1]
            out_dim = (Digit(digit.axis, size, digit.weight),)
            shrunk[d] = (maps[d][0], size)
        elif d in maps and extras(dim) != (0, 0):
            plan.untracked.update({a: "moves positions along a token dim with extra tokens" for a in axes})
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
    if per_channel:
        plan.same_index[x.id] = {d: (kept.index(d), Fraction(1)) for d, dim in enumerate(ctx.dims(x))
                                 if d in kept and d not in fold and not held(dim) and in_shape[d] > 1
                                 and out_shape[kept.index(d)] == in_shape[d]
                                 and (d not in maps or _still(maps[d][0], in_shape[d], in_shape[d]))}
    split = digit_axes(ctx.dims(x))
    moved = {d for d, (fn, _) in maps.items() if d in drop or d not in kept
             or not _still(fn, out_shape[kept.index(d)], in_shape[d])} | (set(drop) - set(fold)) if split else set()
    for a in split:
        holders = [d for d, dim in enumerate(ctx.dims(x)) if a in held(dim)]
        if radix(digits_of(ctx.dims(x), a)) is None and any(d in moved or d in within or d in shrunk for d in holders):
            plan.local.pop(a, None)  # (the maps below read positions as a radix of digits)
            plan.untracked[a] = "moves positions along a dim that holds overlapping blocks of a spatial axis"
            continue
        inside = [d for d in holders if d in within]
        folded = [f for d in holders if d in fold for f in digits_of([ctx.dims(x)[d]], a)]
        if [d for d in holders if d in shrunk] and not folded:
            why = _shrink(plan, ctx.dims(x), a, holders, shrunk, moved, kept, (x, *extra))
            if why:
                plan.untracked[a] = why
            continue
        blocks = _over_blocks(ctx.dims(x), a, [d for d in holders if d in moved or d in within], holders, fold,
                              maps, kept)
        if blocks is not None:
            dm, width = blocks
            fn, scale = maps[dm]
            plan.local[a] = [Source(t.id, block_taps(fn, width), scale * width) for t in (x, *extra)]
            plan.dims = tuple(((a, out_shape[kept.index(dm)]),) if e == kept.index(dm) else dim
                              for e, dim in enumerate(plan.dims))
            plan.untracked.pop(a, None)
            continue
        if any(d in moved and d not in within for d in holders) or len(inside) > 1 or (inside and folded):
            plan.untracked[a] = "moves positions along a dim that holds part of a split axis"
            continue
        plan.local.pop(a, None)
        if inside:
            (digit,) = [f for f in ctx.dims(x)[inside[0]] if isinstance(f, Digit) and f.size > 1]
            fn = in_digit(digit.size, digit.weight, within[inside[0]])
            plan.local[a] = [Source(t.id, fn, Fraction(1), True, digit.size * digit.weight) for t in (x, *extra)]
            continue
        mix_digits(plan, a, [(t, ctx.dims(t), folded) for t in (x, *extra)])
    return plan


def _inside(fn: IndexFn, n_out: int, n_in: int) -> bool:
    """The map reads, for each of ``n_out`` outputs, only positions inside [0, n_in), the same in
    both models (no padding): a window's pool that stays inside the window."""
    v = np.arange(n_out, dtype=np.int64)
    (a, b, step), (fa, fb, fstep) = fn(v, False), fn(v, True)
    return (n_out < n_in and np.array_equal(a, fa) and np.array_equal(b, fb)
            and np.array_equal(np.broadcast_to(step, v.shape), np.broadcast_to(fstep, v.shape))
            and bool((a >= 0).all() and (b < n_in).all()))


def _shrink(plan: Plan, dims: Sequence[Dim], a: int, holders: list[int], shrunk: dict, moved: set[int],
            kept: list[int], refs: Sequence[TRef]) -> str | None:
    """A pool of the least digit of axis ``a`` (the position within a window) that stays inside each
    window, the other digits kept: the output's digit shrinks and the digits above it are
    renumbered; output v reads the pool's taps in its window. Why not, else None."""
    here = [d for d in holders if d in shrunk]
    if len(here) != 1 or any(d != here[0] and (d in moved or d not in kept) for d in holders):
        return "moves positions along a dim that holds part of a split axis"
    d0 = here[0]
    (digit,) = [f for f in dims[d0] if f[1] > 1]
    fn, n_out = shrunk[d0]
    n_in = digit.size
    if digit.weight != 1 or digit.pair:
        return "moves positions along a dim that holds part of a split axis"
    plan.dims = _redigit(plan.dims, a, lambda f: Digit(a, f.size, f.weight if f.weight == 1 else f.weight // n_in * n_out,
                                                         f.pair))
    plan.local[a] = [Source(t.id, pool_in_window(fn, n_in, n_out), Fraction(n_in, n_out), True, n_out) for t in refs]
    return None


def pool_in_window(fn: IndexFn, n_in: int, n_out: int) -> IndexFn:
    """``fn`` (``n_out`` outputs from ``n_in`` positions, inside them) in every window: output v of
    window v // n_out reads the window's positions fn(v % n_out)."""
    def mapped(v: np.ndarray, finite: bool):
        a, b, step = fn(v % n_out, True)
        base = (v // n_out) * n_in
        return base + a, base + b, step
    return mapped


def _over_blocks(dims: Sequence[Dim], a: int, moving: list[int], holders: list[int], fold: Sequence[int],
                 maps: dict, kept: list[int]) -> tuple[int, int] | None:
    """Space-to-depth (TResNet): axis a split into an outer digit on its own dim and inner ones on
    the channels; a conv that moves the outer digit and mixes the channels reads whole blocks of
    ``width`` = the inner digits' extent. (dim of the outer digit, width), or None where the op is
    not that."""
    if len(moving) != 1 or moving[0] not in kept or moving[0] not in maps or not _one_digit(dims[moving[0]]):
        return None
    (outer,) = [f for f in dims[moving[0]] if f[1] > 1]
    inner = [f for d in holders if d != moving[0] for f in digits_of([dims[d]], a, pairs=True)]
    if outer.axis != a or any(d != moving[0] and d not in fold for d in holders) or any(f.pair for f in inner):
        return None
    if _span(inner) != (outer.weight, 1):
        return None  # (the inner digits make the positions below the outer digit's weight, whole)
    v = np.arange(outer.size + 1, dtype=np.int64)
    for finite in (False, True):
        lo, hi, step = maps[moving[0]][0](v, finite)
        if np.any((np.asarray(step) != 1) & (lo != hi)):
            return None  # (a dilated kernel reads blocks with gaps between them)
    return moving[0], outer.weight


def block_taps(fn: IndexFn, width: int) -> IndexFn:
    """``fn`` over blocks of ``width`` positions: output v reads every position of the blocks fn
    reads (contiguous taps only)."""
    def taps(v: np.ndarray, finite: bool):
        lo, hi, _ = fn(v, finite)
        return lo * width, hi * width + width - 1, 1
    return taps


def _one_digit(dim: Dim) -> bool:
    """The dim holds one digit of a split axis and nothing else longer than 1 (a window's row)."""
    long = [f for f in dim if f[1] > 1]
    return len(long) == 1 and isinstance(long[0], Digit) and not long[0].pair and extras(dim) == (0, 0)


def in_digit(size: int, weight: int, fn: IndexFn) -> IndexFn:
    """``fn`` applied to one digit (size, weight) of a split axis, the other digits kept: a conv
    inside each window, zero-padded at the window's borders in both models (a window's border is
    the network's structure, not the edge of its input)."""
    def mapped(v: np.ndarray, finite: bool):
        i = (v // weight) % size
        base = v - i * weight
        a, b, step = fn(i, True)
        a, b = clip_taps(a, b, step, size)
        return base + a * weight, base + b * weight, np.asarray(step) * weight
    return mapped


def block(size: int, weight: int) -> IndexFn:
    """Output v reads every position that differs from v only in the digit (size, weight) of a split
    axis: the tokens of v's attention window (weight 1), or of its grid (MaxViT's grid attention,
    weight H/g: a dilated window)."""
    def fn(v: np.ndarray, finite: bool):
        a = v - ((v // weight) % size) * weight
        return a, a + (size - 1) * weight, weight
    return fn


def mix_digits(plan: Plan, a: int, inputs: Sequence[tuple[TRef, Sequence[Dim], Sequence[Digit]]]) -> None:
    """Axis ``a``, split into digits: the op mixes, for each input (ref, its dims, its mixed
    digits), the positions that differ only in the mixed digits. Where the output keeps a digit in
    their place (the queries of attention within windows) each unit reads its whole window; where
    it keeps none (Swin's patch merging folds a 2 x 2 digit into the channels), the output's
    digits are renumbered and unit v reads the block of input positions it pooled. An input whose
    every digit is mixed away makes the axis global. Sets ``plan.local``, ``plan.fold`` or
    ``plan.untracked`` for ``a``, and turns the key digits of attention scores into position digits
    where the query digits were mixed away."""
    out = digits_of(plan.dims, a)
    keys = [Digit(f.axis, f.size, f.weight) for f in digits_of(plan.dims, a, pairs=True) if f.pair]
    if keys and radix(out) is None and radix(out + keys) is not None:
        # (softmax over the queries of scores: each unit is a key now)
        plan.dims = _redigit(plan.dims, a, lambda f: Digit(f.axis, f.size, f.weight))
        out = digits_of(plan.dims, a)
    if not out:
        plan.fold.add(a)
        return
    holders = [(ref, digits_of(dims, a), mixed) for ref, dims, mixed in inputs if digits_of(dims, a)]
    if radix(out) is None and all(set(digits) == set(out) and all(f.size == 1 for f in mixed)
                                  for _, digits, mixed in holders):
        # (overlapping blocks, Tensor.unfold's, carried through as they are: a pick of channels)
        plan.local.setdefault(a, []).extend(Source(ref.id, identity) for ref, _, _ in holders)
        return
    pooled = _pooled(out, holders) if radix(out) is None or any(radix(d) != radix(out) for _, d, _ in holders) \
        else None
    if isinstance(pooled, str) and radix(out) is None:
        plan.local.pop(a, None)
        plan.untracked[a] = pooled
        return
    if isinstance(pooled, tuple):  # the mixed digits have no twin left: renumber the output's positions
        n, w = pooled
        plan.dims = normalize(_redigit(plan.dims, a, lambda f: Digit(a, f.size, f.weight // n if f.weight > w
                                                                       else f.weight, f.pair)))
        plan.local.setdefault(a, []).extend(Source(ref.id, expand(n, w), Fraction(n), True, w)
                                            for ref, _, _ in holders)
        return
    sources = []
    for ref, digits, mixed in holders:
        positions = {(f.size, f.weight) for f in digits if f.size > 1}
        if positions and positions <= {(f.size, f.weight) for f in mixed}:
            # every position of this input is mixed into each output (global attention of pooled
            # queries over all the keys: Hiera's last stages): the axis is global
            plan.local.pop(a, None)
            plan.fold.add(a)
            return
        fn = _digit_map(digits, mixed, out)
        if isinstance(fn, str) and radix(digits) is not None and radix(digits) != radix(out):
            fn = _regrid(digits, mixed, out) or fn
        elif isinstance(fn, str) and radix(digits) is None:
            fn = _halo(digits, mixed, out) or fn
        if isinstance(fn, str):
            plan.local.pop(a, None)
            plan.untracked[a] = fn
            return
        sources.append(Source(ref.id, *fn))
    plan.local.setdefault(a, []).extend(sources)


def _redigit(dims: Sequence[Dim], a: int, change) -> tuple[Dim, ...]:
    """``dims`` with every digit of axis ``a`` replaced by ``change(digit)``."""
    return tuple(token_dim(tuple(change(f) if isinstance(f, Digit) and f.axis == a else f for f in dim),
                           *extras(dim), live_extras(dim)) for dim in dims)


def normalize(dims: Sequence[Dim]) -> tuple[Dim, ...]:
    """An axis whose only digit left holds every position (weight 1) is a whole factor again."""
    split = {f.axis for dim in dims for f in dim if isinstance(f, Digit) and f.size > 1 and (f.weight > 1 or f.pair)}
    return tuple(token_dim(tuple((f.axis, f.size) if isinstance(f, Digit) and f.axis not in split else f
                                 for f in dim), *extras(dim), live_extras(dim)) for dim in dims)


def _span(digits: Sequence[Digit]) -> tuple[int, int] | None:
    """(size, weight) of the one digit that ``digits`` make when they sit next to each other in the
    radix; None when they do not."""
    ds = sorted(((f.size, f.weight) for f in digits if f.size > 1), key=lambda sw: sw[1])
    if not ds:
        return None
    size, weight = 1, ds[0][1]
    for n, w in ds:
        if w != weight * size:
            return None
        size *= n
    return size, weight


def _pooled(out: Sequence[Digit], holders) -> tuple[int, int] | str:
    """The (size, weight) of the digits every input mixes away when the output keeps all the others,
    else why the output's positions say nothing exact."""
    why = "reduces part of a split axis (the positions left do not say where a unit is)"
    shapes = {(frozenset((f.size, f.weight) for f in digits), frozenset((f.size, f.weight) for f in mixed))
              for _, digits, mixed in holders}
    if len(shapes) != 1:
        return why
    digits, mixed = shapes.pop()
    if radix([Digit(0, n, w) for n, w in digits]) is None or {(f.size, f.weight) for f in out} != digits - mixed:
        return why
    span = _span([Digit(0, n, w) for n, w in mixed])
    return span if span is not None else "mixes digits of a split axis that are not next to each other"


def expand(size: int, weight: int) -> IndexFn:
    """The inverse of pooling the digit (size, weight) away: output v (positions renumbered without
    that digit) reads the ``size`` input positions that differ only in it (a 2 x 2 patch merging
    reads [2v, 2v + 1] along each axis)."""
    def fn(v: np.ndarray, finite: bool):
        base = (v // weight) * weight * size + v % weight
        return base, base + (size - 1) * weight, weight
    return fn


def _digit_map(digits: Sequence[Digit], mixed: Sequence[Digit], out: Sequence[Digit]):
    """(fn, scale, counted, period) of a source whose position ``digits`` the op keeps, except the
    ``mixed`` ones, which each output reads whole (their twins in ``out`` stay); or why that is no
    single map."""
    if radix(digits) is None or radix(digits) != radix(out):
        return "reduces part of a split axis (the positions left do not say where a unit is)"
    kept = [f for f in digits if f not in mixed and f.size > 1]
    if any(f.weight in {m.weight for m in mixed} for f in kept):
        return "mixes a digit of a split axis that it also keeps"
    if not [f for f in mixed if f.size > 1]:
        return identity, Fraction(1)
    span = _span(mixed)
    if span is None:
        return "mixes digits of a split axis that are not next to each other"
    size, weight = span
    return block(size, weight), Fraction(1), True, size * weight


def _regrid(digits: Sequence[Digit], mixed: Sequence[Digit], out: Sequence[Digit]):
    """(fn, scale, counted, period) of an input with a finer radix than the output's (Hiera's keys
    beside its pooled queries): the input's digits it keeps are its top ones and match the output's
    top ones, size for size; the rest it mixes whole. Output v reads the input's block under v's top
    digits. None where the digits are not so."""
    kept = sorted((f for f in digits if f not in mixed and f.size > 1), key=lambda f: -f.weight)
    rest = [f for f in digits if f not in kept and f.size > 1]
    top = sorted((f for f in out if f.size > 1), key=lambda f: -f.weight)[:len(kept)]
    if not kept or [f.size for f in kept] != [f.size for f in top] or any(f.pair for f in kept):
        return None
    low_in, low_out = kept[-1].weight, top[-1].weight
    if (_span(rest) != (low_in, 1) if rest else low_in != 1) or any(f.weight < low_out for f in top) \
            or radix(out) is None:
        return None
    return regrid(low_out, low_in), Fraction(low_in, low_out), True, low_out


def _halo(digits: Sequence[Digit], mixed: Sequence[Digit], out: Sequence[Digit]):
    """(fn, scale, counted, period) of an input cut into overlapping blocks (``Tensor.unfold`` with a
    halo: HaloNet's keys and values) whose offsets within a block the op mixes whole: the blocks'
    digits match the output's top digits, size for size (each query block reads its own block of
    keys), and output v reads the ``width`` positions of its block, which start at block x step.
    None where the digits are not so."""
    kept = sorted((f for f in digits if f not in mixed and f.size > 1), key=lambda f: -f.weight)
    span, offsets = _span(kept), _span(mixed)
    top = sorted((f for f in out if f.size > 1), key=lambda f: -f.weight)[:len(kept)]
    if span is None or offsets is None or offsets[1] != 1 or any(f.pair for f in kept) or radix(out) is None \
            or [f.size for f in kept] != [f.size for f in top] or _span(top) is None:
        return None
    step, low_out = span[1], _span(top)[1]
    return regrid(low_out, step, offsets[0]), Fraction(step, low_out), True, low_out


def regrid(out_block: int, in_block: int, width: int | None = None) -> IndexFn:
    """Output v reads the input's block of ``in_block`` positions that holds its top digits: those
    above weight ``out_block`` in the output, above ``in_block`` in the input; with ``width``, the
    ``width`` positions from that block's start (blocks that overlap by a halo)."""
    width = in_block if width is None else width
    def fn(v: np.ndarray, finite: bool):
        lo = (v // out_block) * in_block
        return lo, lo + width - 1, 1
    return fn


def _row_blocks(fn: IndexFn, n_out: int | None, n_in: int, row: int) -> bool:
    """The map reads, for output v, exactly the inputs [s*v, s*v + s) in both models, with s dividing
    the innermost factor ``row`` (so no block crosses a row of a flattened grid)."""
    if not n_out or n_in % n_out or row % (n_in // n_out):
        return False
    s = n_in // n_out
    v = np.arange(n_out, dtype=np.int64)
    for finite in (False, True):
        a, b, step = fn(v, finite)
        if not (np.array_equal(a, s * v) and np.array_equal(b, s * v + s - 1) and np.all(np.asarray(step) == 1)):
            return False
    return True


def _still(fn: IndexFn, n_out: int | None, n_in: int) -> bool:
    """The map keeps every position where it is, in both models (a kernel-1, stride-1 window)."""
    if n_out != n_in:
        return False
    v = np.arange(n_in, dtype=np.int64)
    for finite in (False, True):
        a, b, _ = fn(v, finite)
        if not (np.array_equal(a, v) and np.array_equal(b, v)):
            return False
    return True


def _moves(fn: IndexFn, scale: Fraction | None, n_out: int, n_in: int) -> bool:
    """The map may change a lost spatial axis's windows. A label is lost only at size 1 (a size-1
    factor through a flatten and back), so only a dim of size 1 can be that axis (a conv across
    ECA's channels, a split of a GLU's features cannot), and the map changes it when it resizes it,
    reads anything but position 0 (in either model: a kernel-1 conv with padding 1 and stride 3
    keeps size 1 but reads only padding) or strides (one position here, a stride on a larger input:
    the 10,000-network run)."""
    if n_in != 1:
        return False
    if n_out != n_in or scale != 1:
        return True
    v = np.arange(n_out, dtype=np.int64)
    for finite in (False, True):
        a, b, step = fn(v, finite)
        if finite:
            a, b = clip_taps(a, b, step, n_in)
        if not (np.array_equal(a, v) and np.array_equal(b, v)):
            return True
    return False


_UNARY: dict[tuple, tuple] = {}
"""One input's pointwise plans, by what they depend on (its shape, dims with their extra tokens'
liveness, and local axes, the output shape, per channel): the plan's fields with the input's id left
out. Activations and norms repeat them through a whole network."""
MAX_UNARY = 1 << 14


def pointwise(ctx: RuleContext, refs: Sequence[TRef], out_shape: Sequence[int] | None = None,
              per_channel: bool = False) -> Plan:
    """Elementwise op with broadcasting: every local axis is the union of its inputs' windows.
    ``per_channel``: each output element reads each input at its own index (arithmetic, an
    activation; not a softmax or a norm over channels, which the same union describes):
    ``Plan.same_index``."""
    out_shape = tuple(ctx.out_shape if out_shape is None else out_shape)
    if len(refs) != 1:
        return _pointwise(ctx, refs, out_shape, per_channel)
    (ref,) = refs
    dims = tuple(ctx.dims(ref))  # (and whether their extra tokens are live, which dims' equality ignores)
    key = (tuple(ctx.shape(ref)), dims, tuple(map(live_extras, dims)), ctx.local_axes(ref), out_shape, per_channel)
    known = _UNARY.get(key)
    if known is None:
        plan = _pointwise(ctx, refs, out_shape, per_channel)
        if len(_UNARY) >= MAX_UNARY:
            _UNARY.clear()
        same = plan.same_index.get(ref.id)  # (copies: the caller may add to the plan it gets)
        _UNARY[key] = (plan.dims, dict(plan.untracked), None if same is None else dict(same),
                       {a: [(s.fn, s.scale, s.counted, s.period) for s in srcs] for a, srcs in plan.local.items()})
        return plan
    dims, untracked, same, local = known
    plan = Plan(dims=dims, untracked=dict(untracked),
                local={a: [Source(ref.id, *fields) for fields in srcs] for a, srcs in local.items()})
    if same is not None:
        plan.same_index[ref.id] = dict(same)
    return plan


def _pointwise(ctx: RuleContext, refs: Sequence[TRef], out_shape: tuple[int, ...], per_channel: bool) -> Plan:
    """:func:`pointwise` for any number of inputs."""
    rank = len(out_shape)
    # (each input's facts once, not once per dim and axis: a cat of many pieces is one merge of them all)
    facts = [(ref, ctx.shape(ref), ctx.dims(ref), rank - len(ctx.shape(ref))) for ref in refs]
    dims: list[Dim] = []
    conflicted: set[int] = set()
    for d, size in enumerate(out_shape):
        chosen: Dim | None = None
        for _, ref_shape, ref_dims, offset in facts:
            k = d - offset
            if k < 0 or ref_shape[k] != size:
                continue
            dim = ref_dims[k]
            if dim == chosen:  # (the common case: nothing to choose)
                continue
            if chosen is None or (not held(chosen) and held(dim)):
                chosen = dim if chosen is None or held(dim) else chosen
            elif held(dim) and as_digits(dim) != as_digits(chosen):
                conflicted.update(held(dim) + held(chosen))
            elif held(dim) and dim != chosen and any(isinstance(f, Digit) for f in dim):
                chosen = dim  # (the same positions: a whole axis of the other is its digit of weight 1 here)
        dims.append(chosen if chosen is not None else plain(size))
    plan = Plan(dims=tuple(dims), untracked={a: "merges inputs whose spatial axes lie on different dims"
                                             for a in conflicted})
    if per_channel:
        for ref, ref_shape, ref_dims, offset in facts:
            plan.same_index[ref.id] = {k: (k + offset, Fraction(1)) for k, dim in enumerate(ref_dims)
                                       if not held(dim) and 1 < ref_shape[k] == out_shape[k + offset]}
    carried = {a: d for d, dim in enumerate(dims) for a in axes_of(dim)}
    split = digit_axes(dims)
    keeps = {ref.id: tracked(ctx, ref) for ref in refs}
    for a in sorted(set().union(*keeps.values()) - conflicted):
        sources = []
        for ref, ref_shape, ref_dims, offset in facts:
            if a not in keeps[ref.id]:
                continue
            where = [k for k, dim in enumerate(ref_dims) if a in held(dim)]
            if not where:  # carried by no dim: one position, seen by every output unit
                sources.append(Source(ref.id, broadcast))
                continue
            if a in split or a in digit_axes(ref_dims):
                # digits of a split axis: the input must hold them where the output does, or lack some
                # (a context pooled over them, broadcast back: MobileViT-V2's linear attention)
                if any(as_digits(ref_dims[k]) != as_digits(dims[k + offset]) for k in where):
                    break
                holders = {d for d, dim in enumerate(dims) if a in held(dim)}
                keys = {d for d in holders if all(f.pair for f in digits_of([dims[d]], a, pairs=True))}
                if {k + offset for k in where} == holders - keys and keys:
                    # (scores of attention within windows, whose units are their queries, plus a bias
                    # from the queries alone: HaloNet's relative positions)
                    sources.append(Source(ref.id, identity))
                    continue
                if {k + offset for k in where} != holders:
                    lacked = _lacked(ref_dims, dims, a, offset)
                    if lacked is None:
                        break
                    n, w = lacked
                    sources.append(Source(ref.id, drop(n, w), Fraction(1, n), True, n * w))
                    continue
                sources.append(Source(ref.id, identity))
                continue
            k = where[0]
            d = k + offset
            if carried.get(a) != d:
                break  # the axis sits on another dimension in this input: leave it Unknown
            same = ref_shape[k] == out_shape[d]
            sources.append(Source(ref.id, identity if same else broadcast))
        else:
            plan.local[a] = sources
    return plan


def as_digits(dim: Dim) -> tuple:
    """A dim with every whole spatial factor written as the digit of weight 1 it is (to compare dims
    whose positions agree, one holding an axis whole and the other as the least digit)."""
    return tuple(Digit(f[0], f[1], 1) if not isinstance(f, Digit) and f[0] is not None else f for f in dim)


def _lacked(ref_dims: Sequence[Dim], dims: Sequence[Dim], a: int, offset: int) -> tuple[int, int] | None:
    """(size, weight) of the digits of axis ``a`` that the output holds on dims where the input holds
    none of a (it is broadcast there), when they make one digit and the input's digits are the
    output's others, renumbered without it (as pooling it away left them); else None."""
    missing = [d for d, dim in enumerate(dims) if a in held(dim) and (d - offset < 0 or a not in held(ref_dims[d - offset]))]
    span = _span([f for d in missing for f in digits_of([dims[d]], a, pairs=True)])
    if span is None or any(f.pair for d in missing for f in digits_of([dims[d]], a, pairs=True)):
        return None
    n, w = span
    rest = {(f.size, f.weight // n if f.weight > w else f.weight) for d, dim in enumerate(dims) if d not in missing
            for f in digits_of([dim], a, pairs=True) if f.size > 1}
    if rest != {(f.size, f.weight) for f in digits_of(ref_dims, a, pairs=True) if f.size > 1}:
        return None
    return n, w


def drop(size: int, weight: int) -> IndexFn:
    """The inverse of :func:`expand`: output v reads the one input position that has v's digits
    but the digit (size, weight), renumbered without it (a context pooled over that digit and
    broadcast back over it)."""
    def fn(v: np.ndarray, finite: bool):
        at = (v // (weight * size)) * weight + v % weight
        return at, at, 1
    return fn


@functools.lru_cache(maxsize=1 << 14)
def held(dim: Dim) -> tuple[int, ...]:
    """The spatial axes a dim holds, whole or as digits (cached, as :func:`axes_of`)."""
    return tuple(dict.fromkeys(f.axis if isinstance(f, Digit) else f[0] for f in dim
                               if isinstance(f, Digit) or f[0] is not None))


def view(ctx: RuleContext, x: TRef, out_shape: Sequence[int] | None = None) -> Plan:
    """Reshape: regroup the row-major factors of ``x``'s dims into the new dims.

    Flattening H and W into one dim keeps both axes (positions split back exactly); splitting a
    spatial factor (H -> (H/ws, ws): a window partition) puts its digits on several dims
    (:class:`~convlens.rules.registry.Digit`), and digits that come back together in row-major
    order make the whole factor again (the window reverse). Size-1 dims pair up in order; a
    spatial factor of size 1 with no size-1 dim in its place is carried by no dim (every unit sees
    its single position). A token dim with extra
    tokens (:class:`~convlens.rules.registry.TokenDim`) passes only whole, to an output dim of its
    size at the same place (splitting the heads' channels of (B, N, C) beside it is fine); any other
    reshape of it leaves its axes untracked.
    """
    out_shape = list(ctx.out_shape if out_shape is None else out_shape)
    in_dims, in_shape = ctx.dims(x), list(ctx.shape(x))
    dims: list[Dim] = []
    broken: set[int] = set()
    d0 = e0 = 0  # the segment of input and output dims not yet regrouped starts here
    for d, dim in enumerate(in_dims):
        if extras(dim) == (0, 0):
            continue
        e = _same_place(in_shape, out_shape, d, e0)
        if e is None:
            broken.update(axes_of(dim))
            continue
        got, lost = _regroup(_factors(in_dims, in_shape, d0, d), out_shape[e0:e])
        dims += got + [dim]
        broken |= lost
        d0, e0 = d + 1, e + 1
    got, lost = _regroup(_factors(in_dims, in_shape, d0, len(in_dims)), out_shape[e0:])
    dims += got
    broken |= lost
    dims = _whole(dims, broken)
    dims = [dim if any(_axis(f) is not None for f in dim) or len(dim) <= 1 or extras(dim) != (0, 0)
            else ((None, out_shape[d]),) for d, dim in enumerate(dims)]
    plan = Plan(dims=tuple(dims), untracked={a: "reshapes a spatial axis into sizes that do not divide it"
                                                       for a in broken})
    for a in tracked(ctx, x) - broken:
        plan.local[a] = [Source(x.id, identity)]
    plan.same_index[x.id] = _view_index(in_dims, in_shape, dims, out_shape)
    return plan


def _view_index(in_dims: Sequence[Dim], in_shape: Sequence[int], out_dims: Sequence[Dim],
                out_shape: Sequence[int]) -> dict[int, tuple[int, Fraction]]:
    """The non-spatial dims a reshape keeps in order: input dim d and output dim e that start after
    the same number of elements, one size dividing the other. Index i of d is then index
    i * out/in of e (e the outer part of d split, or d the outer part of e merged), to integers."""
    out = {}
    for d, size in enumerate(in_shape):
        if size == 1 or held(in_dims[d]):
            continue
        before = int(np.prod(in_shape[:d], dtype=np.int64))
        for e, other in enumerate(out_shape):
            if other > 1 and int(np.prod(out_shape[:e], dtype=np.int64)) == before:
                if not held(out_dims[e]) and (size % other == 0 or other % size == 0):
                    out[d] = (e, Fraction(other, size))
                break
    return out


def _factors(dims: Sequence[Dim], shape: Sequence[int], start: int, stop: int) -> list[Factor]:
    """The row-major factors of dims [start, stop), a spatial factor longer than 1 as its digit of
    weight 1 (:func:`_whole` makes it whole again); a token dim whose axes a reshape breaks counts
    as one plain factor (its axes are already in ``broken``), and so does a plain dim of size 1 (the
    batch of one sample): size-1 dims pair up in order (:func:`_regroup`)."""
    return [Digit(f[0], f[1], 1) if f[0] is not None and f[1] > 1 else f for d in range(start, stop)
            for f in (((None, shape[d]),) if extras(dims[d]) != (0, 0) or (shape[d] == 1 and not dims[d])
                      else dims[d])]


def _axis(f: Factor) -> int | None:
    """The spatial axis a factor holds (whole or one digit of it), or None."""
    return f.axis if isinstance(f, Digit) else f[0]


def _whole(dims: list[Dim], broken: set[int]) -> list[Dim]:
    """Digits of one axis that sit next to each other in row-major order within a dim merge; an axis
    whose digits merge into one (no digit of weight > 1 left) makes a whole factor again. Factors
    of ``broken`` axes become plain."""
    merged = []
    for dim in dims:
        out: list = []
        for f in dim:
            prev = out[-1] if out else None
            if (isinstance(f, Digit) and isinstance(prev, Digit) and (prev.axis, prev.pair) == (f.axis, f.pair)
                    and prev.weight == f.weight * f.size):
                out[-1] = Digit(f.axis, prev.size * f.size, f.weight, f.pair)
            elif isinstance(f, Digit) and f.size == 1:
                continue  # (a digit of one position says nothing)
            elif _axis(f) in broken:
                out.append((None, f[1]))
            else:
                out.append(f)
        merged.append(token_dim(tuple(out), *extras(dim), live_extras(dim)))
    return list(normalize(merged))


def _same_place(in_shape: Sequence[int], out_shape: Sequence[int], d: int, start: int) -> int | None:
    """The output dim (from ``start`` on) that holds input dim d whole: the same size, after the
    same number of elements."""
    before = int(np.prod(in_shape[:d], dtype=np.int64))
    for e in range(start, len(out_shape)):
        if int(np.prod(out_shape[:e], dtype=np.int64)) == before and out_shape[e] == in_shape[d]:
            return e
    return None


def _regroup(factors: list[Factor], out_sizes: Sequence[int]) -> tuple[list[Dim], set[int]]:
    """Row-major factors regrouped into dims of ``out_sizes``, and the axes a split broke.

    Size-1 factors (a spatial axis pooled to one position, or a plain size-1 dim such as a batch of
    one) go to the output's size-1 dims in order; one with no size-1 dim in its place is carried
    by no dim. ((1, 1, 8) -> (1, 8) keeps the batch's place and drops the axis's label, which the
    batch dim would otherwise take: a conv padding the axis later would then move positions
    convlens believed elsewhere.)"""
    dims: list[Dim] = []
    broken: set[int] = set()
    lost = False
    i = 0
    for size in out_sizes:
        group: list = []
        if size == 1 and not lost:
            if i < len(factors) and factors[i][1] == 1:
                if factors[i][0] is not None:
                    group.append(factors[i])
                i += 1
            dims.append(tuple(group))
            continue
        prod = 1
        while prod < size and i < len(factors):
            f = factors[i][1]
            if f == 1:
                i += 1  # a size-1 spatial factor inside a longer dim: carried by no dim
            elif size % (prod * f) == 0:
                group.append(factors[i])
                prod *= f
                i += 1
            elif f % (size // prod) == 0:  # the factor is split across this dim and the next
                part = size // prod
                outer, inner = _split(factors[i], part)
                group.append(outer)
                factors[i] = inner
                prod = size
            else:  # no common factorisation: give up on the structure of everything left
                broken.update(a for a in map(_axis, factors[i:]) if a is not None)
                lost = True
                break
        if lost:
            group = [(None, size)]
        dims.append(tuple(group))
    return dims, broken


def _split(f: Factor, part: int) -> tuple[Factor, Factor]:
    """A factor split row-major into an outer one of ``part`` and the inner rest: a digit into two
    digits of the same axis."""
    if isinstance(f, Digit):
        inner = f.size // part
        return Digit(f.axis, part, f.weight * inner, f.pair), Digit(f.axis, inner, f.weight, f.pair)
    return (None, part), (None, f[1] // part)


def permute(ctx: RuleContext, x: TRef, order: Sequence[int]) -> Plan:
    in_dims = ctx.dims(x)
    plan = Plan(dims=tuple(in_dims[d] for d in order))
    for a in tracked(ctx, x):
        plan.local[a] = [Source(x.id, identity)]
    plan.same_index[x.id] = {d: (e, Fraction(1)) for e, d in enumerate(order) if not held(in_dims[d])}
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
    if spatial and (len(axes) != 1 or any(len(p) != 1 or extras(p) != (0, 0) for p in pieces)):
        return token_cat(ctx, refs, dim)  # class tokens before patch tokens
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
            ends = np.cumsum([0] + [ctx.shape(r)[dim] for r in refs])
            plan.pieces = (dim, tuple((int(ends[k]), int(ends[k + 1]), r.id) for k, r in enumerate(refs)
                                      if ends[k + 1] > ends[k]))
        return plan
    (axis,) = axes.pop()
    mixed = {b for r in refs for b in ctx.global_axes(r) if b != axis and any(b in ctx.local_axes(o) for o in refs)}
    if mixed:
        # the units of a piece that sees the whole of another axis see all of it, those of a local one
        # their windows: one state per axis cannot hold both (the 10,000-network run: a cat along rows
        # of a conv's map and attention's output over whole rows)
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="cat along a spatial axis of pieces of which some see the whole of another axis "
                                "and some a local window")
    if any(axis in ctx.global_axes(r) for r in refs) and any(axis in ctx.local_axes(r) for r in refs):
        # the units of a global piece see the whole axis, those of a local one their windows: one
        # tensor would hold both kinds of unit (the 10,000-network run: attention's output beside a
        # conv's), which no state says
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="cat along a spatial axis of a piece that sees the whole axis and a local one")
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


def pick_channels(ctx: RuleContext, x: TRef, dim: int, picked: range | None, plan: Plan,
                  out_shape: Sequence[int] | None = None) -> Plan:
    """A pick of indices ``picked`` (None: indices the op's values choose) along a dim of ``x`` that
    holds no spatial axis; ``plan``: the pick as if every channel of x saw the same windows.

    When x's channels see different windows (after a cat), the picked channels see the windows of
    the channel pieces they come from (``RuleContext.pieces``): the plan reads those pieces. Where
    the walk does not know the pieces, or the op's values choose the channels, the picked channels
    may see less than the union over x's channels, which is all convlens knows: named, not guessed.
    Pieces along another dim are picked alike; the walk carries them."""
    size = ctx.shape(x)[dim]
    if not ctx.channels_split(x) or (picked is not None and picked == range(size)):
        return plan
    pieces = ctx.pieces(x)
    if pieces is not None and pieces[0] != dim:
        return plan
    if pieces is None or picked is None:
        return Plan(dims=tuple(plain(s) for s in (out_shape or ctx.out_shape)), unsupported="picks channels that may see other windows than the rest (after a "
                                                "cat or a write along channels, and then an op that "
                                                "reorders or mixes channels: a channel shuffle, a "
                                                "group or layer norm, a grouped conv, an index)")
    hit = []
    for start, stop, t in pieces[1]:  # the picked j with start <= picked[j] < stop, a range as picked is
        lo = min(max(-(-(start - picked.start) // picked.step), 0), len(picked))
        hi = min(max(-(-(stop - picked.start) // picked.step), 0), len(picked))
        if lo < hi:
            hit.append((lo, hi, t))
    out = retarget(plan, ctx.node.inputs, {x.id: [t for _, _, t in hit]})
    if len(hit) > 1:
        out.channels = Channels.SPLIT
        out.pieces = (dim, tuple(hit))
        out.piecewise = set(out.local)  # (the pieces were checked where they met)
    return out


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


def stacked(ctx: RuleContext, refs: Sequence[TRef], dim: int) -> Plan:
    """``torch.stack``: a merge along a new dim (like a cat along channels, each position of the new
    dim comes from one input, and a unit's window is the union over them); the other dims merge
    elementwise."""
    rank = len(ctx.out_shape)
    dim = dim % rank
    n = ctx.out_shape[dim]
    if len({r.id for r in refs}) > 1 and any(virtual_axes(ctx, r) for r in refs):
        # pieces taken at single positions of an axis (a loop over positions: a recurrent layer
        # unrolled): the new dim is that axis again, and a union over it would overstate each unit
        return _unsupported(ctx, "stacks pieces taken at single positions of a spatial axis")
    shapes = [tuple(ctx.shape(r)[:dim]) + (n,) + tuple(ctx.shape(r)[dim:]) for r in refs]
    dims = [tuple(ctx.dims(r)[:dim]) + ((),) + tuple(ctx.dims(r)[dim:]) for r in refs]
    plan = pointwise(_ReshapedContext(ctx, refs, shapes, dims), refs)
    plan.dims = tuple(plain(n) if d == dim else dd for d, dd in enumerate(plan.dims))
    if len({r.id for r in refs}) > 1:
        plan.channels = Channels.SPLIT
    return plan


class _ReshapedContext(RuleContext):
    """A view of a context where some inputs pretend to have another shape (and dims): cat's and
    stack's merges."""

    def __init__(self, ctx: RuleContext, refs: Sequence[TRef], shapes: Sequence[tuple[int, ...]],
                 dims: Sequence[tuple[Dim, ...]] | None = None):
        self.__dict__.update(ctx.__dict__)
        self._override = {r.id: s for r, s in zip(refs, shapes)}
        self._override_dims = {r.id: d for r, d in zip(refs, dims)} if dims is not None else {}
        self._base = ctx

    def shape(self, ref):
        rid = ref.id if isinstance(ref, TRef) else ref
        return self._override.get(rid) or self._base.shape(ref)

    def dims(self, ref):
        rid = ref.id if isinstance(ref, TRef) else ref
        return self._override_dims.get(rid) or self._base.dims(ref)


def squeeze_unsqueeze(ctx: RuleContext, x: TRef, insert: Sequence[int] = (), remove: Sequence[int] = ()) -> Plan:
    """Exact dim bookkeeping for unsqueeze (a new plain dim) and squeeze (size-1 dims removed; a
    spatial axis they carried stays local at its single position)."""
    dims = [dim for d, dim in enumerate(ctx.dims(x)) if d not in remove]
    for d in sorted(insert):
        dims.insert(d, ())
    plan = Plan(dims=tuple(dims))
    for a in tracked(ctx, x):
        plan.local[a] = [Source(x.id, identity)]
    kept = [d for d in range(len(ctx.shape(x))) if d not in remove]
    position = list(range(len(dims)))
    for d in sorted(insert):
        position.remove(d)
    plan.same_index[x.id] = {d: (position[i], Fraction(1)) for i, d in enumerate(kept) if not held(ctx.dims(x)[d])}
    return plan


# ------------------------------------------------------------------ token dims (extra tokens)
def is_tokens(dim: Dim) -> bool:
    """A dim whose positions are not those of one axis: a flattened grid, or one with extra tokens."""
    return bool(axes_of(dim)) and (len(dim) > 1 or extras(dim) != (0, 0))


def token_cat(ctx: RuleContext, refs: Sequence[TRef], dim: int) -> Plan:
    """``torch.cat`` along a dim that carries spatial axes in one piece only (the grid of patch
    tokens) while the other pieces carry none (class, distillation, register tokens): the result
    is a :class:`~convlens.rules.registry.TokenDim` whose grid positions keep their windows.

    Extra tokens are constants or see the whole input (a class token that has attended to the
    patches: the dim's extras are then ``live``); one with local windows has no place in the grid."""
    dim = dim % len(ctx.out_shape)
    # a piece whose axes sit at one position, all global (CLIP's pooled token: x.mean(0, keepdim=True)),
    # is an extra token too
    carriers = [r for r in refs if axes_of(ctx.dims(r)[dim])
                and not (ctx.shape(r)[dim] == 1 and set(axes_of(ctx.dims(r)[dim])) <= ctx.global_axes(r))]
    if len(carriers) != 1:
        return _unsupported(ctx, "cat of several pieces that carry spatial axes, along a flattened or mixed "
                                 "spatial dim")
    grid = carriers[0]
    others = [r for r in refs if r is not grid]
    if any(ctx.local_axes(r) for r in others):
        return _unsupported(ctx, "cat puts extra tokens with local windows beside a grid")
    live = live_extras(ctx.dims(grid)[dim]) or any(ctx.global_axes(r) for r in others)
    where = next(k for k, r in enumerate(refs) if r is grid)
    before, after = extras(ctx.dims(grid)[dim])
    before += sum(ctx.shape(r)[dim] for r in refs[:where])
    after += sum(ctx.shape(r)[dim] for r in refs[where + 1:])
    stretched = [tuple(ctx.out_shape[dim] if d == dim else s for d, s in enumerate(ctx.shape(r))) for r in refs]
    dims = [ctx.dims(r) if r is grid else tuple(() if d == dim else dd for d, dd in enumerate(ctx.dims(r)))
            for r in refs]
    plan = pointwise(_ReshapedContext(ctx, refs, stretched, dims), refs)
    factors = tuple(f for f in ctx.dims(grid)[dim])
    plan.dims = tuple(token_dim(factors, before, after, live) if d == dim else dd for d, dd in enumerate(plan.dims))
    plan.beside = {r.id for r in others} - {grid.id}
    return plan


def token_slice(ctx: RuleContext, x: TRef, dim: int, start: int, stop: int, drop: bool = False) -> Plan:
    """Tokens [start, stop) of a dim that holds a grid of factors and perhaps extra tokens (a
    :class:`~convlens.rules.registry.TokenDim`, or a flattened grid): ``x[:, 1:]`` drops a class
    token, ``x[:, :1]`` keeps it. Grid positions keep their windows; a slice of whole rows of the
    outermost factor is a slice along its axis. Extra tokens are constants while the axes are
    local (and no global branch reached them), global once the axes are."""
    d_in = ctx.dims(x)[dim]
    before, after = extras(d_in)
    factors = tuple(d_in)
    n = int(np.prod([f for _, f in factors], dtype=np.int64))
    lo, hi = max(start, before) - before, min(stop, before + n) - before
    new_before, new_after = max(0, min(stop, before) - start), max(0, stop - max(start, before + n))
    out_shape = list(ctx.out_shape)
    plan = windowed(ctx, x, drop=[dim] if drop else [], out_shape=out_shape)
    plan.untracked = {a: r for a, r in plan.untracked.items() if a not in axes_of(d_in)}
    if hi <= lo:  # extra tokens only
        if ctx.local_axes(x) - set(axes_of(d_in)):
            return _unsupported(ctx, "picks extra tokens of a tensor with local axes on other dims")
        if not live_extras(d_in) and ctx.local_axes(x):
            return Plan(dims=tuple(plain(s) for s in out_shape), constant=True)
        plan.fold.update(ctx.local_axes(x))  # they see the whole input (global axes stay global)
        return plan
    inner = int(np.prod([f for _, f in factors[1:]], dtype=np.int64))
    if drop:  # select
        if len(factors) != 1 or factors[0][0] is None:
            return _unsupported(ctx, "picks one token of a flattened grid")
        maps, out_factors = {factors[0][0]: constant_index(lo)}, None
    elif (lo, hi) == (0, n):
        maps = {a: identity for a in axes_of(d_in)}
        out_factors = factors
    elif lo % inner == 0 and hi % inner == 0 and factors[0][0] is not None:
        maps = {a: identity for a in axes_of(d_in)}
        maps[factors[0][0]] = affine(1, lo // inner)
        out_factors = ((factors[0][0], (hi - lo) // inner),) + factors[1:]
    else:
        return _unsupported(ctx, "picks part of a row of a flattened grid")
    if out_factors is not None:
        plan.dims = tuple(token_dim(out_factors, new_before, new_after, live_extras(d_in)) if d == dim else dd
                          for d, dd in enumerate(plan.dims))
    for a, fn in maps.items():
        plan.local[a] = [Source(x.id, fn)]
    return plan


def _unsupported(ctx: RuleContext, why: str) -> Plan:
    return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported=why)
