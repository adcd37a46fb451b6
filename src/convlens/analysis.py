"""Analysis: walk the captured graph, apply the rules, compose windows, check merges, add up cost.

Three passes over the ops in execution order (the capture is already topologically sorted), each
writing one record per tensor and reading only the records of tensors before it:

1. *structure* (:class:`Structure`): apply each op's geometry rule to get its output dims and, per
   spatial axis, the state (:class:`Pending` where local, with the effective stride as an exact
   fraction; global, unknown or constant);
2. *demand* (backwards): which positions of every local axis later ops read in the unbounded model —
   padding positions included — so the arrays of pass 3 cover them;
3. *windows* (:class:`TensorGeom`): the unbounded and clipped window arrays of every local axis
   (:mod:`convlens.geometry`), the spans of global axes, merges checked for alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction
from math import gcd, lcm, prod
from typing import Mapping

import numpy as np
import torch

from .capture import Capture, OpNode
from .geometry import (CONSTANT, EMPTY_HI, EMPTY_LO, MAX_PERIOD, AxisArrays, AxisState, Constant, Global, Local,
                       Paired, Part, Unknown, Windows, cached, clip_taps, known_monotone, range_reduce)
from .rules import COST, GEOMETRY, Cost, Plan, RuleContext, Source, key_of
from .rules.plans import Affine, axes_of, broadcast, identity, plain
from .rules.relabel import INDEX_LIMIT, layout_of, moved, moves_only, step_key
from .rules.registry import Channels, Dim, Pieces, TokenDim, axis_size, digits_of, live_extras, retarget



@dataclass(frozen=True)
class Pending:
    """Pass 1's fact about one local axis of one tensor: its size, effective stride and period, and
    the sources its positions draw from; pass 3 turns it into a :class:`~convlens.geometry.Local`."""

    n: int
    stride: Fraction | None
    period: int
    sources: tuple[Source, ...]
    # the unbounded windows rest on a position that a larger input would move (an axis of one
    # position held on no dim, broadcast into a union): rf, stride and offset are unknown
    pinned: bool = False


_PLAIN = (Pending, Constant)  # (exact types: states that are neither global, unknown nor paired)


@dataclass(frozen=True)
class Structure:
    """Pass 1's record of one tensor: its dims (as factors of the input's axes), per spatial axis its
    state (:class:`Pending` where local; global with a first reach, unknown or constant), whether it
    carries global context, the plan of the op that made it (None for the input, parameters and
    constants), whether its channels may see different windows (``Plan.channels``) and, when they do
    and the walk knows which see what, the channel pieces (:data:`~convlens.rules.registry.Pieces`)."""

    dims: tuple[Dim, ...]
    axes: tuple[AxisState | Pending, ...]
    global_context: bool = False
    plan: Plan | None = None
    channels_split: bool = False
    pieces: Pieces | None = None
    caveats: frozenset[str] = frozenset()  # Plan.caveats of this tensor's op and of every tensor it reads

    @cached  # (every rule context of an op that reads the tensor asks)
    def local_axes(self) -> frozenset[int]:
        return frozenset(a for a, s in enumerate(self.axes) if isinstance(s, Pending))

    @cached
    def global_axes(self) -> frozenset[int]:
        return frozenset(a for a, s in enumerate(self.axes) if isinstance(s, Global))


@dataclass(frozen=True)
class TensorGeom:
    """The walk's final record of one tensor: dims, per spatial axis its state, global context, the
    windows of its units, the real pixels its units also see through global context per
    local axis (``context_spans``), and the axes an input made unknown in pass 3 (``late``)."""

    dims: tuple[Dim, ...]
    axes: tuple[AxisState, ...]
    global_context: bool = False
    windows: Windows = Windows()
    context_spans: dict[int, tuple[int, int]] = field(default_factory=dict, compare=False)
    late: frozenset[int] = frozenset()
    caveats: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Merge:
    """Where several moving local inputs meet along one axis (an add, a mul, a cat along channels),
    with each input's stride and offset there; ``aligned`` when they share the stride and the centre
    of every unit both reach (docs/conventions.md). The row's ``aligned``, its notes and the diagnostics all read
    these records."""

    node: OpNode
    axis: int
    inputs: tuple[tuple[int, Fraction | None, Fraction | None], ...]  # (tensor id, stride, offset)
    aligned: bool
    differences: tuple[str, ...] = ()
    """What differs, one sentence per input that differs from the first, with ``{0}`` for the first
    input's name and ``{k}`` for input k's (``str.format``): strides, or where and by how much the
    centres differ (:func:`centre_differences`)."""


MAX_PHASES = 16
"""Periods up to which a centre difference is described phase by phase."""


def centre_differences(ref: np.ndarray, other: np.ndarray, k: int) -> str | None:
    """How input ``k``'s centres differ from the first input's, both given as lo + hi (twice the
    centre, so halves are integers) per unit, NaN where either does not reach the unit: by one
    amount at every unit, by amounts that repeat with a period (per phase u mod p), or at some
    units only (the first named); None where they agree."""
    reached = ~(np.isnan(ref) | np.isnan(other))
    d = np.where(reached, other - ref, 0.0)
    if not d.any():
        return None
    units = np.flatnonzero(reached)

    def px(x: float) -> str:
        return f"{Fraction(int(round(abs(x))), 2)} px {'after' if x > 0 else 'before'}"
    centres = f"the centres of {{{k}}} lie"
    if len(set(d[units].tolist())) == 1:
        return f"{centres} {px(d[units[0]])} those of {{0}} at every unit"
    for p in range(2, min(MAX_PHASES, len(d) // 2) + 1):
        phases = [set(d[units[units % p == r]].tolist()) for r in range(p)]
        if not all(len(s) <= 1 for s in phases):
            continue
        moved = [(r, s.pop()) for r, s in enumerate(phases) if s and s != {0.0}]
        if len(moved) <= 2:
            where = "; ".join(f"{px(x)} those of {{0}} at units u ≡ {r} (mod {p})" for r, x in moved)
            return f"{centres} {where}" + ("" if len(moved) == p else ", the same at the others")
        (r_lo, lo), (r_hi, hi) = min(moved, key=lambda m: m[1]), max(moved, key=lambda m: m[1])
        return (f"{centres} from {px(lo)} to {px(hi)} those of {{0}} in a pattern that repeats every {p} units "
                f"({px(hi)} at u ≡ {r_hi}, {px(lo)} at u ≡ {r_lo} (mod {p})"
                + (f"; the same at {p - len(moved)} of the {p})" if len(moved) < p else ")"))
    differ = d[units] != 0
    first = int(units[differ][0])
    return (f"the centres of {{{k}}} differ from those of {{0}} at {int(differ.sum())} of {len(units)} units (the "
            f"first, unit {first}: {px(d[first])})")


@dataclass
class GraphGeometry:
    geoms: dict[int, TensorGeom]
    costs: dict[int, Cost]  # node index -> cost
    merges: list[Merge]  # in execution order
    no_rule: dict[str, int] = field(default_factory=dict)  # op without a geometry rule -> number of calls
    untracked: dict[str, int] = field(default_factory=dict)  # "op (why)" -> number of calls
    sources: dict[tuple[int, int], list[Source]] = field(default_factory=dict)  # (tensor, axis) -> local sources
    reads: dict[int, tuple[int, ...]] = field(default_factory=dict)  # tensor -> what it reads, where not its node's inputs
    pieces: dict[int, list[int]] = field(default_factory=dict)  # node index -> records of its op applied to channel pieces
    piece_of: dict[int, int] = field(default_factory=dict)  # such a record -> the node's output it is a piece of

    def outputs(self, node: OpNode) -> list[int]:
        """The records ``node`` made: its outputs and its op applied to channel pieces."""
        return _records_of(node, self.pieces)

    def inputs(self, node: OpNode, tid: int) -> tuple[int, ...]:
        """The records the record ``tid`` of ``node`` reads (its sources' tensors among them)."""
        return self.reads.get(tid, tuple(node.inputs))

    def last_use(self, cap: Capture) -> dict[int, list[int]]:
        """Node index -> the records no later node reads (to free what was kept for them)."""
        last: dict[int, int] = {}
        for node in cap.nodes:
            for tid in self.outputs(node):
                for t in self.inputs(node, tid):
                    last[t] = node.index
        out: dict[int, list[int]] = {}
        for t, i in last.items():
            out.setdefault(i, []).append(t)
        return out


def _records_of(node: OpNode, pieces: dict[int, list[int]]) -> list[int]:
    """The records ``node`` made: its outputs, and its op applied to channel pieces (``pieces``:
    node index -> those records)."""
    return list(node.outputs) + pieces.get(node.index, [])


class _Field(Mapping):
    """Tensor id -> one field of its structure record (the dims, the plan): what a
    :class:`RuleContext` reads of tensors before the op, its inputs and past them."""

    def __init__(self, structure: dict[int, Structure], name: str):
        self._structure, self._name = structure, name

    def __getitem__(self, tid: int):
        return getattr(self._structure[tid], self._name)

    def __iter__(self):
        return iter(self._structure)

    def __len__(self) -> int:
        return len(self._structure)


class _Constants:
    """The tensors, among those pass 1 has reached, that do not depend on the input (what
    :meth:`RuleContext.constant` reads: a rule may look back past its own inputs)."""

    def __init__(self, walk: "GraphWalk"):
        self._walk = walk

    def __contains__(self, tid: object) -> bool:
        return tid in self._walk.structure and self._walk._constant(tid)  # type: ignore[arg-type]


class GraphWalk:
    """The three passes over a capture (see the module doc). Each pass writes one record per tensor
    and only reads the records of tensors before it: :class:`Structure` (pass 1), the demanded
    position range per local axis (pass 2), :class:`TensorGeom` (pass 3)."""

    def __init__(self, cap: Capture):
        self.cap = cap
        self.k = len(cap.tensors[cap.input_id].shape) - 2
        self.structure: dict[int, Structure] = {}
        self.demand: dict[tuple[int, int], tuple[int, int]] = {}  # (tensor, axis) -> [lo, hi) positions read
        self.geoms: dict[int, TensorGeom] = {}
        self.no_rule: dict[str, int] = {}  # op name -> calls
        self.untracked: dict[str, int] = {}  # "op (why)" -> calls
        self.merges: list[Merge] = []
        self._untracked_calls: dict[str, set[int]] = {}
        self.pieces: dict[int, list[int]] = {}  # node index -> records of its op on channel pieces (made in pass 1)
        self.piece_of: dict[int, int] = {}  # such a record -> the node's output it is a piece of
        self._next_piece = max(cap.tensors, default=0) + 1
        self._quiet = False  # resolving a channel piece: its unknown axes and merges are not the graph's
        # chains of ops that only move elements (rules.relabel): tensor -> (the chain's start, where
        # each element comes from, the untracked reasons its steps gave, counted once the chain ends
        # without dims of its own, and the key of its steps so far)
        self.chains: dict[int, tuple[int, torch.Tensor, list[tuple[str, OpNode]], tuple | None]] = {}
        self._starts: dict[tuple[int, ...], torch.Tensor] = {}  # a chain start's index tensor per shape (read only)
        # a chain's step, keyed by its start and ops (rules.relabel.step_key): its index tensor and dims
        self._steps: dict[tuple, tuple[torch.Tensor | None, tuple | None]] = {}
        self._deferred: list[tuple[str, OpNode]] | None = None

    # -------------------------------------------------------------- helpers
    def _ensure(self, tid: int) -> None:
        """Tensors not produced by a recorded op (parameters, constants) do not depend on the input."""
        if tid not in self.structure:
            self.structure[tid] = Structure(tuple(plain(s) for s in self.cap.tensors[tid].shape), (CONSTANT,) * self.k)

    def _read(self, node: OpNode, plan: Plan | None) -> list[int]:
        """The inputs of ``node`` whose values reach the output ``plan`` made (not those a write
        overwrites; the channel pieces a pick reads in place of its input)."""
        return [t for t in self._inputs(node, plan) if plan is None or t not in plan.unread]

    @staticmethod
    def _inputs(node: OpNode, plan: Plan | None) -> tuple[int, ...]:
        return tuple(node.inputs) if plan is None or plan.reads is None else plan.reads

    def _outputs(self, node: OpNode) -> list[int]:
        return _records_of(node, self.pieces)

    def _context(self, node: OpNode) -> RuleContext:
        st = self.structure
        return RuleContext(node, self.cap.tensors, self.cap.producers, _Field(st, "dims"),
                           {t: st[t].local_axes for t in node.inputs},
                           {t: st[t].global_axes for t in node.inputs},
                           frozenset(t for t in node.inputs if st[t].channels_split),
                           frozenset(t for t in node.inputs if st[t].global_context),
                           {t: st[t].pieces for t in node.inputs if st[t].pieces is not None},
                           self.cap.values, _Constants(self), _Field(st, "plan"))

    def _constant(self, tid: int) -> bool:
        """The tensor does not depend on the network input."""
        st = self.structure[tid]
        return all(isinstance(s, Constant) for s in st.axes) and not st.global_context

    # -------------------------------------------------------------- pass 1
    def structure_pass(self) -> None:
        cap = self.cap
        shape = cap.tensors[cap.input_id].shape
        self.structure[cap.input_id] = Structure(
            (plain(shape[0]), plain(shape[1])) + tuple(((a, s),) for a, s in enumerate(shape[2:])),
            tuple(Pending(s, Fraction(1), 1, ()) for s in shape[2:]))
        for node in cap.nodes:
            for t in node.inputs:
                self._ensure(t)
            moving = moves_only(node)
            self._deferred = [] if moving else None
            resolved: dict[int, Structure] = {}  # (a plan shared by outputs, max pool's values and indices)
            for tid, plan in zip(node.outputs, self._plans(node)):
                record = resolved.get(id(plan)) or resolved.setdefault(id(plan), self._resolve(node, plan))
                pieces = self._carry_pieces(node, plan, record, tid)
                self.structure[tid] = record if pieces is record.pieces else replace(record, pieces=pieces)
            deferred, self._deferred = self._deferred, None
            step = self._chain_step(node) if moving and (deferred or any(t in self.chains for t in node.inputs)) \
                else None
            if step is not None:
                self._follow(node, step, deferred)
            else:
                for label, where in deferred or ():
                    self._untracked(label, where)
                for t in node.inputs:
                    self._end_chain(t)
        rows = set(cap.output_ids) | {t for call in cap.calls for _, t in call.outputs}
        for t in [t for t in self.chains if t in rows]:
            self._end_chain(t)

    # -------------------------------------------------------------- chains of moves (rules.relabel)
    def _chain_step(self, node: OpNode) -> int | None:
        """The input of ``node`` (an op that only moves elements) when it may be a step of a chain:
        its one input that depends on the network input is a chain's tensor or a possible start
        (every axis local or constant, nothing that the chain's identity could not carry: channel
        pieces, a large tensor; global context and caveats it carries as any op does)."""
        live = [t for t in dict.fromkeys(node.inputs) if not self._constant(t)]
        if len(live) != 1:
            return None
        t = live[0]
        st = self.structure[t]
        if t in self.chains:
            return t
        if (st.pieces is not None or st.channels_split
                or not any(isinstance(s, Pending) for s in st.axes)
                or not all(isinstance(s, (Pending, Constant)) for s in st.axes)
                or prod(self.cap.tensors[t].shape) > INDEX_LIMIT):
            return None
        return t

    def _follow(self, node: OpNode, t: int, deferred: list[tuple[str, OpNode]]) -> None:
        """Extend the chain through ``node`` (which read ``t``): where its output has dims the
        start's positions fit exactly, the output reads the start as it is (and the chain's
        untracked steps are not counted); else the output is the chain's next tensor."""
        tid = node.outputs[0]
        start, index, labels, key = self.chains.get(t) or (t, None, [], None)
        first = self.structure[start]
        axes = [a for a, s in enumerate(first.axes) if isinstance(s, Pending)]
        if key is None:
            key = (tuple(self.cap.tensors[start].shape), first.dims, tuple(axes))
        step = step_key(node, t)
        key = None if step is None else (key, step)
        # (the same chain in every block of a model, on the same shapes: each step computed once)
        hit = self._steps.get(key) if key is not None else None
        if hit is None:
            if index is None:  # (the chain's ops make new tensors or views: none writes into it)
                shape = tuple(self.cap.tensors[t].shape)
                index = self._starts.get(shape)
                if index is None:
                    index = self._starts[shape] = torch.arange(prod(shape), dtype=torch.int64).view(shape)
            out = moved(node, t, index)
            if out is not None and tuple(out.shape) != tuple(self.cap.tensors[tid].shape):
                out = None
            hit = (out, None if out is None else layout_of(first.dims, self.cap.tensors[start].shape, axes, out.numpy()))
            if key is not None:
                self._steps[key] = hit
        out, dims = hit
        if out is None:
            for label, where in deferred:
                self._untracked(label, where)
            self._end_chain(t)
            return
        if dims is None:
            self.chains[tid] = (start, out, labels + deferred, key)
            return
        plan = Plan(dims=dims, local={a: [Source(start, identity)] for a in axes}, reads=(start,))
        self.structure[tid] = self._resolve(node, plan)

    def _end_chain(self, t: int) -> None:
        """A chain's tensor read by an op that is no step of it (or shown as a row): the untracked
        reasons of its steps count."""
        if t in self.chains:
            for label, where in self.chains.pop(t)[2]:
                self._untracked(label, where)

    def _plans(self, node: OpNode) -> list[Plan]:
        outs = [self.cap.tensors[t].shape for t in node.outputs]
        if not outs:  # .item(), sizes: no tensor comes out
            return []
        empty = any(0 in self.cap.tensors[t].shape for t in node.inputs) and all(0 in shape for shape in outs)
        if empty or all(self._constant(t) for t in node.inputs):
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
        if self._deferred is not None and not self._quiet:
            self._deferred.append((label, node))  # (a step of a chain: counted if the chain ends unread)
            return Unknown(frozenset({label}))
        seen = self._untracked_calls.setdefault(label, set())
        if node.index not in seen and not self._quiet:
            seen.add(node.index)
            if label != node.name:  # (an op without a rule is counted in no_rule)
                self.untracked[label] = self.untracked.get(label, 0) + 1
        return Unknown(frozenset({label}))

    def _resolve(self, node: OpNode, plan: Plan) -> Structure:
        """Per axis, the output's state from the plan and the inputs' states."""
        op = node.name
        ins = [t for t in dict.fromkeys(self._inputs(node, plan)) if t not in plan.unread]
        passed = self._passed_on(node, plan, ins)
        if passed is not None:
            return passed
        axes: list[AxisState | Pending] = []
        gctx = False
        labels = [a for dim in plan.dims for a in axes_of(dim)]
        carried = {a: d for d, dim in enumerate(plan.dims) for a in axes_of(dim)}
        # an axis on two dims cannot be followed (a sum of inputs that carry it on different dims: a
        # size-1 axis that a reshape put on the batch dim)
        doubled = {a for a in carried if labels.count(a) > 1}
        grid = [t for t in ins if t not in plan.beside]
        records = {t: self.structure[t].axes for t in ins}
        for a in range(self.k):
            states = {t: records[t][a] for t in grid}
            if all(type(records[t][a]) in _PLAIN for t in ins):  # (the common case: nothing below to find)
                paired, unknown, attends = [], frozenset(), False
            else:
                paired = [s for s in states.values() if isinstance(s, Paired)]
                unknown = frozenset().union(*(s.ops for t in ins for s in [records[t][a]]
                                              if isinstance(s, Unknown) and not isinstance(s, Paired)))
                # attention: every position mixes the whole axis with weights of its own, so a merge
                # with it is global too, where a pooled global (a gate) leaves the local geometry
                attends = any(isinstance(s, Global) and s.attended for s in states.values())
            live = [t for t, s in states.items() if not isinstance(s, Constant)]
            if plan.constant or not live:
                axes.append(CONSTANT)
            elif plan.no_rule or plan.unsupported:
                label = op if plan.no_rule else f"{op} ({plan.unsupported})"
                axes.append(Unknown(unknown | {label}))
                self._untracked(label, node)
            elif unknown:
                axes.append(Unknown(unknown))
            elif a in plan.paired:
                axes.append(Paired(frozenset({f"{op} (pairs query and key positions: attention scores)"})))
            elif paired and (a in plan.fold or attends):
                # (reduced over queries or keys, or merged with a tensor whose every position sees the
                # whole axis: MViTv2's relative positions from queries of a later block)
                axes.append(Global(attended=self._kept(plan, carried, a)))
            elif paired and a in doubled and all(isinstance(states[t], (Paired, Pending, Global)) for t in live):
                # (a local input on the query or key dim, such as MViTv2's relative positions from the
                # queries, adds its window to a pair's two: still a pair)
                axes.append(Paired(frozenset().union(*(s.ops for s in paired))))
            elif paired:
                axes.append(self._untracked(f"{op} (reads attention scores without reducing their query or key "
                                            "positions)", node))
            elif a in doubled and all(isinstance(states[t], Global) and states[t].attended for t in live):
                # scores of a later attention block, split into query and key dims (MViTv2's relative
                # positions): every position already sees the whole axis
                axes.append(Global(attended=True))
            elif a in doubled and any(isinstance(states[t], (Pending, Global)) for t in live):
                axes.append(self._untracked(f"{op} (puts a spatial axis on two dims)", node))
            elif a in plan.fold:
                axes.append(Global(attended=self._kept(plan, carried, a)))
            elif a in plan.local:
                # (an input beside the grid, a cat's extra tokens, reaches no unit: the 10,000-network
                # run found a token cat whose extra piece held a global axis with positions)
                sources = [s for s in plan.local[a] if s.tid not in plan.beside]
                named = {s.tid for s in sources}
                if any(isinstance(states[t], Pending) for t in grid if t not in named):
                    axes.append(self._untracked(f"{op} (an input's spatial axis has no mapping)", node))
                    continue
                local = [s for s in sources if isinstance(states[s.tid], Pending)]
                sees_global = any(isinstance(s, Global) for s in states.values())
                if not local or attends:
                    axes.append(Global(attended=attends) if sees_global else CONSTANT)
                    continue
                if len({s.tid for s in local}) > 1 and self._partly_reached(ins, a):
                    # the window of a unit along a is the union of the pieces that reach it, and whether
                    # a piece reaches it also depends on its position along the global axis, which
                    # parts do not record
                    axes.append(self._untracked(f"{op} (merges pieces that may reach different positions "
                                                "of a padded global axis)", node))
                    continue
                gctx |= sees_global or a in plan.context
                moving = [s for s in local if s.fn is not broadcast]
                strides = [None if states[s.tid].stride is None or s.scale is None else
                           states[s.tid].stride if s.scale.numerator == s.scale.denominator else
                           states[s.tid].stride * s.scale for s in moving]  # (a list: Fractions hash slowly)
                # a broadcast input whose own axis has no stride (one position that an op held on no
                # dim, a linear over the flattened grid, say) would move on a larger input where this
                # one cannot tell: united with inputs that move, its unbounded geometry is unknown,
                # and so is all that reads it (10,000-network run)
                pinned = any(states[s.tid].pinned for s in local) or bool(moving) and any(
                    s.fn is broadcast and states[s.tid].stride is None for s in local)
                stride = strides[0] if strides and not pinned and all(x == strides[0] for x in strides) else None
                period = 1
                for s in moving:  # the pattern repeats after b * P / gcd(a, P) outputs, scale = a/b
                    if s.scale is None:
                        continue  # (no pattern: a half-line's windows only grow)
                    p_in = states[s.tid].period
                    period = lcm(period, s.scale.denominator * p_in // gcd(s.scale.numerator, p_in), s.period)
                size = axis_size(plan.dims, a)
                axes.append(Pending(size, stride, period, tuple(local), pinned))
            elif any(isinstance(states[t], Pending) for t in live):
                axes.append(self._untracked(
                    f"{op} ({plan.untracked.get(a, 'leaves a spatial axis without a mapping')})", node))
            else:
                axes.append(Global(attended=attends))
        has_local = any(isinstance(s, Pending) for s in axes)
        gctx |= any(self.structure[t].global_context for t in grid)
        split = plan.channels is Channels.SPLIT or (plan.channels is Channels.KEEP
                                                    and any(self.structure[t].channels_split for t in ins))
        # a first reach of each global axis (spans unknown yet: it may miss positions, never add)
        final = tuple(Global(None, self._reach(node, plan, plan.dims, a, self._structure_axes), s.attended)
                      if isinstance(s, Global) else s for a, s in enumerate(axes))
        caveats = frozenset(plan.caveats).union(*(self.structure[t].caveats for t in ins))
        return Structure(self._extras_reached(plan, ins), final, gctx and has_local, plan, split, caveats=caveats)

    def _passed_on(self, node: OpNode, plan: Plan, ins: list[int]) -> Structure | None:
        """:meth:`_resolve`'s answer without its search over the axes, where the op passes one input's
        geometry through (:meth:`_passes_through`: an activation, an inference batch norm) and that
        input's axes are all local or constant, none on two dims: each local axis the same pending
        state read through the identity, the input's global context (no other input has any)."""
        if plan.constant or plan.no_rule or plan.unsupported:
            return None
        t = self._passed_input(node, plan)
        if t is None or t not in ins:
            return None
        source = next(iter(plan.local.values()))[0]  # (Source(t, identity), as every local axis reads t)
        record = self.structure[t]
        if not all(type(s) is Pending or type(s) is Constant for s in record.axes):
            return None
        labels = [a for dim in plan.dims for a in axes_of(dim)]
        if len(labels) != len(set(labels)):
            return None
        axes = tuple(Pending(s.n, None if s.pinned else s.stride, s.period, (source,), s.pinned)
                     if type(s) is Pending else CONSTANT for s in record.axes)
        has_local = any(type(s) is Pending for s in axes)
        split = plan.channels is Channels.SPLIT or (plan.channels is Channels.KEEP
                                                    and any(self.structure[t].channels_split for t in ins))
        caveats = frozenset(plan.caveats).union(*(self.structure[t].caveats for t in ins))
        return Structure(self._extras_reached(plan, ins), axes, record.global_context and has_local, plan, split,
                         caveats=caveats)

    # -------------------------------------------------------------- channel pieces
    def _carry_pieces(self, node: OpNode, plan: Plan, out: Structure, tid: int) -> Pieces | None:
        """The channel pieces of an output whose channels see different windows: those the rule made
        (a cat, a pick), or the inputs' pieces carried through an op that keeps channel indices, each
        piece the op applied to the inputs' pieces (a record of its own). None where not known: the
        union over the channels stays, and a pick of some of them is named untracked."""
        if not out.channels_split or plan.constant or plan.no_rule or plan.unsupported:
            return None
        if plan.pieces is not None:
            dim, parts = plan.pieces
            spliced = []
            for start, stop, t in parts:
                inner = self.structure[t].pieces
                if inner is not None and inner[0] == dim:
                    spliced += [(start + a, start + b, u) for a, b, u in inner[1]]
                elif self.structure[t].channels_split:
                    return None
                else:
                    spliced.append((start, stop, t))
            return dim, _joined(spliced)
        if plan.channels is not Channels.KEEP:
            return None
        carried: dict[int, list[tuple[int, int, int]]] = {}
        dim = None
        for t in self._read(node, plan):
            record = self.structure[t]
            if not record.channels_split:
                continue
            if record.pieces is None or record.pieces[0] not in plan.same_index.get(t, {}):
                return None
            d, factor = plan.same_index[t][record.pieces[0]]
            if dim is not None and d != dim:
                return None
            dim = d
            ends = [(start * factor, stop * factor, u) for start, stop, u in record.pieces[1]]
            if any(a.denominator != 1 or b.denominator != 1 for a, b, _ in ends):
                return None  # (pieces smaller than the blocks a reshape makes of the dim)
            carried[t] = [(int(a), int(b), u) for a, b, u in ends]
        if dim is None:
            return None
        bounds = sorted({x for parts in carried.values() for a, b, _ in parts for x in (a, b)})
        out_parts = []
        for lo, hi in zip(bounds, bounds[1:]):
            mapping = {t: next(u for a, b, u in parts if a <= lo and hi <= b) for t, parts in carried.items()}
            out_parts.append((lo, hi, self._piece(node, plan, mapping, tid)))
        return dim, _joined(out_parts)

    def _piece(self, node: OpNode, plan: Plan, mapping: dict[int, int], tid: int) -> int:
        """The record of ``node``'s op (its output ``tid``) applied to channel pieces: input t read
        as ``mapping[t]``. A piece that an op passes through unchanged (an activation, batch norm in
        inference) is its input's own record."""
        if len(mapping) == 1:
            (t, u), = mapping.items()
            if self._passes_through(node, plan, t):
                return u
        vt = self._next_piece
        self._next_piece += 1
        self._quiet = True
        try:
            record = self._resolve(node, retarget(plan, self._inputs(node, plan), {t: (u,) for t, u in mapping.items()}))
        finally:
            self._quiet = False
        self.structure[vt] = record
        self.pieces.setdefault(node.index, []).append(vt)
        self.piece_of[vt] = tid
        return vt

    def _passed_input(self, node: OpNode, plan: Plan | None) -> int | None:
        """The input whose geometry the op passes through unchanged (:meth:`_passes_through`), if any:
        the one every local axis reads through the identity."""
        first = next(iter(plan.local.values()), None) if plan is not None else None
        if not first or first[0].fn is not identity or not self._passes_through(node, plan, first[0].tid):
            return None
        return first[0].tid

    def _passes_through(self, node: OpNode, plan: Plan, t: int) -> bool:
        """Whether the op leaves input t's geometry as it is: the same dims, every local axis read
        at the same position, no other input that sees the input, nothing folded or added."""
        record = self.structure[t]
        if plan.fold or plan.context or plan.untracked or plan.paired or plan.beside or plan.dims != record.dims:
            return False
        if any(not all(isinstance(s, Constant) for s in self.structure[u].axes) or self.structure[u].global_context
               for u in self._read(node, plan) if u != t):
            return False
        for a, state in enumerate(record.axes):
            if isinstance(state, Pending) and plan.local.get(a) != [Source(t, identity)]:
                return False
        return all(srcs == [Source(t, identity)] for srcs in plan.local.values())

    def _extras_reached(self, plan: Plan, ins: list[int]) -> tuple[Dim, ...]:
        """The output's dims, with the extra tokens of a token dim marked live once something that
        sees the whole input reaches every token: an input that does not hold the token dim and sees
        the input globally (a gate broadcast over the tokens, the class query's attention weights),
        or statistics over the tokens (see :class:`~convlens.rules.registry.TokenDim`)."""
        out = []
        for dim in plan.dims:
            if isinstance(dim, TokenDim) and not dim.live:
                holders = [t for t in ins if dim in self.structure[t].dims]
                others = [t for t in ins if t not in holders]
                if (set(axes_of(dim)) & plan.context
                        or any(live_extras(d) for t in holders for d in self.structure[t].dims if d == dim)
                        or any(self.structure[t].global_context or self.structure[t].global_axes for t in others)):
                    dim = TokenDim(tuple(dim), dim.before, dim.after, live=True)
            out.append(dim)
        return tuple(out)

    @staticmethod
    def _kept(plan: Plan, carried: dict[int, int], a: int) -> bool:
        """Whether a reduced axis is still carried at more than one position (the queries of
        attention: each mixes the whole axis with weights of its own), not pooled away."""
        return a in carried and dict(plan.dims[carried[a]]).get(a, 1) > 1

    def _structure_axes(self, tid: int) -> tuple[AxisState | Pending, ...]:
        return self.structure[tid].axes

    def _final_axes(self, tid: int) -> tuple[AxisState, ...]:
        return self.geoms[tid].axes

    def _partly_reached(self, inputs: list[int], a: int) -> bool:
        """Whether some input has a global axis other than ``a`` with positions that read only padding."""
        return any(isinstance(s, Global) and s.reach is not None
                   for t in inputs for b, s in enumerate(self.structure[t].axes) if b != a)

    # -------------------------------------------------------------- pass 2
    def propagate_demand(self) -> None:
        for tid, st in self.structure.items():
            for a, s in enumerate(st.axes):
                if isinstance(s, Pending):
                    self.demand[(tid, a)] = (0, max(s.n, min(s.period, MAX_PERIOD)))
        for node in reversed(self.cap.nodes):
            for tid in self._outputs(node):
                for a, s in enumerate(self.structure[tid].axes):
                    if not isinstance(s, Pending):
                        continue
                    lo, hi = self.demand[(tid, a)]
                    v = None
                    for src in s.sources:
                        key = (src.tid, a)
                        old = self.demand[key]
                        if src.fn is identity or src.fn is broadcast or type(src.fn) is Affine and src.fn.forward():
                            # (the common maps, without arrays: their first and last taps)
                            if src.fn is identity:
                                first, last = lo, hi - 1
                            elif src.fn is broadcast:
                                first, last = 0, 0
                            else:
                                f = src.fn
                                first, last = lo * f.scale + f.shift, (hi - 1) * f.scale + f.shift + f.step * (f.width - 1)
                            if lo < hi:
                                self.demand[key] = (min(old[0], first), max(old[1], last + 1))
                            continue
                        if v is None:
                            v = np.arange(lo, hi, dtype=np.int64)
                        ta, tb, _ = src.fn(v, False)
                        ok = ta <= tb
                        if not ok.any():
                            continue
                        self.demand[key] = (min(old[0], int(ta[ok].min())), max(old[1], int(tb[ok].max()) + 1))

    # -------------------------------------------------------------- pass 3
    def windows(self) -> None:
        cap = self.cap
        for tid, st in self.structure.items():  # the input's and the constants' records
            if st.plan is None and tid != cap.input_id:
                self.geoms[tid] = TensorGeom(st.dims, tuple(st.axes), st.global_context)
        arrays = {}
        for a, s in enumerate(self.structure[cap.input_id].axes):
            lo, hi = self.demand[(cap.input_id, a)]
            u = np.arange(lo, hi, dtype=np.int64)
            real = np.arange(s.n, dtype=np.int64)
            arrays[a] = AxisArrays(lo, u, u.copy(), real, real.copy())
        windows = Windows((Part(arrays),))
        st = self.structure[cap.input_id]
        self.geoms[cap.input_id] = TensorGeom(st.dims, self._summarize(cap.input_id, st.axes, windows), False,
                                              windows)
        for node in cap.nodes:
            for i, tid in enumerate(node.outputs):
                twin = self._twin(node.outputs[:i], tid)
                self.geoms[tid] = self._finish(node, tid) if twin is None else self.geoms[twin]
            self._quiet = True
            for tid in self.pieces.get(node.index, []):
                self.geoms[tid] = self._finish(node, tid)
            self._quiet = False

    def _twin(self, before: list[int], tid: int) -> int | None:
        """An earlier output of the same op whose final record is this one's too: made by the same
        plan (max pool's values and indices), no channel pieces, and asked for every position this
        one is (its windows then cover this one's demand)."""
        st = self.structure[tid]
        for t in before:
            other = self.structure[t]
            if (other.plan is st.plan and other == st and st.pieces is None
                    and all(self.demand[(t, a)][0] <= self.demand[(tid, a)][0]
                            and self.demand[(tid, a)][1] <= self.demand[(t, a)][1]
                            for a, s in enumerate(st.axes) if isinstance(s, Pending))):
                return t
        return None

    def _finish(self, node: OpNode, tid: int) -> TensorGeom:
        """The final record of one output of ``node``, from its structure and its inputs' records."""
        st = self.structure[tid]
        same = self._same_record(node, st)
        if same is not None:
            return same
        read = self._read(node, st.plan)
        axes: list[AxisState | Pending] = list(st.axes)
        late = set()
        for a, s in enumerate(axes):  # axes an input made unknown in this pass are unknown here too
            if isinstance(s, (Pending, Global)):
                found = [self.geoms[t].axes[a] for t in read if a in self.geoms[t].late]
                if found:
                    axes[a] = Unknown(frozenset().union(*(u.ops for u in found)))
                    late.add(a)
        windows = Windows()
        unreached: set[int] = set()  # local inputs no real value of which reaches any unit (only their padding)
        if any(isinstance(s, Pending) for s in axes):
            per_source, windows, padded_context = self._fill(tid, axes)
            why = ("joins pieces along an axis its units see whole, which see different windows along another "
                   "axis" if self._pieces_along_global(st.plan, axes, per_source) else
                   "units that read only padding along an axis a piece sees whole would get its windows along "
                   "the others" if padded_context
                   else None)
            if why is not None:
                # (parts keep apart what reaches a unit along local axes only: which piece a unit
                # reads along an axis it sees whole is lost)
                for a, s in enumerate(axes):
                    if isinstance(s, Pending):
                        axes[a] = self._untracked(f"{node.name} ({why})", node)
                        late.add(a)
                per_source, windows = {}, Windows()
        if any(isinstance(s, Pending) for s in axes):
            if any(self.geoms[t].context_spans or any(isinstance(x, Global) for x in self.geoms[t].axes)
                   for t in read):  # (only the context spans below need it)
                unreached = {t for t, w in per_source.items()
                             if any(not w.clipped_spans(a) for a, s in enumerate(axes) if isinstance(s, Pending))}
            axes = list(self._summarize(tid, axes, windows))
            if len(per_source) > 1 and not self._quiet:
                self._check_alignment(node, tid, axes, windows, per_source)
        not_a_box = self._reach_not_a_box(node, st.plan, st.dims, axes)
        for a, s in enumerate(axes):
            if isinstance(s, Global) and not_a_box:
                axes[a] = self._untracked(f"{node.name} (merges pieces that real values reach at different positions "
                                          "along several axes)", node)
                late.add(a)
            elif isinstance(s, Global):
                differ = self._pieces_differ(node, st.plan, axes, a) or self._beyond_attention(node, st.plan, read, a)
                if differ is not None:
                    axes[a] = differ
                    late.add(a)
                else:
                    axes[a] = Global(self._span(read, a), self._reach(node, st.plan, st.dims, a, self._final_axes),
                                     s.attended)
            elif isinstance(s, Paired):
                axes[a] = Paired(s.ops, self._span(read, a))
        return TensorGeom(st.dims, tuple(axes), st.global_context, windows,
                          self._context_spans([t for t in read if (st.plan is None or t not in st.plan.beside)
                                               and t not in unreached], st.plan, axes), frozenset(late),
                          st.caveats)

    def _same_record(self, node: OpNode, st: Structure) -> TensorGeom | None:
        """The input's final record, where the op passes one input's geometry through unchanged (an
        activation, an inference batch norm: :meth:`_passes_through`) and that input has only local
        and constant axes: the same windows, summaries and context spans, under the output's own
        dims, global context and caveats. Its windows cover at least this output's demand (an
        identity map passes the demand on unchanged), which every reader indexes by position."""
        t = self._passed_input(node, st.plan)
        record = self.geoms.get(t) if t is not None else None
        if record is None or record.late:
            return None
        for s, r in zip(st.axes, record.axes):
            if isinstance(s, Pending):
                if not (isinstance(r, Local) and (s.n, s.stride, s.period, s.pinned) == (r.n, r.stride, r.period,
                                                                                         r.pinned)):
                    return None
            elif not (isinstance(s, Constant) and isinstance(r, Constant)):
                return None
        return TensorGeom(st.dims, record.axes, st.global_context, record.windows, record.context_spans, frozenset(),
                          st.caveats)

    @staticmethod
    def _pieces_along_global(plan: Plan | None, axes: list, per_source: dict[int, Windows]) -> bool:
        """Whether a piecewise merge (a cat, a write into a region) along an axis that is not local
        reads inputs that see different windows along a local axis: a unit's window along that axis
        then depends on its position along the other, which windows per axis cannot say."""
        if plan is None or len(per_source) < 2 or not any(a in plan.piecewise and not isinstance(s, Pending)
                                                         for a, s in enumerate(axes)):
            return False
        seen = {tuple((b, p.axes[b].ustart, p.axes[b].lo.tobytes(), p.axes[b].hi.tobytes(), p.axes[b].clo.tobytes(),
                       p.axes[b].chi.tobytes()) for p in w.parts for b in sorted(p.axes))
                for w in per_source.values()}
        return len(seen) > 1

    def _pieces_differ(self, node: OpNode, plan: Plan | None, axes: list, a: int) -> Unknown | None:
        """A reduction over axis a that keeps another axis local, of pieces (a cat along that axis, say)
        that see different pixels along a, or of several pieces and global context along a (which
        may come with some pieces only): which of them a unit pools, and so its span along a, depends
        on the unit, and one span per axis cannot say it."""
        if plan is None or a not in plan.fold or not any(isinstance(s, Local) for s in axes):
            return None
        spans = set()
        for t in self._read(node, plan):
            record = self.geoms[t]
            reaching = record.windows.clipped_spans(a)
            spans.update(reaching)
            if len(reaching) > 1 and a in record.context_spans:
                spans.add(("context", t))  # global context (a norm's statistics) may reach some pieces only
        if len(spans) < 2:
            return None
        return self._untracked(f"{node.name} (pools pieces that see different pixels along a spatial axis it "
                               "reduces while another stays local)", node)

    def _beyond_attention(self, node: OpNode, plan: Plan | None, read: list[int], a: int) -> Unknown | None:
        """A merge of local windows with attention's output (global) is global only if every local window
        lies inside what the attention saw: a unit whose own window reaches pixels beyond that span
        (attention over a strided copy that skips them) sees more than the other units, and one span per
        axis cannot say it."""
        if plan is None or a not in plan.local:
            return None
        states = [self.geoms[t].axes[a] for t in read]
        seen = [s.span for s in states if isinstance(s, Global) and s.attended]
        local = [t for t, s in zip(read, states) if isinstance(s, Local)]
        if not seen or not local:
            return None
        spans = [x for x in seen if x is not None]
        lo, hi = (min(x[0] for x in spans), max(x[1] for x in spans)) if spans else (1, 0)
        for t in local:
            for x in (self._clipped_union(t, a), self.geoms[t].context_spans.get(a)):
                if x is not None and (x[0] < lo or x[1] > hi):
                    return self._untracked(f"{node.name} (merges attention's output with windows reaching pixels "
                                           "it did not see)", node)
        st = self.structure[node.outputs[0]] if node.outputs else None
        if st is not None:
            dims = st.dims
            by_global = self._reach(node, plan, dims, a, self._final_axes)
            with_local = self._reach(node, plan, dims, a, self._final_axes, self._windows_of)
            if by_global is not None and (with_local is None or (with_local & ~by_global).any()):
                # a position that only the local windows reach holds a local unit beside global ones (the
                # 10,000-network run: attention's output padded, times a conv that reads real pixels there)
                return self._untracked(f"{node.name} (merges attention's output with local windows at positions "
                                       "it does not reach)", node)
        return None

    def _clipped_union(self, tid: int, a: int) -> tuple[int, int] | None:
        """All real pixels along axis a that reach any unit of a local tensor."""
        spans = self.geoms[tid].windows.clipped_spans(a)
        return (min(x[0] for x in spans), max(x[1] for x in spans)) if spans else None

    def _context_spans(self, read: list[int], plan: Plan | None, axes: list) -> dict[int, tuple[int, int]]:
        """Per local axis, the real pixels its units also see through global context (a gate, a
        norm's statistics): they count when the axis is later reduced. ``read`` leaves out the inputs
        of which the op reads only padding: their context reaches no unit either."""
        out = {}
        for a, s in enumerate(axes):
            if not isinstance(s, Local):
                continue
            spans = []
            for t in read:
                record = self.geoms[t]
                state = record.axes[a]
                if isinstance(state, Global) and state.span is not None:
                    spans.append(state.span)
                if a in record.context_spans:
                    spans.append(record.context_spans[a])
                if plan is not None and a in plan.context and isinstance(state, Local):
                    spans.append(self._clipped_union(t, a))
            spans = [x for x in spans if x is not None]
            if spans:
                out[a] = (min(x[0] for x in spans), max(x[1] for x in spans))
        return out

    def _windows_of(self, tid: int) -> Windows:
        return self.geoms[tid].windows

    def _reach(self, node: OpNode, plan: Plan | None, dims: tuple[Dim, ...], a: int,
               axes_of_input, windows_of=None) -> np.ndarray | None:
        """Positions of a global axis that real values reach, when the op moved positions along it
        (``axes_of_input(t)``: the inputs' states, from pass 1 or pass 3)."""
        if plan is None or a not in plan.local or not digits_of(dims, a):
            return None
        size = axis_size(dims, a)
        mapped = {src.tid for src in plan.local[a]}
        if any(isinstance(axes_of_input(t)[a], Global) and axes_of_input(t)[a].span is not None
               for t in self._read(node, plan) if t not in mapped):
            return None  # an input that sees the input, not mapped along a: it reaches every position
        if any(isinstance(axes_of_input(t)[a], Paired) for t in self._read(node, plan)):
            return None  # every query position of attention scores is reached
        states = [axes_of_input(t)[a] for t in self._read(node, plan)]
        if a in plan.context and any(isinstance(s, Global) and (s.reach is None or s.reach.any()) for s in states):
            # statistics over the axis (a norm) that real values reach: every position reads them (the
            # 10,000-network run: a group norm after a conv whose border units read only padding)
            return None
        reach = np.zeros(size, dtype=bool)
        for src in plan.local[a]:
            state = axes_of_input(src.tid)[a]
            if isinstance(state, Global) and state.reach is None and src.fn is identity \
                    and axis_size(self.structure[src.tid].dims, a) == size:
                return None  # (every position is reached through this input)
            got = self._reached_through(src, a, size, axes_of_input, windows_of)
            if got is not None:
                reach |= got
        return None if reach.all() else reach

    def _reached_through(self, src: Source, a: int, size: int, axes_of_input, windows_of) -> np.ndarray | None:
        """The output positions along axis a (of ``size``) that real values reach through one source;
        None where that is not known yet (a local input in pass 1)."""
        state = axes_of_input(src.tid)[a]
        n_in = axis_size(self.structure[src.tid].dims, a)
        if isinstance(state, Local) and windows_of is not None:
            # a local input merged with an attended global (pass 3): its units that real pixels
            # reach reach the output's positions that read them
            r_in = windows_of(src.tid).reached(a, n_in)
        elif not isinstance(state, Global):
            return None  # (pass 1: a local input's reach is not known yet; the first reach may miss)
        else:
            r_in = state.reach if state.reach is not None else np.ones(n_in, dtype=bool)
        ta, tb, step = src.fn(np.arange(size, dtype=np.int64), True)
        ta, tb = clip_taps(ta, tb, step, len(r_in))
        got, _ = range_reduce(np.where(r_in, 0, 1).astype(np.int64), np.zeros(len(r_in), dtype=np.int64),
                              0, ta, tb, step)
        return got == 0

    def _reach_not_a_box(self, node: OpNode, plan: Plan | None, dims: tuple[Dim, ...], axes: list) -> bool:
        """Whether the inputs of a merge reach different positions along two or more global axes (a
        write into a region of a map that real values reach only in part): the reached units are a
        union of boxes, and one reach per axis would claim their product."""
        if plan is None or plan.context:
            return False
        moved = [a for a, s in enumerate(axes) if isinstance(s, Global) and a in plan.local and digits_of(dims, a)]
        tids = {src.tid for a in moved for src in plan.local[a]}
        if len(moved) < 2 or len(tids) < 2:
            return False
        by_input: dict[int, list] = {t: [] for t in tids}
        for a in moved:
            size = axis_size(dims, a)
            for t in tids:
                got = [self._reached_through(src, a, size, self._final_axes, self._windows_of)
                       for src in plan.local[a] if src.tid == t]
                got = [g for g in got if g is not None]
                reach = np.logical_or.reduce(got) if got else np.ones(size, dtype=bool)
                by_input[t].append(reach)
        if any(all(r.all() for r in rs) for rs in by_input.values()):
            return False  # (one input reaches every unit)
        first = next(iter(by_input.values()))
        differ = [i for i in range(len(moved)) if any(not np.array_equal(rs[i], first[i]) for rs in by_input.values())]
        return len(differ) > 1

    def _span(self, read: list[int], a: int) -> tuple[int, int] | None:
        """Real pixels along axis a that reach a global output: everything its inputs reached,
        their global context included."""
        spans = []
        for t in read:
            record = self.geoms[t]
            if any(isinstance(s, Global) and s.reach is not None and not s.reach.any() for s in record.axes):
                continue  # no position of this input is reached by anything real (phase gaps, padding)
            state = record.axes[a]
            if isinstance(state, (Global, Paired)):
                spans.append(state.span)
            elif isinstance(state, Local):
                spans.append(self._clipped_union(t, a))
                spans.append(record.context_spans.get(a))
        spans = [x for x in spans if x is not None]
        return (min(x[0] for x in spans), max(x[1] for x in spans)) if spans else None

    def _fill(self, tid: int, axes: list) -> tuple[dict[int, Windows], Windows, bool]:
        """The output's parts: every part of every contributing input, mapped along each local axis
        (per contributing input, and all of them normalized); and whether some unit reads only
        padding along an axis that a part holding other axes lacks (it sees that axis whole)."""
        pending = {a: s for a, s in enumerate(axes) if isinstance(s, Pending)}
        contributors = list(dict.fromkeys(src.tid for p in pending.values() for src in p.sources))
        per_source: dict[int, list[Part]] = {}
        padded_context = False
        for t in contributors:
            for part in self.geoms[t].windows.parts if t in self.geoms else ():
                arrays = {}
                for a, p in pending.items():
                    srcs = [s for s in p.sources if s.tid == t]
                    if srcs and a in part.axes:
                        arrays[a] = self._map(tid, a, p.n, srcs, part.axes[a])
                    elif srcs and part.axes and not padded_context:
                        # a piece that sees the whole of axis a (global context) reaches every unit along
                        # it, but a unit that reads only padding along a reads nothing of it: its window
                        # along the axes it has would go to units it does not reach
                        padded_context = self._reads_padding(srcs, p.n, axis_size(self.structure[t].dims, a))
                if any(b not in pending and not (arr.clo <= arr.chi).any() for b, arr in part.axes.items()):
                    # the piece reaches no real position of an axis the op folds (a piece that is all
                    # padding along it): no real pixel of it reaches any unit (the 10,000-network run)
                    arrays = {a: AxisArrays(arr.ustart, arr.lo, arr.hi, np.full(len(arr.clo), EMPTY_LO),
                                            np.full(len(arr.chi), EMPTY_HI)) for a, arr in arrays.items()}
                per_source.setdefault(t, []).append(Part(arrays))
        return ({t: Windows(tuple(ps)) for t, ps in per_source.items()},
                Windows.of([part for ps in per_source.values() for part in ps]), padded_context)

    @staticmethod
    def _reads_padding(sources: list[Source], n_out: int, n_in: int) -> bool:
        """Whether some of the ``n_out`` units reads no real position of an input of ``n_in`` through
        ``sources`` (the finite model: padding only)."""
        real = np.arange(n_out, dtype=np.int64)
        empty = np.ones(n_out, dtype=bool)
        for src in sources:
            fa, fb, step = src.fn(real, True)
            fa, fb = clip_taps(fa, fb, step, n_in)
            empty &= fa > fb
        return bool(empty.any())

    def _map(self, tid: int, a: int, n: int, sources: list[Source], arr: AxisArrays) -> AxisArrays:
        lo_d, hi_d = self.demand[(tid, a)]
        start, stop = lo_d - arr.ustart, hi_d - arr.ustart
        if len(sources) == 1 and sources[0].fn is identity and start >= 0 and stop <= len(arr.lo) \
                and n == len(arr.clo):  # elementwise ops: the input's arrays, as they are
            return known_monotone(AxisArrays(lo_d, arr.lo[start:stop], arr.hi[start:stop], arr.clo, arr.chi),
                                  arr.__dict__.get("monotone"), arr.__dict__.get("clipped_monotone"))
        v = np.arange(lo_d, hi_d, dtype=np.int64)
        real = np.arange(n, dtype=np.int64)
        lo = hi = clo = chi = None
        # whether the windows are monotone by construction (forward affine maps of monotone windows,
        # and minima and maxima of monotone arrays, are): None where not known
        mono: bool | None = True
        cmono: bool | None = True
        for src in sources:
            slo = _affine_windows(src.fn, arr, lo_d, hi_d)
            if slo is not None:
                slo, shi = slo
            else:
                ta, tb, step = src.fn(v, False)
                slo, shi = range_reduce(arr.lo, arr.hi, arr.ustart, ta, tb, step, arr.monotone)
                mono = None
            flo = _affine_clipped(src.fn, arr, real)
            if flo is not None:
                flo, fhi, full = flo
                cmono = cmono if full else None
            else:
                fa, fb, fstep = src.fn(real, True)
                fa, fb = clip_taps(fa, fb, fstep, len(arr.clo))
                flo, fhi = range_reduce(arr.clo, arr.chi, 0, fa, fb, fstep, arr.clipped_monotone)
                cmono = None
            if lo is None:
                lo, hi, clo, chi = slo, shi, flo, fhi
            else:
                lo, hi = np.minimum(lo, slo), np.maximum(hi, shi)
                clo, chi = np.minimum(clo, flo), np.maximum(chi, fhi)
        if lo is None:  # (no source: no position reads anything)
            lo, hi = np.full(len(v), EMPTY_LO), np.full(len(v), EMPTY_HI)
            clo, chi = np.full(n, EMPTY_LO), np.full(n, EMPTY_HI)
            mono = cmono = None
        return known_monotone(AxisArrays(lo_d, lo, hi, clo, chi), mono, cmono)

    def _summarize(self, tid: int, axes, windows: Windows) -> tuple[AxisState, ...]:
        """Each pending axis as its :class:`Local` summary (profile at the centre of the others)."""
        centre = {a: windows.reachable_centre(a, s.n) for a, s in enumerate(axes) if isinstance(s, Pending)}
        out = []
        for a, s in enumerate(axes):
            if isinstance(s, Pending):
                s = Local(s.n, s.stride, s.period, *windows.profile(a, centre), s.pinned)
            out.append(s)
        return tuple(out)

    def _check_alignment(self, node: OpNode, tid: int, out: list, windows: Windows,
                         per_source: dict[int, Windows]) -> None:
        """Aligned: every moving local input has the same stride and the same centre(u) wherever
        both reach u. Attention within windows is no merge of branches: each query reads its whole
        window, whose centre is not the query's (a map with a period of its own)."""
        st = self.structure[tid]
        for a, state in enumerate(out):
            if not isinstance(state, Local) or a in st.plan.piecewise \
                    or any(s.period > 1 for s in st.axes[a].sources):
                continue
            moving = {s.tid: s for s in st.axes[a].sources if s.fn is not broadcast}
            if len(moving) < 2:
                continue
            centre = {b: windows.reachable_centre(b, s.n) for b, s in enumerate(out) if isinstance(s, Local)}
            pieces = {}
            for t, src in moving.items():
                _, lo, hi = per_source[t].profile(a, centre)
                in_state = self.geoms[t].axes[a]
                stride = in_state.stride * src.scale if in_state.stride is not None and src.scale is not None else None
                pieces[t] = (lo, hi, stride)
            u = slice(-state.ustart, -state.ustart + state.n)
            ref_lo, ref_hi, ref_stride = next(iter(pieces.values()))
            both = np.ones(state.n, dtype=bool)
            for lo, hi, _ in pieces.values():
                both &= (lo <= hi)[u]
            same = all(stride == ref_stride and np.array_equal((lo + hi)[u][both], (ref_lo + ref_hi)[u][both])
                       for lo, hi, stride in pieces.values())
            info = tuple((t, stride, Local(state.n, stride, state.period, state.ustart, lo, hi).offset)
                         for t, (lo, hi, stride) in pieces.items())
            differences = () if same else self._differences(list(pieces.values()), u)
            self.merges.append(Merge(node, a, info, same, differences))

    @staticmethod
    def _differences(pieces: list[tuple[np.ndarray, np.ndarray, Fraction | None]], u: slice) -> tuple[str, ...]:
        """:attr:`Merge.differences` of a merge's inputs (unbounded lo, hi and the stride of each,
        the output's units at ``u``)."""
        def centres(lo, hi):
            return np.where(lo <= hi, (lo + hi).astype(np.float64), np.nan)[u]
        ref_lo, ref_hi, ref_stride = pieces[0]
        ref = centres(ref_lo, ref_hi)
        found = []
        for k, (lo, hi, stride) in enumerate(pieces[1:], start=1):
            if stride != ref_stride:
                found.append(f"{{{k}}} moves {_rate(stride)}, {{0}} {_rate(ref_stride)}")
            else:
                text = centre_differences(ref, centres(lo, hi), k)
                if text is not None:
                    found.append(text)
        return tuple(found)

    # -------------------------------------------------------------- driver
    def run(self) -> GraphGeometry:
        self.structure_pass()
        self.propagate_demand()
        self.windows()
        costs = {}
        for node in self.cap.nodes:
            rule = COST.get(key_of(node.op))
            costs[node.index] = rule(self._context(node)) if rule is not None else Cost()
        sources = {(t, a): list(s.sources) for t, st in self.structure.items() for a, s in enumerate(st.axes)
                   if isinstance(s, Pending)}
        reads = {t: st.plan.reads for t, st in self.structure.items() if st.plan is not None and st.plan.reads is not None}
        return GraphGeometry(self.geoms, costs, self.merges, self.no_rule, self.untracked, sources, reads, self.pieces,
                             self.piece_of)


def _affine_windows(fn, arr: AxisArrays, lo_d: int, hi_d: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The unbounded windows of outputs ``[lo_d, hi_d)`` that read ``arr`` through an affine map
    whose taps move forward (:meth:`~convlens.rules.plans.Affine.forward`), when arr's windows are
    monotone: the first tap's lo and the last tap's hi, every ``scale``-th entry of the arrays from
    the first output's taps on (:func:`~convlens.geometry.range_reduce`'s answer, without tap
    arrays). None where that does not apply, or where a tap falls outside the arrays (the general
    path then says so)."""
    if type(fn) is not Affine or not fn.forward() or not arr.monotone or hi_d <= lo_d:
        return None
    scale, count = int(fn.scale), hi_d - lo_d
    first = lo_d * scale + int(fn.shift) - arr.ustart
    reach = int(fn.step) * (int(fn.width) - 1)  # (from a window's first tap to its last)
    if first < 0 or first + scale * (count - 1) + reach >= len(arr.lo):
        return None
    return (arr.lo[first:first + scale * count:scale],
            arr.hi[first + reach:first + reach + scale * count:scale])


def _affine_clipped(fn, arr: AxisArrays, real: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """The clipped windows of the real outputs ``real`` that read ``arr`` through an affine map of
    unit tap step whose taps move forward, when arr's clipped windows are monotone: the taps clamped
    to the input's real positions, the first tap's lo and the last tap's hi, empty where every tap
    reads padding (:func:`~convlens.geometry.range_reduce` after
    :func:`~convlens.geometry.clip_taps`, in fewer steps), and whether none is empty (the windows
    are then monotone too). None where that does not apply."""
    if type(fn) is not Affine or not fn.forward() or fn.step != 1 or not arr.clipped_monotone:
        return None
    n_in = len(arr.clo)
    if n_in == 0:
        return None
    first = real * int(fn.scale) + int(fn.shift)
    a = np.maximum(first, 0)
    b = np.minimum(first + (int(fn.width) - 1), n_in - 1)
    empty = a > b
    if not empty.any():
        return arr.clo[a], arr.chi[b], True
    lo, hi = arr.clo[np.minimum(a, n_in - 1)], arr.chi[np.maximum(b, 0)]
    lo[empty], hi[empty] = EMPTY_LO, EMPTY_HI
    return lo, hi, False


def _rate(stride: Fraction | None) -> str:
    return "at no single rate" if stride is None else f"{stride} px per unit"


def _joined(parts: list[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...]:
    """Channel pieces with neighbours of the same record joined."""
    out: list[tuple[int, int, int]] = []
    for start, stop, t in parts:
        if out and out[-1][2] == t and out[-1][1] == start:
            out[-1] = (out[-1][0], stop, t)
        else:
            out.append((start, stop, t))
    return tuple(out)


def walk(cap: Capture) -> GraphGeometry:
    """Geometry of every tensor and cost of every op of a capture."""
    return GraphWalk(cap).run()
