"""Keep the user's model exactly as it was: every submodule's attributes, parameters, buffers and the
tensors held in its lists, tuples and dicts.

convlens runs the model (on meta tensors, or for real on the CPU fallback, the ERF and the shift check),
and a forward may write into the model: a cache of anchors or rotary tables (``self.cell_anchors =
[...]``), a buffer replaced or created (``register_buffer``), a list appended to. :func:`preserved`
snapshots the state before and puts it back afterwards: attributes a forward created are removed,
replaced ones restored, containers refilled in place. Tensor *values* are protected elsewhere (the
capture never writes into a tensor that existed before it: see :mod:`convlens.capture`).

Only module state is covered: tensors held by plain Python objects outside any module, or by global
caches, are not restored.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
from typing import Any, Iterable, Iterator

import torch
import torch.nn as nn

from .errors import ConvlensError


def check_model(model: Any, entry: str, real: bool = False) -> nn.Module:
    """``model`` if convlens can run it: an ``nn.Module``, not TorchScript (whose submodules run out of
    sight of hooks and dispatch), with real weights when ``real`` (the ERF and the shift check run it)."""
    if not isinstance(model, nn.Module):
        raise ConvlensError(f"{entry} needs a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise ConvlensError(f"{entry}: a TorchScript model ({type(model).__name__}, from torch.jit.script or "
                            "torch.jit.trace) runs its submodules inside TorchScript, out of convlens's sight: "
                            "pass the original nn.Module")
    if real and any(t.device.type == "meta" for t in tensors_of(model)):
        raise ConvlensError(f"{entry} runs the model for real, but its weights are on the meta device: build it "
                            "with real weights (or load them with load_state_dict(..., assign=True))")
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter or buffer (float32 when it has none): the
    input dtype it expects (a ``.half()`` model takes float16 inputs), in which convlens runs it."""
    for t in itertools.chain(model.parameters(), model.buffers()):
        if t.dtype.is_floating_point:
            return t.dtype
    return torch.float32


