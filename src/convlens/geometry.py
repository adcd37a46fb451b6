"""Per-axis geometry states and the one composition primitive.

Conventions (see docs/conventions.md): coordinates are input pixel indices along one spatial axis of the network
input; 0 is the first real pixel, padding lies at negative indices and at indices >= N.

Every tensor carries, for every spatial axis of the network input, one of four states:

- :class:`Local` — units along one tensor dimension see a window of that axis. The windows
  themselves live in the tensor's :class:`Part` list: per axis, ``lo``/``hi`` give window(u) in the
  *unbounded* model (padding counted as if the input went on forever) for u in a range that covers
  the tensor's own positions plus whatever padding positions later ops read; ``clo``/``chi`` give
  the *clipped* window (bounding box of the real input pixels that reach the unit) for the tensor's
  real positions ``[0, n)``. Unreachable units hold the sentinels ``EMPTY_LO > EMPTY_HI``.
- :class:`Global` — every unit sees the whole axis (after a reduction, flatten+linear, attention...).
- :class:`Unknown` — an op without a rule touched the axis; its name is kept, no number is made up.
  :class:`Paired` (attention scores, a pair of positions per unit) is read as unknown.
- :class:`Constant` — the tensor does not depend on the input at all (weights, factory tensors).

Composition: an op maps each output position v to an interval [a(v), b(v)] of positions of one input
(:class:`IndexMap`); the output window is the union of the input windows over that interval, i.e. a
range minimum of ``lo`` and a range maximum of ``hi`` (:func:`range_reduce`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Mapping, Sequence, Union

import numpy as np

MAX_PERIOD = 4096  # longest window pattern period spanned for rf and offset
EMPTY_LO = np.int64(2**62)
EMPTY_HI = np.int64(-(2**62))

IndexFn = Callable[[np.ndarray, bool], tuple[np.ndarray, np.ndarray, "np.ndarray | int"]]
"""``fn(v, finite) -> (a, b, step)``: the input positions (taps) ``a, a+step, ..., b`` feeding output
positions ``v`` (arrays of int64; step may be a scalar).

``finite=False`` is the unbounded model (formulas extended to every integer, no clamping, padding is a
plain shift); ``finite=True`` is the real network on its real sizes (clamps as torch does, reflect and
circular padding map to the real source index). ``a > b`` means no input position feeds ``v``. In
finite mode the caller clips the taps to the input's real positions.
"""


class cached:
    """``functools.cached_property`` without its lock: Python 3.11 takes an RLock on every first
    read, which costs more than what convlens caches. The value lands in the instance's dict (a
    frozen dataclass's too), where later reads find it first."""

    def __init__(self, fn: Callable):
        self.fn, self.name, self.__doc__ = fn, fn.__name__, fn.__doc__

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)
        return value


@dataclass(frozen=True)
class AxisArrays:
    """Windows along one axis for the positions of one axis of a tensor.

    ``lo``/``hi``: unbounded windows for positions ``[ustart, ustart + len(lo))``;
    ``clo``/``chi``: clipped windows (real pixels only) for the real positions ``[0, len(clo))``.
    """

    ustart: int
    lo: np.ndarray
    hi: np.ndarray
    clo: np.ndarray
    chi: np.ndarray

    def unbounded(self, u: int) -> tuple[int, int] | None:
        i = u - self.ustart
        if not 0 <= i < len(self.lo):
            return None
        lo, hi = int(self.lo[i]), int(self.hi[i])
        return None if lo > hi else (lo, hi)

    def clipped(self, u: int) -> tuple[int, int] | None:
        lo, hi = int(self.clo[u]), int(self.chi[u])
        return None if lo > hi else (lo, hi)

    @cached
    def monotone(self) -> bool:
        """Both ends of the unbounded windows are nondecreasing in the position (no gaps, no mirrored
        padding): :func:`range_reduce`'s fast case."""
        return _nondecreasing(self.lo) and _nondecreasing(self.hi)

    @cached
    def clipped_monotone(self) -> bool:
        """:attr:`monotone` of the clipped windows."""
        return _nondecreasing(self.clo) and _nondecreasing(self.chi)

    def full(self) -> bool:
        """Every position has a non-empty window, in both models."""
        return bool((self.lo <= self.hi).all() and (self.clo <= self.chi).all())


