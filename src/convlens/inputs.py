"""The inputs a model is called with, as users have them, and the one that carries the pixel grid.

A model is called with positional and keyword arguments: tensors given by shape (:class:`TensorSpec`, or a
plain tuple of ints), example tensors (their shape and dtype are used; their values only where the model
must run for real), dicts, lists and tuples of those, and constants passed as they are
(``interpolate_pos_encoding=True``). :class:`Inputs` holds them; :func:`resolve` names every tensor
(``left``, ``batch[image]``, ``images[0]``: a positional argument by the forward's parameter name) and
picks the **grid input**: the one tensor whose last 1 to 3 dims are the pixel grid that geometry is
measured in. Windows, coverage and effective strides are in its pixels; every other input is data that does
not move over that grid (its rows' axes read "does not depend on the grid input"), and its ops are counted
in the cost as any others.

Conventions: a shape includes the batch; a tensor given by shape without a dtype takes the model's dtype;
on meta every tensor input is an uninitialised meta tensor; in a real run (the CPU fallback) a floating
tensor given by shape is standard normal, an integer or bool one is all ones (token id 1, a mask that keeps
everything), and an example tensor is used as given.
"""

from __future__ import annotations

import inspect
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .errors import ConvlensError, check_input_shape

MAX_SIZE = 2**31 - 1
"""Largest size of a dim (torch's index range)."""


@dataclass(frozen=True)
class TensorSpec:
    """A tensor input by shape (batch included) and dtype (None: the model's dtype)."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", _check_shape(self.shape, "TensorSpec shape"))
        if self.dtype is not None and not isinstance(self.dtype, torch.dtype):
            raise ConvlensError(f"TensorSpec dtype must be a torch.dtype such as torch.int64, got {self.dtype!r}")


@dataclass(frozen=True)
class Const:
    """A value passed to the model as it is, where it would otherwise read as a shape: ``Const((64, 64))``."""

    value: Any


class Inputs:
    """The arguments of one call of the model: ``Inputs(left=(1, 3, 64, 64), right=(1, 3, 64, 64))``,
    ``Inputs(pixel_values=(1, 3, 384, 384), interpolate_pos_encoding=True)``,
    ``Inputs({"image": (1, 3, 64, 64), "depth": TensorSpec((1, 1, 64, 64))})``.

    Every leaf is a tensor given by shape (a tuple of ints or a :class:`TensorSpec`), an example
    ``torch.Tensor``, or a constant (anything else; :class:`Const` for a tuple of ints). Dicts, lists and
    tuples of leaves are followed.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        self.args = args
        self.kwargs = kwargs

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"Inputs({', '.join(parts)})"


@dataclass(frozen=True)
class InputInfo:
    """One tensor input as analyzed: its name, shape (batch included), dtype and whether it is the grid."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    grid: bool

    def describe(self) -> str:
        """'left=1x3x64x64' (with ':int64' for a dtype other than floating)."""
        kind = "" if self.dtype.is_floating_point else f":{str(self.dtype).removeprefix('torch.')}"
        return f"{self.name}={'x'.join(map(str, self.shape))}{kind}"


@dataclass(frozen=True)
class Resolved:
    """:class:`Inputs` with every tensor leaf a :class:`TensorSpec` (dtype set) or an example tensor,
    named; ``grid``: the grid input's name."""

    args: tuple
    kwargs: dict
    tensors: tuple[InputInfo, ...]  # in the order the call's arguments hold them
    grid: str
    single: bool  # given as one plain shape (the historical input_shape)
    names: tuple[str, ...]  # the forward's parameter names of the positional arguments

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return next(t.shape for t in self.tensors if t.grid)

    def describe(self) -> str:
        """'input shape (1, 3, 64, 64)' for a single shape, else 'inputs left=1x3x64x64, right=...'."""
        if self.single:
            return f"input shape {self.grid_shape}"
        return "inputs " + ", ".join(t.describe() for t in self.tensors)

    def build(self, meta: bool, seen: Callable[[str, torch.Tensor], None]) -> tuple[tuple, dict]:
        """The call's arguments as tensors (see the module doc); ``seen(name, tensor)`` is called on each
        tensor input once it is made, in order."""
        def make(value: Any, name: str) -> Any:
            if isinstance(value, (TensorSpec, torch.Tensor)):
                t = _tensor(value, meta)
                seen(name, t)
                return t
            return _containers(value, name, make)
        return (tuple(make(a, n) for a, n in zip(self.args, _arg_names(self.args, self.names))),
                {k: make(v, k) for k, v in self.kwargs.items()})


def _containers(value: Any, name: str, leaf: Callable[[Any, str], Any]) -> Any:
    if isinstance(value, dict):
        return type(value)((k, leaf(v, f"{name}[{k}]")) for k, v in value.items())
    if isinstance(value, (list, tuple)) and not _is_shape(value):
        return type(value)(leaf(v, f"{name}[{i}]") for i, v in enumerate(value))
    if isinstance(value, Const):
        return value.value
    return value


def _is_shape(value: Any) -> bool:
    return (isinstance(value, (tuple, torch.Size)) and len(value) > 0
            and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in value))


