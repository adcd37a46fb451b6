"""The arguments of convolutions and pools, read from a recorded aten node in one place.

The geometry rules, the cost rules, the diagnostics and gridding all read these records, so an aten
signature is decoded once. Sizes are per spatial dim of the op (1, 2 or 3), as Python ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ..capture import CIRCULAR_PAD, OpNode, TensorInfo, TRef

aten = torch.ops.aten
CONVOLUTIONS = (aten.convolution, aten._convolution)


def per_dim(value: Any, k: int, default: Any = None) -> tuple[int, ...]:
    """An int-or-list aten argument as k ints: 3 -> (3, 3); [3] -> (3, 3); [] or None -> ``default``
    (itself an int or a list)."""
    if value is None or (isinstance(value, (list, tuple)) and len(value) == 0):
        value = default
    if isinstance(value, int):
        return (int(value),) * k
    value = [int(v) for v in value]
    return tuple(value * k if len(value) == 1 else value)


@dataclass(frozen=True)
class ConvArgs:
    """``aten.convolution`` / ``aten._convolution``: input, weight, bias and, per spatial dim, the
    kernel (from the weight's shape), stride, padding, dilation and output padding."""

    input: TRef
    weight: TRef
    bias: TRef | None
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    output_padding: tuple[int, ...]
    groups: int

    @property
    def k(self) -> int:
        """Spatial dims of the convolution."""
        return len(self.kernel)


def is_convolution(node: OpNode) -> bool:
    return getattr(node.op, "overloadpacket", node.op) in CONVOLUTIONS


def conv_args(node: OpNode, tensors: Mapping[int, TensorInfo]) -> ConvArgs:
    """The arguments of a recorded convolution (``is_convolution(node)``), decoded once per node."""
    found = node.decoded.get("conv")
    if found is None:
        found = node.decoded["conv"] = _conv_args(node, tensors)
    return found


def _conv_args(node: OpNode, tensors: Mapping[int, TensorInfo]) -> ConvArgs:
    x, w, bias = node.param("input"), node.param("weight"), node.param("bias")
    kernel = tuple(tensors[w.id].shape[2:])
    k = len(kernel)
    stride, padding, dilation, output_padding = (per_dim(node.param(name), k, default) for name, default in
                                                 (("stride", 1), ("padding", 0), ("dilation", 1),
                                                  ("output_padding", 0)))
    return ConvArgs(x, w, bias if isinstance(bias, TRef) else None, kernel, stride, padding, dilation,
                    bool(node.param("transposed")), output_padding, int(node.param("groups", 1)))


@dataclass(frozen=True)
class PoolArgs:
    """``max_pool{1,2,3}d[_with_indices]`` / ``avg_pool{1,2,3}d``: per spatial dim the kernel, stride
    (default: the kernel), padding and dilation (1 for average pools), and ceil mode."""

    input: TRef
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool
    max: bool

    @property
    def k(self) -> int:
        return len(self.kernel)


def pool_dims(node: OpNode) -> int | None:
    """Spatial dims of a max or average pool op (from its name), else None."""
    name = getattr(node.op, "overloadpacket", node.op)
    name = getattr(name, "__name__", str(name))
    for kind in ("max_pool", "avg_pool"):
        if name.startswith(kind) and name[len(kind):len(kind) + 2] in ("1d", "2d", "3d"):
            return int(name[len(kind)])
    return None


POOLS = frozenset(getattr(aten, f"{kind}{k}d{suffix}") for kind in ("max_pool", "avg_pool") for k in (1, 2, 3)
                  for suffix in ("", "_with_indices") if hasattr(aten, f"{kind}{k}d{suffix}"))
"""The max and average pools :func:`pool_args` reads (overload packets)."""


def is_pool(node: OpNode) -> bool:
    """Whether ``node`` is a max or average pool (:func:`pool_args` reads it; in C, by its packet)."""
    return getattr(node.op, "overloadpacket", None) in POOLS


def pool_args(node: OpNode) -> PoolArgs:
    """The arguments of a recorded max or average pool (``pool_dims(node)`` is not None), decoded once
    per node."""
    found = node.decoded.get("pool")
    if found is None:
        found = node.decoded["pool"] = _pool_args(node)
    return found


def _pool_args(node: OpNode) -> PoolArgs:
    k = pool_dims(node)
    is_max = "max_pool" in getattr(getattr(node.op, "overloadpacket", node.op), "__name__", "")
    kernel = per_dim(node.param("kernel_size"), k)
    return PoolArgs(node.param("self"), kernel, per_dim(node.param("stride"), k, list(kernel)),
                    per_dim(node.param("padding"), k, 0),
                    per_dim(node.param("dilation"), k, 1) if is_max else (1,) * k,
                    bool(node.param("ceil_mode", False)), is_max)


@dataclass(frozen=True)
class PadArgs:
    """A padding op (``constant_pad_nd``, ``reflection_pad``/``replication_pad{1,2,3}d``, circular
    padding): ``pad`` in ``F.pad``'s order (last dim first: left, right, then the dim before) and the
    mode (``zeros`` for a constant pad, as ``nn.Conv2d``'s ``padding_mode`` names it)."""

    input: TRef
    pad: tuple[int, ...]
    mode: str
    value: float = 0.0

    def per_dim(self, rank: int) -> dict[int, tuple[int, int]]:
        """(left, right) per padded dim of a tensor of ``rank`` dims."""
        return {rank - 1 - i: (self.pad[2 * i], self.pad[2 * i + 1]) for i in range(len(self.pad) // 2)}


_PAD_MODES = {"reflection_pad": "reflect", "replication_pad": "replicate"}


def pad_args(node: OpNode) -> PadArgs | None:
    """The arguments of a recorded padding op, else None."""
    if node.op == CIRCULAR_PAD:
        return PadArgs(node.args[0], tuple(node.args[1]), "circular")
    packet = getattr(node.op, "overloadpacket", node.op)
    if packet is aten.constant_pad_nd:
        return PadArgs(node.arg(0, "self"), tuple(node.arg(1, "pad")), "zeros", float(node.param("value", 0) or 0))
    name = getattr(packet, "__name__", "")
    for prefix, mode in _PAD_MODES.items():
        if name.startswith(prefix) and name[len(prefix):len(prefix) + 2] in ("1d", "2d", "3d"):
            k = int(name[len(prefix)])
            return PadArgs(node.arg(0, "self"), per_dim(node.arg(1, "padding"), 2 * k), mode)
    return None
