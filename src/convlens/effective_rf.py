"""Effective receptive field (Luo et al. 2016): how much each input pixel actually moves one unit.

``ERF(u)`` is the mean over input samples of ``|d T[u] / d X|`` (docs/conventions.md), for the model's own weights,
where ``T[u]`` sums the unit's output channels and ``|.|`` is summed over input channels. Unlike
everything else in convlens this runs the real model forward and backward (in ``eval()`` mode,
restored afterwards; no parameter gradients are accumulated).

Statistics per input axis, of the map normalised to mass 1 and reduced to that axis (marginal):
``std`` (standard deviation of the position, in pixels), ``radius[q]`` for q in 50/90/99 % (the
smallest r such that [c - r, c + r] around the marginal's mean c, rounded, holds at least q of the
mass) and ``ratio`` = (2 radius[99] + 1) / rf, the share of the theoretical rf that carries 99 % of
the gradient.
"""

from __future__ import annotations

import contextlib
import numbers
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .api import analyze
from .geometry import Local
from .errors import ConvlensError, ModelError, check_input_shape, check_int, first_line
from .modelstate import check_model, evaluated, model_dtype
from .rules.registry import Digit

QUANTILES = (0.5, 0.9, 0.99)
MAX_SAMPLES = 10**7
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed's range
_LAYER = re.compile(r"^(?P<path>.*?)(?:#(?P<call>\d+))?(?:\[(?P<key>[^\]]+)\])?$")


@dataclass
class ERFResult:
    layer: str
    unit: tuple[int, ...]
    map: np.ndarray  # float64 over the input's spatial grid
    samples: int
    rf: tuple[Any, ...]  # the theoretical rf per axis (from convlens.analyze)
    std: tuple[float, ...] = field(init=False)
    radius: dict[float, tuple[int, ...]] = field(init=False)
    ratio: tuple[float | None, ...] = field(init=False)

    def __post_init__(self) -> None:
        total = float(self.map.sum())
        k = self.map.ndim
        stds, radii = [], {q: [] for q in QUANTILES}
        for a in range(k):
            marginal = self.map.sum(axis=tuple(b for b in range(k) if b != a))
            if total == 0:
                stds.append(0.0)
                for q in QUANTILES:
                    radii[q].append(0)
                continue
            p = marginal / total
            pos = np.arange(len(p), dtype=np.float64)
            mean = float((p * pos).sum())
            stds.append(float(np.sqrt((p * (pos - mean) ** 2).sum())))
            c = int(round(mean))
            cum = np.concatenate([[0.0], np.cumsum(p)])
            for q in QUANTILES:
                r = 0
                while cum[min(len(p), c + r + 1)] - cum[max(0, c - r)] < q - 1e-12 and r < len(p):
                    r += 1
                radii[q].append(r)
        self.std = tuple(stds)
        self.radius = {q: tuple(v) for q, v in radii.items()}
        self.ratio = tuple((2 * r + 1) / rf if isinstance(rf, int) and rf > 0 else None
                           for r, rf in zip(self.radius[0.99], self.rf))

    def to_dict(self, include_map: bool = False) -> dict[str, Any]:
        out = {"layer": self.layer, "unit": list(self.unit), "samples": self.samples, "rf": list(self.rf),
               "std": list(self.std), "radius": {f"{int(q * 100)}%": list(r) for q, r in self.radius.items()},
               "ratio": list(self.ratio)}
        if include_map:
            out["map"] = self.map.tolist()
        return out


