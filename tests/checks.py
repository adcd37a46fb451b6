"""Compare a convlens report with the gradient oracle (tests/oracle.py) and torch's own shapes.

Expected values come only from the oracle and torch; convlens's numbers are what is under test.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn

import convlens
from convlens.geometry import Constant, Global, Local, Unknown
from convlens.rules.registry import Digit
from oracle import linearized, probe_many, torch_shapes, unbounded_geometry


@dataclass
class Checked:
    windows: int = 0
    shapes: int = 0
    unbounded: int = 0
    coverage: int = 0
    tokens: int = 0  # rows probed through a token layout (a flattened grid, extra tokens)
    skipped: list[str] = field(default_factory=list)


def _layout(layer: convlens.Layer, k: int) -> tuple[int, list[int]] | None:
    """(channel dim, tensor dims in probe order) if the row's tensor is (N, C, *spatial) up to a
    moved channel dim, with local axes in input order; else None (the oracle cannot probe it)."""
    rank = len(layer.output_shape)
    if rank != k + 2:
        return None
    if any(d is None and isinstance(s, Local) and s.n > 1 for d, s in zip(layer.axis_dims, layer.axes)):
        return None  # a local axis flattened into another dim: the oracle cannot index it
    local_dims = [d for d in layer.axis_dims if d is not None]
    if local_dims != sorted(local_dims):
        return None
    # a global axis that keeps its positions is on the dim whose layout holds it whole (with no
    # extra tokens, which would move its index)
    held = {f[0]: d for d, dim in enumerate(layer.layout) for f in dim.factors
            if f[0] is not None and not dim.before and not dim.after}
    axis_dims = [held.get(a) if d is None else d for a, d in enumerate(layer.axis_dims)]
    found = []
    for c in range(1, rank):
        spatial = [d for d in range(1, rank) if d != c]
        if all(d in spatial for d in local_dims) and all(
                d is None or spatial[a] == d for a, d in enumerate(axis_dims)):
            found.append((c, spatial))
    if len(found) > 1 and any(d is None for d in axis_dims):
        # a global axis's dim is not known: the channel dim is ambiguous, unless every other choice
        # is a dim of size 1 (a pooled axis), where the probe is the same
        ones = [c for c, _ in found if c != 1]
        if not (found[0][0] == 1 and all(layer.output_shape[c] == 1 for c in ones)):
            return None
    return found[0] if found else None


def _token_channel(layer: convlens.Layer) -> int | None:
    """The channel dim of a token row (B, N, C) or (B, C, N) whose dim N holds every local axis
    (a flattened grid, perhaps with extra tokens), per the row's layout; else None."""
    if len(layer.output_shape) != 3:
        return None
    local = {a for a, s in enumerate(layer.axes) if isinstance(s, Local)}
    holders = [d for d, dim in enumerate(layer.layout) if any(a is not None for a, _ in dim.factors)]
    if len(holders) != 1 or holders[0] == 0:
        return None
    if not local <= {a for a, _ in layer.layout[holders[0]].factors}:
        return None
    return 3 - holders[0]


def _window_channel(layer: convlens.Layer) -> int | None:
    """The channel dim of a row whose tensor holds split axes (a window partition: (B*nW, N, C)),
    when every other dim holds spatial digits and every local axis is among them; else None."""
    holders = [d for d, dim in enumerate(layer.layout)
               if any(isinstance(f, Digit) or f[0] is not None for f in dim.factors)]
    rest = [d for d in range(len(layer.output_shape)) if d not in holders]
    if len(rest) == 2 and rest[0] == 0 and layer.output_shape[0] == 1:
        rest = rest[1:]  # (a batch of one beside channels and the digits: MobileViT-V2's patches)
    digits = {f.axis for d in holders for f in layer.layout[d].factors if isinstance(f, Digit)}
    if not digits or len(rest) != 1 or any(layer.layout[d].before or layer.layout[d].after for d in holders):
        return None
    held = digits | {f[0] for d in holders for f in layer.layout[d].factors if not isinstance(f, Digit)}
    if not {a for a, s in enumerate(layer.axes) if isinstance(s, Local)} <= held:
        return None
    return rest[0]


def _through_recurrent(report: convlens.Report, layer: convlens.Layer) -> bool:
    """Whether paths to the row run through a recurrent layer, whose unrolled steps coverage does not
    count (it says so; the windows are still checked)."""
    try:
        report.coverage(layer.name, [0] * len(layer.axes))
    except convlens.ConvlensError as e:
        if "recurrent layer" in str(e):
            return True
        raise
    return False


