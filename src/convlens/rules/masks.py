"""Attention masks: which query-key pairs a mask removes, per spatial axis.

Convention (docs/conventions.md, "Attention masks"): a query-key pair is a path unless its attention
weight is exactly zero for every input, with one exception: a pair that a *constant* additive mask
pushes down by 80 or more (e^-80 ~ 2e-35, below float32's resolution; timm's Swin uses -100 for the
pairs its cyclic shift brought together) is no path. convlens reads a mask only where it is a
constant whose values the capture kept (:attr:`convlens.capture.Capture.values`); a constant mask it
cannot read removes no pair, and the rows after it say so (``Plan.caveats``).

A mask is read per axis: the pairs it keeps must be, for every query, the keys whose position along
each axis lies in one run of the query's window along that axis (a box: Swin's shifted windows,
whose masked regions are rectangles). Then each key source's map is narrowed to that run
(:func:`mask_keys`). Anything else (a causal mask over a flattened grid, a mask that limits global
attention) is named, never guessed.
"""

from __future__ import annotations

from dataclasses import replace
from math import prod
from typing import Sequence

import numpy as np
import torch

from ..capture import OpNode, TRef
from ..geometry import IndexFn
from .plans import axes_of, identity
from .registry import Digit, Dim, Plan, RuleContext, digit_axes, extras, retarget

SUPPRESSES = -80.0
"""An additive mask entry at or below this removes its pair (e^-80 ~ 2e-35)."""


def suppressed(value: torch.Tensor, added: bool = False) -> np.ndarray:
    """The pairs a mask removes (bool array): SDPA's boolean mask keeps its True entries; a float
    mask, or any tensor ``added`` to the scores, removes the entries <= ``SUPPRESSES`` (a boolean
    one added is 0 or 1: none)."""
    v = value.detach().cpu()
    if v.dtype == torch.bool:
        return np.zeros(v.shape, dtype=bool) if added else ~v.numpy()
    return (v.to(torch.float64) <= SUPPRESSES).numpy()


