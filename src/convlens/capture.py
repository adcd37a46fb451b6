"""Capture: run the model once and record every aten op with its tensors and module scope.

The model runs under a ``TorchDispatchMode``. Every op whose inputs depend on the network input runs
on ``meta`` tensors (real parameters and constants it reads are swapped for meta copies), so no
activation is allocated. Ops on constants only (parameters, buffers, factory tensors and what is
computed from them) run for real, so that the model can read their values (``.item()``,
``.tolist()``, ``.to(device)``); a constant larger than ``REAL_CONSTANT_LIMIT`` elements is computed
on meta instead. If the model still cannot run on meta (data-dependent control flow on the input's
values), it is run once for real on CPU with the same recording; :attr:`Capture.fallback` says why and
names the op that failed on meta. An op whose output's *size* depends on the input's values
(:data:`DATA_DEPENDENT`: nonzero, nms, boolean indexing) is different: a real run would give the count of
one random input, a guess. The meta run stops there instead (:attr:`Capture.stop`), keeping every op
before it; the module calls still running end there, without outputs (a detector's backbone, FPN and
heads are analyzed, its post-processing is named as data-dependent).

The model is never changed: scopes come from global module hooks removed in ``finally``; its
attributes, parameter/buffer dicts and containers are restored afterwards
(:func:`convlens.modelstate.preserved`); a tensor of the model that an op would write into for real is
first given a private copy, which the rest of the forward reads instead.

Recorded events are plain data: :class:`OpNode` (op, args with tensors replaced by :class:`TRef`,
module scope) and :class:`ModuleCall` (row name, input and output tensor ids, the ops it issued).
Tensors are identified by version: an in-place op gives its tensor a new id. Writes through views
are tracked: a view remembers the view op that made it; an in-place op on a view gives every tensor it
is a view of a new version (one synthetic ``VIEW_WRITE`` op per link: the parent with the view's
region replaced), and a view whose base changed is derived again (its view op recorded once more)
before it is next read.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from .errors import ConvlensError, ModelError, NeedsRealWeights, first_line
from .inputs import Inputs, Resolved, resolve
from .modelstate import preserved

CIRCULAR_PAD = "convlens.circular_pad"
"""Synthetic op: F.pad(mode='circular') recorded whole (aten decomposes it into writes into views)."""
SDPA = "convlens.scaled_dot_product_attention"
"""Synthetic op: F.scaled_dot_product_attention recorded whole, args (query, key, value, attn_mask,
dropout_p, is_causal), whatever kernel or decomposition torch picks on the device."""
RNN = "convlens.rnn"
"""Synthetic op: a recurrent layer's call (``torch._VF.lstm``, ``gru``, ``rnn_tanh``, ``rnn_relu``, not on a
packed sequence) recorded whole, args (mode, input, hx, params, has_biases, num_layers, dropout, train,
bidirectional, batch_first): on meta torch unrolls it into per-step ops, on the CPU it is one kernel."""
VIEW_WRITE = "convlens.view_write"
"""Synthetic op, args (parent, view, view_node, index): the parent of a view written in place, with the
region that output ``index`` of ``view_node`` (the view op) selects replaced by the view's new value."""
REAL_CONSTANT_LIMIT = 1 << 24
"""Elements: a constant-only op whose outputs are larger than this runs on meta (values unreadable)."""
VALUE_LIMIT = 1 << 22
"""Elements: the values of a real constant operand of a :func:`keeps_values` op up to this size are kept
(``Capture.values``)."""


DATA_DEPENDENT = frozenset({"aten.nonzero", "aten.argwhere", "aten.masked_select", "aten._unique", "aten._unique2",
                            "aten.unique_dim", "aten.unique_consecutive", "aten.unique_dim_consecutive",
                            "aten.repeat_interleave.Tensor", "aten.nonzero_numpy", "torchvision.nms"})
"""Ops (by overload packet, or overload) whose output's shape depends on the values of their input: on
meta tensors nothing can say how many elements they return. When the network input's data reaches one,
the meta run stops there (:class:`DataDependentStop`) instead of guessing a count; so does indexing with
a boolean mask (``x[x > 0]``, ``aten.index`` with a bool index)."""


@functools.lru_cache(maxsize=None)
def _data_dependence(func: Any) -> str | None:
    """"always" for an op of :data:`DATA_DEPENDENT`, "bool index" for indexing (data-dependent with a
    boolean mask), else None; once per op overload (the dispatch asks for every op)."""
    name = str(func)
    packet = name.rsplit(".", 1)[0]
    if packet in DATA_DEPENDENT or name in DATA_DEPENDENT:
        return "always"
    return "bool index" if packet in ("aten.index", "aten._unsafe_index") else None


def data_dependent(func: Any, args: tuple) -> bool:
    """Whether the op's output shape depends on its inputs' values (:data:`DATA_DEPENDENT`)."""
    kind = _data_dependence(func)
    if kind == "bool index" and len(args) > 1:
        return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in args[1] or ())
    return kind == "always"


