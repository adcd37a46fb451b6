"""Capture: run the model once and record every aten op with its tensors and module scope.

The model runs under a ``TorchDispatchMode`` on ``meta`` tensors: every real tensor an op receives
(parameters, buffers, constants) is swapped for a meta tensor of the same shape, so no weight is copied
and no activation is allocated. The model itself is never modified: scopes come from global module
hooks that are removed in ``finally``, and eval mode is restored afterwards.

If the model cannot run on meta (data-dependent control flow such as ``.item()``), it is run once for
real on CPU with the same recording, and the reason is kept in :attr:`Capture.fallback`.

Recorded events are plain data: :class:`OpNode` (op, args with tensors replaced by :class:`TRef`,
module scope) and :class:`ModuleCall` (row name, input and output tensor ids, the ops it issued).
Tensors are identified by version: an in-place op gives its tensor a new id. Writes through a view
into its base are not tracked (the base keeps its old geometry); no op in torchvision's models needs it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .errors import ConvlensError

CIRCULAR_PAD = "convlens.circular_pad"
"""Synthetic op: F.pad(mode='circular') recorded whole (aten decomposes it into writes into views)."""


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
        return n * (torch.finfo(self.dtype).bits if self.dtype.is_floating_point
                    else torch.iinfo(self.dtype).bits if self.dtype != torch.bool else 8) // 8


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
    inplace: bool = False

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Positional argument i, or keyword ``name``, following the aten schema order."""
        if i < len(self.args):
            return self.args[i]
        return self.kwargs.get(name, default)


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

    def row_of_nodes(self) -> dict[int, str]:
        """The row (innermost module call) that issued each op, by op index."""
        row_of: dict[int, str] = {}
        for call in sorted(self.calls, key=lambda c: c.depth):
            for i in range(call.first_op, call.end_op):
                row_of[i] = call.name
        return row_of


