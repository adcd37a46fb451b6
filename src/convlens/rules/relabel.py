"""Chains of ops that only move elements, read through an index map.

Some layouts come back through steps that the dims cannot follow one by one. The relative-position
"skew" of BoTNet and HaloNet (timm's ``rel_logits_1d``) pads a flattened (position, offset) dim,
reshapes it into rows one element longer and slices the padding off: in between, no dim holds
whole digits of the axis, and at the end every row again holds its own position.

The walk runs such a chain's ops on an index tensor (:func:`moved`: each element the flat index of
the element of the chain's start it copies, -1 where padding was added) and reads the end's dims
from it (:func:`layout_of`). Only when every element copies one element of the start, and the
start's positions along each axis factor into digits on the end's dims exactly (checked element by
element), does the end get these dims and read the start as an identity. Otherwise each step stays
untracked, as its rule said.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..capture import OpNode, TRef, map_refs
from .masks import positions
from .registry import Digit, Dim, axis_size, digits_of, key_of, radix

aten = torch.ops.aten

MOVES_ONLY = frozenset({aten.view, aten._unsafe_view, aten.reshape, aten.constant_pad_nd, aten.slice, aten.select,
                        aten.permute, aten.transpose, aten.t, aten.expand, aten.clone, aten.alias, aten.unsqueeze,
                        aten.squeeze})
"""Ops whose output elements are copies of one input's elements or padding (a chain's steps)."""

INDEX_LIMIT = 1 << 22
"""The largest chain start (elements) read through an index tensor (32 MiB of int64)."""


def moves_only(node: OpNode) -> bool:
    """Whether ``node`` may be a step of a chain (one output, an op of :data:`MOVES_ONLY`)."""
    return len(node.outputs) == 1 and key_of(node.op) in MOVES_ONLY


def moved(node: OpNode, source: int, index: torch.Tensor) -> torch.Tensor | None:
    """The op run on ``index`` in place of its input ``source``: where each output element comes
    from (-1: padding). None where it cannot run so (another tensor argument)."""
    def swap(value):
        if isinstance(value, TRef):
            if value.id != source:
                raise LookupError
            return index
        return value
    try:
        args, kwargs = map_refs(swap, node.args), map_refs(swap, node.kwargs)
    except LookupError:
        return None
    if key_of(node.op) is aten.constant_pad_nd:
        args, kwargs = args[:2], {**{k: v for k, v in kwargs.items() if k != "value"}, "value": -1}
    try:
        out = node.op(*args, **kwargs)
    except (RuntimeError, TypeError, ValueError, IndexError):
        return None
    return out if isinstance(out, torch.Tensor) and out.dtype == torch.int64 else None


def step_key(node: OpNode, source: int) -> tuple | None:
    """What a chain's step does, as a hashable key (the op and its arguments, ``source`` as a
    placeholder): two chains whose starts agree and whose steps have equal keys make equal index
    tensors. None where an argument cannot be hashed."""
    def frozen(value):
        if isinstance(value, TRef):
            return ("chain",) if value.id == source else ("ref", value.id)
        if isinstance(value, (list, tuple)):
            return tuple(frozen(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, frozen(v)) for k, v in value.items()))
        return value
    key = (node.op, frozen(node.args), frozen(node.kwargs))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def layout_of(start_dims: Sequence[Dim], start_shape: Sequence[int], axes: Sequence[int],
              index: np.ndarray) -> tuple[Dim, ...] | None:
    """The dims of a tensor each element of which copies element ``index`` (flat) of a start with
    ``start_dims``, when along every axis in ``axes`` the positions it copies factor into row-major
    digits of its dims, the same digits as the start's; None otherwise (padding or extra tokens
    among the elements, positions that no digits describe)."""
    if index.size == 0 or (index < 0).any() \
            or any(isinstance(f, Digit) and f.pair for dim in start_dims for f in dim):
        return None
    tables = {}
    for a in axes:
        pos, valid = positions(start_dims, start_shape, a)
        if not np.broadcast_to(valid, tuple(start_shape)).reshape(-1)[index].all():
            return None  # (an extra token of the start, such as padding a flattened dim added)
        tables[a] = np.broadcast_to(pos, tuple(start_shape)).reshape(-1)[index]
    shape = index.shape
    dims = []
    for d, size in enumerate(shape):
        line = tuple(0 if k != d else slice(None) for k in range(len(shape)))
        dim = _factored({a: t[line] for a, t in tables.items()}, size)
        if dim is None:
            return None
        dims.append(dim)
    whole = {a: axis_size(start_dims, a) for a in axes}
    dims = [tuple((f.axis, f.size) if isinstance(f, Digit) and f.weight == 1 and f.size == whole[f.axis] else f
                  for f in dim) for dim in dims]
    for a, table in tables.items():
        want = radix(digits_of(start_dims, a))
        if want is None or radix(digits_of(dims, a)) != want:
            return None
        if not np.array_equal(np.broadcast_to(positions(dims, shape, a)[0], shape), table):
            return None
    return tuple(dims)


def _factored(line: dict[int, np.ndarray], size: int) -> Dim | None:
    """Row-major factors of one dim from the positions its indices hold along each axis (all others
    at index 0): innermost first, the longest run in which one axis moves by a fixed weight from 0
    (a digit) or none moves (a plain factor), then the same on every run's first index."""
    factors: list[tuple[int | None, int, int]] = []
    step, left = 1, size
    while left > 1:
        seq = {a: v[::step][:left] for a, v in line.items()}
        if any(v[0] != 0 for v in seq.values()):
            return None
        moving = [a for a, v in seq.items() if v[1] != 0]
        if len(moving) > 1:
            return None
        axis = moving[0] if moving else None
        weight = int(seq[axis][1]) if axis is not None else 0
        if weight < 0:
            return None
        # the run: how far every axis holds what the factor says (axis: k * weight; the others: 0)
        ramp = np.arange(left, dtype=np.int64) * weight
        bad = np.zeros(left, dtype=bool)
        for b, v in seq.items():
            bad |= v != (ramp if b == axis else 0)
        run = int(np.argmax(bad)) if bad.any() else left
        s = max(k for k in range(1, run + 1) if left % k == 0)
        if s == 1:
            return None
        factors.append((axis, s, weight))
        step, left = step * s, left // s
    dim: list = []
    for axis, s, weight in reversed(factors):
        if axis is None and dim and not isinstance(dim[-1], Digit) and dim[-1][0] is None:
            dim[-1] = (None, dim[-1][1] * s)
        else:
            dim.append((None, s) if axis is None else Digit(axis, s, weight))
    return tuple(dim)
