"""Gridding: holes in what a unit sees, the layers that make them, and Wang et al.'s rule beside it.

A stack of dilated convs can see only a lattice of its window (dilations 2, 4, 8: only even offsets).
The exact verdict is the coverage map of an interior unit (:mod:`convlens.coverage`): holes inside
its window are gridding. Beside it, for every *run* of dilated convs — consecutive stride-1 convs
with the same kernel size K, at least one of them dilated, each reading the previous one through
per-position ops only — convlens evaluates the hybrid dilated convolution rule of Wang et al. 2018
("Understanding Convolution for Semantic Segmentation"): with M_n = r_n and
M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i), the run should have M_2 <= K.
The rule is a heuristic (it passes 2, 2, 2, which grids); the coverage map decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .capture import Capture, OpNode
from .analysis import GraphGeometry
from .coverage import coverage
from .rules.args import conv_args, is_convolution, pool_args, pool_dims
from .rules.elementwise import pointwise_ops

_POINTWISE = set(pointwise_ops())


def hdc_max_distance(rates: list[int]) -> int | None:
    """Wang et al.'s M_2 for dilation rates r_1..r_n (None for fewer than two layers)."""
    if len(rates) < 2:
        return None
    m = rates[-1]
    for r in reversed(rates[1:-1]):
        m = max(m - 2 * r, m - 2 * (m - r), r)
    return m


@dataclass
class DilatedRun:
    """Consecutive stride-1 convs with kernel ``kernel`` (per axis) and ``rates`` (per layer, per axis)."""

    rows: list[str]
    kernel: tuple[int, ...]
    rates: list[tuple[int, ...]]
    end_tensor: int

    @property
    def hdc_m2(self) -> tuple[int | None, ...]:
        return tuple(hdc_max_distance([r[a] for r in self.rates]) for a in range(len(self.kernel)))

    @property
    def hdc_ok(self) -> tuple[bool | None, ...]:
        return tuple(None if m is None else m <= k for m, k in zip(self.hdc_m2, self.kernel))


@dataclass
class Gridding:
    """The exact verdict for one row's centre unit, and the runs of dilated convs that feed it."""

    layer: str
    unit: tuple[int, ...]
    covered: int
    pixels: int
    holes: tuple[int, ...]  # per axis: positions of the window's interval no covered pixel projects onto
    runs: list[DilatedRun] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    """When it grids: the rows of the ops feeding the unit that leave gaps between their taps (dilation
    > 1, a stride longer than the kernel, a transposed conv whose kernel skips phases)."""

    @property
    def grids(self) -> bool:
        return self.covered < self.pixels

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "unit": list(self.unit), "covered": self.covered, "pixels": self.pixels,
                "holes": list(self.holes), "grids": self.grids, "causes": list(self.causes),
                "runs": [{"rows": r.rows, "kernel": list(r.kernel), "rates": [list(x) for x in r.rates],
                          "hdc_m2": list(r.hdc_m2), "hdc_ok": list(r.hdc_ok)} for r in self.runs]}


