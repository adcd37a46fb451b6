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
from math import gcd, lcm
from typing import Sequence

import numpy as np

from .capture import Capture, OpNode
from .geometry import (CONSTANT, EMPTY_HI, EMPTY_LO, GLOBAL, MAX_PERIOD, AxisArrays, AxisState, Constant, Global, Local,
                       Part, Unknown, clip_taps, range_reduce)
from .rules import COST, GEOMETRY, Cost, Plan, RuleContext, Source, key_of
from .rules.registry import Channels
from .rules.plans import axes_of, broadcast, identity, plain
from .rules.registry import Dim



@dataclass
class TensorGeom:
    dims: tuple[Dim, ...]
    axes: tuple[AxisState, ...]
    global_context: bool = False
    parts: tuple[Part, ...] = ()


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
    period: int
    sources: list[Source]


@dataclass
class GraphGeometry:
    geoms: dict[int, TensorGeom]
    costs: dict[int, Cost]  # node index -> cost
    misaligned: dict[int, list[Misalignment]]  # node index -> merges that do not align
    merges: set[int]  # node indices where several local inputs meet
    no_rule: dict[str, int] = field(default_factory=dict)  # op without a geometry rule -> number of calls
    untracked: dict[str, int] = field(default_factory=dict)  # "op (why)" -> number of calls
    sources: dict[tuple[int, int], list[Source]] = field(default_factory=dict)  # (tensor, axis) -> local sources


def _union(parts: Sequence[Part]) -> Part:
    axes = {}
    for a in parts[0].axes:
        arrs = [p.axes[a] for p in parts]
        axes[a] = AxisArrays(arrs[0].ustart, np.minimum.reduce([x.lo for x in arrs]),
                             np.maximum.reduce([x.hi for x in arrs]), np.minimum.reduce([x.clo for x in arrs]),
                             np.maximum.reduce([x.chi for x in arrs]))
    return Part(axes)


def normalize(parts: Sequence[Part]) -> tuple[Part, ...]:
    """Unite the pieces that are present at every position (their union is exact per axis); keep
    pieces with gaps apart."""
    full: dict[frozenset[int], list[Part]] = {}
    partial: list[Part] = []
    for part in parts:
        if all(arr.full() for arr in part.axes.values()):
            full.setdefault(frozenset(part.axes), []).append(part)
        else:
            partial.append(part)
    return tuple(_union(group) if len(group) > 1 else group[0] for group in full.values()) + tuple(partial)