def known_monotone(arr: AxisArrays, monotone: bool | None, clipped_monotone: bool | None) -> AxisArrays:
    """``arr``, with :attr:`AxisArrays.monotone` and :attr:`AxisArrays.clipped_monotone` already
    answered where its maker knows them (None: not known, looked up when asked)."""
    if monotone is not None:
        arr.__dict__["monotone"] = monotone
    if clipped_monotone is not None:
        arr.__dict__["clipped_monotone"] = clipped_monotone
    return arr


@dataclass(frozen=True)
class Part:
    """A separable piece of a tensor's geometry: the window of unit u is the product over axes of
    ``axes[a]`` at u_a, and the piece reaches u only if it is non-empty along every axis it has.

    Elementwise merges unite pieces: the union of boxes is a box only where every piece is present,
    so pieces with empty positions (pure padding, transposed-conv phase gaps) are kept apart and
    the window of a unit is the bounding box of the pieces that reach it.
    """

    axes: dict[int, AxisArrays]


Window = tuple[int, int]


@dataclass(frozen=True)
class Windows:
    """The windows of every unit of one tensor, as its parts (:class:`Part`), and the queries on them.

    Everything outside the walk reads windows through these queries (a unit's window, the profile
    along an axis, the reachable centre, blocks of bounding boxes), never the arrays themselves, so
    that how windows are stored is this module's business alone. Axis numbers are spatial axes of the
    network input; unit positions are indices along the tensor dim carrying each axis.
    """

    parts: tuple[Part, ...] = ()

    @classmethod
    def of(cls, parts: Sequence[Part]) -> "Windows":
        """Unite the pieces that are present at every position (their union is exact per axis); keep
        pieces with gaps apart, each once (merges of branches that carry the same gapped piece would
        otherwise multiply it: NASNet's cells made 83,208 copies of 8 pieces)."""
        if len(parts) == 1:  # (one part: nothing to unite or to keep apart)
            return cls(tuple(parts))
        full: dict[frozenset[int], list[Part]] = {}
        partial: dict[tuple, Part] = {}
        for part in parts:
            if all(arr.full() for arr in part.axes.values()):
                full.setdefault(frozenset(part.axes), []).append(part)
            else:
                partial.setdefault(_key(part), part)
        return cls(tuple(_union(group) if len(group) > 1 else group[0] for group in full.values())
                   + tuple(partial.values()))

    def window(self, unit: Mapping[int, int], clipped: bool = True) -> dict[int, Window] | None:
        """Per axis of ``unit`` (axis -> position), the bounding box of the windows of the parts that
        reach the unit: clipped (real pixels only) or unbounded. None when no part reaches it."""
        found: dict[int, list[Window]] = {a: [] for a in unit}
        for part in self.parts:
            got = {a: (arr.clipped(unit[a]) if clipped else arr.unbounded(unit[a])) for a, arr in part.axes.items()
                   if a in unit}
            if got and all(w is not None for w in got.values()):
                for a, w in got.items():
                    found[a].append(w)
        if any(not ws for ws in found.values()):
            return None
        return {a: (min(w[0] for w in ws), max(w[1] for w in ws)) for a, ws in found.items()}

    def reachable_centre(self, a: int, n: int) -> int:
        """The reachable position along axis a nearest to n // 2 (units in phase gaps are skipped)."""
        for part in self.parts:  # (the common case: n // 2 itself is reached)
            arr = part.axes.get(a)
            if arr is not None and 0 <= n // 2 - arr.ustart < len(arr.lo) \
                    and arr.lo[n // 2 - arr.ustart] <= arr.hi[n // 2 - arr.ustart]:
                return n // 2
        reach = np.zeros(n, dtype=bool)
        for part in self.parts:
            if a in part.axes:
                arr = part.axes[a]
                i = -arr.ustart
                reach |= (arr.lo <= arr.hi)[i:i + n]
        idx = np.nonzero(reach)[0]
        return int(idx[np.argmin(np.abs(idx - n // 2))]) if len(idx) else n // 2

    def profile(self, a: int, centre: Mapping[int, int]) -> tuple[int, np.ndarray, np.ndarray]:
        """Unbounded windows along axis a with every other axis at its ``centre`` position:
        ``(ustart, lo, hi)``, the arrays covering positions ``[ustart, ustart + len(lo))``."""
        lo = hi = None
        for part in self.parts:
            if a not in part.axes:
                continue
            if any(b != a and arr.unbounded(centre[b]) is None for b, arr in part.axes.items()):
                continue
            arr = part.axes[a]
            lo = arr.lo if lo is None else np.minimum(lo, arr.lo)
            hi = arr.hi if hi is None else np.maximum(hi, arr.hi)
        arr = next(p.axes[a] for p in self.parts if a in p.axes)
        if lo is None:
            return arr.ustart, np.full_like(arr.lo, EMPTY_LO), np.full_like(arr.hi, EMPTY_HI)
        return arr.ustart, lo, hi

    def reached(self, a: int, n: int) -> np.ndarray:
        """Per real position ``[0, n)`` along axis a, whether some real pixel reaches it (through a
        part that real pixels reach along every axis)."""
        out = np.zeros(n, dtype=bool)
        for part in self.parts:
            arr = part.axes.get(a)
            if arr is None or any(not (other.clo <= other.chi).any() for other in part.axes.values()):
                continue
            ok = arr.clo <= arr.chi
            out[:min(n, len(ok))] |= ok[:n]
        return out

    def clipped_spans(self, a: int) -> list[Window]:
        """Per part that some real pixel reaches along every axis, the real pixels along axis a that
        reach any of its units."""
        spans = []
        for part in self.parts:
            arr = part.axes.get(a)
            if arr is None or any(not (other.clo <= other.chi).any() for other in part.axes.values()):
                continue  # a piece that no real pixel reaches along some axis reaches no unit at all
            ok = arr.clo <= arr.chi
            spans.append((int(arr.clo[ok].min()), int(arr.chi[ok].max())))
        return spans

    def boxes(self, positions: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        """Unbounded bounding boxes of the units of the grid ``positions[0] x positions[1] x ...``
        (one array of positions per axis 0..k-1): per axis, ``lo`` and ``hi`` arrays of the grid's
        shape; units no part reaches hold lo > hi. None when no part spans every axis."""
        k = len(positions)
        lo: list = [None] * k
        hi: list = [None] * k
        for part in self.parts:
            if set(part.axes) != set(range(k)):
                continue
            arrs = [part.axes[a] for a in range(k)]
            plo = [arr.lo[r - arr.ustart] for arr, r in zip(arrs, positions)]
            phi = [arr.hi[r - arr.ustart] for arr, r in zip(arrs, positions)]
            present = np.ones([len(r) for r in positions], dtype=bool)
            for a in range(k):
                present &= _along(plo[a] <= phi[a], a, k)
            for a in range(k):
                cand_lo = np.where(present, _along(plo[a], a, k), np.iinfo(np.int64).max)
                cand_hi = np.where(present, _along(phi[a], a, k), np.iinfo(np.int64).min)
                lo[a] = cand_lo if lo[a] is None else np.minimum(lo[a], cand_lo)
                hi[a] = cand_hi if hi[a] is None else np.maximum(hi[a], cand_hi)
        return None if lo[0] is None else (lo, hi)


def _along(x: np.ndarray, a: int, k: int) -> np.ndarray:
    shape = [1] * k
    shape[a] = -1
    return x.reshape(shape)


def _key(part: Part) -> tuple:
    """Equal keys: the same windows at every position."""
    return tuple((a, arr.ustart, arr.lo.tobytes(), arr.hi.tobytes(), arr.clo.tobytes(), arr.chi.tobytes())
                 for a, arr in sorted(part.axes.items()))


def _union(parts: Sequence[Part]) -> Part:
    axes = {}
    for a in parts[0].axes:
        arrs = [p.axes[a] for p in parts]
        axes[a] = AxisArrays(arrs[0].ustart, np.minimum.reduce([x.lo for x in arrs]),
                             np.maximum.reduce([x.hi for x in arrs]), np.minimum.reduce([x.clo for x in arrs]),
                             np.maximum.reduce([x.chi for x in arrs]))
    return Part(axes)


@dataclass(frozen=True)
class Local:
    """One local axis of a tensor: size ``n``, effective ``stride`` (exact), ``period`` (the number
    of units after which the window pattern repeats, a multiple of the stride's denominator), and
    the *profile*: unbounded windows along this axis for positions ``[ustart, ustart + len(lo))``
    with the other axes at their centre unit (used for rf, stride and offset)."""

    n: int
    stride: Fraction | None
    period: int
    ustart: int
    lo: np.ndarray
    hi: np.ndarray
    pinned: bool = False  # the profile rests on a position a larger input would move: no rf (nor stride)

    @cached  # (reports and diagnostics read it many times)
    def rf(self) -> int | None:
        """The largest window over the tensor's units and one full period of phases (None where the
        profile is pinned)."""
        if self.pinned:
            return None
        lo, hi = self._units(max(self.n, min(self.period, MAX_PERIOD)))
        ok = lo <= hi
        if ok.all():
            return int((hi - lo).max()) + 1 if len(lo) else None
        return int((hi[ok] - lo[ok]).max()) + 1 if ok.any() else None

    def _units(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The profile's windows of units 0..m-1 (views where the profile covers them)."""
        i = -self.ustart
        if 0 <= i and i + m <= len(self.lo):
            return self.lo[i:i + m], self.hi[i:i + m]
        u = np.arange(m, dtype=np.int64) - self.ustart
        return self.lo[u], self.hi[u]

    def inside(self, n_in: int) -> np.ndarray:
        """Per unit 0..n-1: its unbounded window (on the profile) lies inside the real input
        ``[0, n_in)`` and is not empty."""
        lo, hi = self._units(self.n)
        return (lo >= 0) & (hi <= n_in - 1) & (lo <= hi)

    @cached
    def offset(self) -> Fraction | None:
        """Mean of centre(u) - u * stride over one period of units from u = 0 (unbounded model);
        unreachable units (phase gaps) are left out of the mean."""
        if self.stride is None or self.period > MAX_PERIOD:
            return None
        lo, hi = self._units(self.period)
        ok = lo <= hi
        if ok.all():  # (every unit reached: sums without masks)
            total = Fraction(int((lo + hi).sum()), 2) - self.period * (self.period - 1) // 2 * self.stride
            return total / self.period
        if not ok.any():
            return None
        u = np.arange(self.period, dtype=np.int64)
        # sum over the reachable units of (lo + hi) / 2 - u * stride, in exact integers and one Fraction
        total = Fraction(int((lo[ok] + hi[ok]).sum()), 2) - int(u[ok].sum()) * self.stride
        return total / int(ok.sum())


@dataclass(frozen=True)
class Global:
    """Every unit sees the whole axis, or, when ``span`` says less, the real pixels ``span`` — all
    that reached the reduction (a crop before global pooling, say). ``reach``, when set, tells per
    position of the dim carrying the axis whether anything real reaches it (a padded conv over a
    globally pooled map has positions that read only padding)."""

    span: tuple[int, int] | None = None
    reach: np.ndarray | None = field(default=None, compare=False, repr=False)
    attended: bool = False  # every position mixes the whole axis with weights of its own (attention)


@dataclass(frozen=True)
class Unknown:
    ops: frozenset[str]


@dataclass(frozen=True)
class Paired(Unknown):
    """Attention scores: the axis lies on two dims, query positions and key positions, and a unit
    (a pair) sees the union of two windows, which one interval per axis cannot state. Read as
    unknown by every query (no window); ``ops`` names the product that paired them, ``span`` the real
    pixels that reach any unit. Softmax over the keys or the product with the values reduces one of
    the two dims, and the axis becomes global (attended)."""

    span: tuple[int, int] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Constant:
    pass


AxisState = Union[Local, Global, Unknown, Constant]
GLOBAL = Global()
CONSTANT = Constant()


class _SparseTable:
    """O(1) range min (or max) queries over a fixed int64 array."""

    def __init__(self, values: np.ndarray, reduce: np.ufunc):
        self.reduce = reduce
        self.levels = [values]
        width = 1
        while 2 * width <= len(values):
            prev = self.levels[-1]
            self.levels.append(reduce(prev[:-width], prev[width:]))
            width *= 2

    def query(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """reduce(values[a..b]) for each pair; requires 0 <= a <= b < len."""
        length = b - a + 1
        level = np.zeros_like(length)
        nz = length > 0
        level[nz] = np.floor(np.log2(length[nz])).astype(np.int64)
        out = np.empty(len(a), dtype=np.int64)
        for j in np.unique(level):
            sel = level == j
            table = self.levels[int(j)]
            out[sel] = self.reduce(table[a[sel]], table[b[sel] - (1 << int(j)) + 1])
        return out


def _nondecreasing(x: np.ndarray) -> bool:
    return bool(len(x) < 2 or (x[1:] >= x[:-1]).all())


def range_reduce(lo: np.ndarray, hi: np.ndarray, start: int, a: np.ndarray, b: np.ndarray,
                 step: np.ndarray | int = 1, monotone: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Union of windows ``[lo[j], hi[j]]`` over the taps j = a, a + step, ..., <= b.

    Positions are offset by ``start`` (``lo[0]`` belongs to position ``start``). Empty tap sets
    (a > b) give the empty sentinels. Every tap must lie inside the arrays: a position the arrays do
    not cover would be a silently wrong union, so it raises instead. ``monotone``: whether lo and
    hi are both nondecreasing, where the caller knows it (:attr:`AxisArrays.monotone`).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    empty = a > b
    any_empty = bool(empty.any())
    if any_empty:
        a = np.where(empty, 0, a - start)
        b = np.where(empty, 0, b - start)
    else:
        a, b = a - start, b - start
    if len(a) == 0:
        return a.copy(), a.copy()
    outside = np.any(~empty & ((a < 0) | (b >= len(lo)))) if any_empty else a.min() < 0 or b.max() >= len(lo)
    if outside:
        raise RuntimeError("internal error: an op reads positions outside the computed range")
    a0, b0 = a, b
    if monotone is None:
        monotone = _nondecreasing(lo) and _nondecreasing(hi)
    if type(step) is int and step == 1 and monotone:
        out_lo, out_hi = lo[a0], hi[b0]  # (the common case, unit steps: below)
        if any_empty:
            out_lo[empty] = EMPTY_LO
            out_hi[empty] = EMPTY_HI
        return out_lo, out_hi
    step = np.broadcast_to(np.asarray(step, dtype=np.int64), a.shape)
    if monotone:
        # the common case (no gaps, no mirrored padding): the first tap has the lowest lo and
        # the last tap the highest hi
        last = a0 + (b0 - a0) // np.maximum(step, 1) * np.maximum(step, 1)
        out_lo, out_hi = lo[a0], hi[last]
    elif np.all(step[~empty] == 1) if np.any(~empty) else True:
        out_lo = _SparseTable(lo, np.minimum).query(a0, b0)
        out_hi = _SparseTable(hi, np.maximum).query(a0, b0)
    else:
        out_lo = np.full(len(a), EMPTY_LO)
        out_hi = np.full(len(a), EMPTY_HI)
        safe_step = np.maximum(step, 1)
        taps = int(((b0 - a0) // safe_step).max()) + 1
        for t in range(taps):
            j = a0 + t * safe_step
            ok = j <= b0
            jj = np.where(ok, j, 0)
            out_lo = np.where(ok, np.minimum(out_lo, lo[jj]), out_lo)
            out_hi = np.where(ok, np.maximum(out_hi, hi[jj]), out_hi)
    out_lo[empty] = EMPTY_LO
    out_hi[empty] = EMPTY_HI
    return out_lo, out_hi


def clip_taps(a: np.ndarray, b: np.ndarray, step: np.ndarray | int, n: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Restrict taps a, a+step, ..., <= b to real positions [0, n) (zero padding reads nothing)."""
    if type(step) is int and step <= 1:  # (unit steps, the common case: a clamp)
        return np.maximum(a, 0), np.minimum(b, n - 1)
    step = np.maximum(np.asarray(step, dtype=np.int64), 1)
    a2 = np.where(a < 0, a + (-a + step - 1) // step * step, a)
    b2 = np.where(b > n - 1, b - (b - (n - 1) + step - 1) // step * step, b)
    return a2, b2
