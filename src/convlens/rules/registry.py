"""One registry of per-op rules, keyed by aten op, in the style of ``torch/utils/flop_counter.py``.

A *geometry rule* ``fn(ctx) -> Plan`` says, for one recorded op, how its output positions draw from
its inputs' positions along each spatial axis (see :mod:`convlens.geometry`). A *cost rule*
``fn(ctx) -> Cost`` gives multiply-accumulates and bias adds. Adding an op = one rule + one test.

Keys are aten overload packets (``aten.convolution``), matching every overload, or synthetic op
names recorded by capture (strings). Registering a key twice is refused.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field, replace
from enum import Enum
from fractions import Fraction
from math import prod
from typing import Any, Callable, Container, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..capture import SDPA, OpNode, TensorInfo, TRef
from ..geometry import IndexFn

Factor = tuple[int | None, int]  # (spatial axis of the network input or None, size)
Dim = tuple[Factor, ...]  # a tensor dimension as row-major factors (flatten keeps several)


class TokenDim(tuple):
    """A token dim: a grid of row-major factors (iterating gives them, as for any :data:`Dim`) with
    ``before`` extra tokens ahead of it and ``after`` behind it (class, distillation and register
    tokens that a cat put there). Grid position p sits at index ``before + p`` of the tensor dim.

    Extra tokens carry no position of any spatial axis. They are constants (``live`` false) until
    something that sees the whole input reaches them: a cat of a class token that has attended to
    the patches, a global branch broadcast over every token, statistics over the tokens (``live``;
    the walk sets it). Ops that mix tokens make the axes global, and every token with them. Rules
    that move positions along a dim must read its extras (:func:`extras`); only the slice and select
    rules do, and the others leave such a dim's axes untracked. Equality ignores ``live``.
    """

    before: int
    after: int
    live: bool

    def __new__(cls, factors: Dim, before: int = 0, after: int = 0, live: bool = False):
        self = super().__new__(cls, factors)
        self.before, self.after, self.live = before, after, live
        return self

    def __eq__(self, other: object) -> bool:
        return tuple.__eq__(self, other) is True and extras(other) == (self.before, self.after)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((tuple(self), self.before, self.after))

    def __repr__(self) -> str:
        return f"TokenDim({tuple(self)!r}, before={self.before}, after={self.after}, live={self.live})"

    def __reduce__(self):
        return TokenDim, (tuple(self), self.before, self.after, self.live)


class Digit(tuple):
    """A factor that holds one digit of a spatial axis split across dims (a window partition splits
    H into H/ws windows and ws positions within one): the position along ``axis`` is the sum, over
    the axis's digits, of index x ``weight``. A tensor's digits of one axis form a complete radix
    (weights 1, n0, n0 n1, ...; :func:`radix`), or, after ``Tensor.unfold`` with a halo, blocks
    (weight = the step) whose offsets (weight 1) overlap the next block: several elements then hold
    one position. Rules that need a radix check for one and leave the axis untracked otherwise.

    A digit iterates as a plain factor ``(None, size)``: a rule that does not know digits sees no
    spatial axis there, and the walk then leaves the axis unknown rather than guess. ``pair`` marks
    the key digits of attention scores, whose twins on the query dim hold the position (the axis
    is paired: a unit sees a query's window and a key's)."""

    axis: int
    size: int
    weight: int
    pair: bool

    def __new__(cls, axis: int, size: int, weight: int, pair: bool = False):
        self = super().__new__(cls, (None, size))
        self.axis, self.size, self.weight, self.pair = axis, size, weight, pair
        # (immutable: the key and hash once, since dims holding digits are cache keys of the rules)
        self._key = (axis, size, weight, pair)
        self._hash = hash(("digit",) + self._key)
        return self

    def key(self) -> tuple[int, int, int, bool]:
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Digit) and self._key == other._key

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Digit({self.axis}, {self.size}, {self.weight}{', pair=True' if self.pair else ''})"

    def __reduce__(self):
        return Digit, self.key()


def digits_of(dims: Iterable[Dim], axis: int, pairs: bool = False) -> list[Digit]:
    """The digits of ``axis`` held by ``dims`` (the position digits; with ``pairs`` also the key
    digits of attention scores), a whole factor counted as the digit of weight 1."""
    out = []
    for dim in dims:
        for f in dim:
            if isinstance(f, Digit):
                if f.axis == axis and (pairs or not f.pair):
                    out.append(f)
            elif f[0] == axis:
                out.append(Digit(axis, f[1], 1))
    return out


def axis_size(dims: Sequence[Dim], a: int) -> int:
    """Positions of axis ``a`` in a tensor of these dims: its factor's size, the product of its
    digits' sizes where a window partition split it, 1 where no dim carries it (an axis on two dims
    whole, as the queries and keys of global attention, counted once). Digits that are no complete
    radix (``Tensor.unfold``'s overlapping blocks) hold positions up to the sum of their largest
    values times their weights."""
    held = set()
    for dim in dims:
        for f in dim:
            if isinstance(f, Digit):
                if f.axis == a and not f.pair:
                    held.add((f.size, f.weight))
            elif f[0] == a:
                held.add((f[1], 1))
    if len(held) > 1 and radix(Digit(a, size, weight) for size, weight in held) is None:
        return sum((size - 1) * weight for size, weight in held) + 1
    return prod(size for size, _ in held)


def digit_axes(dims: Iterable[Dim]) -> set[int]:
    """The axes that some dim holds as digits (split across dims)."""
    return set().union(*map(_digit_axes, dims))


@functools.lru_cache(maxsize=1 << 14)
def _digit_axes(dim: Dim) -> frozenset[int]:
    """:func:`digit_axes` of one dim (cached: dims are immutable and few)."""
    return frozenset(f.axis for f in dim if isinstance(f, Digit))


def radix(digits: Iterable[Digit]) -> tuple[tuple[int, int], ...] | None:
    """The (size, weight) of the digits from the least significant on, if they form a complete radix
    (weights 1, n0, n0 n1, ...); size-1 digits are left out. None otherwise."""
    ds = sorted(((d.size, d.weight) for d in digits if d.size > 1), key=lambda sw: sw[1])
    w = 1
    for size, weight in ds:
        if weight != w:
            return None
        w *= size
    return tuple(ds)


def extras(dim: Dim) -> tuple[int, int]:
    """The extra tokens (before, after) around a dim's grid: (0, 0) for a plain dim."""
    return (dim.before, dim.after) if isinstance(dim, TokenDim) else (0, 0)


def token_dim(factors: Dim, before: int, after: int, live: bool = False) -> Dim:
    """A dim of ``factors`` with extra tokens around them (a plain dim when there are none)."""
    return TokenDim(factors, before, after, live) if before or after else tuple(factors)


def live_extras(dim: Dim) -> bool:
    """Whether a dim's extra tokens see the input (see :class:`TokenDim`)."""
    return isinstance(dim, TokenDim) and dim.live


@dataclass
class Source:
    """Positions along an output axis draw from tensor ``tid`` through ``fn``; ``scale`` = input
    positions per output position (the factor the effective stride is multiplied by); ``counted``:
    coverage may count one path per tap; ``period``: outputs after which the map's own pattern
    repeats (1 for maps that only shift and scale)."""

    tid: int
    fn: IndexFn
    scale: Fraction | None = Fraction(1)  # None: positions move at no single rate (a recurrent half-line)
    counted: bool = True  # the taps are the paths; False: the op has paths of its own (a recurrent layer)
    period: int = 1  # the map's own pattern repeats after this many outputs (attention within windows)


Pieces = tuple[int, tuple[tuple[int, int, int], ...]]
"""Channel pieces of a tensor whose channels see different windows: (dim, ((start, stop, tensor),
...)): along ``dim`` (no spatial axis), indices [start, stop) see exactly the windows of ``tensor``
(whose channels all see the same), whatever the other indices. The walk keeps them through the ops
that keep channel indices (``Plan.same_index``), so a pick of channels reads the pieces it picks."""


class Channels(Enum):
    """What an op does to the non-spatial (channel) dims, for the ops that pick channels by position
    (``pixel_shuffle``, a slice of channels), which need every channel to see the same window."""

    KEEP = "keep"  # per channel (elementwise, pooling, depthwise): channels see what they saw
    MIX = "mix"  # every output channel reads every input channel (a dense conv, a matrix product)
    SPLIT = "split"  # channels from tensors or phases with different windows (a cat along channels)


ATTENTION_OPS = """
_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_flash_attention
_scaled_dot_product_efficient_attention _scaled_dot_product_cudnn_attention
_scaled_dot_product_attention_math scaled_dot_product_attention _scaled_dot_product_fused_attention_overrideable
""".split()
"""The aten attention kernels (those this torch build has), which both the geometry and the cost
rules cover, beside the capture's whole-function record (``capture.SDPA``)."""


@dataclass
class Plan:
    """How one output tensor's geometry follows from the op's inputs.

    ``dims``: the output's dimensions as factors. ``local``: axes whose positions the op maps, with
    their sources (local axes; also global ones, whose positions may then read only padding).
    ``fold``: axes the op consumes (reduced, contracted, attended over): they become global.
    ``piecewise``: axes along which the sources cover disjoint ranges (cat along a spatial axis):
    not a merge, so alignment is not checked there.
    ``unsupported``: a reason; every input axis that is not constant becomes Unknown(op (reason)).
    ``no_rule``: set by the analysis for an op without a geometry rule: Unknown(op).
    ``context``: local axes whose units also see the whole axis (statistics of a norm): global context.
    ``constant``: the output does not depend on the input's values (factory ops).
    ``untracked``: why an axis is left out of ``local`` (named in the Unknown state and the notes).
    ``unread``: inputs whose values do not reach the output (a parent that a write through a view
    overwrites whole): they neither map nor make axes unknown.
    ``channels``: what the op does to the non-spatial (channel) dims (:class:`Channels`).
    ``paired``: axes the output carries on two dims, query and key positions of attention scores
    (:class:`~convlens.geometry.Paired`).
    ``beside``: inputs that fill only extra tokens (a cat's class tokens, :class:`TokenDim`): they reach
    no unit of the grid, so neither their global axes nor their global context reach its units (an
    unknown one still makes the axes unknown).
    ``same_index``: per input, its non-spatial dims whose index i the output's dim (the value) reads
    at index i and nowhere else (elementwise ops, batch norm, pools, depthwise convs, views): the walk
    carries channel pieces (:data:`Pieces`) through them. Rules that mix or reorder channels leave it
    empty, and the walk then drops the pieces (the union over the channels stays exact).
    ``pieces``: the output's channel pieces, when the rule makes them (a cat along channels, a pick of
    channels): (dim, ((start, stop, tensor), ...)) — a tensor of a piece may itself have pieces along
    the same dim (the walk splices them in).
    ``reads``: the tensors the output reads in place of the node's inputs (a pick of channels reads the
    pieces it picks, whose sources the plan names).
    ``caveats``: what the output's windows may overstate by the conventions (an attention mask
    convlens cannot read removes no pair): the walk carries them to every tensor that reads the
    output, and each row shows them.
    ``keys_kept``: a softmax over attention scores whose mask it read (:mod:`.masks`): the product
    ``q kᵀ`` and, per axis, the (query x key) table of the pairs the mask keeps, which the product
    with the values reads again.
    Axes mentioned nowhere keep the inputs' global/unknown/constant states; a local one becomes
    Unknown, so an incomplete rule can never yield a made-up number.
    """

    dims: tuple[Dim, ...]
    local: dict[int, list[Source]] = field(default_factory=dict)
    fold: set[int] = field(default_factory=set)
    piecewise: set[int] = field(default_factory=set)
    unsupported: str | None = None
    no_rule: bool = False
    context: set[int] = field(default_factory=set)
    constant: bool = False
    untracked: dict[int, str] = field(default_factory=dict)
    channels: Channels = Channels.KEEP
    unread: set[int] = field(default_factory=set)
    paired: set[int] = field(default_factory=set)
    beside: set[int] = field(default_factory=set)
    same_index: dict[int, dict[int, tuple[int, Fraction]]] = field(default_factory=dict)
    pieces: Pieces | None = None
    reads: tuple[int, ...] | None = None
    caveats: set[str] = field(default_factory=set)
    keys_kept: tuple[OpNode, dict[int, np.ndarray]] | None = None


def retarget(plan: Plan, inputs: Sequence[int], mapping: dict[int, Sequence[int]]) -> Plan:
    """A copy of ``plan`` (whose op reads ``inputs``) that reads, in place of each input ``t`` of
    ``mapping``, the tensors ``mapping[t]`` (each through t's sources): the same op applied to
    channel pieces of t."""
    def swap(tids):
        return {u for t in tids for u in mapping.get(t, (t,))}
    local = {a: [replace(s, tid=u) for s in srcs for u in mapping.get(s.tid, (s.tid,))] for a, srcs in plan.local.items()}
    reads = tuple(dict.fromkeys(u for t in inputs for u in mapping.get(t, (t,))))
    return replace(plan, local=local, unread=swap(plan.unread), beside=swap(plan.beside), same_index={},
                   pieces=None, reads=reads)


@dataclass(frozen=True)
class Cost:
    macs: int = 0
    bias_flops: int = 0


class RuleContext:
    """What a rule may read: the node, tensor shapes and the dims (factors) of its inputs."""

    def __init__(self, node: OpNode, tensors: dict[int, TensorInfo], producers: dict[int, OpNode],
                 dims: dict[int, tuple[Dim, ...]], local: dict[int, frozenset[int]],
                 global_: dict[int, frozenset[int]] | None = None, split: frozenset[int] = frozenset(),
                 context: frozenset[int] = frozenset(), pieces: dict[int, Pieces] | None = None,
                 values: Mapping[int, torch.Tensor] | None = None, constants: Container[int] = frozenset(),
                 plans: Mapping[int, "Plan | None"] | None = None):
        self.node = node
        self.tensors = tensors  # tensor id -> TensorInfo (what args.conv_args reads)
        self._tensors = tensors
        self._producers = producers
        self._dims = dims
        self._local = local
        self._global = global_ or {}
        self._split = split
        self._context = context
        self._pieces = pieces or {}
        self._values = values or {}
        self._constants = constants
        self._plans = plans or {}

    def info(self, ref: TRef | int) -> TensorInfo:
        return self._tensors[ref.id if isinstance(ref, TRef) else ref]

    def dtype(self, ref: TRef | int) -> torch.dtype:
        return self._tensors[ref.id if isinstance(ref, TRef) else ref].dtype

    def producer(self, ref: TRef | int) -> OpNode | None:
        """The recorded op that wrote this tensor (None for the input, parameters, constants)."""
        return self._producers.get(ref.id if isinstance(ref, TRef) else ref)

    def local_axes(self, ref: TRef | int) -> frozenset[int]:
        """The spatial axes along which ``ref``'s units see a local window."""
        return self._local.get(ref.id if isinstance(ref, TRef) else ref, frozenset())

    def global_axes(self, ref: TRef | int) -> frozenset[int]:
        """The spatial axes along which ``ref``'s units see the whole axis."""
        return self._global.get(ref.id if isinstance(ref, TRef) else ref, frozenset())

    def channels_split(self, ref: TRef | int) -> bool:
        """Whether ``ref``'s channels may see different windows (see ``Plan.channels``)."""
        return (ref.id if isinstance(ref, TRef) else ref) in self._split

    def pieces(self, ref: TRef | int) -> Pieces | None:
        """The channel pieces of ``ref``, when its channels see different windows and the walk knows
        which see what (:data:`Pieces`)."""
        return self._pieces.get(ref.id if isinstance(ref, TRef) else ref)

    def constant(self, ref: TRef | int) -> bool:
        """Whether ``ref`` does not depend on the network input (parameters, buffers, factories and
        what is computed from them alone)."""
        return (ref.id if isinstance(ref, TRef) else ref) in self._constants

    def value(self, ref: TRef | int) -> torch.Tensor | None:
        """The values of a constant the capture kept (``Capture.values``: attention masks), else None."""
        return self._values.get(ref.id if isinstance(ref, TRef) else ref)

    def plan(self, ref: TRef | int) -> "Plan | None":
        """The plan of the op that made an earlier tensor (None for the input, parameters and
        constants): a rule that looks back past its inputs (attention written out) reads it."""
        return self._plans.get(ref.id if isinstance(ref, TRef) else ref)

    def global_context(self, ref: TRef | int) -> bool:
        """Whether ``ref``'s units also see the whole input through a global branch."""
        return (ref.id if isinstance(ref, TRef) else ref) in self._context

    def shape(self, ref: TRef | int) -> tuple[int, ...]:
        return self._tensors[ref.id if isinstance(ref, TRef) else ref].shape

    def dims(self, ref: TRef | int) -> tuple[Dim, ...]:
        return self._dims[ref.id if isinstance(ref, TRef) else ref]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self._tensors[self.node.outputs[0]].shape

    def out_shapes(self) -> list[tuple[int, ...]]:
        return [self._tensors[t].shape for t in self.node.outputs]

    def tensor_args(self) -> list[TRef]:
        return [TRef(t) for t in self.node.inputs]


GeometryRule = Callable[[RuleContext], "Plan | list[Plan | None]"]
CostRule = Callable[[RuleContext], Cost]
GEOMETRY: dict[Any, GeometryRule] = {}
COST: dict[Any, CostRule] = {}


def _keys(targets: Any) -> Iterable[Any]:
    targets = targets if isinstance(targets, (list, tuple)) else [targets]
    for t in targets:
        if not isinstance(t, (str, torch._ops.OpOverloadPacket)):
            raise TypeError(f"rule targets must be aten overload packets or synthetic op names, got {t!r}")
        yield t


def register_into(table: dict, targets: Any, kind: str) -> Callable:
    """A decorator that files a function under every key of ``targets`` (aten overload packets or
    synthetic op names) in ``table``; a key registered twice, or of another type, is refused."""
    def decorator(fn: Callable) -> Callable:
        for key in _keys(targets):
            if key in table:
                raise RuntimeError(f"{kind} rule for {key} registered twice")
            table[key] = fn
        return fn
    return decorator


def register_geometry(targets: Any) -> Callable[[GeometryRule], GeometryRule]:
    """Decorator: ``fn(ctx) -> Plan`` for the given aten packets (or synthetic names)."""
    return register_into(GEOMETRY, targets, "geometry")


def register_cost(targets: Any) -> Callable[[CostRule], CostRule]:
    """Decorator: ``fn(ctx) -> Cost`` for the given aten packets."""
    return register_into(COST, targets, "cost")


def attention_targets() -> list[Any]:
    """The registry keys of every attention kernel this torch build has, and the capture's record."""
    from_aten = [getattr(torch.ops.aten, n) for n in ATTENTION_OPS if hasattr(torch.ops.aten, n)]
    return from_aten + [SDPA]


def key_of(op: Any) -> Any:
    """The registry key of a recorded op: its overload packet, or the synthetic name."""
    return op.overloadpacket if isinstance(op, torch._ops.OpOverload) else op
