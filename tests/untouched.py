"""Snapshot every tensor a model holds, and compare two snapshots (tests/test_untouched.py uses it).

A snapshot walks every submodule (``named_modules(remove_duplicate=False)``, so a shared submodule is
seen under each of its names) and records every tensor reachable from it: its parameters (and their
``.grad``), its buffers, and every attribute in ``module.__dict__`` that is a tensor or a list, tuple
or dict holding tensors at any depth. For each tensor it keeps the object itself (so ``id()`` stays
valid and identity can be checked with ``is``), its device, dtype, shape, ``requires_grad`` and a CPU
clone of its value (``None`` for a meta tensor, which has no value). It also records, per module, the
names of its attributes (``__dict__`` keys, parameter, buffer and submodule names, so that an attribute
a forward creates is seen even when it holds no tensor) and its ``training`` flag.

``assert_untouched(before, model, context)`` fails with a message that names the first offending path
and what differs there, then how many other paths differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn as nn

# covered by the parameter / buffer / submodule walk; their keys are recorded as attribute names
_REGISTRIES = ("_parameters", "_buffers", "_modules")


@dataclass(frozen=True)
class TensorRecord:
    """One tensor reachable from the model, as it was when the snapshot was taken."""

    path: str
    obj: torch.Tensor  # a strong reference: keeps ``ident`` valid and allows an ``is`` check
    ident: int
    device: torch.device
    dtype: torch.dtype
    shape: tuple[int, ...]
    requires_grad: bool
    value: torch.Tensor | None  # a CPU clone; None on meta (no data) or when taken with values=False

    def current(self) -> torch.Tensor:
        """The value now: the clone if one was taken, else the live tensor (on CPU)."""
        return self.value if self.value is not None else self.obj.detach().cpu()

    @property
    def meta(self) -> bool:
        return self.device.type == "meta"


@dataclass(frozen=True)
class Snapshot:
    tensors: dict[str, TensorRecord]  # in walk order
    attributes: dict[str, frozenset[str]]  # module path -> attribute names
    training: dict[str, bool]  # module path -> training flag


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _nested(path: str, value: Any, seen: set[int]) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) for a tensor, or for every tensor inside lists, tuples and dicts at any depth."""
    if isinstance(value, torch.Tensor):
        yield path, value
    elif isinstance(value, (list, tuple, dict)):
        if id(value) in seen:  # a container that holds itself
            return
        seen.add(id(value))
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            yield from _nested(f"{path}[{key!r}]", item, seen)