def reachable_centre(parts: Sequence[Part], a: int, n: int) -> int:
    """The reachable position along axis a nearest to n // 2 (units in phase gaps are skipped)."""
    reach = np.zeros(n, dtype=bool)
    for part in parts:
        if a in part.axes:
            arr = part.axes[a]
            i = -arr.ustart
            reach |= (arr.lo <= arr.hi)[i:i + n]
    idx = np.nonzero(reach)[0]
    return int(idx[np.argmin(np.abs(idx - n // 2))]) if len(idx) else n // 2


def profile(parts: Sequence[Part], a: int, centre: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Unbounded windows along axis a with every other axis at its ``centre`` position."""
    lo = hi = None
    for part in parts:
        if a not in part.axes:
            continue
        if any(b != a and arr.unbounded(centre[b]) is None for b, arr in part.axes.items()):
            continue
        arr = part.axes[a]
        lo = arr.lo if lo is None else np.minimum(lo, arr.lo)
        hi = arr.hi if hi is None else np.maximum(hi, arr.hi)
    if lo is None:
        arr = next(p.axes[a] for p in parts if a in p.axes)
        return np.full_like(arr.lo, EMPTY_LO), np.full_like(arr.hi, EMPTY_HI)
    return lo, hi


class GraphWalk:
    def __init__(self, cap: Capture):
        self.cap = cap
        self.k = len(cap.tensors[cap.input_id].shape) - 2
        self.dims: dict[int, tuple[Dim, ...]] = {}
        self.kinds: dict[int, list[AxisState | _Pending]] = {}
        self.gctx: dict[int, bool] = {}
        self.plans: dict[int, Plan] = {}  # output tensor id -> plan
        self.no_rule: dict[str, int] = {}  # op name -> calls
        self.untracked: dict[str, int] = {}  # "op (why)" -> calls
        self.demand: dict[tuple[int, int], tuple[int, int]] = {}
        self.misaligned: dict[int, list[Misalignment]] = {}
        self.merges: set[int] = set()
        self.parts: dict[int, tuple[Part, ...]] = {}
        self._untracked_calls: dict[str, set[int]] = {}
        self.context_spans: dict[int, dict[int, tuple[int, int]]] = {}
        self._sources: dict[tuple[int, int], list[Source]] = {}
        self._late: set[tuple[int, int]] = set()  # (tensor, axis) made unknown in pass 3
        self._split: set[int] = set()  # tensors whose channels may see different windows (Plan.channels)

    # -------------------------------------------------------------- helpers
    def _ensure(self, tid: int) -> None:
        """Tensors not produced by a recorded op (parameters, constants) do not depend on the input."""
        if tid not in self.dims:
            self.dims[tid] = tuple(plain(s) for s in self.cap.tensors[tid].shape)
            self.kinds[tid] = [CONSTANT] * self.k
            self.gctx[tid] = False

    def _read(self, node: OpNode, tid: int) -> list[int]:
        """The inputs of ``node`` whose values reach its output ``tid`` (not those a write overwrites)."""
        plan = self.plans.get(tid)
        return [t for t in node.inputs if plan is None or t not in plan.unread]

    def _local_axes(self, tid: int) -> frozenset[int]:
        return frozenset(a for a, s in enumerate(self.kinds[tid]) if isinstance(s, (Local, _Pending)))

    def _context(self, node: OpNode) -> RuleContext:
        return RuleContext(node, self.cap.tensors, self.cap.producers, self.dims,
                           {t: self._local_axes(t) for t in node.inputs},
                           {t: frozenset(a for a, s in enumerate(self.kinds[t]) if isinstance(s, Global))
                            for t in node.inputs},
                           frozenset(t for t in node.inputs if t in self._split))

    # -------------------------------------------------------------- pass 1
    def structure(self) -> None:
        cap = self.cap
        shape = cap.tensors[cap.input_id].shape
        self.dims[cap.input_id] = (plain(shape[0]), plain(shape[1])) + tuple(((a, s),) for a, s in
                                                                             enumerate(shape[2:]))
        self.kinds[cap.input_id] = [_Pending(s, Fraction(1), 1, []) for s in shape[2:]]
        self.gctx[cap.input_id] = False
        for node in cap.nodes:
            for t in node.inputs:
                self._ensure(t)
            plans = self._plans(node)
            for tid, plan in zip(node.outputs, plans):
                self._resolve(node, tid, plan)

    def _plans(self, node: OpNode) -> list[Plan | None]:
        outs = [self.cap.tensors[t].shape for t in node.outputs]
        if not outs:  # .item(), sizes: no tensor comes out
            return []
        empty = any(0 in self.cap.tensors[t].shape for t in node.inputs) and all(0 in shape for shape in outs)
        if empty or all(all(isinstance(s, Constant) for s in self.kinds[t]) and not self.gctx[t] for t in node.inputs):
            # (an empty tensor, such as no detections at all, has no unit to speak of)
            return [Plan(dims=tuple(plain(s) for s in shape), constant=True) for shape in outs]
        rule = GEOMETRY.get(key_of(node.op))
        if rule is None:
            self.no_rule[node.name] = self.no_rule.get(node.name, 0) + 1
            return [Plan(dims=tuple(plain(s) for s in shape), no_rule=True) for shape in outs]
        result = rule(self._context(node))
        plans = list(result) if isinstance(result, list) else [result] * len(outs)
        return [p if p is not None else Plan(dims=tuple(plain(s) for s in shape), constant=True)
                for p, shape in zip(plans, outs)]

    def _untracked(self, label: str, node: OpNode) -> Unknown:
        """Record an op (with the reason) that made an axis unknown; counted once per op call."""
        seen = self._untracked_calls.setdefault(label, set())
        if node.index not in seen:
            seen.add(node.index)
            if label != node.name:  # (an op without a rule is counted in no_rule)
                self.untracked[label] = self.untracked.get(label, 0) + 1
        return Unknown(frozenset({label}))

    def _resolve(self, node: OpNode, tid: int, plan: Plan) -> None:
        """Per axis, the output's state kind from the plan and the inputs' kinds."""
        op = node.name
        ins = [t for t in dict.fromkeys(node.inputs) if t not in plan.unread]
        kinds: list[AxisState | _Pending] = []
        gctx = False
        carried = {a: d for d, dim in enumerate(plan.dims) for a in axes_of(dim)}
        for a in range(self.k):
            states = {t: self.kinds[t][a] for t in ins}
            unknown = frozenset().union(*(s.ops for s in states.values() if isinstance(s, Unknown)))
            live = [t for t, s in states.items() if not isinstance(s, Constant)]
            if plan.constant or not live:
                kinds.append(CONSTANT)
            elif plan.no_rule or plan.unsupported:
                label = op if plan.no_rule else f"{op} ({plan.unsupported})"
                kinds.append(Unknown(unknown | {label}))
                self._untracked(label, node)
            elif unknown:
                kinds.append(Unknown(unknown))
            elif a in plan.fold:
                kinds.append(GLOBAL)
            elif a in plan.local:
                sources = plan.local[a]
                named = {s.tid for s in sources}
                if any(isinstance(states[t], _Pending) for t in ins if t not in named):
                    kinds.append(self._untracked(f"{op} (an input's spatial axis has no mapping)", node))
                    continue
                local = [s for s in sources if isinstance(states[s.tid], _Pending)]
                sees_global = any(isinstance(s, Global) for s in states.values())
                if not local:
                    kinds.append(GLOBAL if sees_global else CONSTANT)
                    continue
                if len({s.tid for s in local}) > 1 and self._partly_reached(ins, a):
                    # the window of a unit along a is the union of the pieces that reach it, and whether
                    # a piece reaches it also depends on its position along the global axis, which
                    # parts do not record
                    kinds.append(self._untracked(f"{op} (merges pieces that may reach different positions "
                                                 "of a padded global axis)", node))
                    continue
                gctx |= sees_global or a in plan.context
                moving = [s for s in local if s.fn is not broadcast]
                strides = {None if states[s.tid].stride is None else states[s.tid].stride * s.scale for s in moving}
                stride = strides.pop() if len(strides) == 1 else None
                period = 1
                for s in moving:  # the pattern repeats after b * P / gcd(a, P) outputs, scale = a/b
                    p_in = states[s.tid].period
                    period = lcm(period, s.scale.denominator * p_in // gcd(s.scale.numerator, p_in))
                size = dict(plan.dims[carried[a]])[a] if a in carried else 1
                kinds.append(_Pending(size, stride, period, local))
                self._sources[(tid, a)] = local
            elif any(isinstance(states[t], _Pending) for t in live):
                kinds.append(self._untracked(f"{op} ({plan.untracked.get(a, 'leaves a spatial axis without a mapping')})",
                                             node))
            else:
                kinds.append(GLOBAL)
        has_local = any(isinstance(s, _Pending) for s in kinds)
        gctx |= any(self.gctx[t] for t in ins)
        self.dims[tid] = plan.dims
        self.kinds[tid] = kinds
        self.gctx[tid] = gctx and has_local
        self.plans[tid] = plan
        if plan.channels is Channels.SPLIT or (plan.channels is Channels.KEEP and any(t in self._split for t in ins)):
            self._split.add(tid)
        for a, s in enumerate(kinds):  # a first reach (spans unknown yet: it may miss positions, never add)
            if isinstance(s, Global):
                kinds[a] = Global(None, self._reach(node, tid, a))

    def _partly_reached(self, inputs: list[int], a: int) -> bool:
        """Whether some input has a global axis other than ``a`` with positions that read only padding."""
        return any(isinstance(s, Global) and s.reach is not None
                   for t in inputs for b, s in enumerate(self.kinds[t]) if b != a)

    # -------------------------------------------------------------- pass 2
    def propagate_demand(self) -> None:
        for tid, kinds in self.kinds.items():
            for a, s in enumerate(kinds):
                if isinstance(s, _Pending):
                    self.demand[(tid, a)] = (0, max(s.n, min(s.period, MAX_PERIOD)))
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
        axes = {}
        for a, s in enumerate(self.kinds[cap.input_id]):
            lo, hi = self.demand[(cap.input_id, a)]
            u = np.arange(lo, hi, dtype=np.int64)
            real = np.arange(s.n, dtype=np.int64)
            axes[a] = AxisArrays(lo, u, u.copy(), real, real.copy())
        self.parts[cap.input_id] = (Part(axes),)
        self._summarize(cap.input_id)
        for node in cap.nodes:
            for tid in node.outputs:
                self._late_unknowns(node, tid)
                if any(isinstance(s, _Pending) for s in self.kinds[tid]):
                    per_source = self._fill(tid)
                    self._summarize(tid)
                    if len(per_source) > 1:
                        self._check_alignment(node, tid, per_source)
                for a, s in enumerate(self.kinds[tid]):
                    if isinstance(s, Global):
                        self.kinds[tid][a] = self._pieces_differ(node, tid, a) or \
                            Global(self._span(node, tid, a), self._reach(node, tid, a))
                self.context_spans[tid] = self._context_spans(node, tid)

    def _late_unknowns(self, node: OpNode, tid: int) -> None:
        """Axes that an input made unknown in this pass (``_pieces_differ``) are unknown here too."""
        for a, s in enumerate(self.kinds[tid]):
            if isinstance(s, (_Pending, Global)):
                late = [self.kinds[t][a] for t in self._read(node, tid) if (t, a) in self._late]
                if late:
                    self.kinds[tid][a] = Unknown(frozenset().union(*(u.ops for u in late)))
                    self._late.add((tid, a))

    def _pieces_differ(self, node: OpNode, tid: int, a: int) -> Unknown | None:
        """A reduction over axis a that keeps another axis local, of pieces (a cat along that axis, say)
        that see different pixels along a, or of several pieces and global context along a (which
        may come with some pieces only): which of them a unit pools, and so its span along a, depends
        on the unit, and one span per axis cannot say it."""
        plan = self.plans.get(tid)
        if plan is None or a not in plan.fold or not any(isinstance(s, Local) for s in self.kinds[tid]):
            return None
        spans = set()
        for t in self._read(node, tid):
            parts = [p for p in self.parts.get(t, ()) if a in p.axes
                     and all((o.clo <= o.chi).any() for o in p.axes.values())]
            for part in parts:
                ok = part.axes[a].clo <= part.axes[a].chi
                spans.add((int(part.axes[a].clo[ok].min()), int(part.axes[a].chi[ok].max())))
            if len(parts) > 1 and a in self.context_spans.get(t, {}):
                spans.add(("context", t))  # global context (a norm's statistics) may reach some pieces only
        if len(spans) < 2:
            return None
        self._late.add((tid, a))
        return self._untracked(f"{node.name} (pools pieces that see different pixels along a spatial axis it "
                               "reduces while another stays local)", node)

    def _clipped_union(self, tid: int, a: int) -> tuple[int, int] | None:
        """All real pixels along axis a that reach any unit of a local tensor."""
        lo, hi = EMPTY_LO, EMPTY_HI
        for part in self.parts[tid]:
            arr = part.axes.get(a)
            if arr is None or any(not (other.clo <= other.chi).any() for other in part.axes.values()):
                continue  # a piece that no real pixel reaches along some axis reaches no unit at all
            ok = arr.clo <= arr.chi
            lo, hi = min(lo, int(arr.clo[ok].min())), max(hi, int(arr.chi[ok].max()))
        return (int(lo), int(hi)) if lo <= hi else None

    def _context_spans(self, node: OpNode, tid: int) -> dict[int, tuple[int, int]]:
        """Per local axis, the real pixels its units also see through global context (a gate, a
        norm's statistics): they count when the axis is later reduced."""
        plan = self.plans.get(tid)
        out = {}
        for a, s in enumerate(self.kinds[tid]):
            if not isinstance(s, Local):
                continue
            spans = []
            for t in self._read(node, tid):
                state = self.kinds[t][a]
                if isinstance(state, Global) and state.span is not None:
                    spans.append(state.span)
                if a in self.context_spans.get(t, {}):
                    spans.append(self.context_spans[t][a])
                if plan is not None and a in plan.context and isinstance(state, Local):
                    spans.append(self._clipped_union(t, a))
            spans = [x for x in spans if x is not None]
            if spans:
                out[a] = (min(x[0] for x in spans), max(x[1] for x in spans))
        return out

    def _reach(self, node: OpNode, tid: int, a: int) -> np.ndarray | None:
        """Positions of a global axis that real values reach, when the op moved positions along it."""
        plan = self.plans.get(tid)
        size = next((f for dim in self.dims[tid] for ax, f in dim if ax == a), None)
        if plan is None or a not in plan.local or size is None:
            return None
        mapped = {src.tid for src in plan.local[a]}
        if any(isinstance(self.kinds[t][a], Global) and self.kinds[t][a].span is not None
               for t in self._read(node, tid) if t not in mapped):
            return None  # an input that sees the input, not mapped along a: it reaches every position
        reach = np.zeros(size, dtype=bool)
        for src in plan.local[a]:
            state = self.kinds[src.tid][a]
            if not isinstance(state, Global):
                continue
            n_in = next((f for dim in self.dims[src.tid] for ax, f in dim if ax == a), 1)
            r_in = state.reach if state.reach is not None else np.ones(n_in, dtype=bool)
            ta, tb, step = src.fn(np.arange(size, dtype=np.int64), True)
            ta, tb = clip_taps(ta, tb, step, len(r_in))
            got, _ = range_reduce(np.where(r_in, 0, 1).astype(np.int64), np.zeros(len(r_in), dtype=np.int64),
                                  0, ta, tb, step)
            reach |= got == 0
        return None if reach.all() else reach

    def _span(self, node: OpNode, tid: int, a: int) -> tuple[int, int] | None:
        """Real pixels along axis a that reach a global output: everything its inputs reached,
        their global context included."""
        spans = []
        for t in self._read(node, tid):
            if any(isinstance(s, Global) and s.reach is not None and not s.reach.any() for s in self.kinds[t]):
                continue  # no position of this input is reached by anything real (phase gaps, padding)
            state = self.kinds[t][a]
            if isinstance(state, Global):
                spans.append(state.span)
            elif isinstance(state, Local):
                spans.append(self._clipped_union(t, a))
                spans.append(self.context_spans.get(t, {}).get(a))
        spans = [x for x in spans if x is not None]
        return (min(x[0] for x in spans), max(x[1] for x in spans)) if spans else None

    def _fill(self, tid: int) -> dict[int, list[Part]]:
        """The output's parts: every part of every contributing input, mapped along each local axis."""
        pending = {a: s for a, s in enumerate(self.kinds[tid]) if isinstance(s, _Pending)}
        contributors = list(dict.fromkeys(src.tid for p in pending.values() for src in p.sources))
        per_source: dict[int, list[Part]] = {}
        for t in contributors:
            for part in self.parts.get(t, ()):
                axes = {}
                for a, p in pending.items():
                    srcs = [s for s in p.sources if s.tid == t]
                    if srcs and a in part.axes:
                        axes[a] = self._map(tid, a, p.n, srcs, part.axes[a])
                per_source.setdefault(t, []).append(Part(axes))
        parts = [part for ps in per_source.values() for part in ps]
        self.parts[tid] = normalize(parts)
        return per_source

    def _map(self, tid: int, a: int, n: int, sources: list[Source], arr: AxisArrays) -> AxisArrays:
        lo_d, hi_d = self.demand[(tid, a)]
        start, stop = lo_d - arr.ustart, hi_d - arr.ustart
        if len(sources) == 1 and sources[0].fn is identity and start >= 0 and stop <= len(arr.lo) \
                and n == len(arr.clo):  # elementwise ops: the input's arrays, as they are
            return AxisArrays(lo_d, arr.lo[start:stop], arr.hi[start:stop], arr.clo, arr.chi)
        v = np.arange(lo_d, hi_d, dtype=np.int64)
        real = np.arange(n, dtype=np.int64)
        lo, hi = np.full(len(v), EMPTY_LO), np.full(len(v), EMPTY_HI)
        clo, chi = np.full(n, EMPTY_LO), np.full(n, EMPTY_HI)
        for src in sources:
            ta, tb, step = src.fn(v, False)
            slo, shi = range_reduce(arr.lo, arr.hi, arr.ustart, ta, tb, step)
            lo, hi = np.minimum(lo, slo), np.maximum(hi, shi)
            fa, fb, fstep = src.fn(real, True)
            fa, fb = clip_taps(fa, fb, fstep, len(arr.clo))
            flo, fhi = range_reduce(arr.clo, arr.chi, 0, fa, fb, fstep)
            clo, chi = np.minimum(clo, flo), np.maximum(chi, fhi)
        return AxisArrays(lo_d, lo, hi, clo, chi)

    def _summarize(self, tid: int) -> None:
        """Replace each pending axis by its :class:`Local` summary (profile at the centre of the others)."""
        kinds = self.kinds[tid]
        parts = self.parts[tid]
        centre = {a: reachable_centre(parts, a, s.n) for a, s in enumerate(kinds) if isinstance(s, _Pending)}
        for a, s in enumerate(kinds):
            if isinstance(s, _Pending):
                lo, hi = profile(parts, a, centre)
                kinds[a] = Local(s.n, s.stride, s.period, self.demand[(tid, a)][0], lo, hi)

    def _check_alignment(self, node: OpNode, tid: int, per_source: dict[int, list[Part]]) -> None:
        """Aligned: every moving local input has the same stride and the same centre(u) wherever
        both reach u."""
        out = self.kinds[tid]
        for a, state in enumerate(out):
            if not isinstance(state, Local) or a in self.plans[tid].piecewise:
                continue
            moving = {s.tid: s for s in self._sources[(tid, a)] if s.fn is not broadcast}
            if len(moving) < 2:
                continue
            self.merges.add(node.index)
            centre = {b: reachable_centre(self.parts[tid], b, s.n) for b, s in enumerate(out) if isinstance(s, Local)}
            pieces = {}
            for t, src in moving.items():
                lo, hi = profile(per_source[t], a, centre)
                in_state = self.kinds[t][a]
                stride = in_state.stride * src.scale if in_state.stride is not None else None
                pieces[t] = (lo, hi, stride)
            u = slice(-state.ustart, -state.ustart + state.n)
            ref_lo, ref_hi, ref_stride = next(iter(pieces.values()))
            both = np.ones(state.n, dtype=bool)
            for lo, hi, _ in pieces.values():
                both &= (lo <= hi)[u]
            same = all(stride == ref_stride and np.array_equal((lo + hi)[u][both], (ref_lo + ref_hi)[u][both])
                       for lo, hi, stride in pieces.values())
            if not same:
                info = [(t, stride, Local(state.n, stride, state.period, state.ustart, lo, hi).offset)
                        for t, (lo, hi, stride) in pieces.items()]
                self.misaligned.setdefault(node.index, []).append(Misalignment(node, a, info))

    # -------------------------------------------------------------- driver
    def run(self) -> GraphGeometry:
        self.structure()
        self.propagate_demand()
        self.windows()
        geoms = {t: TensorGeom(self.dims[t], tuple(self.kinds[t]), self.gctx[t], self.parts.get(t, ()))
                 for t in self.dims}
        costs = {}
        for node in self.cap.nodes:
            rule = COST.get(key_of(node.op))
            costs[node.index] = rule(self._context(node)) if rule is not None else Cost()
        return GraphGeometry(geoms, costs, self.misaligned, self.merges, self.no_rule, self.untracked, self._sources)


def walk(cap: Capture) -> GraphGeometry:
    """Geometry of every tensor and cost of every op of a capture."""
    return GraphWalk(cap).run()