def _check_shape(shape: Any, what: str) -> tuple[int, ...]:
    if not _is_shape(tuple(shape) if isinstance(shape, (list, tuple, torch.Size)) else shape):
        raise ConvlensError(f"{what} must be a tuple of positive ints (batch included), got {shape!r}")
    shape = tuple(int(s) for s in shape)
    if any(s < 1 for s in shape) or any(s > MAX_SIZE for s in shape):
        raise ConvlensError(f"{what} must be a tuple of sizes from 1 to {MAX_SIZE}, got {shape}")
    return shape


def _tensor(value: TensorSpec | torch.Tensor, meta: bool) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if meta:
            return torch.empty(value.shape, dtype=value.dtype, device="meta")
        return value.detach().to("cpu", copy=True)
    assert value.dtype is not None  # (set by resolve)
    if meta:
        return torch.empty(value.shape, dtype=value.dtype, device="meta")
    if value.dtype.is_floating_point or value.dtype.is_complex:
        return torch.randn(value.shape, dtype=value.dtype)
    return torch.ones(value.shape, dtype=value.dtype)


def _arg_names(args: tuple, names: tuple[str, ...]) -> list[str]:
    return [names[i] if i < len(names) else f"args[{i}]" for i in range(len(args))]


def _positional_names(model: nn.Module, n: int) -> tuple[str, ...]:
    """The forward's parameter names that ``n`` positional arguments bind to (``args[i]`` past them)."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return ()
    names = []
    for p in params:
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
        elif p.kind is p.VAR_POSITIONAL:
            names += [f"{p.name}[{i}]" for i in range(n - len(names))]
            break
    return tuple(names[:n])


def _leaves(value: Any, name: str) -> Iterator[tuple[str, Any]]:
    """(name, leaf) of every tensor leaf: TensorSpec, example tensor or shape tuple."""
    if isinstance(value, (TensorSpec, torch.Tensor)) or _is_shape(value):
        yield name, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{name}[{k}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{name}[{i}]")


def _spec(value: Any, dtype: torch.dtype, name: str) -> TensorSpec | torch.Tensor | Any:
    """A leaf as :class:`TensorSpec` with its dtype set (an example tensor as it is); containers followed."""
    if isinstance(value, (torch.Tensor, Const)):
        return value  # (a Const is unwrapped when the call is built)
    if isinstance(value, TensorSpec):
        return value if value.dtype is not None else TensorSpec(value.shape, dtype)
    if _is_shape(value):
        return TensorSpec(_check_shape(value, f"the shape of input {name!r}"), dtype)
    return _containers(value, name, lambda v, n: _spec(v, dtype, n))


def resolve(model: nn.Module, given: Any, dtype: torch.dtype, grid: str | None = None) -> Resolved:
    """Name the tensors of ``given`` (:class:`Inputs`, or one shape (N, C, *spatial)) and pick the grid
    input: ``grid`` by name, else the one floating tensor with 1 to 3 spatial dims after (N, C). A
    :class:`ConvlensError` lists the candidates when there are none or several."""
    single = not isinstance(given, Inputs)
    if single:
        if isinstance(given, (TensorSpec, torch.Tensor)):
            given = Inputs(given)
        else:
            given = Inputs(check_input_shape(given))
    names = _positional_names(model, len(given.args))
    args = tuple(_spec(a, dtype, n) for a, n in zip(given.args, _arg_names(given.args, names)))
    kwargs = {k: _spec(v, dtype, k) for k, v in given.kwargs.items()}
    leaves = [*((n, leaf) for a, n0 in zip(args, _arg_names(args, names)) for n, leaf in _leaves(a, n0)),
              *((n, leaf) for k, v in kwargs.items() for n, leaf in _leaves(v, k))]
    if not leaves:
        raise ConvlensError(f"{given!r} holds no tensor: give at least one input by shape, e.g. Inputs((1, 3, 224, 224))")
    seen = set()
    for n, _ in leaves:
        if n in seen:
            raise ConvlensError(f"two inputs are named {n!r}: give each argument once")
        seen.add(n)
    grid = _pick_grid(leaves, grid)
    tensors = tuple(InputInfo(n, tuple(leaf.shape), leaf.dtype, n == grid) for n, leaf in leaves)
    return Resolved(args, kwargs, tensors, grid, single, names)


def _pick_grid(leaves: list[tuple[str, Any]], grid: str | None) -> str:
    def spatial(leaf: Any) -> bool:
        return 3 <= len(leaf.shape) <= 5

    listed = ", ".join(f"{n} ({'x'.join(map(str, leaf.shape))})" for n, leaf in leaves)
    if grid is not None:
        found = dict(leaves).get(grid)
        if found is None:
            raise ConvlensError(f"no input is named {grid!r} to carry the pixel grid; the inputs are: {listed}")
        if not spatial(found):
            raise ConvlensError(f"input {grid!r} ({'x'.join(map(str, found.shape))}) cannot carry the pixel grid: "
                                "it must be (N, C, *spatial) with 1 to 3 spatial sizes")
        return grid
    candidates = [n for n, leaf in leaves if spatial(leaf) and (leaf.dtype.is_floating_point or leaf.dtype.is_complex)]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConvlensError(f"no input carries a pixel grid (a floating tensor (N, C, *spatial) with 1 to 3 "
                            f"spatial sizes); the inputs are: {listed}")
    raise ConvlensError(f"several inputs could carry the pixel grid that geometry is measured in: "
                        f"{', '.join(candidates)}; name one (grid= in the API, --grid on the CLI)")