@dataclass(frozen=True)
class DataDependentStop:
    """Where a meta run stopped: the data-dependent op, the module call that ran it (row, class) and
    every module call still running then, innermost first (their outputs depend on the data)."""

    op: str
    row: str
    type_name: str
    cut: tuple[str, ...]
    unreached: tuple[str, ...] = ()
    """Modules never called whose parent was (set by :func:`convlens.api.analyze`): those after the stop,
    and any the forward never calls."""

    def describe(self) -> str:
        where = f"in {self.row!r} ({self.type_name})" if self.row else f"in the model ({self.type_name})"
        return (f"{self.op} {where} returns as many elements as the input's values decide: what follows it "
                "depends on the data and is not analyzed")


class _Stopped(BaseException):
    """Raised through the model's forward at a data-dependent op on meta (caught by :func:`_capture`); a
    BaseException, so that a model's own ``except Exception`` does not swallow it."""

    def __init__(self, op: str):
        super().__init__(op)
        self.op = op


def keeps_values(name: str) -> bool:
    """Ops whose constant operands' values the rules read: what may mask attention (an additive mask
    on scores, the mask of scaled dot-product attention; ``masked_fill`` and ``where`` on scores are
    not read yet)."""
    return name == SDPA or name.startswith(("aten.add.", "aten.add_.", "aten._scaled_dot_product",
                                            "aten.scaled_dot_product"))


@dataclass(frozen=True)
class TRef:
    """A tensor argument of a recorded op, by tensor id."""

    id: int


@dataclass(frozen=True)
class TensorInfo:
    id: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    kind: str  # "input" | "activation" | "param" | "buffer" | "constant"
    name: str = ""  # parameter/buffer name
    stride: tuple[int, ...] = ()

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * self.dtype.itemsize  # complex64: 8, bool: 1


@functools.lru_cache(maxsize=None)
def _schema_index(op: Any) -> dict[str, tuple[int, Any]] | None:
    """An op overload's arguments by name, with their positions (None for synthetic ops)."""
    schema = getattr(op, "_schema", None)
    return None if schema is None else {a.name: (i, a) for i, a in enumerate(schema.arguments)}


@dataclass
class OpNode:
    index: int
    op: Any  # torch._ops.OpOverload, or a synthetic name (str)
    name: str  # "aten.convolution.default"
    args: tuple
    kwargs: dict
    inputs: list[int]  # tensor ids read, in argument order
    outputs: list[int]  # tensor ids written
    scope: str  # module path that issued the op ("" = the root)
    # records decoded from the arguments, once (rules.args: the rules, the costs, the diagnostics and
    # gridding all read a convolution's arguments)
    decoded: dict = field(default_factory=dict, repr=False, compare=False)

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Positional argument i, or keyword ``name``, following the aten schema order."""
        if i < len(self.args):
            return self.args[i]
        return self.kwargs.get(name, default)

    def param(self, name: str, default: Any = None) -> Any:
        """Argument ``name`` bound by the op's schema: positional or keyword as given, else the
        schema's default, else ``default`` (also when this overload has no such argument, e.g. the
        ``dim`` of ``aten.mean.default``, which reduces every dim)."""
        index = _schema_index(self.op)
        if index is None:
            return self.kwargs.get(name, default)
        found = index.get(name)
        if found is None:
            return default
        i, a = found
        if not a.kwarg_only and i < len(self.args):
            return self.args[i]
        if name in self.kwargs:
            return self.kwargs[name]
        return a.default_value if a.has_default_value() else default


@dataclass
class ModuleCall:
    name: str  # row name: "layer1.0", "layer1.0#2", "head[0]" for tuple outputs
    path: str
    depth: int
    type_name: str
    is_leaf: bool
    outputs: list[tuple[str, int]] = field(default_factory=list)  # (suffix, tensor id)
    first_op: int = 0
    end_op: int = 0  # ops [first_op, end_op) were issued inside this call


@dataclass
class Capture:
    tensors: dict[int, TensorInfo]
    nodes: list[OpNode]
    calls: list[ModuleCall]
    input_id: int
    output_ids: list[tuple[str, int]]
    fallback: str | None = None  # why the model ran on CPU instead of meta
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    """Tensor id -> value, for the real constants (not on meta) that a :func:`keeps_values` op read
    beside the input's activations, up to ``VALUE_LIMIT`` elements: attention masks."""
    stop: DataDependentStop | None = None
    """Where the meta run stopped at a data-dependent op (None: the forward ran to its end)."""
    inputs: dict[str, int] = field(default_factory=dict)
    """Every tensor input's id by name (the grid input, ``input_id``, among them); the others do not move
    over the grid and the walk takes them as it takes constants (:mod:`convlens.inputs`)."""

    @functools.cached_property
    def producers(self) -> dict[int, OpNode]:
        """The op that wrote each tensor, by tensor id (the input, parameters and constants have none)."""
        return {t: node for node in self.nodes for t in node.outputs}

    @functools.cached_property
    def last_use(self) -> dict[int, int]:
        """The index of the last op that reads each tensor, by tensor id."""
        return {t: node.index for node in self.nodes for t in node.inputs}

    @functools.cached_property
    def row_of_node(self) -> dict[int, str]:
        """The row (innermost module call) that issued each op, by op index."""
        row_of: dict[int, str] = {}
        for call in sorted(self.calls, key=lambda c: c.depth):
            for i in range(call.first_op, call.end_op):
                row_of[i] = call.name
        return row_of


