"""The plain result model every renderer reads: :class:`Report` and one :class:`Layer` per row.

Units and conventions (docs/conventions.md): per spatial axis of the network input, in input pixels.
``rf`` is an int, ``"global"`` (the units see the whole axis) or ``None`` (unknown or not defined:
see ``notes``). ``stride`` and ``offset`` are exact :class:`fractions.Fraction` values, ``None``
where global or unknown. ``global_context`` is per tensor: after a cat along a spatial axis it also
flags units of the part that has no global path. A global axis whose reduction saw only part of the
input reports that part as its clipped window (with a note). MACs count multiply-accumulates;
``flops = 2 * macs`` (bias adds apart, in ``bias_flops``). Byte counts are of the output tensor(s) in
their own dtype.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .analysis import GraphGeometry
from .capture import Capture, DataDependentStop
from .checkerboard import Checkerboard, checkerboard
from .coverage import CoverageResult, check_pixels, coverage, forward_profiles
from .defaults import MAX_PIXELS
from .diagnostics import Diagnostic
from .errors import ConvlensError
from .geometry import AxisState, Constant, Global, Local, Paired, Unknown, Window, Windows
from .gridding import Gridding, dilated_runs, verdict
from .inputs import InputInfo
from .rules.registry import Digit


@dataclass(frozen=True)
class DimLayout:
    """How one dim of a row's tensor holds spatial axes: row-major ``factors`` (spatial axis of the
    input, or None for a non-spatial factor such as the batch, and size), with ``before`` and
    ``after`` extra tokens (class, register) around that grid. A plain image dim is one factor; the
    token dim of a ViT is ((0, H), (1, W)) with before = 1; a Swin window's batch and token dims hold
    digits of both axes (:class:`~convlens.rules.registry.Digit`)."""

    factors: tuple[tuple[int | None, int], ...]
    before: int = 0
    after: int = 0

    def index(self, unit: Sequence[int], digits: Mapping[tuple[int, int, int], int] | None = None) -> int | None:
        """The index along this dim of the grid position ``unit`` (one index per input axis), or None
        when the dim holds no spatial axis. A digit of an axis split across dims (a window partition:
        windows folded into the batch dim, positions within one on the token dim) contributes
        ``unit[axis] // weight % size``, or its value in ``digits`` ((axis, size, weight) -> value,
        :func:`digit_values`: the blocks of ``Tensor.unfold`` overlap)."""
        if not any(isinstance(f, Digit) or f[0] is not None for f in self.factors):
            return None
        digits = digits or {}
        i = 0
        for f in self.factors:
            if isinstance(f, Digit):
                i = i * f.size + digits.get((f.axis, f.size, f.weight), unit[f.axis] // f.weight % f.size)
            else:
                a, size = f
                i = i * size + (unit[a] if a is not None and size > 1 else 0)
        return self.before + i


def digit_values(layout: Sequence[DimLayout], unit: Sequence[int]) -> dict[tuple[int, int, int], int]:
    """The value of each position digit (axis, size, weight) of the grid position ``unit``, highest
    weight first, each as large as it can be: the radix's digits of a window partition, and where
    ``Tensor.unfold``'s blocks overlap (a halo) the last block that holds the position."""
    values = {}
    for a, u in enumerate(unit):
        rest = u
        for size, weight in sorted({(f.size, f.weight) for d in layout for f in d.factors
                                    if isinstance(f, Digit) and f.axis == a and not f.pair}, key=lambda sw: -sw[1]):
            values[(a, size, weight)] = min(rest // weight, size - 1)
            rest -= values[(a, size, weight)] * weight
    return values


@dataclass(frozen=True)
class LayerArgs:
    """A leaf module's convolution or pooling as it ran, per spatial dim of the op (read from the
    recorded aten ops, not from the module's attributes, so a functional call inside a leaf counts
    too): kernel, stride, dilation, groups (None for a pool), ``transposed``, and ``padding`` as
    (before, after) per dim, the padding op's amounts before the convolution (``padding_mode``
    other than ``zeros``, ``padding="same"`` with an even kernel) added to the op's own."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int | None
    padding_mode: str = "zeros"
    transposed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON: ``padding`` as one int per dim where both sides are equal, else [before, after]."""
        return {"kernel_size": list(self.kernel), "stride": list(self.stride),
                "padding": [a if a == b else [a, b] for a, b in self.padding], "padding_mode": self.padding_mode,
                "dilation": list(self.dilation), "groups": self.groups, "transposed": self.transposed}


@dataclass
class Layer:
    """One row: the output of one module call (or one tensor of a tuple/dict output).

    ``op``: the aten op that made the output of a leaf module (``convolution``, ``addmm``), else the
    module's class; ``type``: the module's class, as the user wrote it (``Conv2d``, ``Linear``);
    ``args``: a leaf conv's or pool's own kernel, stride, padding, dilation and groups (:class:`LayerArgs`)."""

    name: str
    op: str
    type: str
    depth: int
    output_shape: tuple[int, ...]
    params: int
    macs: int
    bias_flops: int
    activation_bytes: int
    aligned: bool | None
    global_context: bool
    notes: list[str]
    axes: tuple[AxisState, ...] = field(repr=False)
    input_size: tuple[int, ...] = field(repr=False)
    windows: Windows = field(repr=False, default=Windows())
    axis_dims: tuple[int | None, ...] = field(repr=False, default=())
    """For each spatial axis of the input, the output tensor dimension along which it is local
    (None where global, unknown, or folded into a flattened dimension)."""
    tensor: int | None = field(repr=False, default=None)
    """The captured tensor id of the row's output (what :meth:`Report.coverage` walks back from)."""
    layout: tuple[DimLayout, ...] = field(repr=False, default=())
    """Per dim of the output tensor, the spatial axes it holds (flattened token grids, extra tokens)."""
    args: LayerArgs | None = None

    def tensor_index(self, *unit: int) -> tuple[int | None, ...]:
        """Per dim of the output tensor, the index of the unit at grid position ``unit`` (one index per
        spatial axis of the input): the token of a ViT's (B, 1 + H*W, C) output that holds patch (h, w)
        is ``tensor_index(h, w)[1]``. None for dims that hold no spatial axis (batch, channels)."""
        if len(unit) != len(self.axes) or not all(isinstance(u, numbers.Integral) and not isinstance(u, bool)
                                                  for u in unit):
            raise ConvlensError(f"{self.name!r}: give one integer index per spatial axis ({len(self.axes)}), "
                                f"got {unit}")
        unit = tuple(int(u) for u in unit)
        values = digit_values(self.layout, unit)
        return tuple(d.index(unit, values) for d in self.layout)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def rf(self) -> tuple[int | str | None, ...]:
        return tuple(_rf(s) for s in self.axes)

    @property
    def stride(self) -> tuple[Fraction | None, ...]:
        return tuple(s.stride if isinstance(s, Local) else None for s in self.axes)

    @property
    def offset(self) -> tuple[Fraction | None, ...]:
        return tuple(s.offset if isinstance(s, Local) else None for s in self.axes)

    def window(self, *unit: int, clipped: bool = True) -> tuple[Window, ...] | None:
        """Input window of the unit at spatial position ``unit`` (one index per spatial axis of the
        network input; ignored along global axes). ``clipped=True``: bounding box of the real input
        pixels that reach it (None if only padding does); ``clipped=False``: the unbounded window
        (padding counted as input). None as a whole if the unit is unreachable along some axis."""
        if len(unit) != len(self.axes) or not all(isinstance(u, numbers.Integral) and not isinstance(u, bool)
                                                  for u in unit):
            raise ConvlensError(f"{self.name!r}: give one integer index per spatial axis ({len(self.axes)}), "
                                f"got {unit}")
        unit = tuple(int(u) for u in unit)
        for a, (u, state) in enumerate(zip(unit, self.axes)):
            if isinstance(state, Paired):
                raise ConvlensError(f"{self.name!r}: its units are attention scores along axis {a}: each pairs a "
                                    "query and a key position, and sees both their windows (no single window)")
            if isinstance(state, Unknown):
                raise ConvlensError(f"{self.name!r}: window along axis {a} is unknown "
                                    f"(no rule for {', '.join(sorted(state.ops))})")
            if isinstance(state, Constant):
                return None
            if isinstance(state, Global) and clipped and state.reach is not None and not state.reach[u]:
                return None  # this position of the globally pooled map reads only padding
            if isinstance(state, Local) and not 0 <= u < state.n:
                raise ConvlensError(f"{self.name!r}: unit index {u} is outside 0..{state.n - 1} along axis {a}")
        local = self.windows.window({a: unit[a] for a, s in enumerate(self.axes) if isinstance(s, Local)}, clipped)
        if local is None:
            return None
        out = []
        for a, state in enumerate(self.axes):
            if isinstance(state, Global):
                if state.span is None:
                    return None
                out.append(state.span)
            else:
                out.append(local[a])
        return tuple(out)

    def padding_share(self, *unit: int) -> float | None:
        """Fraction of the unbounded window outside the real input, 1 - prod of per-axis real shares."""
        win = self.window(*unit, clipped=False)
        if win is None:
            return None
        real = 1.0
        for (lo, hi), n in zip(win, self.input_size):
            inside = max(0, min(hi, n - 1) - max(lo, 0) + 1)
            real *= inside / (hi - lo + 1)
        return 1.0 - real

    def to_dict(self) -> dict[str, Any]:
        """The JSON row (docs/conventions.md): fractions as "p/q" strings, "global" where global."""
        def frac(x: Fraction | None, state: AxisState) -> Any:
            if isinstance(state, Global):
                return "global"
            return None if x is None else (str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}")
        return {
            "name": self.name, "op": self.op, "type": self.type,
            "args": None if self.args is None else self.args.to_dict(),
            "depth": self.depth, "output_shape": list(self.output_shape),
            "rf": list(self.rf), "stride": [frac(x, s) for x, s in zip(self.stride, self.axes)],
            "offset": [frac(x, s) for x, s in zip(self.offset, self.axes)],
            "params": self.params, "macs": self.macs, "flops": self.flops, "bias_flops": self.bias_flops,
            "activation_bytes": self.activation_bytes, "aligned": self.aligned,
            "global_context": self.global_context, "notes": list(self.notes),
        }


def _rf(state: AxisState) -> int | str | None:
    if isinstance(state, Global):
        return "global"
    if isinstance(state, Local):
        return state.rf
    return None


@dataclass
class Totals:
    """The model's params, MACs, bias FLOPs and peak activation bytes. Where the analysis stopped at a
    data-dependent op (:attr:`Report.stopped`) the last three depend on the data and are None, and
    ``before_stop`` holds what the ops before the stop cost."""

    params: int
    macs: int | None
    bias_flops: int | None
    peak_activation_bytes: int | None
    before_stop: Totals | None = None

    @property
    def flops(self) -> int | None:
        return None if self.macs is None else 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        out = {"params": self.params, "macs": self.macs, "flops": self.flops, "bias_flops": self.bias_flops,
               "peak_activation_bytes": self.peak_activation_bytes}
        if self.before_stop is not None:
            out["before_stop"] = {k: v for k, v in self.before_stop.to_dict().items() if k != "params"}
        return out


@dataclass(frozen=True)
class Analysis:
    """The captured op graph and the geometry of every tensor, and the unit-level queries that walk
    them (coverage, per-axis profiles, gridding). A :class:`Report` holds one; nothing else reaches
    into the capture or the per-tensor geometry."""

    capture: Capture
    geometry: GraphGeometry

    def coverage(self, tid: int, unit: tuple[int, ...], layer: str, axes: Sequence[int] | None = None
                 ) -> CoverageResult:
        """Path counts from the input to one unit of tensor ``tid`` (:func:`convlens.coverage.coverage`)."""
        return coverage(self.capture, self.geometry, tid, unit, layer, axes)

    def profiles(self, axis: int, wanted: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
        """Per tensor id, path counts along one input axis of some units
        (:func:`convlens.coverage.forward_profiles`)."""
        return forward_profiles(self.capture, self.geometry, axis, dict(wanted))

    def gridding(self, tid: int, layer: str) -> Gridding:
        """Holes in what the centre unit of tensor ``tid`` sees, with the dilated runs feeding it."""
        return verdict(self.capture, self.geometry, tid, layer,
                       dilated_runs(self.capture, self.capture.row_of_node))


@dataclass
class Report:
    """Everything convlens knows about one model at one input shape.

    ``report[name]`` is a :class:`Layer` (a module's first call; ``name#2`` for the second);
    ``report[i]`` the i-th row in call order, as in a list; iterate for all rows in call order.
    """

    model: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    totals: Totals
    notes: list[str]
    unsupported_ops: dict[str, int]
    backend: str = "meta"
    diagnostics: list[Diagnostic] = field(default_factory=list)
    """Verdicts about what layers do to the input they see (:mod:`convlens.diagnostics`)."""
    stopped: DataDependentStop | None = None
    """Where the analysis stopped at an op whose output's shape depends on the input's values (nms,
    nonzero): the module calls running then have no row (``cut``), modules after it were not reached."""
    inputs: tuple[InputInfo, ...] = ()
    """Every tensor input the model was called with (:mod:`convlens.inputs`); ``input_shape`` is the grid
    input's."""
    analysis: Analysis | None = field(repr=False, default=None, compare=False)
    """The captured graph and its geometry, which the unit-level queries (:meth:`coverage`,
    :meth:`axis_profiles`, :meth:`gridding`) ask. Not part of the JSON."""

    def __post_init__(self) -> None:
        self._by_name = {}
        for layer in self.layers:
            self._by_name.setdefault(layer.name, layer)

    def __getitem__(self, name: str | int) -> Layer:
        if isinstance(name, numbers.Integral) and not isinstance(name, bool):
            if not -len(self.layers) <= name < len(self.layers):
                raise ConvlensError(f"row index {name} is outside the report's {len(self.layers)} rows")
            return self.layers[name]
        if not isinstance(name, str):
            raise ConvlensError(f"index a report by row name (a module path, '' is the model) or by row "
                                f"number, got {type(name).__name__}")
        try:
            return self._by_name[name]
        except KeyError:
            if self.stopped is not None and name.split("[")[0] in self.stopped.cut:
                raise ConvlensError(f"row {name!r} has no analysis: {self.stopped.describe()}") from None
            close = [n for n in self._by_name if name in n][:5]
            hint = f"; similar: {', '.join(close)}" if close else ""
            raise ConvlensError(f"no row named {name!r} (rows are module paths, '' is the model){hint}") from None

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def coverage(self, name: str, unit: Sequence[int] | None = None, axes: Sequence[int] | None = None, *,
                 max_pixels: int = MAX_PIXELS) -> CoverageResult:
        """Path counts from every input pixel to one unit of row ``name`` (docs/conventions.md: coverage).

        ``unit``: one index per spatial axis of the input (default: the centre, n // 2 per axis).
        The row must be local along every axis (not global, unknown or constant). ``axes``: count
        paths along these axes only (:func:`convlens.coverage.coverage`). A window of more than
        ``max_pixels`` input pixels is refused before any work (:data:`convlens.defaults.MAX_PIXELS`)."""
        layer = self[name]
        for a, state in enumerate(layer.axes):
            if not isinstance(state, Local):
                what = ("global" if isinstance(state, Global) else "attention scores (query-key pairs)"
                        if isinstance(state, Paired) else "unknown" if isinstance(state, Unknown) else "constant")
                raise ConvlensError(f"{repr(name) if name else 'the output'} is {what} along axis {a}: coverage "
                                    f"needs a row whose units see a local window along every axis (--layer)")
        if self.analysis is None or layer.tensor is None:
            raise ConvlensError("this report carries no graph (it was not made by convlens.analyze)")
        if unit is None:
            unit = tuple(s.n // 2 for s in layer.axes)
        unit = tuple(unit)
        if len(unit) != len(layer.axes) or not all(isinstance(u, numbers.Integral) and not isinstance(u, bool)
                                                   for u in unit):
            raise ConvlensError(f"unit {unit} of {name or 'the output'}: give one integer index per spatial axis "
                                f"({len(layer.axes)})")
        for a, (u, state) in enumerate(zip(unit, layer.axes)):
            if not 0 <= u < state.n:
                raise ConvlensError(f"unit {unit} of {name or 'the output'}: index {u} is outside 0..{state.n - 1} "
                                    f"along axis {a}")
        if axes is not None and not all(isinstance(a, int) and 0 <= a < len(unit) for a in axes):
            raise ConvlensError(f"axes must be spatial axis indices 0..{len(unit) - 1}, got {axes}")
        window = layer.window(*unit)
        if window is not None:
            chosen = range(len(unit)) if axes is None else sorted(set(axes))
            check_pixels(math.prod(window[a][1] - window[a][0] + 1 for a in chosen),
                         f"the coverage of {name or 'the output'} unit {unit}", max_pixels)
        return self.analysis.coverage(layer.tensor, unit, name, axes)

    def axis_profiles(self, axis: int, units: Mapping[int | str, Sequence[int]]) -> dict[int | str, np.ndarray]:
        """For many rows at once (keys: row numbers or names, as ``report[key]``), path counts along
        input ``axis`` alone (as :meth:`coverage` with ``axes=[axis]``) of some of their units:
        ``{key: counts[len(units), N]}`` (float64; zeros exact). Rows that are not local along every
        axis are left out."""
        if self.analysis is None:
            raise ConvlensError("this report carries no graph (it was not made by convlens.analyze)")
        tensors = {key: self[key].tensor for key in units}
        wanted = {tid: list(units[key]) for key, tid in tensors.items() if tid is not None}
        found = self.analysis.profiles(axis, wanted)
        return {key: found[tid] for key, tid in tensors.items() if tid in found}

    def gridding(self, name: str) -> Gridding:
        """Holes in what row ``name``'s centre unit sees, with the runs of dilated convs feeding it and
        Wang et al.'s rule for each (:mod:`convlens.gridding`)."""
        self.coverage(name)  # the same checks and errors
        return self.analysis.gridding(self[name].tensor, name)

    def checkerboard(self, name: str) -> Checkerboard:
        """Overlap counts per output phase of row ``name`` (:mod:`convlens.checkerboard`)."""
        return checkerboard(self, name)

    @property
    def output(self) -> Layer:
        """The model's (first) output row."""
        if self.stopped is not None:  # (the model's own call is always among those it cut short)
            raise ConvlensError(f"the model's output depends on the data: {self.stopped.describe()}; its rows "
                                "before that are analyzed")
        return self.layers[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "input_shape": list(self.input_shape),
            "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": str(i.dtype).removeprefix("torch."),
                        "grid": i.grid} for i in self.inputs],
            "layers": [layer.to_dict() for layer in self.layers],
            "totals": self.totals.to_dict(),
            "stopped": None if self.stopped is None else {
                "op": self.stopped.op, "row": self.stopped.row, "type": self.stopped.type_name,
                "cut": list(self.stopped.cut), "unreached": list(self.stopped.unreached),
                "message": self.stopped.describe()},
            "notes": list(self.notes), "unsupported_ops": dict(self.unsupported_ops), "backend": self.backend,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }

    def save_html(self, path, erf=None) -> None:
        """One self-contained HTML file (:mod:`convlens.render.html`); ``erf``: an
        :class:`convlens.ERFResult` to draw beside the coverage map."""
        from .render.html import save_html
        save_html(self, path, erf)

    def _repr_html_(self) -> str:
        from .render.html import render_html
        return render_html(self, compact=True)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    CSV_COLUMNS = ("name", "op", "type", "depth", "output_shape", "rf", "stride", "offset", "params", "macs", "flops",
                   "bias_flops", "activation_bytes", "aligned", "global_context", "args.kernel_size", "args.stride",
                   "args.padding", "args.padding_mode", "args.dilation", "args.groups", "args.transposed", "notes")

    def to_csv(self) -> str:
        """One row per layer; per-axis values joined with 'x' (rf 5x5), notes with '; '; the layer's
        own arguments as ``args.*`` columns (empty for rows without), padding 'before/after' where the
        sides differ."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.CSV_COLUMNS)
        for layer in self.layers:
            row = layer.to_dict()
            args = row.pop("args") or {}
            if args:
                args["padding"] = [p if isinstance(p, int) else f"{p[0]}/{p[1]}" for p in args["padding"]]
            row.update({f"args.{k}": v for k, v in args.items()})
            writer.writerow([_spreadsheet_safe(_csv_cell(row.get(c))) for c in self.CSV_COLUMNS])
        return buf.getvalue()

    def to_dataframe(self):
        """A pandas DataFrame of the JSON rows (needs ``pip install convlens[pandas]``)."""
        try:
            import pandas as pd
        except ImportError:
            raise ConvlensError("to_dataframe needs pandas: pip install 'convlens[pandas]'") from None
        return pd.DataFrame([layer.to_dict() for layer in self.layers])


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?([eE][+-]?\d+)?(/\d+)?(x[+-]?\d+(/\d+)?)*")


def _spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=...``, ``+...``, ``@...``) gets a leading
    apostrophe (OWASP's CSV-injection advice); numbers and per-axis numbers such as ``-1/2x3`` stay."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return "x".join("" if v is None else str(v) for v in value) if all(not isinstance(v, str) or " " not in v
                                                                          for v in value) else "; ".join(value)
    if value is None:
        return ""
    return value
