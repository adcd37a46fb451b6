"""Coverage: which input pixels have a path to one unit, and how many paths (docs/conventions.md).

A *path* runs from an input pixel to the unit through the ops' taps (weights and values ignored; an
interpolation tap whose weight is exactly 0 is no tap), in the real network on its real sizes:
zero padding reads nothing, reflect/replicate/circular padding read the pixel they copy. Paths are
*spatial*: channels are not enumerated, so a conv adds one path per tap whatever its channel count,
and two branches merged (add, mul, cat along channels) add their path counts — the path counts of
the network with every tensor reduced to one channel and every weight 1. Paths through global
context (an SE gate, a norm's spatial statistics, a reduction broadcast back) are not counted: they
reach every pixel and would hide the local pattern; the result says when it left them out.

Computed backwards from the unit through the captured graph, reusing the per-axis index maps of
the geometry rules. The map of one operand is a product of per-axis vectors (every rule is
separable per axis), so a chain of convs costs a few 1-D scatters per layer at any input size. Merges
add maps: they are kept as a short sum of such products and turned into a dense array over their
bounding box only when the sum grows long (residual stacks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .capture import Capture
from .errors import ConvlensError
from .geometry import Constant, Local, clip_taps
from .analysis import GraphGeometry
from .rules.registry import Source

MAX_TERMS = 16  # separable terms kept per tensor before summing them into one dense box
MAX_DENSE = 1 << 25  # elements of a dense box (256 MiB as int64)
_EXACT = 1 << 62  # int64 is exact while every sum stays below this bound


@dataclass
class _Term:
    """A separable map: count(x) = prod over axes of vecs[a][x_a - starts[a]]."""

    starts: tuple[int, ...]
    vecs: tuple[np.ndarray, ...]


@dataclass
class _Dense:
    starts: tuple[int, ...]
    counts: np.ndarray


@dataclass
class _Map:
    """The path counts from one tensor's positions to the unit: a sum of terms, or a dense box."""

    terms: list[_Term] = field(default_factory=list)
    dense: _Dense | None = None


class _Counts:
    """Arithmetic on path counts: int64 while every sum provably stays below 2**62 (all counts are
    non-negative, so a total bounds every partial sum), float64 from the first that may not."""

    def __init__(self) -> None:
        self.exact = True

    def fits(self, total: float) -> bool:
        if self.exact and total >= _EXACT:
            self.exact = False
        return self.exact

    def cast(self, arr: np.ndarray) -> np.ndarray:
        return arr if self.exact or arr.dtype == np.float64 else arr.astype(np.float64)

    def outer(self, vecs: Sequence[np.ndarray]) -> np.ndarray:
        self.fits(float(np.prod([float(v.sum()) for v in vecs])))
        out = self.cast(vecs[0])
        for v in vecs[1:]:
            out = np.multiply.outer(out, self.cast(v))
        return out

    def add_into(self, dense: _Dense, starts: tuple[int, ...], block: np.ndarray) -> _Dense:
        """dense + block placed at ``starts`` (the box grows when needed)."""
        self.fits(float(dense.counts.sum()) + float(block.sum()))
        counts, block = self.cast(dense.counts), self.cast(block)
        lo, size = _box([(dense.starts, counts.shape), (starts, block.shape)])
        if lo != dense.starts or size != counts.shape:
            _check_size(size)
            grown = np.zeros(size, dtype=counts.dtype)
            grown[_slices(dense.starts, lo, counts.shape)] = counts
            counts = grown
        counts[_slices(starts, lo, block.shape)] += block
        return _Dense(lo, counts)

    def densify(self, m: _Map) -> None:
        for term in m.terms:
            block = self.outer(term.vecs)
            m.dense = _Dense(term.starts, block) if m.dense is None else self.add_into(m.dense, term.starts, block)
        m.terms = []

    def map_vector(self, vec: np.ndarray, start: int, fn, n_in: int) -> tuple[int, np.ndarray] | None:
        """A 1-D count vector over output positions, mapped back to the input positions of one operand."""
        taps, which = _taps(start, len(vec), fn, n_in)
        keep = vec[which] != 0
        taps, which = taps[keep], which[keep]
        if len(taps) == 0:
            return None
        lo, hi = int(taps.min()), int(taps.max())
        weights = vec[which]
        if self.fits(float(weights.sum())) and weights.dtype == np.int64:
            out = np.zeros(hi - lo + 1, dtype=np.int64)
            np.add.at(out, taps - lo, weights)
        else:
            out = np.bincount(taps - lo, weights=weights.astype(np.float64), minlength=hi - lo + 1)
        return lo, out

    def map_dense(self, dense: _Dense, a: int, fn, n_in: int) -> _Dense | None:
        """A dense box mapped back along axis a."""
        moved = np.moveaxis(dense.counts, a, 0)
        taps, which = _taps(dense.starts[a], moved.shape[0], fn, n_in)
        if len(taps) == 0:
            return None
        order = np.argsort(taps, kind="stable")
        taps, which = taps[order], which[order]
        gathered = moved[which]
        self.fits(float(gathered.sum()))
        gathered = self.cast(gathered)
        heads = np.flatnonzero(np.r_[True, taps[1:] != taps[:-1]])
        lo, hi = int(taps[0]), int(taps[-1])
        out = np.zeros((hi - lo + 1,) + moved.shape[1:], dtype=gathered.dtype)
        out[taps[heads] - lo] = np.add.reduceat(gathered, heads, axis=0)
        starts = list(dense.starts)
        starts[a] = lo
        return _Dense(tuple(starts), np.moveaxis(out, 0, a))