def positions(dims: Sequence[Dim], shape: Sequence[int], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(position, valid): for each element of a tensor with these dims and shape, its position along
    ``axis`` (the sum of its digits times their weights, a whole factor being the digit of weight 1;
    not the key digits of scores), and whether it has one (false on the extra tokens of a token
    dim). Arrays broadcastable to ``shape``: size 1 along a dim that holds nothing of the axis and
    no extra token."""
    rank = len(shape)
    pos = np.zeros((1,) * rank, dtype=np.int64)
    valid = np.ones((1,) * rank, dtype=bool)
    for d, dim in enumerate(dims):
        before, after = extras(dim)
        sizes = [f[1] for f in dim]
        weights = [(f.weight if isinstance(f, Digit) and f.axis == axis and not f.pair else
                    1 if not isinstance(f, Digit) and f[0] == axis else 0) for f in dim]
        if not any(weights) and not before and not after:
            continue
        g = np.arange(shape[d], dtype=np.int64) - before
        grid = prod(sizes)
        contribution = np.zeros(shape[d], dtype=np.int64)
        for j, (size, weight) in enumerate(zip(sizes, weights)):
            if weight:
                contribution += (np.clip(g, 0, max(grid - 1, 0)) // prod(sizes[j + 1:])) % size * weight
        where = [1] * rank
        where[d] = shape[d]
        pos = pos + contribution.reshape(where)
        valid = valid & ((g >= 0) & (g < grid)).reshape(where)
    return pos, valid


def key_tables(axes: Sequence[int], query: dict[int, tuple[np.ndarray, np.ndarray]],
               key: dict[int, tuple[np.ndarray, np.ndarray]], kept: np.ndarray
               ) -> dict[int, tuple[np.ndarray, np.ndarray]] | str:
    """Per axis, (allowed, present): tables over (query position, key position) of the pairs the
    mask keeps and of the pairs there are, for the axes along which the mask removes some pair; or
    why the kept pairs are no box per axis. ``query`` and ``key`` hold each axis's
    :func:`positions` broadcastable to ``kept`` (the pairs the mask keeps, over every element of
    the scores). A unit's channels (dims that hold no position, such as heads) are united first:
    a pair is a path when some channel keeps it."""
    arrays = [p for a in axes for p in (*query[a], *key[a])]
    shape = np.broadcast_shapes(kept.shape, *(x.shape for x in arrays))
    channel = tuple(d for d in range(len(shape)) if all(x.shape[d] == 1 for x in arrays))
    kept = np.broadcast_to(kept, shape).any(axis=channel, keepdims=True) if channel else np.broadcast_to(kept, shape)
    shape = kept.shape
    valid = np.ones(shape, dtype=bool)
    for a in axes:
        valid = valid & query[a][1] & key[a][1]
    if not valid.all():
        return "a mask over extra tokens (class or register tokens)"
    keeps = kept.ravel()
    tables = {}
    product = np.ones(keeps.shape, dtype=bool)
    coords = {a: (np.broadcast_to(query[a][0], shape).ravel(), np.broadcast_to(key[a][0], shape).ravel())
              for a in axes}
    for a, (q, k) in coords.items():
        allowed = np.zeros((int(q.max()) + 1, int(k.max()) + 1), dtype=bool)
        present = np.zeros_like(allowed)
        allowed[q[keeps], k[keeps]] = True
        present[q, k] = True
        tables[a] = (allowed, present)
    for a, (q, k) in coords.items():
        product &= tables[a][0][q, k]
    if not np.array_equal(product, keeps):
        # (where two elements hold the same positions, one kept and one not, as well: never a guess)
        return "a mask whose kept pairs are no box per axis (a causal mask over a flattened grid)"
    return {a: t for a, t in tables.items() if not t[0][t[1]].all()}


def mask_keys(fn: IndexFn, allowed: np.ndarray) -> IndexFn | str:
    """``fn`` (a key source's map: query position -> the keys of its window) narrowed to the keys
    ``allowed`` (query x key table) keeps, in the real network; the unbounded model (no border, so no
    mask: Swin's masks cut the windows the shift wrapped around) keeps ``fn``. Or why the kept keys
    of some query are not one run of its window's keys."""
    nq, nk = allowed.shape
    v = np.arange(nq, dtype=np.int64)
    a, b, step = fn(v, True)
    step = np.broadcast_to(np.maximum(np.asarray(step, dtype=np.int64), 1), v.shape)
    k = np.arange(nk, dtype=np.int64)[None, :]
    taps = (k >= a[:, None]) & (k <= b[:, None]) & ((k - a[:, None]) % step[:, None] == 0)
    some = allowed.any(axis=1)
    lo = np.where(some, allowed.argmax(axis=1), 0)
    hi = np.where(some, nk - 1 - allowed[:, ::-1].argmax(axis=1), -1)
    if not np.array_equal(allowed, taps & (k >= lo[:, None]) & (k <= hi[:, None])):
        return "a mask that keeps keys which are not one run of the window (holes inside the window)"
    # (a row with no key kept reads nothing: lo > hi)

    def narrowed(u: np.ndarray, finite: bool):
        ua, ub, ustep = fn(u, finite)
        if not finite:
            return ua, ub, ustep
        inside = (u >= 0) & (u < nq)
        i = np.clip(u, 0, nq - 1)
        return np.where(inside, lo[i], ua), np.where(inside, hi[i], ub), ustep
    return narrowed


def key_positions(dims: Sequence[Dim], shape: Sequence[int], axis: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`positions` of keys laid out as (lead..., keys), moved to (lead..., 1, keys) of a
    scores tensor of ``rank`` dims."""
    return tuple(x.reshape((1,) * (rank - x.ndim - 1) + x.shape[:-1] + (1, x.shape[-1]))
                 for x in positions(dims, shape, axis))


def query_positions(dims: Sequence[Dim], shape: Sequence[int], axis: int, rank: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`positions` of queries laid out as (lead..., queries), moved to (lead..., queries, 1)
    of a scores tensor of ``rank`` dims."""
    return tuple(x.reshape((1,) * (rank - x.ndim - 1) + x.shape + (1,)) for x in positions(dims, shape, axis))


# ---------------------------------------------------------------- scaled dot-product attention
def attention_kept(ctx: RuleContext, q: TRef, k: TRef, mask: TRef | None, causal: bool) -> np.ndarray | None:
    """The query-key pairs SDPA keeps (a bool array broadcastable to its scores), by this module's
    convention; None where its mask is not a constant the capture kept."""
    lq, lk = ctx.shape(q)[-2], ctx.shape(k)[-2]
    kept = np.tril(np.ones((lq, lk), dtype=bool)) if causal else np.ones((1, 1), dtype=bool)
    if mask is None:
        return kept
    value = ctx.value(mask) if ctx.constant(mask) else None
    return None if value is None else kept & ~suppressed(value)


def attention_tables(ctx: RuleContext, q: TRef, k: TRef, kept: np.ndarray):
    """:func:`key_tables` of SDPA: query positions from q's dims, key positions from k's, over the
    scores (lead dims, queries, keys)."""
    qd, kd = ctx.dims(q)[:-1], ctx.dims(k)[:-1]
    qs, ks = ctx.shape(q)[:-1], ctx.shape(k)[:-1]
    rank = max(len(qs), len(ks)) + 1
    axes = sorted({a for dim in qd + kd for a in axes_of(dim)} | digit_axes(qd) | digit_axes(kd))
    return key_tables(axes, {a: query_positions(qd, qs, a, rank) for a in axes},
                      {a: key_positions(kd, ks, a, rank) for a in axes}, kept)


# ---------------------------------------------------------------- attention written out
SAME_ELEMENTS = ("aten.view.", "aten._unsafe_view.", "aten.reshape.", "aten.expand.", "aten.clone.", "aten.alias.",
                 "aten.detach.", "aten.contiguous.", "aten._to_copy.", "aten.lift_fresh.")
"""Ops whose output holds the input's elements in the same row-major order (when sizes match)."""
SOFTMAX = ("aten._softmax.", "aten.softmax.", "aten._safe_softmax.")
_TERMS = ("aten.add.Tensor", "aten.mul.Tensor", "aten.div.Tensor", "aten.mul.Scalar", "aten.div.Scalar")


def _numel(ctx: RuleContext, tid: int) -> int:
    return prod(ctx.shape(tid))


def softmax_of(ctx: RuleContext, weights: TRef) -> OpNode | None:
    """The softmax over the last dim whose output ``weights`` holds, through same-order copies."""
    node = ctx.producer(weights)
    while node is not None and node.name.startswith(SAME_ELEMENTS) \
            and _numel(ctx, node.inputs[0]) == _numel(ctx, weights.id):
        node = ctx.producer(node.inputs[0])
    if node is None or not node.name.startswith(SOFTMAX):
        return None
    rank = len(ctx.shape(node.inputs[0]))
    return node if rank and node.args[1] % rank == rank - 1 else None


def masked_scores(ctx: RuleContext, scores: TRef) -> tuple[OpNode, np.ndarray] | None:
    """Attention written out, ``softmax(q kᵀ + mask)``, seen from the softmax's input ``scores``:
    follows it back through same-order copies, constant terms added and constant factors to the
    product ``q kᵀ``. Returns (that product, the pairs kept over ``scores``' elements), by this
    module's convention: an added constant removes the pairs where it is <= -80. A factor applied
    after such a term would scale it, and a term that depends on the input or whose values were not
    kept may be anything: then None."""
    numel = _numel(ctx, scores.id)
    kept = np.ones(numel, dtype=bool)
    scaled = False
    node = ctx.producer(scores)
    while node is not None and _numel(ctx, node.outputs[0]) == numel:
        if node.name.startswith(("aten.bmm.", "aten.mm.")) and len(node.inputs) == 2:
            return node, kept.reshape(ctx.shape(scores))
        ins = list(dict.fromkeys(node.inputs))
        if node.name.startswith(SAME_ELEMENTS):
            live = ins[0]
        elif node.name.startswith(_TERMS) and sum(not ctx.constant(t) for t in ins) == 1:
            live = next(t for t in ins if not ctx.constant(t))
            adds = node.name.startswith("aten.add")
            for t in ins:
                value = ctx.value(t) if t != live and adds else None
                if t == live or not adds:
                    continue
                if value is None:
                    return None
                removes = suppressed(value, added=True)
                if removes.any() and scaled:
                    return None
                kept &= ~np.broadcast_to(removes, ctx.shape(node.outputs[0])).reshape(-1)
            scaled |= not adds
        else:
            return None
        if _numel(ctx, live) != numel:
            return None
        node = ctx.producer(live)
    return None


def _mask_tables(ctx: RuleContext, scores: TRef):
    """(q kᵀ's node, its plan, the key tables of :func:`key_tables` over the axes along which the
    mask removes pairs) for softmax input ``scores``; None where there is no mask to read (none that
    removes a pair, or none this module can follow); why, where a mask it read removes pairs that no
    narrowing of the keys states."""
    found = masked_scores(ctx, scores)
    if found is None or found[1].all():
        return None
    product, kept = found
    product_plan = ctx.plan(product.outputs[0])
    kt, out = product.inputs[1], product.outputs[0]  # (positions read in the product's own layout)
    ds, dk = ctx.dims(out), ctx.dims(kt)
    if product_plan is None or len(ds) < 2 or len(dk) < 2:
        return None
    shape, kshape = ctx.shape(out), ctx.shape(kt)
    kept = kept.reshape(shape)
    rank = len(shape)
    axes = sorted({a for dim in ds[:-1] for a in axes_of(dim)} | digit_axes(ds) | digit_axes(dk))
    tables = key_tables(axes, {a: query_positions(ds[:-1], shape[:-1], a, rank) for a in axes},
                        {a: key_positions(dk[:-2] + dk[-1:], kshape[:-2] + kshape[-1:], a, rank) for a in axes},
                        kept)
    if isinstance(tables, str):
        return tables
    if set(tables) - set(product_plan.local):  # (global attention: the scores fold the axis)
        return "attention with a mask that limits which keys a query sees over a whole axis (not read yet)"
    return (product, product_plan, tables) if tables else None


def masked_softmax(ctx: RuleContext, plan: Plan, scores: TRef) -> Plan:
    """``plan`` of a softmax over the keys of ``scores``; where the scores are ``q kᵀ`` plus a mask
    this module reads, the softmax reads q and kᵀ as their product did, kᵀ narrowed along each axis
    to the keys the mask keeps (the scores' own record unites every key of a window: exact only
    without a mask). Anything else leaves ``plan``: every pair a path, with the caveat of the mask's
    add."""
    found = _mask_tables(ctx, scores)
    if found is None:
        return plan
    if isinstance(found, str):
        return Plan(dims=plan.dims, unsupported=found)
    product, product_plan, tables = found
    q, kt = product.inputs
    out = retarget(plan, [scores.id], {scores.id: (q, kt)})
    out.keys_kept = (product, {a: allowed for a, (allowed, _) in tables.items()})
    for a in out.local:
        mine = [s for s in plan.local[a] if s.tid == scores.id]
        base = [s for s in product_plan.local.get(a, []) if s.tid in (q, kt)]
        if any(s.fn is not identity for s in mine) or (mine and not base):
            return Plan(dims=plan.dims, unsupported="a softmax over masked scores that moves their positions")
        narrowed = []
        for s in base:
            fn = mask_keys(s.fn, tables[a][0]) if s.tid == kt and a in tables else s.fn
            if isinstance(fn, str):
                return Plan(dims=plan.dims, unsupported=fn)
            narrowed.append(replace(s, fn=fn))
        out.local[a] = [s for s in out.local[a] if s.tid not in (q, kt)] + (narrowed if mine else [])
    return out


def masked_values(ctx: RuleContext, plan: Plan, weights: TRef, values: TRef) -> Plan:
    """``plan`` of ``weights @ values``; where the weights are a softmax this module reads the mask
    of (:func:`masked_softmax`), each value source narrowed along each axis to the keys the mask
    keeps (the values hold the keys as kᵀ does)."""
    transposed = softmax_of(ctx, values)
    if transposed is not None and getattr(ctx.plan(transposed.outputs[0]), "keys_kept", None) is not None:
        return Plan(dims=plan.dims, unsupported="a product with masked attention weights as its second operand")
    softmax = softmax_of(ctx, weights)
    read = None if softmax is None else ctx.plan(softmax.outputs[0])
    if read is None or read.keys_kept is None:
        return plan  # (no mask; or one the softmax could not read, which made it unknown already)
    product, tables = read.keys_kept
    kt, rank = product.inputs[1], len(ctx.shape(product.outputs[0]))
    dk, dv = ctx.dims(kt), ctx.dims(values)
    kshape, vshape = ctx.shape(kt), ctx.shape(values)
    # (where the values cannot be narrowed as kᵀ was, every masked key's value would count: unknown)
    otherwise = Plan(dims=plan.dims, unsupported="a product of masked attention weights with values that hold "
                                                 "the keys otherwise than the scores")
    if len(dv) < 2:
        return otherwise
    out = replace(plan, local=dict(plan.local))
    for a, allowed in tables.items():
        same = zip(key_positions(dk[:-2] + dk[-1:], kshape[:-2] + kshape[-1:], a, rank),
                   key_positions(dv[:-1], vshape[:-1], a, rank))
        if not all(_same(x, y) for x, y in same):
            return otherwise
        narrowed = []
        for s in out.local.get(a, []):
            fn = mask_keys(s.fn, allowed) if s.tid == values.id else s.fn
            if isinstance(fn, str):
                return Plan(dims=plan.dims, unsupported=fn)
            narrowed.append(replace(s, fn=fn))
        out.local[a] = narrowed
    return out


def _same(x: np.ndarray, y: np.ndarray) -> bool:
    """Equal once broadcast together."""
    try:
        return bool(np.array_equal(*np.broadcast_arrays(x, y)))
    except ValueError:
        return False