def _units(layer: convlens.Layer) -> list[tuple[int, ...]]:
    """Corner, edge and centre units of the row's local axes (index 0 along other axes)."""
    per_axis = []
    for state in layer.axes:
        if isinstance(state, Local):
            per_axis.append(sorted({0, state.n - 1, state.n // 2}))
        else:
            per_axis.append([0])
    return list(itertools.product(*per_axis))


def check_against_oracle(model: nn.Module, input_shape: Sequence[int], *, big_shape: Sequence[int] | None = None,
                         rows: Sequence[str] | None = None, tol: float = 0.0, max_rows: int | None = None,
                         local_products: bool = False, report: convlens.Report | None = None,
                         prefix: str = "") -> Checked:
    """Assert shapes, clipped windows of corner/edge/centre units, and (with ``big_shape``) rf,
    stride and offset of every row against torch and the gradient oracle.

    ``local_products``: the model has products over positions that are local (attention within
    windows) as well as global ones. The oracle's detached copy cuts every product, so for rows
    with global context it bounds the local window from both sides instead of giving it: the
    detached support lies inside it, and it lies inside the full support.

    ``report``: a report made elsewhere to check instead of ``analyze(model, input_shape)`` (a model
    called with several inputs): ``model`` is then a one-input stand-in that calls it on the grid input
    with the other inputs fixed, holding it at the module path ``prefix`` ("model.")."""
    model = copy.deepcopy(model).double().eval()
    if report is None:
        report = convlens.analyze(model, input_shape, dtype=torch.float64)
    out = Checked()
    shapes = torch_shapes(model, input_shape, all_calls=True)

    def at(name: str) -> str:
        """A row name of the report as a module path of ``model``."""
        if not prefix:
            return name
        return prefix.rstrip(".") + (name if not name or name.startswith(("[", "#")) else "." + name)
    for layer in report:
        base = at(layer.name).split("[")[0]
        if base in shapes and "[" not in layer.name:
            assert tuple(layer.output_shape) == tuple(shapes[base]), (layer.name, layer.output_shape, shapes[base])
            out.shapes += 1
    lin = linearized(model)
    lin_local = linearized(model, detach_global=True)
    k = len(input_shape) - 2
    selected = [layer for layer in report if rows is None or layer.name in rows]
    for layer in selected[:max_rows]:
        if any(isinstance(s, Unknown) for s in layer.axes):
            assert any("unknown" in n for n in layer.notes), (layer.name, layer.notes)
            out.skipped.append(f"{layer.name}: unknown")
            continue
        if all(isinstance(s, Constant) for s in layer.axes):
            continue
        if layer.name.count("[") > 1:
            out.skipped.append(f"{layer.name}: a tensor nested in the output")
            continue
        if not report.analysis.capture.tensors[layer.tensor].dtype.is_floating_point:
            out.skipped.append(f"{layer.name}: no gradient reaches an integer tensor (max pooling's indices)")
            continue
        name = at(layer.name[:-3] if layer.name.endswith("[0]") else layer.name)  # (the oracle reads "[key]")
        if all(isinstance(s, Global) for s in layer.axes) and len(layer.output_shape) > 2 \
                and all(s.reach is None for s in layer.axes):
            # every unit sees the span along every axis: any unit will do (the first one, channels
            # along dim 1 united)
            res = probe_many(lin, input_shape, name, [(0,) * (len(layer.output_shape) - 2)], channel_dim=1, tol=tol)[0]
            assert layer.window(*([0] * k)) == (None if res.bbox is None else tuple(res.bbox)), \
                (layer.name, layer.window(*([0] * k)), res.bbox)
            out.windows += 1
            continue
        if all(isinstance(s, Global) for s in layer.axes) and len(layer.output_shape) == 2:
            res = probe_many(lin, input_shape, name, [()], channel_dim=1, tol=tol)[0]  # every feature
            assert layer.window(*([0] * k)) == (None if res.bbox is None else tuple(res.bbox)), \
                (layer.name, layer.window(*([0] * k)), res.bbox)
            out.windows += 1
            continue
        units = _units(layer)
        layout = _layout(layer, k)
        if layout is not None:
            (channel, spatial), batch_dim = layout, True
            probe_units = []
            for unit in units:
                idx = [0] * len(spatial)
                for a, d in enumerate(layer.axis_dims):
                    if d is not None:
                        idx[spatial.index(d)] = unit[a]
                probe_units.append(tuple(idx))
        else:
            channel, batch_dim = _token_channel(layer), True
            if channel is None:
                channel, batch_dim = _window_channel(layer), False
            if channel is None:
                out.skipped.append(f"{layer.name}: layout {layer.output_shape} axis dims {layer.axis_dims}")
                continue
            probe_units = [tuple(0 if i is None and layer.output_shape[d] == 1 else i
                                 for d, i in enumerate(layer.tensor_index(*unit)) if d != channel
                                 and (d > 0 or not batch_dim)) for unit in units]
            out.tokens += 1
        full = probe_many(lin, input_shape, name, probe_units, channel_dim=channel, tol=tol, batch_dim=batch_dim)
        countable = all(isinstance(s, Local) for s in layer.axes) and not _through_recurrent(report, layer)
        local = full
        if layer.global_context or any(r.bbox is None for r in full):
            local = probe_many(lin_local, input_shape, name, probe_units, channel_dim=channel, tol=tol,
                               detach_global=True, batch_dim=batch_dim)
        for unit, res, res_local in zip(units, full, local):
            got = layer.window(*unit)
            if layer.global_context and res_local.bbox is None and any(isinstance(s, Global) for s in layer.axes):
                # the row's own reduction is cut too when global paths are detached: only containment
                if got is not None and res.bbox is not None:
                    assert all(f[0] <= w[0] and w[1] <= f[1] for f, w in zip(res.bbox, got)), (layer.name, unit)
                out.windows += 1
                continue
            if layer.global_context and local_products:
                # full support ⊇ convlens's local window ⊇ the detached support
                inner = None if res_local.bbox is None else tuple(res_local.bbox)
                if got is None:
                    assert inner is None, (layer.name, unit, got, inner)
                else:
                    assert res.bbox is not None, (layer.name, unit, got, res.bbox)
                    assert all(f[0] <= g[0] and g[1] <= f[1] for f, g in zip(res.bbox, got)), (layer.name, unit)
                    if inner is not None:
                        assert all(g[0] <= w[0] and w[1] <= g[1] for g, w in zip(got, inner)), (layer.name, unit)
                out.windows += 1
                continue
            if layer.global_context:
                # local geometry with global paths cut; the full support contains it
                want = None if res_local.bbox is None else tuple(res_local.bbox)
                if want is not None and res.bbox is not None:  # (None: a norm over one value cancels)
                    assert all(f[0] <= w[0] and w[1] <= f[1] for f, w in zip(res.bbox, want)), (layer.name, unit)
                    # (a global axis beside the local ones, an axis of one position left local: its span
                    # is the full support's, which the cut paths leave out)
                    want = tuple(tuple(f) if isinstance(s, Global) else w
                                 for s, f, w in zip(layer.axes, res.bbox, want))
            else:
                # a norm over a single value has a structural path but an exactly zero gradient:
                # only then is the support taken with the statistics held constant
                chosen = res.bbox if res.bbox is not None else res_local.bbox
                want = None if chosen is None else tuple(chosen)
            assert got == want, f"{layer.name} unit {unit}: convlens {got}, oracle {want}"
            out.windows += 1
            if countable:
                # coverage leaves global paths out, like the detached oracle
                support = res_local.support if layer.global_context or res.bbox is None else res.support
                cov = report.coverage(layer.name, unit).map != 0
                if not np.array_equal(cov, support):
                    extra, missing = np.argwhere(cov & ~support), np.argwhere(support & ~cov)
                    raise AssertionError(f"{layer.name} unit {unit}: coverage has {len(extra)} pixels the oracle "
                                         f"lacks (first {extra[:3].tolist()}), lacks {len(missing)} "
                                         f"(first {missing[:3].tolist()})")
                out.coverage += 1
        if big_shape is not None and not layer.global_context and layout is not None:
            # (token rows: the oracle's unbounded probe indexes the tensor dim as the axis, which a
            # token layout does not; their windows were checked above)
            for a, state in enumerate(layer.axes):
                if not isinstance(state, Local) or state.stride is None:
                    continue
                try:
                    # the oracle accepts the smallest period q with at least q interior pairs, so a
                    # pattern whose true period is near the number of probed units can pass for a
                    # shorter one (period 15 seen as 7 in 16 units): probe three periods' worth (the
                    # probe's size only; the answer stays the oracle's own)
                    geo = unbounded_geometry(lin, big_shape, name, a, max_units=max(16, 3 * state.period), tol=tol,
                                             channel_dim=channel)
                except ValueError as e:
                    out.skipped.append(f"{layer.name} axis {a}: {e}")
                    continue
                assert (layer.rf[a], layer.stride[a], layer.offset[a]) == (geo.rf, geo.stride, geo.offset), \
                    f"{layer.name} axis {a}: convlens rf/stride/offset {layer.rf[a]}, {layer.stride[a]}, " \
                    f"{layer.offset[a]}; oracle {geo.rf}, {geo.stride}, {geo.offset}"
                out.unbounded += 1
    return out
