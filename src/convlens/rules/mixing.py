"""Rules for ops that consume spatial axes: reductions, softmax, matrix products, attention.

A consumed axis becomes global: every unit of the result sees the whole axis (docs/conventions.md).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..capture import RNN, SDPA
from .masks import SOFTMAX, attention_kept, attention_tables, mask_keys, masked_softmax, masked_values
from .plans import virtual_axes, axes_of, broadcast, held, identity, is_tokens, mix_digits, plain, pointwise, windowed
from .registry import (Channels, Digit, Plan, RuleContext, Source, attention_targets, digit_axes, digits_of, extras,
                       live_extras, radix, register_geometry, token_dim)

aten = torch.ops.aten

REDUCTIONS = """
mean sum prod amax amin max min var std var_mean std_mean norm linalg_vector_norm logsumexp argmax argmin
any all nansum nanmean count_nonzero median nanmedian mode kthvalue aminmax
""".split()


def _reduced_dims(ctx: RuleContext, x) -> tuple[list[int], bool]:
    """Which dims of ``x`` the reduction removes, and whether they are kept as size 1.

    Read by name from the op's schema (``linalg_vector_norm(self, ord, dim, keepdim)`` has ``ord``
    where ``mean.dim`` has ``dim``): an overload without ``dim`` (``mean.default``, ``norm.Scalar``),
    ``dim=None`` and the legacy ``dim=[]`` reduce every dim; ``mode`` and ``kthvalue`` default to -1.
    """
    rank = len(ctx.shape(x))
    n = ctx.node
    dims = n.param("dim")
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(rank))
    elif isinstance(dims, int):
        dims = [dims]
    return sorted({d % rank for d in dims}) if rank else [], bool(n.param("keepdim", False))


@register_geometry([getattr(aten, n) for n in REDUCTIONS if hasattr(aten, n)])
def reduction(ctx: RuleContext) -> Plan | list[Plan]:
    if ctx.node.op._overloadname == "other":  # torch.max(a, b), torch.min(a, b): elementwise
        return pointwise(ctx, ctx.tensor_args(), per_channel=True)
    x = ctx.node.arg(0, "self")
    dims, keepdim = _reduced_dims(ctx, x)
    plans = [windowed(ctx, x, fold=dims, drop=[] if keepdim else dims, out_shape=shape, per_channel=True)
             for shape in ctx.out_shapes()]
    return plans if len(plans) > 1 else plans[0]


@register_geometry([getattr(aten, n) for n in ("_softmax", "_log_softmax", "softmax", "log_softmax", "_safe_softmax",
                                               "sort", "argsort", "topk") if hasattr(aten, n)])
def along_dim(ctx: RuleContext) -> Plan | list[Plan]:
    """Ops whose every output along ``dim`` depends on the whole dim (``dim`` from the schema)."""
    x = ctx.node.arg(0, "self")
    rank = len(ctx.shape(x))
    dim = ctx.node.param("dim", -1)
    plans = [windowed(ctx, x, fold=[dim % rank] if rank else [], out_shape=s) for s in ctx.out_shapes()]
    if ctx.node.name.startswith(SOFTMAX) and rank and dim % rank == rank - 1:
        return masked_softmax(ctx, plans[0], x)
    return plans if len(plans) > 1 else plans[0]


@register_geometry([getattr(aten, n) for n in ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp")
                    if hasattr(aten, n)])
def scan(ctx: RuleContext) -> Plan | list[Plan]:
    """A running sum/product/max along ``dim``: per position when the dim carries no spatial axis
    (every channel of a unit already sees the unit's window); along a spatial axis unit u would see
    positions 0..u, which has no rule yet."""
    x = ctx.node.arg(0, "self")
    rank = len(ctx.shape(x))
    dim = ctx.node.param("dim") % max(rank, 1)
    if rank and axes_of(ctx.dims(x)[dim]):
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape), unsupported="a running scan along a spatial axis")
    plans = [pointwise(ctx, [x], s) for s in ctx.out_shapes()]
    return plans if len(plans) > 1 else plans[0]


def _product(ctx: RuleContext, a, b, bias=None) -> Plan:
    """a @ b over the last two dims, leading (batch) dims broadcast: a's dim -1 and b's dim -2 are
    contracted, so their axes become global; a's dim -2 and b's dim -1 carry their axes through.

    An axis carried by both free dims (query positions x key positions: attention scores) pairs two
    positions per unit; both dims keep it and it is ``paired`` until a softmax or the product with
    the values reduces one of them.
    """
    out_shape = ctx.out_shape
    rank = len(out_shape)
    da, db = ctx.dims(a), ctx.dims(b)
    if len(da) < 2 or len(db) < 2:
        return Plan(dims=tuple(plain(s) for s in out_shape), unsupported="matrix-vector product")
    plan = Plan(dims=())
    plan.fold.update(axes_of(da[-1]) + axes_of(db[-2]))
    paired = (set(axes_of(da[-2])) & set(axes_of(db[-1]))) - plan.fold
    plan.paired.update(paired)
    dims = [plain(s) for s in out_shape]
    carriers = {rank - 2: (a, da[-2]), rank - 1: (b, db[-1])}
    for k in range(rank - 2):  # batch dims: from whichever operand has them at full size, a's first (the
        # queries' blocks, where keys on a finer grid hold the same blocks: HaloNet's strided queries)
        for ref, dd in ((b, db), (a, da)):
            j = k - (rank - len(dd))
            if 0 <= j < len(dd) - 2 and held(dd[j]) and ctx.shape(ref)[j] == out_shape[k]:
                carriers[k] = (ref, dd[j])
    for d, (ref, dim) in carriers.items():
        if ctx.shape(ref)[d - rank] != out_shape[d]:
            continue
        dims[d] = dim  # (an axis also contracted stays on it, global: the queries of attention)
        for ax in set(axes_of(dim)) - plan.fold - paired:
            plan.local.setdefault(ax, []).append(Source(ref.id, identity))
        if d >= rank - 2:
            continue
        for other, dd in ((a, da), (b, db)):  # a batch dim both operands hold (VOLO's positions): both map
            j = d - (rank - len(dd))
            if other is ref or not 0 <= j < len(dd) - 2 or not held(dd[j]):
                continue
            for ax in digit_axes([dim, dd[j]]):
                if _blocks(dim) != _blocks(dd[j]):  # (index i pairs the same blocks only in the same order)
                    plan.untracked[ax] = "a matrix product whose operands hold a split axis's blocks in different orders"
            for ax in set(axes_of(dim)) | set(axes_of(dd[j])):
                if dd[j] == dim and ctx.shape(other)[j] == out_shape[d]:
                    plan.local.setdefault(ax, []).append(Source(other.id, identity))
                else:
                    plan.untracked[ax] = "a matrix product whose operands hold spatial axes on different batch dims"
                    plan.local.pop(ax, None)
    for ax in plan.untracked:
        plan.local.pop(ax, None)
    for ref in (a, b):  # an axis at one position carried by no dim (after ``select``): every unit reads it
        for ax in virtual_axes(ctx, ref) - plan.fold - paired - set(plan.untracked):
            plan.local.setdefault(ax, []).append(Source(ref.id, broadcast))
    if bias is not None:
        for ax in ctx.local_axes(bias):
            plan.local.setdefault(ax, []).append(Source(bias.id, identity))
    plan.dims = tuple(dims)
    for ax in sorted(digit_axes(da) | digit_axes(db)):
        if ax not in plan.untracked:
            _product_digits(plan, ax, a, da, b, db, carriers)
    plan.channels = Channels.MIX
    return plan


def _blocks(dim) -> list:
    """A dim's factors without the weights of its digits: two operands' batch dims that hold the same
    blocks of a split axis on grids of different resolution (HaloNet's strided queries, Hiera's
    pooled ones) agree here."""
    return [(f.axis, f.size, f.pair) if isinstance(f, Digit) else tuple(f) for f in dim]


def _product_digits(plan: Plan, ax: int, a, da, b, db, carriers) -> None:
    """A split axis (windows) through a @ b: the contracted dims' digits are mixed (the product with
    the values of window attention reads every token of the window); where a's free dim and b's hold
    the same digits (q kᵀ within windows), b's become the key digits of scores: each unit is read as
    its query, with every key of the window (exact once a softmax over the keys follows)."""
    rank = len(plan.dims)
    q, k = digits_of([plan.dims[rank - 2]], ax), digits_of([plan.dims[rank - 1]], ax)
    keys = carriers.get(rank - 1, (None,))[0] is b and q and k and radix(digits_of(plan.dims, ax)) is None
    if keys:
        plan.dims = plan.dims[:-1] + (token_dim(tuple(Digit(f.axis, f.size, f.weight, True)
                                                      if isinstance(f, Digit) and f.axis == ax else f
                                                      for f in plan.dims[-1]), *extras(plan.dims[-1]),
                                                live_extras(plan.dims[-1])),)
    mixed_a = digits_of([da[-1]], ax)
    mixed_b = digits_of([db[-2]], ax) + (digits_of([db[-1]], ax) if keys else [])
    mix_digits(plan, ax, [(a, da, mixed_a), (b, db, mixed_b)])


@register_geometry([aten.mm, aten.bmm, aten.matmul])
def matmul(ctx: RuleContext) -> Plan:
    a, b = ctx.node.arg(0, "self"), ctx.node.arg(1, "mat2")
    return masked_values(ctx, _product(ctx, a, b), a, b)


@register_geometry([aten.addmm, aten.baddbmm])
def addmm(ctx: RuleContext) -> Plan:
    return _product(ctx, ctx.node.arg(1, "mat1"), ctx.node.arg(2, "mat2"), bias=ctx.node.arg(0, "self"))


@register_geometry(attention_targets())
def attention(ctx: RuleContext) -> list[Plan | None]:
    """softmax(q k^T) v: each query position attends over every key position, so the axes of the
    key/value sequence dim become global; the rest follows q."""
    n = ctx.node
    q, k, v = n.arg(0, "query"), n.arg(1, "key"), n.arg(2, "value")
    causal = n.arg(5, "is_causal") if n.name == SDPA else n.param("is_causal", False)
    mask = n.arg(3, "attn_mask") if n.name == SDPA else n.param("attn_mask")
    kept = attention_kept(ctx, q, k, mask, causal)
    tables = {} if kept is None or kept.all() else attention_tables(ctx, q, k, kept)
    why = tables if isinstance(tables, str) else None
    if kept is None and (causal or ctx.dtype(mask) == torch.bool):
        why = "attention with a boolean mask that depends on the input (not read)"
    if isinstance(tables, dict) and set(tables) - digit_axes(ctx.dims(q)) - digit_axes(ctx.dims(k)):
        why = "attention with a mask that limits which keys a query sees over a whole axis (not read yet)"
    if why is not None:
        return [Plan(dims=tuple(plain(s) for s in shape), unsupported=why) for shape in ctx.out_shapes()]
    plan = windowed(ctx, q)
    if kept is None and ctx.constant(mask):  # (a float mask that depends on the input is a bias, not a mask)
        plan.caveats.add(f"{n.name} in {n.scope or 'the model'}: a constant attention mask convlens cannot read "
                         "(too large, or computed on meta): every query-key pair counts as a path")
    plan.fold.update(axes_of(ctx.dims(k)[-2]) + axes_of(ctx.dims(v)[-2]))
    for ax in list(plan.local):
        if ax in plan.fold:
            del plan.local[ax]
    for ref in (k, v):  # an axis on a batch dim (MobileViT's pixels within a patch): per batch element
        lead = len(ctx.dims(ref)) - 2
        for d in range(lead):
            for ax in set(axes_of(ctx.dims(ref)[d])) - plan.fold:
                if ax in plan.local and d - lead + len(ctx.dims(q)) - 2 >= 0 \
                        and ctx.dims(q)[d - lead + len(ctx.dims(q)) - 2] == ctx.dims(ref)[d]:
                    plan.local[ax].append(Source(ref.id, identity))
    for ax in sorted(digit_axes(ctx.dims(q)) | digit_axes(ctx.dims(k)) | digit_axes(ctx.dims(v))):
        # attention within windows: each query reads every key and value of its window
        plan.local.pop(ax, None)
        plan.untracked.pop(ax, None)
        inputs = [(q, ctx.dims(q), []), (k, ctx.dims(k), digits_of([ctx.dims(k)[-2]], ax)),
                  (v, ctx.dims(v), digits_of([ctx.dims(v)[-2]], ax))]
        if mask is not None and len(ctx.dims(mask)) >= 2:  # (an additive bias from the queries: SAM's relative
            # positions; along its key dim it reads every key)
            inputs.append((mask, ctx.dims(mask), digits_of([ctx.dims(mask)[-1]], ax)))
        mix_digits(plan, ax, inputs)
        if ax in tables and ax not in plan.local:  # (a mask over a window the keys fold whole)
            return [Plan(dims=tuple(plain(s) for s in shape), unsupported="attention with a mask that limits "
                         "which keys a query sees over a whole axis (not read yet)") for shape in ctx.out_shapes()]
        if ax in tables:
            for i, src in enumerate(plan.local[ax]):
                if src.tid in (k.id, v.id):
                    fn = mask_keys(src.fn, tables[ax][0])
                    if isinstance(fn, str):
                        return [Plan(dims=tuple(plain(s) for s in shape), unsupported=fn)
                                for shape in ctx.out_shapes()]
                    plan.local[ax][i] = replace(src, fn=fn)
    return [plan] + [None] * (len(n.outputs) - 1)


def half_line(v: np.ndarray, finite: bool):
    """Output position v reads every input position up to v (a recurrent layer in one direction)."""
    return np.zeros_like(v), v, 1


@register_geometry(RNN)
def recurrent(ctx: RuleContext) -> list[Plan]:
    """An LSTM, GRU or RNN along its time dim (``capture.RNN``): in one direction step t reads steps
    0..t (a half-line: no single stride, its windows only grow); both directions read the whole
    dim, each step with its own weights (global, as attention). The final states (h_n, c_n) have
    read every step. The batch dim (Sequencer2D's rows, folded into it) maps one to one; so does
    nothing else (the features are mixed)."""
    n = ctx.node
    x, bidirectional, batch_first = n.args[1], n.args[8], n.args[9]
    rank = len(ctx.shape(x))
    t = 1 if rank == 3 and batch_first else 0
    b = None if rank == 2 else 1 - t
    time = ctx.dims(x)[t]
    out_shape, *state_shapes = ctx.out_shapes()
    if not bidirectional and is_tokens(time):
        plans = [Plan(dims=tuple(plain(s) for s in shape),
                      unsupported="a recurrent layer in one direction along a flattened grid (each step reads the "
                                  "steps before it in row-major order: no box per axis)")
                 for shape in ctx.out_shapes()]
        return plans
    if bidirectional:
        out = windowed(ctx, x, fold=[t], out_shape=out_shape)
        out.dims = tuple(time if d == t else dim for d, dim in enumerate(out.dims))  # positions stay (attended)
    else:
        out = windowed(ctx, x, {t: (half_line, None)}, out_shape=out_shape)
    for sources in out.local.values():
        for s in sources:
            s.counted = False
    out.channels = Channels.MIX
    states = []
    for shape in state_shapes:  # (layers x directions, [batch,] hidden)
        dims = [plain(s) for s in shape]
        plan = Plan(dims=(), fold=set(axes_of(time)), channels=Channels.MIX)
        if b is not None:
            dims[1] = ctx.dims(x)[b]
            for a in axes_of(dims[1]):
                plan.local[a] = [Source(x.id, identity, counted=False)]
        plan.dims = tuple(dims)
        states.append(plan)
    return [out] + states
