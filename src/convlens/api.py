"""The public entry point: ``analyze(model, input_shape) -> Report``."""

from __future__ import annotations

import contextlib
import gc
from bisect import bisect_left
from dataclasses import replace
from typing import Sequence

import torch
import torch.nn as nn

from .analysis import GraphGeometry, walk
from .capture import Capture, capture
from .diagnostics import collect_diagnostics, short_op_name
from .errors import ConvlensError
from .geometry import Constant, Global, Local, Paired, Unknown
from .inputs import Inputs, resolve
from .memory import peak_activation_bytes
from .modelstate import check_model, model_dtype
from .report import Analysis, DimLayout, Layer, LayerArgs, Report, Totals
from .rules.args import conv_args, is_convolution, is_pool, pad_args, pool_args
from .rules.registry import Digit, extras, key_of


@contextlib.contextmanager
def _gc_paused():
    """The walk allocates many small short-lived objects; a full cyclic collection of a large model's
    heap in the middle of it costs more than the whole analysis. Reference counting still frees."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def analyze(model: nn.Module, input_shape: Sequence[int] | Inputs, *, dtype: torch.dtype | None = None,
            name: str | None = None, grid: str | None = None) -> Report:
    """Geometry and cost of every module call of ``model`` on an input of ``input_shape``.

    ``input_shape`` includes the batch: (N, C, *spatial), 1 to 3 spatial axes. A model called with
    several inputs, keyword or dict inputs, integer tensors or constant arguments takes an
    :class:`~convlens.inputs.Inputs` instead: ``Inputs(left=(1, 3, 64, 64), right=(1, 3, 64, 64))``;
    ``grid`` names the input whose pixels geometry is measured in (default: the only floating
    (N, C, *spatial) one; see :mod:`convlens.inputs`). The model runs once on meta tensors in eval mode
    (restored afterwards); weights are neither copied nor moved. ``dtype`` is the dtype of inputs given by
    shape without one (it decides activation bytes and the float arithmetic of interpolation taps;
    default: the model's own, :func:`model_dtype`).
    """
    check_model(model, "analyze")
    if dtype is None:
        dtype = model_dtype(model)
    elif not isinstance(dtype, torch.dtype):
        raise ConvlensError(f"dtype must be a torch.dtype such as torch.float16, got {dtype!r}")
    if grid is not None and not isinstance(grid, str):
        raise ConvlensError(f"grid must be the name of an input, got {grid!r}")
    inputs = resolve(model, input_shape, dtype, grid)
    shape = inputs.grid_shape
    with _gc_paused():
        cap = capture(model, inputs)
        _check_batched(cap, shape)
        graph = walk(cap)
        layers = _rows(model, cap, graph, shape[2:], None if inputs.single else inputs.grid)
        diagnostics = collect_diagnostics(cap, graph, layers, shape[2:])
    notes = []
    if cap.fallback:
        notes.append(cap.fallback)
    for op, count in sorted({**graph.no_rule, **graph.untracked}.items()):
        calls = f"{count} call{'s' if count > 1 else ''}"
        if op in graph.no_rule:
            notes.append(f"no geometry rule for {op} ({calls}): the axes it touches are unknown")
        else:
            notes.append(f"untracked: {op}, {calls}: the axes it touches are unknown")
    notes.extend(sorted(set().union(*(_caveats(graph.geoms[layer.tensor]) for layer in layers))))
    params = sum(p.numel() for p in model.parameters())
    totals = Totals(params=params, macs=sum(c.macs for c in graph.costs.values()),
                    bias_flops=sum(c.bias_flops for c in graph.costs.values()),
                    peak_activation_bytes=peak_activation_bytes(cap))
    stop = cap.stop
    if stop is not None:  # (what was counted is the cost before the stop; the model's own depends on the data)
        stop = replace(stop, unreached=_unreached(model, cap))
        totals = Totals(params, None, None, None, before_stop=totals)
        cut = ", ".join(name or "(model)" for name in stop.cut)
        notes.insert(0, f"stopped: {stop.describe()}; no rows for the calls it cut short ({cut})"
                     + (f"; not reached: {', '.join(stop.unreached)}" if stop.unreached else ""))
    return Report(name or type(model).__name__, shape, layers, totals, notes, {**graph.no_rule, **graph.untracked},
                  backend="cpu" if cap.fallback else "meta", analysis=Analysis(cap, graph),
                  diagnostics=diagnostics, inputs=inputs.tensors, stopped=stop)


def _unreached(model: nn.Module, cap: Capture) -> tuple[str, ...]:
    """Modules never called, nor any module inside them, whose parent was called (or cut short at the
    stop), in the model's order (a ModuleList whose members ran is not among them)."""
    called = {c.path for c in cap.calls}
    ran_inside = {".".join(p.split(".")[:i]) for p in called for i in range(1, p.count(".") + 2)}
    return tuple(path for path, _ in model.named_modules() if path and path not in ran_inside
                 and path.rpartition(".")[0] in called)


def _check_batched(cap: Capture, shape: tuple[int, ...]) -> None:
    """Refuse an input the model treated as unbatched: a conv or a resampling that adds a batch dim to
    the network input itself (torch's convs do that to an input without one; a detector's transform
    resizes ``image[None]``), or a pool that reads the input with no batch dim (torch's pools take one). Judged by what the model did, not by the number of dims:
    (3, 16, 16) is a valid batched input of a Conv1d."""
    x = cap.input_id
    # a batch dim put in front of the input, or of what the model made of it at its shape (a
    # detector's transform normalizes the image first)
    added = {n.outputs[0] for n in cap.nodes if key_of(n.op) is torch.ops.aten.unsqueeze and len(n.inputs) == 1
             and (n.inputs[0] == x or cap.tensors[n.inputs[0]].kind == "activation"
                  and cap.tensors[n.inputs[0]].shape == tuple(shape))
             and n.arg(1, "dim") in (0, -len(shape) - 1) and n.outputs}
    for node in cap.nodes:
        if is_convolution(node):
            c = conv_args(node, cap.tensors)
            read, spatial = c.input.id, c.k
            unbatched = read in added and len(shape) == spatial + 1
        elif node.name.startswith(("aten.upsample_", "aten._upsample_")) and node.inputs and node.inputs[0] in added:
            # (an image given without its batch, resized after x[None]: torchvision's detection transform)
            spatial = len(cap.tensors[node.inputs[0]].shape) - 2
            unbatched = len(shape) == spatial + 1
        elif is_pool(node):
            p = pool_args(node)
            read, spatial = p.input.id, p.k
            unbatched = read == x and len(shape) == spatial + 1
        else:
            continue
        if unbatched:
            row = cap.row_of_node.get(node.index, "")
            kind = next((c.type_name for c in cap.calls if c.name == row), short_op_name(node.name))
            where = f"{kind} {row!r}" if row else f"{kind}, the model,"
            raise ConvlensError(f"the model treats the input {tuple(shape)} as unbatched ({where} takes it as "
                                f"(C, *spatial) with {spatial} spatial axes): input_shape is (N, C, *spatial), "
                                f"so write {(1, *shape)} (on the CLI: --input {'x'.join(map(str, shape))})")


def _module_params(model: nn.Module) -> dict[str, int]:
    """Parameters of every module path, recursively, shared parameters counted once: each
    parameter is added to every path above the modules that hold it (once per path). Where no
    parameter or module is held twice, each path's total is its own parameters plus its children's
    (one pass over the tree); else :func:`_shared_params`."""
    totals: dict[str, int] = {}
    params: set[int] = set()
    modules: set[int] = set()

    def walk(module: nn.Module, path: str) -> int | None:
        if id(module) in modules:
            return None
        modules.add(id(module))
        total = 0
        for p in module._parameters.values():
            if p is not None:
                if id(p) in params:
                    return None
                params.add(id(p))
                total += p.numel()
        for name, child in module._modules.items():
            if child is not None:
                below = walk(child, f"{path}.{name}" if path else name)
                if below is None:
                    return None
                total += below
        totals[path] = total
        return total
    return totals if walk(model, "") is not None else _shared_params(model)


def _shared_params(model: nn.Module) -> dict[str, int]:
    """:func:`_module_params` of a model that holds a parameter or a module twice."""
    totals: dict[str, int] = {}
    seen: set[tuple[str, int]] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        parts = name.split(".")[:-1]
        for i in range(len(parts) + 1):
            path = ".".join(parts[:i])
            if (path, id(p)) not in seen:
                seen.add((path, id(p)))
                totals[path] = totals.get(path, 0) + p.numel()
    return {path: totals.get(path, 0) for path, _ in model.named_modules()}


def _rows(model: nn.Module, cap: Capture, graph: GraphGeometry, input_size: tuple[int, ...],
          grid: str | None = None) -> list[Layer]:
    params = _module_params(model)
    merge_at = [m.node.index for m in graph.merges]  # (in execution order)
    windowed_at = [n.index for n in cap.nodes if is_convolution(n) or is_pool(n)]  # (convs and pools)
    producers = cap.producers
    # (running totals over the ops in execution order: a call's ops are one run of them)
    macs_before, bias_before = [0], [0]
    for i in range(len(cap.nodes)):
        macs_before.append(macs_before[-1] + graph.costs[i].macs)
        bias_before.append(bias_before[-1] + graph.costs[i].bias_flops)
    rows = []
    for call in cap.calls:
        macs = macs_before[call.end_op] - macs_before[call.first_op]
        bias = bias_before[call.end_op] - bias_before[call.first_op]
        for suffix, tid in call.outputs:
            geom = graph.geoms[tid]
            producer = producers.get(tid)
            inside = producer is not None and call.first_op <= producer.index < call.end_op
            op = short_op_name(producer.name) if call.is_leaf and inside else call.type_name
            merges = graph.merges[bisect_left(merge_at, call.first_op):bisect_left(merge_at, call.end_op)]
            aligned = None if not merges else all(m.aligned for m in merges)
            shown = _shown(geom)
            notes = _notes(shown, geom.global_context, input_size, grid)
            notes += sorted(_caveats(geom, shown))
            one = call.is_leaf and bisect_left(windowed_at, call.end_op) - bisect_left(windowed_at, call.first_op) == 1
            args = _layer_args(cap, call) if one else None
            rows.append(Layer(
                name=call.name + suffix, op=op, type=call.type_name, depth=call.depth,
                output_shape=cap.tensors[tid].shape, params=params.get(call.path, 0), macs=macs,
                bias_flops=bias, activation_bytes=cap.tensors[tid].nbytes, aligned=aligned,
                global_context=geom.global_context, notes=notes, axes=shown, input_size=input_size,
                windows=geom.windows, axis_dims=_axis_dims(geom), tensor=tid,
                layout=tuple(DimLayout(tuple(dim), *extras(dim)) for dim in geom.dims), args=args))
    return rows


def _layer_args(cap: Capture, call) -> LayerArgs | None:
    """A leaf call's one convolution or pool as it ran (:class:`LayerArgs`), with the padding ops
    before it in the same call added to its padding; None where the call ran none or several."""
    nodes = cap.nodes[call.first_op:call.end_op]
    convs = [n for n in nodes if is_convolution(n)]
    pools = [n for n in nodes if is_pool(n)]
    if len(convs) + len(pools) != 1:
        return None
    node = (convs or pools)[0]
    if convs:
        c = conv_args(node, cap.tensors)
        x, kernel, stride, padding, dilation, groups, transposed = (c.input, c.kernel, c.stride, c.padding,
                                                                    c.dilation, c.groups, c.transposed)
    else:
        p = pool_args(node)
        x, kernel, stride, padding, dilation, groups, transposed = (p.input, p.kernel, p.stride, p.padding,
                                                                    p.dilation, None, False)
    rank, k = len(cap.tensors[x.id].shape), len(kernel)
    sides = [[q, q] for q in padding]
    mode = "zeros"
    for n in nodes[:nodes.index(node)]:
        pad = pad_args(n)
        if pad is None:
            continue
        for d, (before, after) in pad.per_dim(len(cap.tensors[pad.input.id].shape)).items():
            if 0 <= d - (rank - k) < k:
                sides[d - (rank - k)][0] += before
                sides[d - (rank - k)][1] += after
        if pad.mode != "zeros":
            mode = pad.mode
    return LayerArgs(kernel, stride, tuple((a, b) for a, b in sides), dilation, groups, mode, transposed)


def _shown(geom) -> tuple:
    """The states a row shows: attention scores within windows (key digits on a dim) pair a query
    with a key, as global attention's scores do. The walk keeps their windows for what follows (the
    query's window united with its whole key window: exact after the softmax over the keys), which
    would overstate a single pair."""
    pairs = {f.axis for dim in geom.dims for f in dim if isinstance(f, Digit) and f.pair}
    return tuple(Paired(frozenset({"attention within windows (pairs query and key positions: attention scores)"}))
                 if a in pairs and isinstance(s, Local) else s for a, s in enumerate(geom.axes))


def _caveats(geom, shown: tuple | None = None) -> frozenset[str]:
    """The row's caveats (``Plan.caveats``), where it shows a window or a global axis they qualify
    (attention scores, shown as pairs, state no window); ``shown``: ``_shown(geom)``, if known."""
    if not geom.caveats:
        return frozenset()
    return geom.caveats if any(isinstance(s, (Local, Global)) for s in shown or _shown(geom)) else frozenset()


def _axis_dims(geom) -> tuple[int | None, ...]:
    where = {dim[0][0]: d for d, dim in enumerate(geom.dims)
             if len(dim) == 1 and dim[0][0] is not None and extras(dim) == (0, 0)}
    return tuple(where.get(a) if isinstance(s, Local) else None for a, s in enumerate(geom.axes))


def _notes(axes, global_context: bool, input_size: tuple[int, ...], grid: str | None = None) -> list[str]:
    """The row's notes; ``grid``: the grid input's name where the model takes several inputs."""
    notes = []
    source = "the input" if grid is None else f"the grid input {grid!r}"
    for a, state in enumerate(axes):
        if isinstance(state, Paired):
            notes.append(f"axis {a}: attention scores: each unit pairs a query position with a key position and "
                         "sees both their windows, which no single window states")
        elif isinstance(state, Unknown):
            notes.append(f"axis {a}: unknown because of {', '.join(sorted(state.ops))}")
        elif isinstance(state, Constant):
            notes.append(f"axis {a}: does not depend on {source}")
        elif isinstance(state, Global) and state.span != (0, input_size[a] - 1):
            notes.append(f"axis {a}: global, but only over input pixels {state.span} (the rest never reaches it)"
                         if state.span else f"axis {a}: global over nothing real (only padding reaches it)")
        elif isinstance(state, Local) and state.stride is None:
            notes.append(f"axis {a}: no single effective stride (inputs of a merge move at different rates, or "
                         "windows that only grow: a recurrent layer in one direction)")
    if global_context:
        notes.append("global context: units also see the whole input through a global branch")
    return notes