def _conv_params(node: OpNode, cap: Capture) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(kernel, stride, dilation) of a non-transposed convolution, else None."""
    if not is_convolution(node):
        return None
    c = conv_args(node, cap.tensors)
    return None if c.transposed else (c.kernel, c.stride, c.dilation)


def _per_position(node: OpNode) -> bool:
    """Ops that act position by position (activations, norms in eval mode, dropout, copies)."""
    packet = getattr(node.op, "overloadpacket", None)
    return packet is not None and (packet in _POINTWISE or "batch_norm" in packet.__name__)


def _previous_conv(node: OpNode, cap: Capture, producers: dict[int, OpNode]) -> OpNode | None:
    """The conv whose output ``node`` reads through per-position ops with one activation input."""
    tid = node.inputs[0]
    while True:
        prev = producers.get(tid)
        if prev is None:
            return None
        if _conv_params(prev, cap) is not None:
            return prev
        live = [t for t in dict.fromkeys(prev.inputs) if cap.tensors[t].kind in ("activation", "input")]
        if len(live) != 1 or not _per_position(prev):
            return None
        tid = live[0]


def dilated_runs(cap: Capture, row_of: dict[int, str]) -> list[DilatedRun]:
    """Every maximal run of dilated convs (see the module doc), in execution order."""
    producers = cap.producers
    nxt: dict[int, OpNode | None] = {}
    prev_of: dict[int, OpNode] = {}
    convs = [n for n in cap.nodes if _conv_params(n, cap) is not None]
    for node in convs:
        prev = _previous_conv(node, cap, producers)
        if prev is not None and _same_run(prev, node, cap):
            if prev.index in nxt:  # the previous conv feeds two convs: a branch, not a run
                nxt[prev.index] = None
            else:
                nxt[prev.index] = node
            prev_of[node.index] = prev
    runs = []
    for node in convs:
        p = prev_of.get(node.index)
        if p is not None and nxt.get(p.index) is node:
            continue  # not the start of a run
        chain = [node]
        while nxt.get(chain[-1].index) is not None:
            chain.append(nxt[chain[-1].index])
        params = [_conv_params(n, cap) for n in chain]
        if params[0][1] != (1,) * len(params[0][1]) or not any(d != 1 for _, _, dil in params for d in dil):
            continue
        runs.append(DilatedRun([row_of.get(n.index, "") for n in chain], params[0][0], [p[2] for p in params],
                               chain[-1].outputs[0]))
    return runs


def _same_run(prev: OpNode, node: OpNode, cap: Capture) -> bool:
    (k1, s1, _), (k2, s2, _) = _conv_params(prev, cap), _conv_params(node, cap)
    ones = (1,) * len(k1)
    return k1 == k2 and s1 == ones and s2 == ones


def ancestors(cap: Capture, tid: int) -> set[int]:
    """Every tensor that ``tid`` is computed from (itself included)."""
    producers = cap.producers
    seen, todo = {tid}, [tid]
    while todo:
        node = producers.get(todo.pop())
        if node is None:
            continue
        for t in node.inputs:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    return seen


def gap_makers(cap: Capture, feeding: set[int], row_of: dict[int, str]) -> list[str]:
    """Rows of the convs and pools feeding these tensors whose taps leave gaps along some axis."""
    rows = []
    for node in cap.nodes:
        if not set(node.outputs) & feeding:
            continue
        if is_convolution(node):
            c = conv_args(node, cap.tensors)
            if c.transposed:
                gaps = any(kk * d < s or d % s for kk, s, d in zip(c.kernel, c.stride, c.dilation) if s > 1)
            else:
                gaps = any(d > 1 or d * (kk - 1) + 1 < s for kk, s, d in zip(c.kernel, c.stride, c.dilation))
        elif pool_dims(node) is not None and pool_args(node).max:
            p = pool_args(node)
            gaps = any(d > 1 or d * (kk - 1) + 1 < s for kk, s, d in zip(p.kernel, p.stride, p.dilation))
        else:
            continue
        if gaps:
            rows.append(row_of.get(node.index, ""))
    return list(dict.fromkeys(rows))


def verdict(cap: Capture, graph: GraphGeometry, tid: int, name: str, runs: list[DilatedRun]) -> Gridding:
    """The coverage verdict for the centre unit of tensor ``tid`` (local along every axis)."""
    windows = graph.geoms[tid].windows
    unit = tuple(windows.reachable_centre(a, s.n) for a, s in enumerate(graph.geoms[tid].axes))  # not a phase gap
    cov = coverage(cap, graph, tid, unit, name)
    feeding = ancestors(cap, tid)
    grids = cov.covered < cov.pixels
    causes = gap_makers(cap, feeding, cap.row_of_node) if grids else []
    return Gridding(name, unit, cov.covered, cov.pixels, cov.holes, [r for r in runs if r.end_tensor in feeding],
                    causes)


def describe(g: Gridding, run: DilatedRun | None = None) -> str:
    """One sentence: the exact verdict, the run that feeds it and the rule beside it."""
    text = (f"gridding: the centre unit sees {g.covered} of the {g.pixels} pixels of its window (holes per axis "
            f"{', '.join(map(str, g.holes))})")
    if run is not None:
        rates = ", ".join("x".join(map(str, r)) if len(set(r)) > 1 else str(r[0]) for r in run.rates)
        text += f"; dilations {rates} in rows {', '.join(run.rows)}"
        m2 = [m for m in run.hdc_m2 if m is not None]
        if m2:
            ok = all(x for x in run.hdc_ok if x is not None)
            text += (f"; Wang et al.'s rule: M_2 = {max(m2)} {'<=' if ok else '>'} K = {max(run.kernel)} "
                     f"({'passes, yet the map has holes' if ok else 'fails'})")
    return text