def _tensors(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, param in module._parameters.items():
            if param is not None:
                yield _join(prefix, name), param
                if param.grad is not None:
                    yield _join(prefix, name) + ".grad", param.grad
        for name, buffer in module._buffers.items():
            if buffer is not None:
                yield _join(prefix, name), buffer
        for name, value in module.__dict__.items():
            if name not in _REGISTRIES:
                yield from _nested(_join(prefix, name), value, set())


def _record(path: str, t: torch.Tensor, values: bool) -> TensorRecord:
    value = None
    if values and t.device.type != "meta":
        with torch.no_grad():
            value = t.detach().to("cpu", copy=True)
    return TensorRecord(path, t, id(t), t.device, t.dtype, tuple(t.shape), t.requires_grad, value)


def _attribute_names(module: nn.Module) -> frozenset[str]:
    names = {name for name in module.__dict__ if name not in _REGISTRIES}
    names |= {f"parameter:{name}" for name in module._parameters}
    names |= {f"buffer:{name}" for name in module._buffers}
    names |= {f"module:{name}" for name in module._modules}
    return frozenset(names)


def snapshot(model: nn.Module, values: bool = True) -> Snapshot:
    """Everything in ``model`` that a convlens entry point must leave as it found it.

    ``values=False``: no clones, for the ``after`` side of a comparison (it compares the live tensors,
    which the records keep, with the ``before`` clones): half the memory and time on a large model.
    """
    tensors: dict[str, TensorRecord] = {}
    for path, t in _tensors(model):
        tensors.setdefault(path, _record(path, t, values))
    modules = list(model.named_modules(remove_duplicate=False))
    return Snapshot(tensors,
                    {prefix: _attribute_names(m) for prefix, m in modules},
                    {prefix: m.training for prefix, m in modules})


def same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exact equality of two CPU tensors of one dtype and shape; NaN equals NaN at the same place."""
    if torch.equal(a, b):
        return True
    if a.is_floating_point() or a.is_complex():
        nan_a, nan_b = torch.isnan(a), torch.isnan(b)
        return torch.equal(nan_a, nan_b) and torch.equal(a.masked_fill(nan_a, 0), b.masked_fill(nan_b, 0))
    return False


def _where(path: str) -> str:
    return path or "<root>"


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """Every difference, one line each: meta tensors first, then in the order the model's walk meets them."""
    problems: list[str] = []
    for path, rec in after.tensors.items():
        if rec.meta:
            origin = "new" if path not in before.tensors else "was on " + str(before.tensors[path].device)
            problems.append(f"{path}: a meta tensor of shape {rec.shape} is in the model ({origin})")
    for path, old in before.tensors.items():
        new = after.tensors.get(path)
        if new is None:
            problems.append(f"{path}: the tensor is gone (was {old.dtype} {old.shape} on {old.device})")
            continue
        if new.meta:
            continue  # said above
        what = []
        if new.obj is not old.obj:
            what.append(f"another object (id {old.ident} -> {new.ident})")
        if new.device != old.device:
            what.append(f"device {old.device} -> {new.device}")
        if new.dtype != old.dtype:
            what.append(f"dtype {old.dtype} -> {new.dtype}")
        if new.shape != old.shape:
            what.append(f"shape {old.shape} -> {new.shape}")
        if new.requires_grad != old.requires_grad:
            what.append(f"requires_grad {old.requires_grad} -> {new.requires_grad}")
        if not what and old.value is not None and not same_values(old.value, new.current()):
            what.append("its value changed")
        if what:
            problems.append(f"{path}: " + ", ".join(what))
    for path, rec in after.tensors.items():
        if path not in before.tensors and not rec.meta:
            problems.append(f"{path}: a new tensor ({rec.dtype} {rec.shape} on {rec.device})")
    for prefix in [*before.attributes, *(p for p in after.attributes if p not in before.attributes)]:
        old_names = before.attributes.get(prefix)
        new_names = after.attributes.get(prefix)
        if old_names is None or new_names is None:
            problems.append(f"{_where(prefix)}: the submodule is {'new' if old_names is None else 'gone'}")
        elif old_names != new_names:
            added, removed = sorted(new_names - old_names), sorted(old_names - new_names)
            problems.append(f"{_where(prefix)}: attributes added {added}, removed {removed}")
    for prefix, flag in before.training.items():
        if prefix in after.training and after.training[prefix] != flag:
            problems.append(f"{_where(prefix)}: training {flag} -> {after.training[prefix]}")
    return problems


def assert_untouched(before: Snapshot, model: nn.Module, context: str) -> None:
    """Fail naming the first offending path (and how many more there are) unless ``model`` is still
    as ``before`` recorded it."""
    problems = differences(before, snapshot(model, values=False))
    if problems:
        more = f"; {len(problems) - 1} more, e.g. " + " | ".join(problems[1:4]) if len(problems) > 1 else ""
        raise AssertionError(f"{context}: {problems[0]}{more}")


def assert_no_meta(snap: Snapshot, context: str) -> None:
    """No meta tensor anywhere (a baseline that holds meta tensors proves nothing)."""
    meta = [path for path, rec in snap.tensors.items() if rec.meta]
    assert not meta, f"{context}: {meta[0]}: a meta tensor is in the model ({len(meta)} in all: {meta[:3]})"