def _map(fn: Any, value: Any) -> Any:
    """Apply fn to every tensor in an aten argument (tensors, or lists/tuples of them, any depth).
    A lean stand-in for pytree: aten arguments hold no other containers, and this runs per op."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: _map(fn, v) for k, v in value.items()}
    return value


def _tensors(value: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    _map(out.append, value)
    return out


def _is_pad(func: Any) -> bool:
    return func is F.pad or func is getattr(torch._C._nn, "pad", None)


class _Recorder(TorchDispatchMode):
    def __init__(self, state: "_State"):
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        st = self.state
        if st.meta:
            run_args, run_kwargs = _map(st.to_run_device, args), _map(st.to_run_device, kwargs)
        else:
            run_args, run_kwargs = args, kwargs
        out = func(*run_args, **run_kwargs)
        if st.suppress == 0:
            st.record(func, args, kwargs, out)
        return out


class _FunctionLevel(TorchFunctionMode):
    """Records ops that aten would decompose into writes through views (circular padding)."""

    def __init__(self, state: "_State"):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        mode = kwargs.get("mode", args[2] if len(args) > 2 else "constant")
        if not (_is_pad(func) and mode == "circular"):
            return func(*args, **kwargs)
        st = self.state
        st.suppress += 1
        try:
            out = func(*args, **kwargs)
        finally:
            st.suppress -= 1
        pad = kwargs.get("pad", args[1] if len(args) > 1 else None)
        st.record(CIRCULAR_PAD, (args[0], tuple(pad)), {}, out)
        return out


class _State:
    def __init__(self, meta: bool, named: dict[int, tuple[str, str]]):
        self.meta = meta
        self.named = named  # id(tensor) -> (kind, name) for params and buffers
        self.ids: dict[int, int] = {}  # id(python tensor) -> current tensor id
        self.keep: list[torch.Tensor] = []  # keeps python ids unique while recording
        self.meta_cache: dict[int, torch.Tensor] = {}
        self.tensors: dict[int, TensorInfo] = {}
        self.nodes: list[OpNode] = []
        self.suppress = 0
        self.scope: list[str] = [""]

    def to_run_device(self, t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return t
        cached = self.meta_cache.get(id(t))
        if cached is None:
            cached = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device="meta")
            self.meta_cache[id(t)] = cached
            self.keep.append(t)
        return cached

    def new_id(self, t: torch.Tensor, kind: str, name: str = "") -> int:
        tid = len(self.tensors)
        self.tensors[tid] = TensorInfo(tid, tuple(t.shape), t.dtype, kind, name, tuple(t.stride()))
        self.ids[id(t)] = tid
        self.keep.append(t)
        return tid

    def ref(self, t: torch.Tensor) -> int:
        tid = self.ids.get(id(t))
        if tid is None:
            kind, name = self.named.get(id(t), ("constant", ""))
            tid = self.new_id(t, kind, name)
        return tid

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        inputs: list[int] = []

        def to_ref(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                tid = self.ref(x)
                inputs.append(tid)
                return TRef(tid)
            return x

        rargs, rkwargs = _map(to_ref, args), _map(to_ref, kwargs)
        arg_objs = {id(x) for x in _tensors((args, kwargs))}
        outputs, inplace = [], False
        for t in _tensors(out):
            inplace |= id(t) in arg_objs
            outputs.append(self.new_id(t, "activation"))
        name = func if isinstance(func, str) else str(func)
        self.nodes.append(OpNode(len(self.nodes), func, name, rargs, rkwargs, inputs, outputs,
                                 self.scope[-1], inplace))


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


def capture(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype = torch.float32
            ) -> Capture:
    """Run ``model`` once on an input of ``input_shape`` and record the op graph.

    Tries meta tensors first; falls back to one real CPU forward (documented in ``Capture.fallback``).
    """
    try:
        return _capture(model, input_shape, dtype, meta=True)
    except ConvlensError:
        raise
    except Exception as meta_error:  # noqa: BLE001 - any failure on meta means: try for real
        reason = f"{type(meta_error).__name__}: {str(meta_error).splitlines()[0] if str(meta_error) else ''}"
        if any(p.device.type == "meta" for p in model.parameters()):
            raise ConvlensError(f"the model fails on input shape {tuple(input_shape)}: {reason} "
                                "(its weights are on meta, so it cannot be run for real instead)") from None
        try:
            cap = _capture(model, input_shape, dtype, meta=False)
        except Exception as cpu_error:  # noqa: BLE001
            first = str(cpu_error).splitlines()[0] if str(cpu_error) else type(cpu_error).__name__
            raise ConvlensError(
                f"the model fails on input shape {tuple(input_shape)}: {first} "
                "(check --input / input_shape: (N, C, *spatial))") from None
        cap.fallback = f"model cannot run on meta tensors ({reason}); ran once on CPU instead"
        return cap


def _capture(model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype, meta: bool) -> Capture:
    named: dict[int, tuple[str, str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        named.setdefault(id(p), ("param", name))
    for name, b in model.named_buffers(remove_duplicate=False):
        named.setdefault(id(b), ("buffer", name))
    st = _State(meta, named)
    names = _module_names(model)
    calls: list[ModuleCall] = []
    open_calls: list[ModuleCall] = []
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
        open_calls.append(call)
        st.scope.append(row)

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        if names.get(id(module)) is None or not open_calls:
            return
        call = open_calls.pop()
        st.scope.pop()
        call.end_op = len(st.nodes)
        call.outputs = _output_refs(output, st)

    device = "meta" if meta else "cpu"
    x = torch.zeros(input_shape, dtype=dtype, device=device) if meta else torch.randn(input_shape, dtype=dtype)
    input_id = st.new_id(x, "input")
    was_training = {m: m.training for m in model.modules()}
    handles = [nn.modules.module.register_module_forward_pre_hook(pre_hook),
               nn.modules.module.register_module_forward_hook(post_hook)]
    try:
        model.eval()
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.no_grad())
            stack.enter_context(_FunctionLevel(st))
            stack.enter_context(_Recorder(st))
            out = model(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    output_ids = _output_refs(out, st)
    if not output_ids:
        raise ConvlensError("the model returned no tensor; convlens needs at least one tensor output")
    return Capture(st.tensors, st.nodes, calls, input_id, output_ids)


def _output_refs(output: Any, st: _State) -> list[tuple[str, int]]:
    """(suffix, tensor id) for every tensor in a module's output: "" for a tensor, "[0]", "[key]"."""
    if isinstance(output, torch.Tensor):
        return [("", st.ref(output))]
    refs: list[tuple[str, int]] = []
    if isinstance(output, dict) or hasattr(output, "items") and callable(output.items):
        items = list(output.items())
    elif isinstance(output, (list, tuple)):
        items = list(enumerate(output))
    else:
        return refs
    for key, value in items:
        for suffix, tid in _output_refs(value, st):
            refs.append((f"[{key}]{suffix}", tid))
    return refs
