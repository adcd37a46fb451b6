"""Analysis: walk the captured graph, apply the rules, compose windows, check merges, add up cost.

Three passes over the ops in execution order (the capture is already topologically sorted):

1. *structure*: apply each op's geometry rule to get its output dims and, per spatial axis, the state
   kind (local / global / unknown / constant) and the effective stride (an exact fraction);
2. *demand* (backwards): which positions of every tensor later ops read in the unbounded model —
   padding positions included — so the arrays of pass 3 cover them;
3. *windows*: the unbounded and clipped window arrays of every local axis (:mod:`convlens.geometry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import numpy as np

from .capture import Capture, OpNode
from .geometry import (CONSTANT, EMPTY_HI, EMPTY_LO, GLOBAL, AxisState, Constant, Global, Local, Unknown,
                       clip_taps, range_reduce)
from .rules import COST, GEOMETRY, Cost, Plan, RuleContext, Source, key_of
from .rules.plans import axes_of, broadcast, plain
from .rules.registry import Dim

MAX_PERIOD = 4096  # longest stride denominator whose full period is used for rf and offset


@dataclass
class TensorGeom:
    dims: tuple[Dim, ...]
    axes: tuple[AxisState, ...]
    global_context: bool = False


@dataclass
class Misalignment:
    """A merge whose local inputs do not share stride and centres, along one axis."""

    node: OpNode
    axis: int
    inputs: list[tuple[int, Fraction | None, Fraction | None]]  # (tensor id, stride, offset)


@dataclass
class _Pending:
    """Pass 1's result for one local axis of one tensor: enough to fill its arrays in pass 3."""

    n: int
    stride: Fraction | None
    sources: list[Source]
    merge: bool


@dataclass
class GraphGeometry:
    geoms: dict[int, TensorGeom]
    costs: dict[int, Cost]  # node index -> cost
    misaligned: dict[int, list[Misalignment]]  # node index -> merges that do not align
    merges: set[int]  # node indices where several local inputs meet
    unsupported: dict[str, int] = field(default_factory=dict)  # op name -> number of calls


def offset_of(state: Local) -> Fraction | None:
    """Mean of centre(u) - u * stride over one period of units starting at u = 0 (unbounded model)."""
    if state.stride is None:
        return None
    q = state.stride.denominator
    u = np.arange(q, dtype=np.int64)
    lo, hi = state.lo[u - state.ustart], state.hi[u - state.ustart]
    ok = lo <= hi
    if not ok.any():
        return None
    total = sum(Fraction(int(a + b), 2) - int(x) * state.stride for a, b, x in zip(lo[ok], hi[ok], u[ok]))
    return total / int(ok.sum())


def rf_of(state: Local) -> int | None:
    """The largest window over the tensor's units and one full period of phases (unbounded model)."""
    q = state.stride.denominator if state.stride is not None else 1
    m = min(max(state.n, q), len(state.lo) + state.ustart)
    u = np.arange(0, m, dtype=np.int64) - state.ustart
    lo, hi = state.lo[u], state.hi[u]
    ok = lo <= hi
    return int((hi[ok] - lo[ok]).max()) + 1 if ok.any() else None


