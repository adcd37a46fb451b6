"""Shift equivariance, measured: does the output move with the input, and by which steps?

The input ``X`` (random normal, seeded) is shifted along one axis by cropping its first t pixels
(``X_t[i] = X[i + t]``; nothing wraps around). A network with effective stride S along that axis is
equivariant to the shift when t / S is a whole number m and ``out(X_t)[v] = out(X)[v + m]`` for every
interior unit v (its window, in both runs, inside the real input: convlens's windows pick them).
For other shifts the error is measured against the best whole-unit alignment. Errors are relative:
max |difference| / max |out(X)| over the compared units.

Like :mod:`convlens.effective_rf` this runs the real model (in ``eval()`` mode, restored afterwards).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from .api import analyze
from .effective_rf import MAX_SEED, LayerOutput
from .errors import ConvlensError, check_input_shape, check_int
from .geometry import Local
from .modelstate import check_model, evaluated, model_dtype

DEFAULT_TOL = 1e-4


@dataclass
class AxisShift:
    axis: int
    stride: Fraction | None  # the output's effective stride along the axis (from convlens.analyze)
    errors: dict[int, float]  # shift t (input pixels) -> relative error at the best whole-unit alignment
    compared: dict[int, int]  # shift t -> units compared
    tol: float

    @property
    def smallest(self) -> int | None:
        """The smallest shift the output follows exactly (within ``tol``): its effective stride."""
        return next((t for t in sorted(self.errors) if self.errors[t] <= self.tol), None)

    @property
    def equivariant(self) -> bool:
        """The output follows every shift (1 pixel included)."""
        return self.smallest == 1


@dataclass
class ShiftResult:
    layer: str
    axes: list[AxisShift]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "axes": [
            {"axis": a.axis, "stride": None if a.stride is None else str(a.stride), "smallest": a.smallest,
             "equivariant": a.equivariant, "errors": {str(t): e for t, e in a.errors.items()},
             "compared": {str(t): n for t, n in a.compared.items()}} for a in self.axes]}


def _run(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    with LayerOutput(model, layer) as capture, torch.no_grad():
        return capture.run(x).detach().double()


def shift_check(model: nn.Module, input_shape: Sequence[int], shift: int | Sequence[int] = 8, layer: str | None = None,
                *, seed: int = 0, tol: float = DEFAULT_TOL) -> ShiftResult:
    """Shift the input by 1 .. ``shift`` pixels (or the given shifts) along each axis and measure how the
    output of ``layer`` (default: the model's output) follows (see the module doc)."""
    check_model(model, "shift_check", real=True)
    shape = check_input_shape(input_shape)
    seed = check_int(seed, "seed", 0, MAX_SEED)
    k = len(shape) - 2
    largest = min(shape[2:]) - 1  # a shift must leave at least one pixel along every axis
    if largest < 1:
        raise ConvlensError(f"input {shape} has a spatial size of 1: there is no shift to try")
    if isinstance(shift, numbers.Integral) and not isinstance(shift, bool):
        shifts = list(range(1, check_int(shift, "shift", 1, largest) + 1))
    elif isinstance(shift, Sequence) and not isinstance(shift, str) and shift:
        shifts = sorted({check_int(t, "every shift", 1, largest) for t in shift})
    else:
        raise ConvlensError(f"shift must be a positive pixel count or a list of them, got {shift!r}")
    name = layer or ""
    dtype = model_dtype(model)
    base_row = analyze(model, shape, dtype=dtype)[name]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)
    results = []
    with evaluated(model):
        base = _run(model, x, name)
        _check_finite(base, name)
        for a in range(k):
            state = base_row.axes[a]
            if not isinstance(state, Local):
                raise ConvlensError(f"{name or 'the output'} is not local along axis {a}: a shift moves nothing "
                                    f"there (use a layer before the global pooling)")
            if base_row.axis_dims[a] is None:
                raise ConvlensError(f"{name or 'the output'} holds axis {a} in a flattened dim (tokens or windows): "
                                    f"pick a row in grid layout, such as the stage's output")
            errors, compared = {}, {}
            for t in shifts:
                if t >= shape[2 + a]:
                    raise ConvlensError(f"shift {t} is not smaller than the input ({shape[2 + a]}) along axis {a}")
                index = [slice(None)] * len(shape)
                index[2 + a] = slice(t, None)
                xt = x[tuple(index)]
                out_t = _run(model, xt, name)
                _check_finite(out_t, name)
                row_t = analyze(model, tuple(xt.shape), dtype=dtype)[name]
                errors[t], compared[t] = _best_alignment(base, out_t, base_row, row_t, a, shape[2 + a], t, state)
            results.append(AxisShift(a, state.stride, errors, compared, tol))
    return ShiftResult(name, results)


def _check_finite(out: torch.Tensor, name: str) -> None:
    if not torch.isfinite(out).all():
        raise ConvlensError(f"{name or 'the output'} has NaN or inf values on a random normal input, so shifts "
                            "cannot be compared: check the model's weights and output")


def _best_alignment(base, out_t, base_row, row_t, a, n_in, t, state) -> tuple[float, int]:
    """Relative error of out_t[v] against base[v + m] over interior units, for the whole m nearest to
    t / stride (and its neighbours); the smallest wins."""
    d = base_row.axis_dims[a]  # (channels first or last)
    ok_base = base_row.axes[a].inside(n_in)
    ok_t = row_t.axes[a].inside(n_in - t)
    guess = round(Fraction(t) / state.stride) if state.stride else 0
    best, count = float("inf"), 0
    scale = float(base.abs().max()) or 1.0
    for m in range(guess - 1, guess + 2):
        v = np.arange(out_t.shape[d])
        w = v + m
        keep = (w >= 0) & (w < base.shape[d])
        keep[keep] &= ok_t[v[keep]] & ok_base[w[keep]]
        if not keep.any():
            continue
        sel_t = torch.as_tensor(v[keep])
        sel_b = torch.as_tensor(w[keep])
        err = float((out_t.index_select(d, sel_t) - base.index_select(d, sel_b)).abs().max()) / scale
        if err < best:
            best, count = err, int(keep.sum())
    if count == 0:
        raise ConvlensError(f"no interior unit along axis {a} to compare for shift {t}: use a larger input")
    return best, count