_LEAVES = frozenset({int, float, bool, complex, str, type(None), torch.dtype, torch.device, torch.layout,
                     torch.memory_format})
"""Argument types that hold no tensor (checked by exact type: the common case, per op and argument)."""


def _map(fn: Any, value: Any) -> Any:
    """Apply fn to every tensor in an aten argument (tensors, or lists/tuples of them, any depth).
    A lean stand-in for pytree: aten arguments hold no other containers, and this runs per op."""
    if type(value) in _LEAVES:
        return value
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        if all(type(v) in _LEAVES for v in value):  # (sizes, strides, paddings)
            return value
        return type(value)(_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    return value


def _collect(value: Any, out: list[torch.Tensor]) -> None:
    if type(value) in _LEAVES:
        return
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            _collect(v, out)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in an aten argument, in order (as :func:`_map` visits them)."""
    out: list[torch.Tensor] = []
    _collect(value, out)
    return out


def _is_pad(func: Any) -> bool:
    return func is F.pad or func is getattr(torch._C._nn, "pad", None)


def _is_sdpa(func: Any) -> bool:
    return func is F.scaled_dot_product_attention or func is getattr(torch._C._nn, "scaled_dot_product_attention",
                                                                      None)


_RNNS = {"lstm", "gru", "rnn_tanh", "rnn_relu"}


def _is_rnn(func: Any) -> bool:
    """``torch._VF.lstm`` and its kin, by name (a builtin method is a new object at every lookup)."""
    return getattr(func, "__name__", None) in _RNNS and getattr(func, "__module__", None) == "torch"

_SHAPE_ONLY = {getattr(torch.ops.aten, n) for n in """new_full new_zeros new_ones new_empty new_empty_strided
    zeros_like ones_like full_like empty_like rand_like randn_like randint_like""".split()
               if hasattr(torch.ops.aten, n)}
_META, _CPU = torch.device("meta"), torch.device("cpu")


def _shape_only(func: Any) -> bool:
    """Factory ops that read only the shape (and dtype) of their tensor argument."""
    return getattr(func, "overloadpacket", None) in _SHAPE_ONLY


@dataclass(frozen=True)
class _Schema:
    """What an op's schema says about aliasing: which arguments it writes, whether its outputs are
    views of its first tensor argument, whether it takes a ``device``."""

    written: tuple[str, ...]
    view: bool
    device: bool


_SCHEMAS: dict[Any, _Schema] = {}


def _schema(func: Any) -> _Schema:
    info = _SCHEMAS.get(func)
    if info is None:
        schema = func._schema
        written = tuple(a.name for a in schema.arguments if a.alias_info is not None and a.alias_info.is_write)
        view = not written and any(r.alias_info is not None for r in schema.returns)
        info = _Schema(written, view, any(a.name == "device" for a in schema.arguments))
        _SCHEMAS[func] = info
    return info


_LAYOUTS: dict[tuple, Any] = {}  # meta call signature -> the layout of its outputs
MAX_LAYOUTS = 1 << 16
_SCALARS = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.memory_format, torch.layout)
_UNCACHED = object()


def _meta_call(func: Any, info: _Schema, args: tuple, kwargs: dict) -> Any:
    """``func(*args, **kwargs)`` on meta tensors. An op that writes nothing and returns fresh tensors
    gives outputs that depend only on its arguments' shapes, strides and dtypes and its scalars, so
    a repeated call is answered from the first one's output layout: some meta kernels are Python
    decompositions (batch norm's takes 0.6 ms, most of a bare meta forward of ResNet-50)."""
    if info.written or info.view:
        return func(*args, **kwargs)
    signature = _signature((args, tuple(sorted(kwargs.items()))))
    if signature is None:
        return func(*args, **kwargs)
    key = (func, signature)
    layout = _LAYOUTS.get(key)
    if layout is None:
        out = func(*args, **kwargs)
        if len(_LAYOUTS) >= MAX_LAYOUTS:
            _LAYOUTS.clear()
        _LAYOUTS[key] = _layout(out)
        return out
    if layout is _UNCACHED:
        return func(*args, **kwargs)
    return _build(layout)


def _signature(x: Any) -> Any:
    """A hashable description of an argument (None where it holds anything but tensors and scalars)."""
    if type(x) in _LEAVES:
        return (type(x), x)
    if isinstance(x, torch.Tensor):
        return ("t", tuple(x.shape), x.stride(), x.dtype, x.device.type, x.storage_offset())
    if isinstance(x, (tuple, list)):
        kinds = tuple(map(type, x))
        if _LEAVES.issuperset(kinds):  # (sizes, strides, paddings: described in C)
            return (type(x), kinds, tuple(x))
        inner = tuple(_signature(v) for v in x)
        return None if any(v is None and u is not None for v, u in zip(inner, x)) else (type(x), inner)
    if isinstance(x, _SCALARS):
        return (type(x), x)
    return None


def _layout(out: Any) -> Any:
    """What :func:`_build` needs to make outputs like ``out``: fresh meta tensors, in tuples or lists."""
    if isinstance(out, torch.Tensor):
        if out.device.type != "meta" or out.storage_offset() != 0 or type(out) is not torch.Tensor:
            return _UNCACHED
        return ("t", tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (tuple, list)):
        inner = [_layout(v) for v in out]
        return _UNCACHED if any(v is _UNCACHED for v in inner) else (type(out), inner)
    if out is None or isinstance(out, (int, float, bool)):
        return ("v", out)
    return _UNCACHED


def _build(layout: Any) -> Any:
    kind = layout[0]
    if kind == "t":
        return torch.empty_strided(layout[1], layout[2], dtype=layout[3], device=_META)
    if kind == "v":
        return layout[1]
    return kind(_build(v) for v in layout[1])


@dataclass
class _View:
    """A tensor that is a view of ``parent``, made by output ``index`` of the recorded view op ``node``.
    ``synced``: the id of its root's version it was last derived from."""

    parent: torch.Tensor
    node: OpNode
    index: int
    root: torch.Tensor
    synced: int


class _Recorder(TorchDispatchMode):
    def __init__(self, state: "_State"):
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.state.dispatch(func, args, kwargs or {})


class _FunctionLevel(TorchFunctionMode):
    """Records whole the functions whose aten decomposition differs between devices or hides their
    meaning: circular padding (writes through views) and scaled dot-product attention (a fused
    kernel on CPU, bmm and softmax on meta: recorded as one op, it gets one answer on both). Hands
    the RNN functions meta weights when their input is meta (they compare devices in C++, before any
    aten op reaches the dispatch)."""

    def __init__(self, state: "_State"):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if _is_pad(func) and kwargs.get("mode", args[2] if len(args) > 2 else "constant") == "circular":
            pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
            return self.state.whole(CIRCULAR_PAD, func, args, kwargs, (args[0], tuple(pad)), {})
        if _is_rnn(func) and any(self.state.is_live(t) for t in _tensors((args, kwargs))):
            # the RNN functions check that input and weights share a device before any aten op runs
            call = (lambda *a, **k: func(*_map(self.state.meta_alias, a), **_map(self.state.meta_alias, k))) \
                if self.state.meta else func
            if len(args) == 9 and isinstance(args[2], (list, tuple)) and not kwargs:  # not a packed sequence
                rec_args = (func.__name__, args[0], args[1], tuple(args[2]), *args[3:])
                return self.state.whole(RNN, call, args, kwargs, rec_args, {})
            return call(*args, **kwargs)
        if _is_sdpa(func):
            names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal")
            bound = {n: (args[i] if i < len(args) else kwargs.get(n)) for i, n in enumerate(names)}
            rec_kwargs = {k: v for k, v in kwargs.items() if k not in names}
            rec_args = tuple(bound[n] for n in names)
            return self.state.whole(SDPA, func, args, kwargs, rec_args, rec_kwargs)
        return func(*args, **kwargs)


class _State:
    """Everything the recording needs between ops.

    Tensors are tracked by the Python object the model's code holds (the *logical* tensor); the op
    may run on another object: its meta copy, or a private copy of a model tensor that the forward
    writes into (so the model's own tensors never change). ``ids`` maps a logical tensor to its
    current version's tensor id; ``live`` holds the ids that depend on the network input.
    """

    def __init__(self, meta: bool, named: dict[int, tuple[str, str]], protected: Callable[[], set[int]]):
        self.meta = meta
        self.named = named  # id(tensor) -> (kind, name) for params and buffers
        # storage pointers of the model's own tensors: asked for only when an op writes into a real
        # tensor (most forwards on meta never do)
        self._protected_of = protected
        self._protected: set[int] | None = None
        self.ids: dict[int, int] = {}  # id(logical tensor) -> current tensor id
        self.keep: list[torch.Tensor] = []  # keeps python ids unique while recording
        self.meta_cache: dict[int, torch.Tensor] = {}
        self.private: dict[int, torch.Tensor] = {}  # id(model tensor) -> the copy writes go to
        self.logical: dict[int, torch.Tensor] = {}  # id(meta copy handed to a function) -> the tensor
        self.views: dict[int, _View] = {}
        self.live: set[int] = set()
        self.tensors: dict[int, TensorInfo] = {}
        self.nodes: list[OpNode] = []
        self.values: dict[int, torch.Tensor] = {}
        self.suppress = 0
        self.scope: list[str] = [""]

    # ------------------------------------------------------------------ which object an op runs on
    def resolve(self, t: torch.Tensor) -> torch.Tensor:
        """The object that holds ``t``'s current value: ``t`` itself, or its private copy."""
        if not self.private:
            return t
        got = self.private.get(id(t))
        if got is None and t._base is not None and id(t._base) in self.private:
            got = self.private[id(t._base)].as_strided(t.size(), t.stride(), t.storage_offset())
            self.private[id(t)] = got
            self.keep.append(t)
        return t if got is None else got

    def to_meta(self, t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return t
        cached = self.meta_cache.get(id(t))
        if cached is None:
            cached = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="meta")
            self.meta_cache[id(t)] = cached
            self.keep.append(t)
        return cached

    def meta_alias(self, t: Any) -> Any:
        """``t``'s meta copy, for a function that checks devices before it reaches the dispatch (an
        RNN); ops that receive the copy see ``t`` (:meth:`unalias`)."""
        if not isinstance(t, torch.Tensor):
            return t
        with _disable_current_modes():  # called above the dispatch: make the copy unrecorded, on meta
            copy = self.to_meta(self.resolve(t))
        if copy is not t:
            self.logical[id(copy)] = t
        return copy

    def unalias(self, t: torch.Tensor) -> torch.Tensor:
        return self.logical.get(id(t), t)

    def _protect(self, t: torch.Tensor) -> torch.Tensor:
        """A model tensor (or a view of one) about to be written for real: give it a private copy."""
        if t.device.type == "meta" or t.numel() == 0:
            return t
        if self._protected is None:
            self._protected = self._protected_of()
        if t.untyped_storage().data_ptr() not in self._protected:
            return t
        root = t._base if t._base is not None else t
        copy = torch.empty(0, dtype=root.dtype, device=root.device)
        copy.set_(root.untyped_storage().clone(), root.storage_offset(), root.size(), root.stride())
        self.private[id(root)] = copy
        self.keep.append(root)
        if root is t:
            return copy
        return self.resolve(t)

    # ------------------------------------------------------------------ one op
    def is_live(self, t: torch.Tensor) -> bool:
        tid = self.ids.get(id(t))
        return tid in self.live if tid is not None else t.device.type == "meta"

    def _current(self, tensors: list[torch.Tensor]) -> bool:
        """Bring stale views among an op's arguments up to date (when recording); whether any
        argument depends on the network input."""
        if self.suppress == 0:
            for t in tensors:
                self.refresh(t)
        return any(self.is_live(t) for t in tensors)

    def dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        if self.logical:
            args, kwargs = _map(self.unalias, args), _map(self.unalias, kwargs)
        recording = self.suppress == 0
        tensors = _tensors((args, kwargs))
        live = self._current(tensors) and not _shape_only(func)
        info = _schema(func)
        run_args, run_kwargs = args, kwargs
        if self.private:  # a model tensor was written for real: its private copy holds its value
            run_args, run_kwargs = _map(self.resolve, args), _map(self.resolve, kwargs)
        if info.written and not (self.meta and live):
            for name in info.written:  # never write into the model's own tensors
                run_args, run_kwargs = self._redirect(func, name, run_args, run_kwargs)
        if self.meta and live and data_dependent(func, args):
            raise _Stopped(str(func))
        try:
            same = run_args is args and run_kwargs is kwargs
            out = self._run(func, info, run_args, run_kwargs, live, tensors if same else None)
        except Exception as e:
            if getattr(e, "_convlens_op", None) is None:  # the innermost op that raised
                with contextlib.suppress(AttributeError):
                    e._convlens_op = str(func)  # type: ignore[attr-defined]
            raise
        if info.written or info.view:  # it may return an argument: as the object the model holds
            run_to_logical = {}
            for r, a in zip(_tensors((run_args, run_kwargs)), tensors):
                run_to_logical[id(r)] = a
                if id(r) in self.meta_cache:
                    run_to_logical[id(self.meta_cache[id(r)])] = a
            out = _map(lambda t: run_to_logical.get(id(t), t), out)
        if recording:
            self.record(func, args, kwargs, out, live, tensors)
        return out

    def _redirect(self, func: Any, name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if name in kwargs:
            return args, {**kwargs, name: _map(self._protect, kwargs[name])}
        names = [a.name for a in func._schema.arguments]
        i = names.index(name)
        if i < len(args):
            args = args[:i] + (_map(self._protect, args[i]),) + args[i + 1:]
        return args, kwargs

    def _run(self, func: Any, info: _Schema, args: tuple, kwargs: dict, live: bool,
             tensors: list[torch.Tensor] | None = None) -> Any:
        """The op on the objects it runs on (``tensors``: theirs, where the caller has them)."""
        if not self.meta:
            return func(*args, **kwargs)
        if _shape_only(func):  # zeros_like(x), x.new_full(...): only x's shape is read, and it is known
            device = kwargs.get("device") or next((t.device for t in _tensors(args)), _META)
            args, kwargs = _map(self.to_meta, args), {**kwargs, "device": device}
        elif live or any(t.device.type == "meta" for t in (_tensors((args, kwargs)) if tensors is None else tensors)):
            if info.device and kwargs.get("device") is not None:
                kwargs = {**kwargs, "device": _META}  # x.to("cpu") of what depends on the input: stays meta
            return _meta_call(func, info, _map(self.to_meta, args), _map(self.to_meta, kwargs))
        if info.written:
            return func(*args, **kwargs)
        # only constants: computed for real so that the model can read their values (a factory
        # asked for on the input's device, meta, is made on the CPU), unless the result would be
        # large (a factory tensor the size of an activation): then on meta
        real_kwargs = {**kwargs, "device": _CPU} if info.device and kwargs.get("device") == _META else kwargs
        probe_kwargs = {**kwargs, "device": _META} if info.device else kwargs
        try:
            probe = func(*_map(self.to_meta, args), **_map(self.to_meta, probe_kwargs))
        except Exception:  # noqa: BLE001 - no meta kernel: the real run decides
            return func(*args, **real_kwargs)
        if sum(t.numel() for t in _tensors(probe)) <= REAL_CONSTANT_LIMIT:
            return func(*args, **real_kwargs)
        return probe

    def whole(self, name: str, func: Any, args: tuple, kwargs: dict, rec_args: tuple, rec_kwargs: dict) -> Any:
        """Run a function with its inner ops unrecorded and record it as the one op ``name``."""
        live = self._current(_tensors((rec_args, rec_kwargs)))
        self.suppress += 1
        try:
            out = func(*args, **kwargs)
        finally:
            self.suppress -= 1
        if self.suppress == 0:
            self.record(name, rec_args, rec_kwargs, out, live)
        return out

    # ------------------------------------------------------------------ versions
    def new_id(self, t: torch.Tensor, kind: str, name: str = "") -> int:
        tid = len(self.tensors)
        self.tensors[tid] = TensorInfo(tid, tuple(t.shape), t.dtype, kind, name, tuple(t.stride()))
        self.ids[id(t)] = tid
        self.keep.append(t)
        return tid

    def _version(self, like: int, live: bool) -> int:
        """A new tensor id with the shape of tensor ``like`` (a version no Python object holds yet)."""
        tid = len(self.tensors)
        old = self.tensors[like]
        self.tensors[tid] = TensorInfo(tid, old.shape, old.dtype, "activation", "", old.stride)
        if live:
            self.live.add(tid)
        return tid

    def ref(self, t: torch.Tensor) -> int:
        tid = self.ids.get(id(t))
        if tid is None:
            kind, name = self.named.get(id(t), ("constant", ""))
            tid = self.new_id(t, kind, name)
        return tid

    def _append(self, op: Any, name: str, args: tuple, kwargs: dict, inputs: list[int], outputs: list[int]) -> OpNode:
        node = OpNode(len(self.nodes), op, name, args, kwargs, inputs, outputs, self.scope[-1])
        self.nodes.append(node)
        return node

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any, live: bool,
               tensors: list[torch.Tensor] | None = None) -> None:
        """Append the op's node (``tensors``: those in its arguments, where the caller has them)."""
        inputs: list[int] = []

        def to_ref(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                tid = self.ref(x)
                inputs.append(tid)
                return TRef(tid)
            return x

        rargs, rkwargs = _map(to_ref, args), _map(to_ref, kwargs)
        name = func if isinstance(func, str) else str(func)
        if tensors is None:
            tensors = _tensors((args, kwargs))
        out_tensors = _tensors(out)
        if live and keeps_values(name):
            self._keep_values(tensors)
        arg_objs = {id(x): x for x in tensors}
        written = [t for t in out_tensors if id(t) in arg_objs]
        outputs = []
        for t in out_tensors:
            outputs.append(self.new_id(t, "activation"))
            if live:
                self.live.add(outputs[-1])
        node = self._append(func, name, rargs, rkwargs, inputs, outputs)
        if not written and not isinstance(func, str) and _schema(func).view and inputs:
            parent = tensors[0]
            parent_view = self.views.get(id(parent))
            root = parent_view.root if parent_view is not None else parent
            for index, t in enumerate(out_tensors):
                self.views[id(t)] = _View(parent, node, index, root, self.ids[id(root)])
        for t in written:
            self._write_back(t)

    def _keep_values(self, tensors: list[torch.Tensor]) -> None:
        """Keep the values of the real constants among an op's arguments (a copy, unless the tensor is
        the model's own, which no op writes into: see :meth:`_protect`)."""
        for t in tensors:
            if t.device.type == "meta" or self.is_live(t) or t.numel() > VALUE_LIMIT:
                continue
            tid = self.ids[id(t)]
            if tid not in self.values:
                value = self.resolve(t).detach()
                self.values[tid] = value if id(t) in self.named else value.clone()

    def _write_back(self, t: torch.Tensor) -> None:
        """``t`` got a new version in place; if it is a view, so does everything it is a view of:
        one ``VIEW_WRITE`` op per link (the parent with the view's region replaced)."""
        path = []
        view = self.views.get(id(t))
        child = t
        while view is not None:
            self.refresh(view.parent)
            old, new = self.ids[id(view.parent)], self.ids[id(child)]
            tid = self._version(old, old in self.live or new in self.live)
            self._append(VIEW_WRITE, VIEW_WRITE, (TRef(old), TRef(new), view.node, view.index), {}, [old, new],
                         [tid])
            self.ids[id(view.parent)] = tid
            path.append(view)
            child = view.parent
            view = self.views.get(id(child))
        for view in path:
            view.synced = self.ids[id(view.root)]

    def refresh(self, t: torch.Tensor) -> None:
        """A view whose root got a new version since it was derived is derived again (its view op
        replayed on the parent's current version) before it is read."""
        stale = []
        view = self.views.get(id(t))
        obj = t
        while view is not None and view.synced != self.ids[id(view.root)]:
            stale.append((obj, view))
            obj = view.parent
            view = self.views.get(id(obj))
        for obj, view in reversed(stale):
            old_parent = view.node.inputs[0]
            parent = self.ids[id(view.parent)]

            def swap(x: Any) -> Any:
                return TRef(parent) if isinstance(x, TRef) and x.id == old_parent else x

            args, kwargs = map_refs(swap, view.node.args), map_refs(swap, view.node.kwargs)
            outputs = [self._version(o, parent in self.live) for o in view.node.outputs]
            self._append(view.node.op, view.node.name, args, kwargs,
                         [parent if i == old_parent else i for i in view.node.inputs], outputs)
            self.ids[id(obj)] = outputs[view.index]
            view.synced = self.ids[id(view.root)]


def map_refs(fn: Any, value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(map_refs(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: map_refs(fn, v) for k, v in value.items()}
    return fn(value)


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def capture(model: nn.Module, inputs: Resolved | Inputs | tuple[int, ...], dtype: torch.dtype = torch.float32,
            grid: str | None = None) -> Capture:
    """Run ``model`` once on ``inputs`` (one shape (N, C, *spatial), :class:`~convlens.inputs.Inputs` or
    their :class:`~convlens.inputs.Resolved` form; ``dtype`` and ``grid`` as in
    :func:`convlens.inputs.resolve`) and record the op graph.

    Tries meta tensors first. When an op cannot run on meta (no meta kernel, a value read from the
    data), falls back to one real CPU forward (documented in ``Capture.fallback``, which names the op);
    a model whose weights are on meta cannot, and raises :class:`NeedsRealWeights`. When the model
    itself fails on the input (a shape mismatch, its own exception, ``sys.exit``), raises
    :class:`ModelError` naming the user's exception, the module (path and class) and the op, without a
    second, real run. Either way the model is left as it was (:func:`convlens.modelstate.preserved`).
    """
    if not isinstance(inputs, Resolved):
        inputs = resolve(model, inputs, dtype, grid)
    try:
        return _capture(model, inputs, meta=True)
    except ConvlensError:
        raise
    except Exception as meta_error:  # noqa: BLE001 - classified below
        if not _meta_limitation(meta_error):
            raise ModelError(f"the model fails on {inputs.describe()}: {_failure(meta_error)} "
                             f"{_check_hint(inputs)}") from None
        reason = _failure(meta_error, first_sentence=True)
        if any(p.device.type == "meta" for p in model.parameters()):
            raise NeedsRealWeights(f"the model cannot run on meta tensors ({reason}), and its weights are on "
                                   "meta, so it cannot be run for real instead: build it with real weights") \
                from None
        try:
            cap = _capture(model, inputs, meta=False)
        except ConvlensError:
            raise
        except Exception as cpu_error:  # noqa: BLE001
            raise ModelError(f"the model fails on {inputs.describe()}: {_failure(cpu_error)} "
                             f"{_check_hint(inputs)}") from None
        cap.fallback = f"model cannot run on meta tensors ({reason}); ran once on CPU instead"
        return cap


def _check_hint(inputs: Resolved) -> str:
    if inputs.single:
        return "(check --input / input_shape: (N, C, *spatial))"
    return "(check the inputs: names, shapes with the batch, dtypes and constant arguments)"


_META_LIMITS = ("NotImplementedError", "DataDependentOutputException", "DynamicOutputShapeException")


def _meta_limitation(e: Exception) -> bool:
    """Whether a failure on meta tensors is meta's (an op without a meta kernel, a value read from the
    data, a meta tensor met with a real one) rather than the model's own (a shape mismatch, its
    exception): only then can a real run succeed where the meta run failed."""
    return (any(c.__name__ in _META_LIMITS for c in type(e).__mro__)
            or "meta" in str(e).lower())


def _failure(e: BaseException, first_sentence: bool = False) -> str:
    """'ValueError: text, at aten.convolution.default in module 'a.b' (Conv2d)': the user's exception
    type and first line, the op that raised and the innermost module that was running."""
    message = first_line(e) if str(e).strip() else ""
    if first_sentence:
        message = message.split(". ")[0]  # some messages go on for lines
    op = getattr(e, "_convlens_op", None)
    where = getattr(e, "_convlens_where", None)
    text = f"{type(e).__name__}{': ' + message if message else ''}"
    if op:
        text += f", at {op}"
    return text + _in_module(where)


def _in_module(where: tuple[str, str, str] | None) -> str:
    """' in module 'a.b' (Conv2d) on input 1x4x64x64', ' in the model (Net) on ...' or ''."""
    if where is None:
        return ""
    row, cls, shapes = where
    text = f" in module {row!r} ({cls})" if row else f" in the model ({cls})"
    return text + (f" on input {shapes}" if shapes else "")


def _capture(model: nn.Module, inputs: Resolved, meta: bool) -> Capture:
    named: dict[int, tuple[str, str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        named.setdefault(id(p), ("param", name))
    for name, b in model.named_buffers(remove_duplicate=False):
        named.setdefault(id(b), ("buffer", name))
    names = _module_names(model)
    calls: list[ModuleCall] = []
    open_calls: list[tuple[ModuleCall, Any]] = []  # with their arguments, for error messages
    seen: dict[str, int] = {}

    def pre_hook(module: nn.Module, args: Any) -> None:
        path = names.get(id(module))
        if path is None:
            return
        seen[path] = seen.get(path, 0) + 1
        row = path if seen[path] == 1 else f"{path}#{seen[path]}"
        call = ModuleCall(row, path, 0 if path == "" else path.count(".") + 1, type(module).__name__,
                          not any(True for _ in module.children()), first_op=len(st.nodes))
        calls.append(call)
        open_calls.append((call, args))
        st.scope.append(row)

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        if names.get(id(module)) is None or not open_calls:
            return
        call, _ = open_calls.pop()
        st.scope.pop()
        call.outputs = _output_refs(output, st)
        call.end_op = len(st.nodes)

    depth = max((p.count(".") + 1 for p in names.values() if p), default=0)
    # (out of a caller's inference_mode: there the dispatch would see conv2d and other composite ops
    # whole, not the aten ops the rules are written for)
    with torch.inference_mode(False), preserved(model) as snapshot, _recursion_room(depth):
        st = _State(meta, named, lambda: {t.untyped_storage().data_ptr() for t in snapshot.tensors()
                                          if t.device.type != "meta" and t.numel() > 0})
        input_ids: dict[str, int] = {}
        stop = None

        def record_input(name: str, t: torch.Tensor) -> None:
            input_ids[name] = st.new_id(t, "input")
            st.live.add(input_ids[name])
        args, kwargs = inputs.build(meta, record_input)
        handles = [nn.modules.module.register_module_forward_pre_hook(pre_hook),
                   nn.modules.module.register_module_forward_hook(post_hook)]
        try:
            model.eval()
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.no_grad())
                stack.enter_context(_FunctionLevel(st))
                stack.enter_context(_Recorder(st))
                try:
                    out = model(*args, **kwargs)
                except _Stopped as e:
                    stop = _stop(e.op, open_calls, len(st.nodes))
                    out = None
            output_ids = _output_refs(out, st)
        except SystemExit as e:
            where = _where(open_calls)
            raise ModelError(f"the model's code called sys.exit({e.code!r}){_in_module(where)}; convlens "
                             "needs a forward that returns") from None
        except Exception as e:
            with contextlib.suppress(AttributeError):
                e._convlens_where = _where(open_calls)  # type: ignore[attr-defined]
            raise
        finally:
            for h in handles:
                h.remove()
    if not output_ids and stop is None:
        raise ConvlensError("the model returned no tensor; convlens needs at least one tensor output")
    return Capture(st.tensors, st.nodes, calls, input_ids[inputs.grid], output_ids, values=st.values,
                   stop=stop, inputs=input_ids)


def _stop(op: str, open_calls: list[tuple[ModuleCall, Any]], end: int) -> DataDependentStop:
    """Close the module calls still running at a data-dependent op: they end there, with no output."""
    for call, _ in open_calls:
        call.end_op = end
    cut = tuple(call.name for call, _ in reversed(open_calls))
    inner = open_calls[-1][0] if open_calls else None
    open_calls.clear()
    return DataDependentStop(op.removesuffix(".default"), inner.name if inner else "",
                             inner.type_name if inner else "", cut)


@contextlib.contextmanager
def _recursion_room(module_depth: int):
    """The global module hooks add a frame to every nested module call: raise Python's recursion
    limit by that much while the model runs, so that whatever plain PyTorch runs runs here too."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(old + 2 * module_depth)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def _where(open_calls: list[tuple[ModuleCall, Any]]) -> tuple[str, str, str] | None:
    """(row, class, its input shapes) of the innermost module call still running."""
    if not open_calls:
        return None
    call, args = open_calls[-1]
    return call.name, call.type_name, ", ".join("x".join(map(str, t.shape)) for t in _tensors(args))


def _output_refs(output: Any, st: _State, depth: int = 0) -> list[tuple[str, int]]:
    """(suffix, tensor id) for every tensor in a module's output: "" for a tensor, "[0]", "[key]"; a
    plain object's tensor attributes as "[name]" (torchvision's ImageList: "[0][tensors]"), a few levels
    deep."""
    if isinstance(output, torch.Tensor):
        st.refresh(output)
        return [("", st.ref(output))]
    refs: list[tuple[str, int]] = []
    if depth >= OUTPUT_DEPTH:
        return refs
    if isinstance(output, dict) or hasattr(output, "items") and callable(output.items):
        items = list(output.items())
    elif isinstance(output, (list, tuple)):
        items = list(enumerate(output))
    elif type(output) not in _LEAVES and not isinstance(output, nn.Module) and hasattr(output, "__dict__"):
        items = [(k, v) for k, v in vars(output).items() if not k.startswith("_")]
    else:
        return refs
    for key, value in items:
        for suffix, tid in _output_refs(value, st, depth + 1):
            refs.append((f"[{key}]{suffix}", tid))
    return refs


OUTPUT_DEPTH = 6
"""Containers and objects a module's output is searched for tensors through, at most."""