_MODULE_DICTS = ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set")
_HOOK_DICTS = frozenset({
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"})
"""torch's hook dicts of every module: they hold callables, never a tensor (snapshot, not searched)."""
_ATOMS = (bool, int, float, str, bytes, type(None), torch.Tensor, nn.Module, torch.dtype, torch.device)
"""What holds no container: not searched."""
_SCALARS = frozenset({bool, int, float, str, bytes, type(None)})
"""The commonest atoms, skipped by exact type before any isinstance check (this runs per attribute)."""
_SKIPPED = _HOOK_DICTS | {"_modules", "_non_persistent_buffers_set"}
_TORCH_DICTS = _HOOK_DICTS | frozenset(_MODULE_DICTS)


def _reachable(value: Any, depth: int = 0) -> Iterator[Any]:
    """``value`` and everything inside it through lists, tuples and dicts (8 levels deep at most),
    but the scalars inside (no caller looks for them: a conv's kernel size is a tuple of ints)."""
    yield value
    if depth >= 8 or isinstance(value, _ATOMS):
        return
    if isinstance(value, (list, tuple)):
        items = value
    elif isinstance(value, dict):
        if not value:
            return
        items = list(value.values())
    else:
        return
    for item in items:
        if type(item) not in _SCALARS:
            yield from _reachable(item, depth + 1)


def _flat_tuple(value: Any) -> bool:
    """A tuple of scalars (a conv's kernel size, stride, padding): nothing inside to search or keep
    (checked in C: this runs per attribute of every module)."""
    return type(value) is tuple and _SCALARS.issuperset(map(type, value))


def tensors_of(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor the model's modules hold: parameters, buffers, tensor attributes and tensors in
    lists, tuples and dicts of attributes (any depth)."""
    return _tensors_in(vars(module) for module in model.modules())


def _tensors_in(modules_attrs: Iterable[dict[str, Any]]) -> list[torch.Tensor]:
    """:func:`tensors_of` over the attribute dicts of the modules."""
    found: dict[int, torch.Tensor] = {}
    for attrs in modules_attrs:
        for key in attrs.keys() - _SKIPPED:  # (torch's own dicts left out in C: this runs per module)
            value = attrs[key]
            if type(value) in _SCALARS or _flat_tuple(value):
                continue
            if isinstance(value, torch.Tensor):
                found[id(value)] = value
            elif key in ("_parameters", "_buffers"):
                found.update((id(t), t) for t in value.values() if t is not None)
            elif not isinstance(value, _ATOMS):
                found.update((id(t), t) for t in _reachable(value) if isinstance(t, torch.Tensor))
    return list(found.values())


def _same(live: dict, saved: dict) -> bool:
    """Same keys, each bound to the same object (in C where the order is unchanged)."""
    return live.keys() == saved.keys() and (all(map(operator.is_, live.values(), saved.values()))
                                            or all(live[k] is v for k, v in saved.items()))


class _Snapshot:
    def __init__(self, model: nn.Module):
        self.modules = list(model.modules())
        self.attrs = [dict(vars(m)) for m in self.modules]
        self.dicts = [{k: (attrs[k].copy() if hasattr(attrs[k], "copy") else None) for k in _MODULE_DICTS if k in attrs}
                      for attrs in self.attrs]
        self.training = [m.training for m in self.modules]
        self.containers: list = []
        self.empty: list = []  # containers that were empty: only emptied again
        for attrs in self.attrs:
            for key in attrs.keys() & _HOOK_DICTS:  # (callables inside: the dict itself is the container)
                value = attrs[key]
                if value:
                    self.containers.append((value, dict(value)))
                elif isinstance(value, dict):
                    self.empty.append(value)
            for key in attrs.keys() - _TORCH_DICTS:  # (set operations in C: this runs per module)
                value = attrs[key]
                if type(value) in _SCALARS or isinstance(value, _ATOMS) or _flat_tuple(value):
                    continue
                for c in _reachable(value):
                    if isinstance(c, (list, dict)):
                        if not c:
                            self.empty.append(c)
                        else:
                            self.containers.append((c, list(c) if isinstance(c, list) else dict(c)))

    def tensors(self) -> list[torch.Tensor]:
        """:func:`tensors_of` the model as it was when the snapshot was taken (its parameter and
        buffer dicts as they were then)."""
        return _tensors_in({**attrs, **{k: v for k, v in dicts.items() if v is not None}}
                           for attrs, dicts in zip(self.attrs, self.dicts))

    def restore(self) -> None:
        for module, attrs, dicts, training in zip(self.modules, self.attrs, self.dicts, self.training):
            current = vars(module)
            if not _same(current, attrs):
                for key in [k for k in current if k not in attrs]:
                    del current[key]
                for key, value in attrs.items():
                    if current.get(key, _MISSING) is not value:
                        current[key] = value
            for key, saved in dicts.items():
                live = current[key]
                if saved is None or live is saved:
                    continue
                if isinstance(live, dict) and _same(live, saved):
                    continue
                if isinstance(live, set) and live == saved:
                    continue
                live.clear()
                live.update(saved)
            if module.training is not training:  # (nn.Module.__setattr__ is slow: only where it changed)
                module.training = training
        for container in self.empty:
            if container:
                container.clear()
        for container, contents in self.containers:
            if isinstance(container, list):
                if len(container) != len(contents) or any(a is not b for a, b in zip(container, contents)):
                    container[:] = contents
            elif not _same(container, contents):
                container.clear()
                container.update(contents)


_MISSING = object()


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[_Snapshot]:
    """Run a block that may write into ``model``'s state; afterwards every module's attributes,
    parameter/buffer/submodule dicts, containers and training flags are as they were. Also keeps the
    global (CPU) random state, which a forward that draws noise would advance. Gives the snapshot
    (its :meth:`~_Snapshot.tensors`: the model's tensors before the block)."""
    snapshot = _Snapshot(model)
    try:
        with torch.random.fork_rng(devices=[]):
            yield snapshot
    finally:
        snapshot.restore()


@contextlib.contextmanager
def evaluated(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode; afterwards its modules' attributes, caches and training flags are as
    they were (:func:`preserved`). For the real runs of the ERF and the shift check."""
    with preserved(model):
        model.eval()
        yield model