class GraphWalk:
    def __init__(self, cap: Capture):
        self.cap = cap
        self.k = len(cap.tensors[cap.input_id].shape) - 2
        self.dims: dict[int, tuple[Dim, ...]] = {}
        self.kinds: dict[int, list[AxisState | _Pending]] = {}
        self.gctx: dict[int, bool] = {}
        self.producers: dict[int, OpNode] = {}
        self.plans: dict[int, Plan] = {}  # output tensor id -> plan
        self.unsupported: dict[str, int] = {}
        self.demand: dict[tuple[int, int], tuple[int, int]] = {}
        self.local: dict[int, list[Local | None]] = {}
        self.misaligned: dict[int, list[Misalignment]] = {}
        self.merges: set[int] = set()

    # -------------------------------------------------------------- helpers
    def _ensure(self, tid: int) -> None:
        """Tensors not produced by a recorded op (parameters, constants) do not depend on the input."""
        if tid not in self.dims:
            self.dims[tid] = tuple(plain(s) for s in self.cap.tensors[tid].shape)
            self.kinds[tid] = [CONSTANT] * self.k
            self.gctx[tid] = False

    def _local_axes(self, tid: int) -> frozenset[int]:
        return frozenset(a for a, s in enumerate(self.kinds[tid]) if isinstance(s, (Local, _Pending)))

    def _context(self, node: OpNode) -> RuleContext:
        return RuleContext(node, self.cap.tensors, self.producers, self.dims,
                           {t: self._local_axes(t) for t in node.inputs})

    # -------------------------------------------------------------- pass 1
    def structure(self) -> None:
        cap = self.cap
        shape = cap.tensors[cap.input_id].shape
        self.dims[cap.input_id] = (plain(shape[0]), plain(shape[1])) + tuple(((a, s),) for a, s in
                                                                             enumerate(shape[2:]))
        self.kinds[cap.input_id] = [_Pending(s, Fraction(1), [], False) for s in shape[2:]]
        self.gctx[cap.input_id] = False
        for node in cap.nodes:
            for t in node.inputs:
                self._ensure(t)
            for t in node.outputs:
                self.producers[t] = node
            plans = self._plans(node)
            for tid, plan in zip(node.outputs, plans):
                self._resolve(node, tid, plan)

    def _plans(self, node: OpNode) -> list[Plan | None]:
        outs = [self.cap.tensors[t].shape for t in node.outputs]
        if all(all(isinstance(s, Constant) for s in self.kinds[t]) and not self.gctx[t] for t in node.inputs):
            return [Plan(dims=tuple(plain(s) for s in shape), constant=True) for shape in outs]
        rule = GEOMETRY.get(key_of(node.op))
        if rule is None:
            self.unsupported[node.name] = self.unsupported.get(node.name, 0) + 1
            return [Plan(dims=tuple(plain(s) for s in shape), unsupported="no rule") for shape in outs]
        result = rule(self._context(node))
        plans = list(result) if isinstance(result, list) else [result] * len(outs)
        return [p if p is not None else Plan(dims=tuple(plain(s) for s in shape), constant=True)
                for p, shape in zip(plans, outs)]

    def _resolve(self, node: OpNode, tid: int, plan: Plan) -> None:
        """Per axis, the output's state kind from the plan and the inputs' kinds."""
        op = node.name
        ins = list(dict.fromkeys(node.inputs))
        kinds: list[AxisState | _Pending] = []
        gctx = False
        carried = {a: d for d, dim in enumerate(plan.dims) for a in axes_of(dim)}
        for a in range(self.k):
            states = {t: self.kinds[t][a] for t in ins}
            unknown = frozenset().union(*(s.ops for s in states.values() if isinstance(s, Unknown)))
            live = [t for t, s in states.items() if not isinstance(s, Constant)]
            if plan.constant or not live:
                kinds.append(CONSTANT)
            elif plan.unsupported:
                kinds.append(Unknown(unknown | {op}))
            elif unknown:
                kinds.append(Unknown(unknown))
            elif a in plan.fold:
                kinds.append(GLOBAL)
            elif a in plan.local:
                sources = plan.local[a]
                named = {s.tid for s in sources}
                if any(isinstance(states[t], _Pending) for t in ins if t not in named):
                    kinds.append(Unknown(frozenset({op})))
                    continue
                local = [s for s in sources if isinstance(states[s.tid], _Pending)]
                sees_global = any(isinstance(s, Global) for s in states.values())
                if not local:
                    kinds.append(GLOBAL if sees_global else CONSTANT)
                    continue
                gctx |= sees_global or a in plan.context
                strides = {None if states[s.tid].stride is None else states[s.tid].stride * s.scale
                           for s in local if s.fn is not broadcast}
                stride = strides.pop() if len(strides) == 1 else None
                size = dict(plan.dims[carried[a]])[a] if a in carried else 1
                kinds.append(_Pending(size, stride, local, plan.merge))
            elif any(isinstance(states[t], _Pending) for t in live):
                kinds.append(Unknown(frozenset({op})))
            else:
                kinds.append(GLOBAL)
        has_local = any(isinstance(s, _Pending) for s in kinds)
        gctx |= any(self.gctx[t] for t in ins)
        self.dims[tid] = plan.dims
        self.kinds[tid] = kinds
        self.gctx[tid] = gctx and has_local
        self.plans[tid] = plan

    # -------------------------------------------------------------- pass 2
    def propagate_demand(self) -> None:
        for tid, kinds in self.kinds.items():
            for a, s in enumerate(kinds):
                if isinstance(s, _Pending):
                    q = s.stride.denominator if s.stride is not None and s.stride.denominator <= MAX_PERIOD else 1
                    self.demand[(tid, a)] = (0, max(s.n, q))
        for node in reversed(self.cap.nodes):
            for tid in node.outputs:
                for a, s in enumerate(self.kinds[tid]):
                    if not isinstance(s, _Pending):
                        continue
                    lo, hi = self.demand[(tid, a)]
                    v = np.arange(lo, hi, dtype=np.int64)
                    for src in s.sources:
                        ta, tb, _ = src.fn(v, False)
                        ok = ta <= tb
                        if not ok.any():
                            continue
                        key = (src.tid, a)
                        old = self.demand[key]
                        self.demand[key] = (min(old[0], int(ta[ok].min())), max(old[1], int(tb[ok].max()) + 1))

    # -------------------------------------------------------------- pass 3
    def windows(self) -> None:
        cap = self.cap
        for a, s in enumerate(self.kinds[cap.input_id]):
            lo, hi = self.demand[(cap.input_id, a)]
            u = np.arange(lo, hi, dtype=np.int64)
            real = np.arange(s.n, dtype=np.int64)
            self.kinds[cap.input_id][a] = Local(s.n, lo, u, u.copy(), real, real.copy(), Fraction(1))
        for node in cap.nodes:
            for tid in node.outputs:
                for a, s in enumerate(self.kinds[tid]):
                    if isinstance(s, _Pending):
                        self.kinds[tid][a] = self._fill(node, tid, a, s)

    def _fill(self, node: OpNode, tid: int, a: int, p: _Pending) -> Local:
        lo_d, hi_d = self.demand[(tid, a)]
        v = np.arange(lo_d, hi_d, dtype=np.int64)
        real = np.arange(p.n, dtype=np.int64)
        lo = np.full(len(v), EMPTY_LO)
        hi = np.full(len(v), EMPTY_HI)
        clo = np.full(p.n, EMPTY_LO)
        chi = np.full(p.n, EMPTY_HI)
        parts: list[tuple[Source, Local, np.ndarray, np.ndarray]] = []
        for src in p.sources:
            st = self.kinds[src.tid][a]
            ta, tb, step = src.fn(v, False)
            slo, shi = range_reduce(st.lo, st.hi, st.ustart, ta, tb, step)
            lo, hi = np.minimum(lo, slo), np.maximum(hi, shi)
            fa, fb, fstep = src.fn(real, True)
            fa, fb = clip_taps(fa, fb, fstep, st.n)
            flo, fhi = range_reduce(st.clo, st.chi, 0, fa, fb, fstep)
            clo, chi = np.minimum(clo, flo), np.maximum(chi, fhi)
            parts.append((src, st, slo, shi))
        out = Local(p.n, lo_d, lo, hi, clo, chi, p.stride)
        if p.merge:
            self._check_alignment(node, a, out, parts)
        return out

    def _check_alignment(self, node: OpNode, a: int, out: Local,
                         parts: Sequence[tuple[Source, Local, np.ndarray, np.ndarray]]) -> None:
        """Aligned: every non-broadcast local input has the output's stride and the same centre(u)."""
        merged = [(src, st, slo, shi) for src, st, slo, shi in parts if src.fn is not broadcast]
        if len(merged) < 2:
            return
        self.merges.add(node.index)
        u = slice(-out.ustart, -out.ustart + out.n)
        centres = [(slo + shi)[u] for _, _, slo, shi in merged]
        strides = [st.stride * src.scale if st.stride is not None else None for src, st, _, _ in merged]
        if len(set(strides)) == 1 and all(np.array_equal(centres[0], c) for c in centres[1:]):
            return
        info = []
        for (src, st, slo, shi), stride in zip(merged, strides):
            piece = Local(out.n, out.ustart, slo, shi, out.clo, out.chi, stride)
            info.append((src.tid, stride, offset_of(piece)))
        self.misaligned.setdefault(node.index, []).append(Misalignment(node, a, info))

    # -------------------------------------------------------------- driver
    def run(self) -> GraphGeometry:
        self.structure()
        self.propagate_demand()
        self.windows()
        geoms = {t: TensorGeom(self.dims[t], tuple(self.kinds[t]), self.gctx[t]) for t in self.dims}
        costs = {}
        for node in self.cap.nodes:
            rule = COST.get(key_of(node.op))
            costs[node.index] = rule(self._context(node)) if rule is not None else Cost()
        return GraphGeometry(geoms, costs, self.misaligned, self.merges, self.unsupported)


def walk(cap: Capture) -> GraphGeometry:
    """Geometry of every tensor and cost of every op of a capture."""
    return GraphWalk(cap).run()