def _box(items: Sequence[tuple[tuple[int, ...], tuple[int, ...]]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Bounding box (starts, sizes) of (starts, sizes) boxes."""
    k = len(items[0][0])
    lo = tuple(min(s[a] for s, _ in items) for a in range(k))
    hi = tuple(max(s[a] + n[a] for s, n in items) for a in range(k))
    return lo, tuple(h - low for low, h in zip(lo, hi))


def _slices(starts: Sequence[int], origin: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(s - o, s - o + n) for s, o, n in zip(starts, origin, shape))


def _check_size(size: Sequence[int]) -> None:
    if int(np.prod(size)) > MAX_DENSE:
        raise ConvlensError(f"coverage needs a dense map of {'x'.join(map(str, size))} positions (many merges over "
                            f"a large window); ask for a unit of an earlier layer or a smaller input")


def _taps(start: int, count: int, fn, n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """The real input taps (in [0, n_in)) of output positions start .. start + count - 1, flattened,
    with the index (0 .. count - 1) of the output position each tap belongs to."""
    v = np.arange(start, start + count, dtype=np.int64)
    ta, tb, step = fn(v, True)
    step = np.broadcast_to(np.maximum(np.asarray(step, dtype=np.int64), 1), v.shape)
    ta, tb = clip_taps(np.asarray(ta, dtype=np.int64), np.asarray(tb, dtype=np.int64), step, n_in)
    n = np.where(ta <= tb, (tb - ta) // step + 1, 0)
    which = np.repeat(np.arange(count), n)
    first = np.repeat(np.cumsum(n) - n, n)
    return ta[which] + step[which] * (np.arange(len(which)) - first), which




def check_pixels(pixels: int, what: str, max_pixels: int, smaller: str = "a smaller input") -> None:
    """Refuse, before the work, a map of more than ``max_pixels`` pixels: the size, the limit and what
    lifts it (``smaller``: the other way out)."""
    if pixels > max_pixels:
        raise ConvlensError(f"{what} spans {pixels:,} input pixels, more than the limit of {max_pixels:,}: "
                            f"use {smaller}, or raise --max-pixels (max_pixels=)")

@dataclass
class CoverageResult:
    """Path counts from every real input pixel to one unit (see the module doc).

    ``counts`` covers the box ``origin .. origin + counts.shape - 1`` of input coordinates (the rest
    of the input has no path); ``exact`` is False when the counts outgrew int64 and are float64.
    ``window``: per axis, the bounding interval of the pixels with a path (None if there are none),
    ``covered`` of the ``pixels`` in that box have one: ``fraction`` = covered / pixels. ``holes``:
    per axis, the positions inside the window's interval that no covered pixel projects onto.
    """

    layer: str
    unit: tuple[int, ...]
    input_size: tuple[int, ...]
    origin: tuple[int, ...]
    counts: np.ndarray
    exact: bool
    global_context: bool
    notes: list[str]

    @property
    def window(self) -> tuple[tuple[int, int], ...] | None:
        nz = np.nonzero(self.counts)
        if len(nz[0]) == 0:
            return None
        return tuple((int(o + i.min()), int(o + i.max())) for o, i in zip(self.origin, nz))

    @property
    def covered(self) -> int:
        return int(np.count_nonzero(self.counts))

    @property
    def pixels(self) -> int:
        win = self.window
        return 0 if win is None else int(np.prod([hi - lo + 1 for lo, hi in win]))

    @property
    def fraction(self) -> float | None:
        return self.covered / self.pixels if self.pixels else None

    @property
    def holes(self) -> tuple[int, ...]:
        win = self.window
        if win is None:
            return tuple(0 for _ in self.input_size)
        out = []
        for a, (lo, hi) in enumerate(win):
            seen = np.any(self.counts != 0, axis=tuple(b for b in range(self.counts.ndim) if b != a))
            inside = seen[lo - self.origin[a]: hi - self.origin[a] + 1]
            out.append(int((~inside).sum()))
        return tuple(out)

    @property
    def map(self) -> np.ndarray:
        """The counts over the whole input grid (input-sized; zero where no path)."""
        full = np.zeros(self.input_size, dtype=self.counts.dtype)
        full[tuple(slice(o, o + n) for o, n in zip(self.origin, self.counts.shape))] = self.counts
        return full

    def to_dict(self, counts: bool = True) -> dict[str, Any]:
        win = self.window
        box = None if win is None else self.counts[tuple(slice(lo - o, hi - o + 1)
                                                         for (lo, hi), o in zip(win, self.origin))]
        out: dict[str, Any] = {
            "layer": self.layer, "unit": list(self.unit), "input_size": list(self.input_size),
            "window": None if win is None else [list(w) for w in win], "covered": self.covered,
            "pixels": self.pixels, "fraction": self.fraction, "holes": list(self.holes),
            "dtype": "int64" if self.exact else "float64", "global_context": self.global_context,
            "notes": list(self.notes)}
        if counts:
            out["counts"] = None if box is None else box.tolist()  # over the window, row-major
        return out


def coverage(cap: Capture, graph: GraphGeometry, tid: int, unit: Sequence[int], layer: str,
             axes: Sequence[int] | None = None) -> CoverageResult:
    """Path counts from the network input to unit ``unit`` of tensor ``tid`` (one index per axis).

    ``axes``: count paths along these input axes only (the others are ignored, as if the network were
    1-D along each of them); the result then spans only those axes. For a network whose taps are
    separable the full map is the product of the per-axis ones."""
    chosen = list(range(len(cap.tensors[cap.input_id].shape) - 2) if axes is None else axes)
    k = len(chosen)
    unit = tuple(unit[a] for a in chosen)
    input_size = tuple(cap.tensors[cap.input_id].shape[2:][a] for a in chosen)
    start = _Map([_Term(tuple(unit), tuple(np.ones(1, dtype=np.int64) for _ in range(k)))])
    final, counts, cut_global = _walk(cap, graph, tid, start, chosen)
    notes = []
    if cut_global:
        notes.append("paths through global context (gates, spatial statistics, reductions) are not counted")
    if not counts.exact:
        notes.append("path counts may exceed int64: float64, rounded")
    if final.dense is None:
        return CoverageResult(layer, tuple(unit), input_size, (0,) * k, np.zeros((1,) * k, dtype=np.int64),
                              True, cut_global, notes)
    return CoverageResult(layer, tuple(unit), input_size, final.dense.starts, final.dense.counts, counts.exact,
                          cut_global, notes)


def _walk(cap: Capture, graph: GraphGeometry, tid: int, start: _Map,
          chosen: Sequence[int]) -> tuple[_Map, _Counts, bool]:
    """Carry ``start`` (the map at tensor ``tid``) back to the network input along axes ``chosen``."""
    all_axes = range(len(cap.tensors[cap.input_id].shape) - 2)
    geoms, sources = graph.geoms, graph.sources
    maps: dict[int, _Map] = {tid: start}
    counts = _Counts()
    cut_global = False
    for node in reversed(cap.nodes):
        for out in [t for t in graph.outputs(node) if t in maps]:
            m = maps.pop(out)
            for t in dict.fromkeys(graph.inputs(node, out)):
                info = cap.tensors[graph.piece_of.get(t, t)]
                if not (info.dtype.is_floating_point or info.dtype.is_complex):
                    continue  # indices and masks address values; no path runs through them
                states = geoms[t].axes if t in geoms else ()
                per_axis = [[s for s in sources.get((out, a), []) if s.tid == t] for a in all_axes]
                if not all(isinstance(s, Local) for s in states) or not all(per_axis):
                    cut_global |= not all(isinstance(s, Constant) for s in states)
                    continue
                if not all(s.counted for p in per_axis for s in p):
                    raise ConvlensError(f"coverage does not count the paths through {node.name}: its unrolled steps "
                                        "hold paths of their own (a recurrent layer)")
                if len({len(p) for p in per_axis}) != 1:
                    raise ConvlensError(f"coverage cannot pair the operands of {node.name} along the axes")
                target = maps.setdefault(t, _Map())
                for operand in zip(*per_axis):
                    _propagate(counts, m, [operand[a] for a in chosen], [states[a].n for a in chosen], target)
                if len(target.terms) > MAX_TERMS:
                    counts.densify(target)
    final = maps.get(cap.input_id, _Map())
    counts.densify(final)
    return final, counts, cut_global


def _propagate(counts: _Counts, m: _Map, operand: Sequence[Source], n_in: Sequence[int], target: _Map) -> None:
    """Add the map of one operand (its source along each axis) into ``target``."""
    for term in m.terms:
        mapped = []
        for a, src in enumerate(operand):
            got = counts.map_vector(term.vecs[a], term.starts[a], src.fn, n_in[a])
            if got is None:
                break
            mapped.append(got)
        else:
            target.terms.append(_Term(tuple(s for s, _ in mapped), tuple(v for _, v in mapped)))
    if m.dense is not None:
        dense: _Dense | None = m.dense
        for a, src in enumerate(operand):
            dense = counts.map_dense(dense, a, src.fn, n_in[a])
            if dense is None:
                return
        target.dense = dense if target.dense is None else counts.add_into(target.dense, dense.starts, dense.counts)


def forward_profiles(cap: Capture, graph: GraphGeometry, axis: int,
                     wanted: dict[int, Sequence[int]]) -> dict[int, np.ndarray]:
    """For many tensors at once, 1-D coverage along ``axis`` alone of some of their units (float64
    path counts; zeros are exact, large counts are rounded): ``{tid: counts[len(units), N]}``.

    One forward pass over the graph: the profile matrix of a tensor (its positions x the input's N
    positions) is the sum over its operands of tap matrix x operand's matrix, with the same operands
    as :func:`coverage` with ``axes=[axis]`` (floating tensors, local along every axis). Memory: one N-column matrix
    per live tensor."""
    n_in = cap.tensors[cap.input_id].shape[2 + axis]
    geoms, sources = graph.geoms, graph.sources
    last_use = graph.last_use(cap)
    mats: dict[int, np.ndarray] = {cap.input_id: np.eye(n_in)}
    out: dict[int, np.ndarray] = {}
    if cap.input_id in wanted:
        out[cap.input_id] = mats[cap.input_id][list(wanted[cap.input_id])]
    k = len(cap.tensors[cap.input_id].shape) - 2
    for node in cap.nodes:
        for tid in graph.outputs(node):
            if tid not in geoms or not all(isinstance(s, Local) for s in geoms[tid].axes):
                continue
            n = geoms[tid].axes[axis].n
            acc = None
            for t in dict.fromkeys(graph.inputs(node, tid)):
                if t not in mats:
                    continue
                per_axis = [[s for s in sources.get((tid, a), []) if s.tid == t] for a in range(k)]
                if not all(per_axis):
                    continue
                for src in per_axis[axis]:
                    taps, which = _taps(0, n, src.fn, mats[t].shape[0])
                    part = np.zeros((n, n_in))
                    np.add.at(part, which, mats[t][taps])
                    acc = part if acc is None else acc + part
            if acc is None:
                continue
            mats[tid] = acc
            if tid in wanted:
                out[tid] = acc[list(wanted[tid])]
        for t in last_use.get(node.index, ()):
            if t != cap.input_id:
                mats.pop(t, None)
    return out
