"""Diagnostics: short verdicts about what a layer does to the input it sees.

Op-level checks read one recorded op and its shapes (a registry keyed by aten op, like the rules);
row-level checks read the computed geometry. Each yields :class:`Diagnostic` values with a one-sentence
``message``; the report lists them and adds each message to its row's notes.

Conventions: sizes along one axis of the op's own input (``i``), kernel ``k``, stride ``s``, padding
``p`` (left and right), dilation ``d``, effective kernel ``k_eff = d (k - 1) + 1``. Axes are the
op's spatial dims in order (axis 0 = the first spatial dim).
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

from .arith import unread_border
from .capture import Capture, OpNode
from .checkerboard import FIX
from .geometry import Local, Windows
from .gridding import describe, dilated_runs, verdict
from .rules.args import CONVOLUTIONS, conv_args, pool_args
from .rules.registry import key_of, register_into

aten = torch.ops.aten


@dataclass(frozen=True)
class Diagnostic:
    kind: str  # see KINDS
    row: str  # the row (module call) that issued the op, or the row the verdict is about
    message: str
    data: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "row": self.row, "message": self.message, "data": _plain(self.data)}


KINDS = {
    "unread-border": "real border pixels that a stride never reads",
    "dead-taps": "kernel taps that never read a real pixel (dilation at least the map size)",
    "half-pixel-shift": "an even (effective) kernel centres the outputs between input pixels",
    "sparse-gradient": "max pooling passes gradient to at most a fraction of its inputs",
    "mostly-padding": "units whose window is mostly padding (the rf exceeds the input)",
    "misaligned-merge": "inputs of a merge do not share stride and centres",
    "checkerboard": "a transposed conv's output phases get different numbers of taps",
    "gridding": "the centre unit of a run of dilated convs sees only part of its window",
}


def _plain(value: Any) -> Any:
    if isinstance(value, Fraction):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


OpCheck = Callable[[OpNode, Capture], list[tuple[str, str, dict]]]  # -> (kind, message, data)
OP_CHECKS: dict[Any, OpCheck] = {}


def register_check(*ops: Any) -> Callable[[OpCheck], OpCheck]:
    """Decorator: a per-op diagnostic for the given aten packets (a key registered twice is refused,
    as for the geometry and cost rules)."""
    return register_into(OP_CHECKS, list(ops), "diagnostic")


def _window_checks(node: OpNode, cap: Capture, kernel: list[int], stride: list[int], padding: list[int],
                   dilation: list[int], ceil_mode: bool = False, what: str = "conv") -> list[tuple[str, str, dict]]:
    """Checks shared by convolutions and pools (not transposed)."""
    x = cap.tensors[node.inputs[0]].shape
    out = cap.tensors[node.outputs[0]].shape
    k = len(kernel)
    sizes, out_sizes = x[-k:], out[-k:]
    found = []
    unread, dead = (list(x) for x in _border_and_taps(tuple(sizes), tuple(out_sizes), tuple(kernel), tuple(stride),
                                                      tuple(padding), tuple(dilation), ceil_mode))
    if any(unread):
        axes = ", ".join(f"{u} of {i} along axis {a}" for a, (u, i) in enumerate(zip(unread, sizes)) if u)
        found.append(("unread-border", f"{what} stride never reads the last real pixels: {axes}",
                      {"pixels": unread, "input": list(sizes)}))
    if any(dead):
        axes = ", ".join(f"{n} of {kk} taps along axis {a} (dilation {d}, map {i})" for a, (n, kk, d, i) in
                         enumerate(zip(dead, kernel, dilation, sizes)) if n)
        centre = all(kk - n <= 1 for kk, n in zip(kernel, dead))
        found.append(("dead-taps", f"{what} taps that never read a real pixel: {axes}"
                      + ("; the kernel degenerates to one tap" if centre else ""),
                      {"dead": dead, "kernel": kernel, "dilation": dilation, "input": list(sizes)}))
    # output v is centred on input v s - p + d (k - 1) / 2: off the grid when d (k - 1) is odd
    shift = [Fraction(d * (kk - 1), 2) - p for kk, p, d in zip(kernel, padding, dilation)]
    moved = [a for a, sh in enumerate(shift) if sh.denominator == 2]
    if moved and what == "conv":
        axes = ", ".join(f"axis {a}" for a in moved)
        found.append(("half-pixel-shift", f"{what} with an even kernel: its outputs are centred between input "
                      f"pixels along {axes} (half-pixel shift)", {"shift": shift}))
    return found


@functools.lru_cache(maxsize=1 << 12)
def _border_and_taps(sizes: tuple[int, ...], out_sizes: tuple[int, ...], kernel: tuple[int, ...],
                     stride: tuple[int, ...], padding: tuple[int, ...], dilation: tuple[int, ...],
                     ceil_mode: bool) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per axis, the real pixels at the end that no window reads, and the taps that read no real
    pixel for any output (cached: a network repeats its layers' sizes and arguments)."""
    unread = tuple(0 if ceil_mode else unread_border(i, kk, s, p, d) for i, kk, s, p, d in
                   zip(sizes, kernel, stride, padding, dilation))
    dead = []
    for i, kk, s, p, d, o in zip(sizes, kernel, stride, padding, dilation, out_sizes):
        # tap t reads a real pixel for some output v in [0, o) iff p - t d <= v s <= i - 1 + p - t d
        live = sum(1 for t in range(kk) if max(0, -(-(p - t * d) // s)) <= min(o - 1, (i - 1 + p - t * d) // s))
        dead.append(kk - live)
    return unread, tuple(dead)


@register_check(*CONVOLUTIONS)
def _conv(node: OpNode, cap: Capture):
    c = conv_args(node, cap.tensors)
    if c.transposed:
        return _overlap(list(c.kernel), list(c.stride), list(c.padding), list(c.dilation))
    return _window_checks(node, cap, list(c.kernel), list(c.stride), list(c.padding), list(c.dilation))


def transposed_overlap(kernel: int, stride: int, padding: int, dilation: int) -> list[int]:
    """Taps of a transposed conv that reach an interior output o, per phase o mod stride:
    output o receives tap t from input j when o = j s - p + t d."""
    return [sum(1 for t in range(kernel) if (r + padding - t * dilation) % stride == 0) for r in range(stride)]


def _overlap(kernel: list[int], stride: list[int], padding: list[int], dilation: list[int]):
    counts = [transposed_overlap(k, s, p, d) for k, s, p, d in zip(kernel, stride, padding, dilation)]
    ratios = [max(c) / min(c) if min(c) else float("inf") for c in counts]
    if all(r == 1 for r in ratios):
        return []
    total = float(np.prod(ratios))
    axes = ", ".join(f"{':'.join(map(str, c))} along axis {a}" for a, c in enumerate(counts))
    return [("checkerboard", f"transposed conv overlap per output phase {axes} (max/min {total:g} over the phase "
             f"grid): checkerboard; {FIX}", {"per_axis": counts, "ratio": total})]


@register_check(*[getattr(aten, f"max_pool{k}d{s}") for k in (1, 2, 3) for s in ("", "_with_indices")
                   if hasattr(aten, f"max_pool{k}d{s}")])
def _max_pool(node: OpNode, cap: Capture):
    p = pool_args(node)
    found = _window_checks(node, cap, list(p.kernel), list(p.stride), list(p.padding), list(p.dilation),
                           p.ceil_mode, what="max pool")
    x = cap.tensors[node.inputs[0]].shape[-p.k:]
    o = cap.tensors[node.outputs[0]].shape[-p.k:]
    share = min(1.0, float(np.prod([oo / ii for oo, ii in zip(o, x)])))
    if share < 1:
        found.append(("sparse-gradient", f"max pool passes gradient to at most {100 * share:.3g} % of its "
                      f"inputs (one per window)", {"share": share}))
    return found


def op_diagnostics(cap: Capture, row_of: dict[int, str]) -> list[Diagnostic]:
    """Every op-level check over the captured ops; ``row_of`` maps a node index to its row."""
    found = []
    for node in cap.nodes:
        check = OP_CHECKS.get(key_of(node.op))
        if check is None:
            continue
        for kind, message, data in check(node, cap):
            found.append(Diagnostic(kind, row_of.get(node.index, ""), message, data))
    return found


def mostly_padding_share(windows: Windows, input_size: tuple[int, ...], n: tuple[int, ...]) -> float:
    """Share of a row's units whose unbounded window lies more than half outside the real input
    (1 - prod over axes of the real fraction < 1/2); ``n``: the row's size along each axis."""
    k = len(input_size)
    chunk = max(1, (1 << 22) // max(1, int(np.prod(n[1:]))))
    hits = total = 0
    for start in range(0, n[0], chunk):
        boxes = windows.boxes([np.arange(start, min(n[0], start + chunk))] + [np.arange(m) for m in n[1:]])
        if boxes is None:
            return 0.0
        lo, hi = boxes
        reached = lo[0] <= hi[0]
        real = np.ones(reached.shape)
        for a in range(k):
            width = (hi[a] - lo[a] + 1).astype(np.float64)
            inside = np.clip(np.minimum(hi[a], input_size[a] - 1) - np.maximum(lo[a], 0) + 1, 0, None)
            real = real * np.where(reached, inside / np.where(reached, width, 1), 1)
        hits += int(((real < 0.5) & reached).sum())
        total += int(reached.sum())
    return hits / total if total else 0.0


def collect_diagnostics(cap: Capture, graph, layers: list, input_size: tuple[int, ...]) -> list[Diagnostic]:
    """Every diagnostic of an analysis: op-level checks, misaligned merges, where units first see mostly
    padding, runs of dilated convs that grid. Each message is also added to the notes of its own row
    (once: a misaligned merge on the row of the module that ran it, its axes in one message where they
    differ alike). ``graph`` is the :class:`convlens.analysis.GraphGeometry`."""
    row_of = cap.row_of_node
    found = op_diagnostics(cap, row_of)
    names = tensor_names(cap)
    # (one message per merge op: its axes together where they differ alike, as both axes of a 2-D net do)
    alike: dict[tuple, list] = {}
    for m in graph.merges:
        if not m.aligned:
            alike.setdefault((m.node.index, m.inputs, m.differences), []).append(m)
    for group in alike.values():
        m = group[0]
        found.append(Diagnostic("misaligned-merge", row_of.get(m.node.index, ""),
                                merge_message(m, names, [x.axis for x in group]),
                                {"axes": [x.axis for x in group],
                                 "inputs": [names.get(t, f"tensor {t}") for t, _, _ in m.inputs],
                                 "strides": [s for _, s, _ in m.inputs], "offsets": [o for _, _, o in m.inputs]}))
    padded = [layer for layer in layers if all(isinstance(s, Local) for s in layer.axes)
              and any(isinstance(rf, int) and rf > n for rf, n in zip(layer.rf, input_size))]
    # where the rf first outgrows the input: the smallest such rf, the deepest row with it
    first = min(padded, key=lambda x: (max(r for r in x.rf if isinstance(r, int)), -x.depth), default=None)
    last = next((x for x in padded if x.name == ""), None)
    chosen = [first] if first is not None else []
    if last is not None and last is not first:
        chosen.append(last)
    for layer in chosen:
        share = mostly_padding_share(layer.windows, input_size, tuple(s.n for s in layer.axes))
        if share > 0:
            found.append(Diagnostic("mostly-padding", layer.name,
                                    f"{100 * share:.1f} % of units see mostly padding (rf {_fmt_rf(layer.rf)} > input "
                                    f"{'x'.join(map(str, input_size))})", {"share": share, "rf": list(layer.rf)}))
    geoms = graph.geoms
    # runs of two or more convs (where the hybrid-dilation rule applies); any other row on demand
    # with report.gridding(name), which walks the whole graph behind the row
    for run in dilated_runs(cap, row_of):
        if len(run.rows) < 2 or not all(isinstance(s, Local) for s in geoms[run.end_tensor].axes):
            continue
        g = verdict(cap, graph, run.end_tensor, run.rows[-1], [run])
        if g.grids:
            found.append(Diagnostic("gridding", run.rows[-1], describe(g, run), g.to_dict()))
    by_name = {layer.name: layer for layer in layers}
    for d in found:
        layer = by_name.get(d.row) or by_name.get(d.row + "[0]")
        if layer is not None:
            layer.notes.append(d.message)
    return found


def tensor_names(cap: Capture) -> dict[int, str]:
    """A name for each tensor a message may mention: the row of the module call that returned it,
    else its op and the row that ran the op ('slice in up.1', 'cat in the model')."""
    names = {node.outputs[0]: f"{short_op_name(node.name)} in {node.scope or 'the model'}" for node in cap.nodes
             if node.outputs}
    names[cap.input_id] = "the input"
    names.update({t: call.name for call in reversed(cap.calls) for _, t in call.outputs[:1] if call.name})
    return names


def short_op_name(op_name: str) -> str:
    """'aten.convolution.default' -> 'convolution'."""
    parts = op_name.split(".")
    return parts[1] if len(parts) >= 2 and parts[0] == "aten" else op_name


def merge_message(m, names: dict[int, str], axes: list[int]) -> str:
    """A misaligned merge (:class:`convlens.analysis.Merge`, alike along ``axes``) in a sentence: the
    op, the axes, each input's stride and offset, and what differs, with numbers."""
    inputs = [names.get(t, f"tensor {t}") for t, _, _ in m.inputs]
    parts = ", ".join(f"{name} (stride {_fmt(s)}, offset {_fmt(o)})" for name, (_, s, o) in zip(inputs, m.inputs))
    why = "; ".join(d.format(*inputs) for d in m.differences)
    where = f"axis {axes[0]}" if len(axes) == 1 else f"axes {', '.join(map(str, axes[:-1]))} and {axes[-1]}"
    return f"misaligned merge along {where} at {short_op_name(m.node.name)} of {parts}" + (f": {why}" if why else "")


def _fmt(x) -> str:
    return "?" if x is None else str(x)


def _fmt_rf(rf) -> str:
    return "x".join(str(r) for r in rf)