def _batches(inputs: Any, input_shape: Sequence[int], samples: int, batch_size: int, dtype: torch.dtype,
             seed: int) -> Iterator[torch.Tensor]:
    """Input batches: random normal ones (seeded), the rows of a tensor, or a DataLoader's first items."""
    if inputs is None:
        gen = torch.Generator().manual_seed(seed)
        done = 0
        while done < samples:
            b = min(batch_size, samples - done)
            yield torch.randn((b, *input_shape[1:]), generator=gen, dtype=dtype)
            done += b
        return
    if isinstance(inputs, torch.Tensor):
        for start in range(0, min(samples, len(inputs)), batch_size):
            yield inputs[start:min(start + batch_size, samples)]
        return
    if isinstance(inputs, Iterable):
        done = 0
        for item in inputs:
            x = item[0] if isinstance(item, (list, tuple)) else item
            if not isinstance(x, torch.Tensor):
                raise ConvlensError(f"inputs must yield tensors or (tensor, ...) tuples, got {type(x).__name__}")
            x = x[: samples - done]
            yield x
            done += len(x)
            if done >= samples:
                return
        return
    raise ConvlensError(f"inputs must be None, a tensor or an iterable of batches (a DataLoader), "
                        f"got {type(inputs).__name__}")


def _find(model: nn.Module, layer: str) -> tuple[nn.Module, int, str | None]:
    m = _LAYER.match(layer)
    path, call, key = m["path"], int(m["call"] or 1), m["key"]
    modules = dict(model.named_modules())
    if path not in modules:
        close = [n for n in modules if path and path in n][:5]
        raise ConvlensError(f"no module named {path!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    return modules[path], call, key


def _pick(out: Any, key: str | None) -> torch.Tensor:
    if key is not None:
        out = out[key] if isinstance(out, dict) else out[int(key)]
    elif isinstance(out, dict):
        out = next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise ConvlensError(f"the layer's output is a {type(out).__name__}, not a tensor")
    return out


class LayerOutput:
    """While entered, a forward hook keeps the output of row ``layer`` of ``model`` (``name#k``: its
    k-th call; ``name[key]``: one tensor of its output); :meth:`run` does one forward and returns it."""

    def __init__(self, model: nn.Module, layer: str):
        self.model, self.layer = model, layer
        self.target, self.call, self.key = _find(model, layer)
        self.calls, self.got = 0, None

    def __enter__(self) -> LayerOutput:
        self.handle = self.target.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()

    def _hook(self, _module, _inputs, out) -> None:
        self.calls += 1
        if self.calls == self.call:
            self.got = _pick(out, self.key)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        self.calls, self.got = 0, None
        try:
            self.model(x)
        except ConvlensError:
            raise
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's forward: named as theirs
            what = (f"called sys.exit({e.code!r})" if isinstance(e, SystemExit)
                    else f"raised {type(e).__name__}: {first_line(e)}")
            raise ModelError(f"the model {what} on an input of shape {tuple(x.shape)}") from None
        if self.got is None:
            raise ConvlensError(f"{self.layer!r} was not called {self.call} time(s) in the forward pass")
        return self.got


def erf(model: nn.Module, input_shape: Sequence[int], layer: str | None = None, unit: Sequence[int] | None = None,
        samples: int = 16, inputs: Any = None, *, batch_size: int = 8, seed: int = 0,
        progress: bool | None = None, device: torch.device | str | None = None) -> ERFResult:
    """The effective receptive field of one unit (see the module doc).

    ``layer``: a row name as in :func:`convlens.analyze` (default: the model's output); ``unit``: one
    grid position per spatial axis of the input (default: the centre, n // 2), whatever the row's
    layout: channels first or last, or a token row (B, 1 + H*W, C), whose unit is the token that
    holds the position (``Layer.tensor_index``). ``inputs``: None (random
    normal inputs of ``input_shape``, seeded), a tensor of samples, or an iterable of batches (a
    DataLoader; ``(x, y)`` items use x). ``samples``: how many inputs to average. ``progress``: a
    progress bar (default: when there is more than one batch and stderr is a terminal). When
    ``torch.distributed`` is initialized the map is averaged over every rank's samples.
    """
    check_model(model, "erf", real=True)
    samples = check_int(samples, "samples", 1, MAX_SAMPLES)
    batch_size = check_int(batch_size, "batch_size", 1)
    seed = check_int(seed, "seed", 0, MAX_SEED)
    shape = check_input_shape(input_shape)
    dtype = model_dtype(model)
    report = analyze(model, shape, dtype=dtype)
    row = report[layer or ""]
    k = len(shape) - 2
    spatial = _grid(row, k)
    unit = tuple(n // 2 for n in spatial) if unit is None else tuple(unit)
    if len(unit) != k or not all(isinstance(u, numbers.Integral) and not isinstance(u, bool) and 0 <= u < n
                                 for u, n in zip(unit, spatial)):
        raise ConvlensError(f"unit {unit} is not a position of {layer or 'the output'} (grid size {spatial})")
    index = tuple(slice(None) if i is None else i for i in row.tensor_index(*unit))
    dev = torch.device(device) if device is not None else next((p.device for p in model.parameters()),
                                                               torch.device("cpu"))
    count = 0
    n_batches = -(-samples // batch_size)
    show = progress if progress is not None else (n_batches > 1 and _stderr_is_terminal())
    # (with gradients on whatever the caller's context: a user's torch.no_grad() or inference_mode())
    with torch.inference_mode(False), torch.enable_grad(), evaluated(model), LayerOutput(model, layer or "") as capture, \
            _progress(show, n_batches) as advance:
        total = torch.zeros(shape[2:], dtype=torch.float64, device=dev)
        for x in _batches(inputs, shape, samples, batch_size, dtype, seed):
            if tuple(x.shape[1:]) != shape[1:]:
                raise ConvlensError(f"an input batch has shape {tuple(x.shape)}, not (B, {shape[1:]})")
            x = x.to(dev, dtype).requires_grad_(True)
            t = capture.run(x)
            (grad,) = torch.autograd.grad(t[index].sum(), x)
            if not torch.isfinite(grad).all():
                raise ConvlensError(f"the gradient of {layer or 'the output'} unit {unit} is not finite (NaN or "
                                    "inf) for some inputs, so it has no ERF: check the model's weights and output")
            total += grad.abs().sum(dim=1).sum(dim=0).double()
            count += len(x)
            advance()
    count_t = torch.tensor(float(count), dtype=torch.float64, device=dev)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(total)
        torch.distributed.all_reduce(count_t)
    if count_t.item() == 0:
        raise ConvlensError("no input samples were given")
    return ERFResult(layer or "", unit, (total / count_t).cpu().numpy(), int(count_t.item()), row.rf)


def _grid(row, k: int) -> tuple[int, ...]:
    """The row's grid size per input axis (1 where global): its units are picked by grid position,
    whatever the layout (channels first or last, a flattened token grid with class tokens). A row
    that holds windows in its batch dim (a window partition) has units in every sample's windows:
    the ERF asks for a row in grid layout."""
    if len(row.layout) != len(row.output_shape):
        raise ConvlensError(f"{row.name or 'the output'} has no layout of its spatial axes: pick another row")
    first = row.layout[0] if row.layout else None
    if first is not None and any(f[0] is not None or isinstance(f, Digit) for f in first.factors):
        raise ConvlensError(f"{row.name or 'the output'} holds spatial positions in its batch dim (windows of a "
                            "window partition): pick a row in grid layout, such as the stage's output")
    sizes = [1] * k
    for dim in row.layout:
        for f in dim.factors:
            axis = f.axis if isinstance(f, Digit) else f[0]
            if axis is not None and axis < k:  # (digits: the top one's size x weight is the axis's)
                sizes[axis] = max(sizes[axis], f[1] * (f.weight if isinstance(f, Digit) else 1))
    for a, state in enumerate(row.axes):
        if isinstance(state, Local) and not any((f.axis if isinstance(f, Digit) else f[0]) == a
                                                for d in row.layout for f in d.factors):
            raise ConvlensError(f"{row.name or 'the output'} is local along axis {a} but no dim holds it: pick "
                                "another row")
    return tuple(sizes)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def _progress(show: bool, total: int):
    if not show:
        yield lambda: None
        return
    columns = (TextColumn("ERF"), BarColumn(), MofNCompleteColumn(), TextColumn("batches"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("erf", total=total)
        yield lambda: bar.advance(task)
