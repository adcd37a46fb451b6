"""Independent gradient oracle for receptive-field geometry and coverage.

This module shares no code with ``convlens`` (it imports nothing from it).  It computes expected
values the way ``DESIGN.md`` ("The oracle tests use") prescribes: take a *linearized copy* of the
model, push a random positive combination of output channels back to the input with autograd, and
read the support of ``|d T[u] / d X|``.

Linearization (``linearized``)
------------------------------
The copy is a ``copy.deepcopy`` of the model (tests may copy; the tool under test may not), in
``eval()`` mode, converted to ``dtype`` (float64 by default), with

* ``weights="positive"`` (default): every parameter ``w -> |w| + 0.01``; every ``running_var``
  buffer ``v -> |v| + 0.01`` (so batch norm in eval mode is an affine map with positive scale).
  With positive weights no two paths can cancel, so the support of the gradient is exactly the set
  of input pixels with a path to the unit.
* ``weights="ones"``: every parameter ``-> 1``, ``running_var -> 1``, ``running_mean -> 0`` and
  ``eps -> 0`` on norm modules (batch norm becomes the identity), and average pooling becomes *sum*
  pooling, so that the gradient counts paths (coverage multiplicity).  Paths through channels count
  too: use single-channel nets (or divide) to get spatial tap counts.  Interpolation keeps its
  fractional taps, and reductions such as ``x.mean()`` keep their ``1/n``.

Ops are rewritten **per op, not per module class**, by a ``torch.overrides.TorchFunctionMode``
that is active while the copy's ``forward`` runs.  Module classes such as ``nn.ReLU`` or
``nn.MaxPool2d`` call the functional ops, so they are covered by the same table; so are direct
calls such as ``F.relu(x)``, ``torch.relu(x)``, ``x.relu_()`` and ``x.clamp(min=0)``.  The mode
sits *above* autograd, so the backward pass is the backward of the rewritten op.  (A
``TorchDispatchMode`` sits below autograd and would leave the original op's backward formula, e.g.
relu's mask, in place; it is deliberately not used.)

The rewriting table ``_RULES`` (keyed by the ``__name__`` of the called function):

==========================================  ==========================================================
ops                                          rewritten to
==========================================  ==========================================================
activations: relu relu6 leaky_relu gelu      identity (a clone; the input itself for in-place calls,
silu sigmoid tanh hardswish hardsigmoid      ``name_`` or ``inplace=True``).  Applied only to floating
elu selu celu softplus mish hardtanh prelu   tensors that require grad, so clamps of index / coordinate
rrelu threshold clamp clip clamp_min         tensors built from constants are left alone.
clamp_max logsigmoid softsign tanhshrink
softshrink hardshrink (+ in-place ``_``)
dropout dropout1d/2d/3d alpha_dropout        identity
feature_alpha_dropout feature_dropout
max_pool1d/2d/3d (+ ``_with_indices``)       window *sum* over the same window: a per-channel conv
                                             with an all-ones kernel, same kernel, stride, padding,
                                             dilation, output size (so ceil_mode too).  A positive
                                             multiple of average pooling with count_include_pad=True.
                                             Indices, when returned, are the real op's indices.
adaptive_max_pool1d/2d/3d (+ indices)        adaptive_avg_pool (x window size in "ones" mode)
lp_pool1d/2d/3d                              window sum over the same window (no padding)
max_unpool1d/2d/3d (``F.`` versions)         per-channel transposed conv with an all-ones kernel
                                             (kernel/stride/padding of the unpool, output cropped or
                                             zero-padded to the real output size): every position of
                                             a window receives, whatever the indices.
avg_pool1d/2d/3d          ("ones" mode only) window sum; adaptive_avg_pool -> x window size
mul div sub rsub neg (``torch.``, ``Tensor``  the *sum* of the tensor operands (``a * b``, ``a / b``,
methods, operators, in-place forms)          ``a - b`` -> ``a + b``; ``-a`` -> ``a``); a python-number
                                             factor c -> |c|.  Windows are paths, values ignored
                                             (DESIGN): run as is, ``x - relu(x)`` would linearize to
                                             0 and ``a * b`` would lose ``a``'s paths where ``b`` is
                                             exactly 0 (zero padding, transposed-conv gaps).
==========================================  ==========================================================

layer_norm, group_norm and instance_norm (batch statistics) become ``x + mean(x)`` over the normalised
group (affine weights kept): the paths of their statistics stay, and no centring cancels a pixel
that the whole group reads alike. ``F.normalize`` becomes ``x + mean(x)`` along its dim likewise (run
as is, a position whose other entries are exactly zero normalises to a constant).

softmax, and scaled dot-product attention written out as ``softmax(q kᵀ * scale + mask) v``, run on
logits divided by a detached positive constant (their largest finite magnitude along the dim, plus 1),
so that no weight rounds to exactly 0 (with positive weights deep nets make logits so large that
softmax saturates and a real path gets an exact-zero gradient); ``-inf`` (masked) stays ``-inf``.
Masks follow issue 17's convention: a constant (gradient-free) tensor added to one that depends on
the input, or given as SDPA's float mask, has its entries at or below -80 made ``-inf`` (timm's Swin
masks the pairs its cyclic shift brought together with -100; tempering alone would revive them).

Everything else runs as is: convolutions, linear layers, norms, interpolation (bicubic keeps its
negative taps), matmul.  Ops that are data dependent (softmax, attention, norms using
batch/instance statistics) are probed at two fixed random inputs (``inputs=2``) and the supports
united.  Negative-tap *linear* ops (bicubic) need no
such help: with random positive weights an exact cancellation is a measure-zero event.

Not rewritten (documented limits): hand-written activations (``torch.where(x > 0, ...)``,
``torch.maximum``), fractional max pooling, ops hidden inside a composite torch function that is run
as a whole (e.g. the internals of ``F.multi_head_attention_forward``), batch norm without running
statistics (it stays data dependent).  Global-context paths (SE gates, image pooling) are not
detached here: tests that check local geometry detach them in their own model.

Support threshold
-----------------
The support is ``grad > tol * grad.max()`` with ``tol = 0`` by default: exactly nonzero.  Exact
zeros are reliable because a pixel without a path receives a gradient that is a sum of exact zero
products.  Tiny values are not spurious either: float rounding of interpolation source
coordinates gives a tap whose weight is mathematically 0 a weight of about 1e-17..1e-16 (relative),
e.g. 1-D linear interpolation with ``scale_factor=5`` (torch's linear kernels compute the source
coordinate as one fused multiply-add), and rounds a far bicubic weight to exactly 0.  convlens follows
torch's rounding there (``rules.spatial``), so the default ``tol = 0`` is the check; pass e.g.
``tol=1e-9`` only to compare with exact-arithmetic taps.

Probing conventions
-------------------
``layer`` is a module path as in ``model.named_modules()``; ``None`` or ``""`` is the model's output.
It may carry the DESIGN row suffixes: ``"name#2"`` (second call of the module) and ``"name[0]"`` /
``"name[key]"`` (element of a tuple/list/dict output; same as ``output_index``).  The probed tensor
``T`` has its channel axis at ``channel_dim`` (default 1; ``None`` = no channel axis); every other
non-batch axis is spatial and ``unit`` indexes those in order (negative indices allowed; default
the centre ``n // 2`` of each).  A rank-2 ``(N, F)`` tensor has no spatial axis and the unit is
ignored.  The probed scalar is ``sum_c r_c * T[0, c, *unit]`` with ``r`` fixed, random, in
[0.5, 1.5] (seeded), and ``r = 1`` in "ones" mode.  The gradient is ``|d scalar / d X[0]|`` summed
over input channels: a float64 numpy array over the input's spatial grid (the mean over the inputs
when ``inputs=2``, so "ones" mode gives exact path counts: the linearized net is linear there).
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils._pytree import tree_map
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = [
    "LinearizeMode",
    "linearized",
    "ProbeResult",
    "probe",
    "probe_many",
    "Geometry",
    "unbounded_geometry",
    "torch_shapes",
]

WEIGHTS = ("positive", "ones")

# ---------------------------------------------------------------------------------------------
# helpers


def _tup(v: Any, k: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple, torch.Size)):
        v = tuple(int(a) for a in v)
        return v * k if len(v) == 1 else v
    return (int(v),) * k


def _bind(args: Sequence[Any], kwargs: dict, names: Sequence[str], defaults: dict) -> dict:
    out = dict(defaults)
    out.update(zip(names, args))
    out.update(kwargs)
    return out


def _batched(x: torch.Tensor, k: int) -> tuple[torch.Tensor, bool]:
    """(N, C, *k spatial) view of x; unbatched (C, *spatial) inputs get a batch axis."""
    if x.ndim == k + 1:
        return x.unsqueeze(0), True
    return x, False


def _conv(k: int) -> Callable:
    return (F.conv1d, F.conv2d, F.conv3d)[k - 1]


def _conv_t(k: int) -> Callable:
    return (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[k - 1]


def _pad_list(left: Sequence[int], right: Sequence[int]) -> list[int]:
    """F.pad's list (last axis first) from per-axis left/right amounts (negative = crop)."""
    out: list[int] = []
    for lo, hi in zip(reversed(left), reversed(right)):
        out += [int(lo), int(hi)]
    return out


def _window_sum(
    x: torch.Tensor,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    dilation: tuple[int, ...],
    out_size: tuple[int, ...],
) -> torch.Tensor:
    """Sum over pooling windows: output i covers input i*s - p + t*d, t < k, zero outside.

    Implemented as zero padding followed by a per-channel conv with an all-ones (dilated) kernel;
    the right padding is chosen so the result has exactly ``out_size`` positions (ceil_mode).
    """
    k = len(kernel)
    xb, unb = _batched(x, k)
    c = xb.shape[1]
    need = [(o - 1) * s + d * (kk - 1) + 1 for o, s, d, kk in zip(out_size, stride, dilation, kernel)]
    right = [L - n - p for L, n, p in zip(need, xb.shape[2:], padding)]
    xp = F.pad(xb, _pad_list(padding, right))
    w = torch.ones((c, 1, *kernel), dtype=xb.dtype, device=xb.device)
    y = _conv(k)(xp, w, stride=stride, dilation=dilation, groups=c)
    return y.squeeze(0) if unb else y


def _adaptive_counts(in_size: Sequence[int], out_size: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """Window sizes of adaptive pooling, broadcastable over (..., *out_size)."""
    t = torch.ones((), dtype=like.dtype, device=like.device)
    for ax, (n, o) in enumerate(zip(in_size, out_size)):
        sizes = [math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)]
        shape = [1] * len(out_size)
        shape[ax] = o
        t = t * torch.tensor(sizes, dtype=like.dtype, device=like.device).reshape(shape)
    return t


# ---------------------------------------------------------------------------------------------
# rewriting rules: rule(mode, func, name, args, kwargs) -> result, or NotImplemented to run as is

_ACTIVATIONS = (
    "relu relu6 leaky_relu gelu silu sigmoid tanh hardswish hardsigmoid elu selu celu softplus "
    "mish hardtanh prelu rrelu threshold clamp clip clamp_min clamp_max logsigmoid softsign "
    "tanhshrink softshrink hardshrink"
).split()
_DROPOUTS = "dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout feature_dropout".split()


def _is_inplace(func: Callable, name: str, args: Sequence[Any], kwargs: dict) -> bool:
    if name.endswith("_") and not name.startswith("__"):
        return True
    if kwargs.get("inplace") is True:
        return True
    try:
        return inspect.signature(func).bind(*args, **kwargs).arguments.get("inplace") is True
    except (TypeError, ValueError):
        return False


def _identity(mode, func, name, args, kwargs):
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or not x.requires_grad:
        return NotImplemented
    # in-place calls return the input itself (aliasing kept); out-of-place calls a fresh tensor,
    # so that a later in-place op on the result does not modify the input.
    return x if _is_inplace(func, name, args, kwargs) else x.clone()


def _dropout(mode, func, name, args, kwargs):
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor):
        return NotImplemented
    return x if _is_inplace(func, name, args, kwargs) else x.clone()


def _batch_norm(mode, func, name, args, kwargs):
    """Batch norm with running statistics, written out per channel. torch 2.14's CPU batch norm
    backward gives wrong gradients when the gradient's layout differs from the input's (a conv, BN,
    then flatten(2).transpose(1, 2), as in XCiT's and LeViT's patch embeddings: every pixel seemed
    to reach every token), so the oracle does not rely on it."""
    a = _bind(args, kwargs, ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"),
              {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5})
    x, mean, var = a["input"], a["running_mean"], a["running_var"]
    if a["training"] or mean is None or var is None or not isinstance(x, torch.Tensor):
        return NotImplemented
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + a["eps"])
    if a["weight"] is not None:
        y = y * a["weight"].reshape(shape)
    if a["bias"] is not None:
        y = y + a["bias"].reshape(shape)
    return y


def _norm_as_sum(kind: str):
    """layer_norm, group_norm, instance_norm (batch statistics) as ``x + mean(x)`` over the normalised
    group, then the affine weights: the statistics' paths are kept, with positive weight. Run as
    is, the centring ``x - mean(x)`` cancels exactly a pixel that every value of the group reads
    alike (two channels, one ``v`` and one ``v + w``: ``x - mean`` keeps only ``w``), although the
    pixel has a path (DESIGN: windows are paths). ``"ones"`` mode runs them as is."""
    names = {"layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
             "group_norm": ("input", "num_groups", "weight", "bias", "eps"),
             "instance_norm": ("input", "running_mean", "running_var", "weight", "bias", "use_input_stats",
                               "momentum", "eps")}[kind]

    def rule(mode, func, name, args, kwargs):
        a = _bind(args, kwargs, names, {n: None for n in names[2:]})
        x = a["input"]
        if mode.ones or not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() < 2:
            return NotImplemented
        channel = (1, -1) + (1,) * (x.dim() - 2)
        if kind == "layer_norm":
            k = len(a["normalized_shape"])
            y = x + x.mean(tuple(range(x.dim() - k, x.dim())), keepdim=True)
            shape = tuple(a["normalized_shape"])
        elif kind == "group_norm":
            g = x.reshape(x.shape[0], a["num_groups"], -1)
            y = (g + g.mean(-1, keepdim=True)).reshape(x.shape)
            shape = channel
        else:
            if a["use_input_stats"] is False:
                return NotImplemented
            y = x + x.mean(tuple(range(2, x.dim())), keepdim=True)
            shape = channel
        if a["weight"] is not None:
            y = y * a["weight"].reshape(shape)
        if a["bias"] is not None:
            y = y + a["bias"].reshape(shape)
        return y
    return rule


def _normalize(mode, func, name, args, kwargs):
    """``F.normalize`` (x over its p-norm along ``dim``) as ``x + mean(x)`` along ``dim``, as the
    norms above: the paths of every entry along ``dim`` kept, with positive weight. Run as is, a
    position whose other entries along ``dim`` are exactly zero (channels of zero padding beside one
    that is not) normalises to a constant, and the path its own value has (DESIGN: windows are
    paths) gets an exact-zero gradient (the 10,000-network generator's l2norm gate after a cat of a
    padded map, seed 34). ``"ones"`` mode runs it as is."""
    a = _bind(args, kwargs, ("input", "p", "dim", "eps", "out"), {"p": 2.0, "dim": 1, "eps": 1e-12, "out": None})
    x = a["input"]
    if mode.ones or not isinstance(x, torch.Tensor) or not x.is_floating_point() or a["out"] is not None:
        return NotImplemented
    return x + x.mean(a["dim"], keepdim=True)


def _tempered(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Logits over a detached positive scale: the same pairs get nonzero weight, none rounds to 0."""
    finite = torch.isfinite(x.detach())
    scale = x.detach().abs().masked_fill(~finite, 0).amax(dim, keepdim=True) + 1
    return x / scale


def _softmax(mode, func, name, args, kwargs):
    a = _bind(args, kwargs, ("input", "dim"), {"dim": None})
    x, dim = a["input"], a["dim"]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or dim is None:
        return NotImplemented
    out = torch.softmax(_tempered(x, dim), dim)
    return out.log() if name == "log_softmax" else out


def _sdpa(mode, func, name, args, kwargs):
    a = _bind(args, kwargs, ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"),
              {"attn_mask": None, "dropout_p": 0.0, "is_causal": False, "scale": None})
    q, k, v, mask = a["query"], a["key"], a["value"], a["attn_mask"]
    if a.get("enable_gqa"):
        return NotImplemented
    scale = a["scale"] if a["scale"] is not None else 1 / math.sqrt(q.shape[-1])
    logits = q @ k.transpose(-2, -1) * scale
    if a["is_causal"]:
        n, m = logits.shape[-2:]
        logits = logits.masked_fill(~torch.ones(n, m, dtype=torch.bool, device=q.device).tril(), float("-inf"))
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + _masking(mask)
    return torch.softmax(_tempered(logits, -1), -1) @ v


def _real(func, args, kwargs):
    """The real op on detached inputs: gives output sizes and indices."""
    with torch.no_grad():
        a = [t.detach() if isinstance(t, torch.Tensor) else t for t in args]
        kw = {k: (t.detach() if isinstance(t, torch.Tensor) else t) for k, t in kwargs.items()}
        return func(*a, **kw)


def _max_pool(k: int):
    names = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
    defaults = dict(stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False)

    def rule(mode, func, name, args, kwargs):
        a = _bind(args, kwargs, names, defaults)
        x = a["input"]
        real = _real(func, args, kwargs)
        out = real[0] if isinstance(real, tuple) else real
        kernel = _tup(a["kernel_size"], k)
        stride = kernel if a["stride"] in (None, (), []) else _tup(a["stride"], k)
        y = _window_sum(x, kernel, stride, _tup(a["padding"], k), _tup(a["dilation"], k),
                        tuple(out.shape[-k:]))
        return (y, real[1]) if isinstance(real, tuple) else y

    return rule


def _adaptive_max(k: int):
    def rule(mode, func, name, args, kwargs):
        a = _bind(args, kwargs, ("input", "output_size", "return_indices"), dict(return_indices=False))
        x = a["input"]
        real = _real(func, args, kwargs)
        out = real[0] if isinstance(real, tuple) else real
        osz = tuple(out.shape[-k:])
        y = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[k - 1](x, osz)
        if mode.ones:
            y = y * _adaptive_counts(x.shape[-k:], osz, y)
        return (y, real[1]) if isinstance(real, tuple) else y

    return rule


def _adaptive_avg(k: int):
    def rule(mode, func, name, args, kwargs):
        if not mode.ones:
            return NotImplemented
        x = args[0] if args else kwargs["input"]
        y = func(*args, **kwargs)
        return y * _adaptive_counts(x.shape[-k:], y.shape[-k:], y)

    return rule


def _avg_pool(k: int):
    names = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    defaults = dict(stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None)

    def rule(mode, func, name, args, kwargs):
        if not mode.ones:
            return NotImplemented
        a = _bind(args, kwargs, names, defaults)
        out = _real(func, args, kwargs)
        kernel = _tup(a["kernel_size"], k)
        stride = kernel if a["stride"] in (None, (), []) else _tup(a["stride"], k)
        return _window_sum(a["input"], kernel, stride, _tup(a["padding"], k), (1,) * k, tuple(out.shape[-k:]))

    return rule


def _lp_pool(k: int):
    names = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
    defaults = dict(stride=None, ceil_mode=False)

    def rule(mode, func, name, args, kwargs):
        a = _bind(args, kwargs, names, defaults)
        out = _real(func, args, kwargs)
        kernel = _tup(a["kernel_size"], k)
        stride = kernel if a["stride"] in (None, (), []) else _tup(a["stride"], k)
        return _window_sum(a["input"], kernel, stride, (0,) * k, (1,) * k, tuple(out.shape[-k:]))

    return rule


def _max_unpool(k: int):
    fn = (F.max_unpool1d, F.max_unpool2d, F.max_unpool3d)[k - 1]
    names = ("input", "indices", "kernel_size", "stride", "padding", "output_size")
    defaults = dict(stride=None, padding=0, output_size=None)

    def rule(mode, func, name, args, kwargs):
        if func is not fn:  # torch._C._nn.max_unpoolNd has another signature
            return NotImplemented
        a = _bind(args, kwargs, names, defaults)
        out = _real(func, args, kwargs)
        kernel = _tup(a["kernel_size"], k)
        stride = kernel if a["stride"] in (None, (), []) else _tup(a["stride"], k)
        padding = _tup(a["padding"], k)
        xb, unb = _batched(a["input"], k)
        c = xb.shape[1]
        w = torch.ones((c, 1, *kernel), dtype=xb.dtype, device=xb.device)
        # full[j] receives input i for j = i*s + t, t < k; output o is full[o + p]
        full = _conv_t(k)(xb, w, stride=stride, groups=c)
        osz = out.shape[-k:]
        right = [o + p - f for o, p, f in zip(osz, padding, full.shape[2:])]
        y = F.pad(full, _pad_list([-p for p in padding], right))
        return y.squeeze(0) if unb else y

    return rule


def _max_reduction(mode, func, name, args, kwargs):
    """amax/amin/max(dim)/min(dim) -> sum over the same dims (every element reaches the result)."""
    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return NotImplemented  # elementwise maximum of two tensors
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return NotImplemented
    dim = args[1] if len(args) > 1 else kwargs.get("dim")
    keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        dim = list(range(x.ndim))
    total = x.sum(dim=dim, keepdim=keepdim)
    if name in ("max", "min") and dim is not None and isinstance(args[1] if len(args) > 1 else kwargs.get("dim"), int):
        indices = _real(func, args, kwargs)[1]
        return torch.return_types.max((total, indices)) if name == "max" else torch.return_types.min((total, indices))
    return total


# Products, quotients, differences and negation -> sums of their operands (DESIGN: windows and
# coverage are *paths* through the taps, values ignored).  Run as is, they break the premise that no
# two paths cancel and that every path carries a nonzero weight: ``x - relu(x)`` linearizes to 0, and
# ``a * b`` has no gradient to ``a`` where ``b`` is exactly 0 (zero padding, a transposed conv's
# phase gaps, both without bias).  ``a + b`` has the union of the operands' supports and, in "ones"
# mode, the sum of their path counts.  A python-number factor c becomes |c| (1 when c == 0).
_SIGNED = {
    "mul": "mul", "multiply": "mul", "__mul__": "mul", "__rmul__": "mul", "mul_": "mul", "__imul__": "mul",
    "div": "div", "divide": "div", "true_divide": "div", "__truediv__": "div", "div_": "div",
    "__itruediv__": "div", "__rtruediv__": "rdiv",
    "sub": "sub", "subtract": "sub", "__sub__": "sub", "sub_": "sub", "__isub__": "sub",
    "rsub": "sub", "__rsub__": "sub",
    "neg": "neg", "negative": "neg", "__neg__": "neg", "neg_": "neg",
}


MASKS_AT = -80.0
"""Issue 17's mask convention: a constant additive term at or below this removes its pair."""


def _masking(t: torch.Tensor) -> torch.Tensor:
    """A constant (no gradient: a buffer, a factory tensor) added to what depends on the input, with
    its entries at or below ``MASKS_AT`` made ``-inf``: the attention pairs such a mask suppresses
    get an exactly zero weight, as the convention says (without it the tempered softmax would keep
    them). The values are read from the model as it runs, not from convlens."""
    if t.requires_grad or not t.is_floating_point() or not bool((t <= MASKS_AT).any()):
        return t
    return t.masked_fill(t <= MASKS_AT, float("-inf"))


def _add(mode, func, name, args, kwargs):
    """``a + b`` as is, a constant mask operand read by the convention (:func:`_masking`)."""
    if len(args) < 2 or not all(isinstance(t, torch.Tensor) for t in args[:2]) \
            or not any(t.requires_grad for t in args[:2]):
        return NotImplemented
    masked = [args[0]] + [_masking(args[1])] if args[0].requires_grad else [_masking(args[0]), args[1]]
    if all(m is t for m, t in zip(masked, args)):
        return NotImplemented
    return func(*masked, *args[2:], **kwargs)


def _as_sum(mode, func, name, args, kwargs):
    a = args[0] if args else kwargs.get("input")
    b = args[1] if len(args) > 1 else kwargs.get("other")
    live = [t for t in (a, b) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]
    if not live:
        return NotImplemented  # index / coordinate arithmetic on constants
    inplace = _is_inplace(func, name, args, kwargs) or name.startswith("__i")
    kind = _SIGNED[name]
    if kind == "neg" or b is None:
        return a if inplace else a.clone()
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.add_(b) if inplace else a + b
    x, c = (a, b) if isinstance(a, torch.Tensor) else (b, a)
    c = abs(c) or 1
    if kind == "mul":
        return x.mul_(c) if inplace else x * c
    if kind == "div":
        return x.div_(c) if inplace else x / c
    return x if inplace else x.clone()  # differences with a number; c / x (one path per position)


_RULES: dict[str, Callable] = {}
for _n in ("amax", "amin", "max", "min"):
    _RULES[_n] = _max_reduction
for _n in _ACTIVATIONS:
    _RULES[_n] = _RULES[_n + "_"] = _identity
for _n in _DROPOUTS:
    _RULES[_n] = _RULES[_n + "_"] = _dropout
for _k in (1, 2, 3):
    _RULES[f"max_pool{_k}d"] = _RULES[f"max_pool{_k}d_with_indices"] = _max_pool(_k)
    _RULES[f"adaptive_max_pool{_k}d"] = _RULES[f"adaptive_max_pool{_k}d_with_indices"] = _adaptive_max(_k)
    _RULES[f"adaptive_avg_pool{_k}d"] = _adaptive_avg(_k)
    _RULES[f"avg_pool{_k}d"] = _avg_pool(_k)
    _RULES[f"lp_pool{_k}d"] = _lp_pool(_k)
    _RULES[f"max_unpool{_k}d"] = _max_unpool(_k)
for _n in _SIGNED:
    _RULES[_n] = _as_sum
_RULES["batch_norm"] = _batch_norm
for _n in ("layer_norm", "group_norm", "instance_norm"):
    _RULES[_n] = _norm_as_sum(_n)
_RULES["normalize"] = _normalize
_RULES["softmax"] = _RULES["log_softmax"] = _softmax
for _n in ("add", "__add__", "__radd__", "add_", "__iadd__"):
    _RULES[_n] = _add
_RULES["scaled_dot_product_attention"] = _sdpa


# Global paths, detached when checking *local* geometry (DESIGN: "global-context paths are detached"):
# reductions and products over positions (their results are detached), and normalisations (their
# statistics are detached: the output keeps a same-position path to the input).
_REDUCTIONS = set("mean sum amax amin max min std var norm logsumexp prod nanmean nansum std_mean var_mean".split())
_PRODUCTS = set("matmul bmm __matmul__ __rmatmul__ einsum baddbmm scaled_dot_product_attention softmax "
                "log_softmax".split())
_NORMS = set("group_norm layer_norm instance_norm batch_norm".split())


def _detach_all(out: Any) -> Any:
    return tree_map(lambda t: t.detach() if isinstance(t, torch.Tensor) else t, out)


def _is_global_reduction(name: str, args, kwargs) -> bool:
    if name in _REDUCTIONS:
        # max/min of two tensors are elementwise; with a dim (or none) they reduce
        if name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
            return False
        # over dim 0 alone: the batch (probes use one sample) or a stacked dim (torch.stack(features).sum(0),
        # segmentation_models_pytorch's FPN), which never mixes positions
        dim = args[1] if len(args) > 1 and not isinstance(args[1], torch.Tensor) else kwargs.get("dim")
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        dims = [dim] if isinstance(dim, int) else list(dim) if isinstance(dim, (list, tuple)) else None
        if x is not None and dims and all(x.shape[d] == 1 for d in dims):
            return False  # over dims of one position: it mixes nothing
        return not (dim == 0 or (isinstance(dim, (list, tuple)) and list(dim) == [0]))
    if name.startswith("adaptive_") and "pool" in name:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        sizes = size if isinstance(size, (tuple, list)) else [size]
        return all(s == 1 for s in sizes)
    if name in _PRODUCTS:
        return not _mixes_one_position(name, args, kwargs)
    return False


def _mixes_one_position(name: str, args, kwargs) -> bool:
    """A product or softmax over a dim of one element mixes nothing (attention over one token: the
    weight is 1, the output is the value): not a global path."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if name in ("softmax", "log_softmax"):
        dim = args[1] if len(args) > 1 and isinstance(args[1], int) else kwargs.get("dim")
        return bool(tensors) and isinstance(dim, int) and tensors[0].dim() > 0 and tensors[0].shape[dim] == 1
    if name in ("matmul", "bmm", "__matmul__") and len(tensors) >= 2 and tensors[0].dim() >= 2:
        return tensors[0].shape[-1] == 1
    if name == "__rmatmul__" and len(tensors) >= 2 and tensors[1].dim() >= 2:
        return tensors[1].shape[-1] == 1
    if name == "scaled_dot_product_attention" and len(tensors) >= 2 and tensors[1].dim() >= 2:
        return tensors[1].shape[-2] == 1
    return False


class LinearizeMode(TorchFunctionMode):
    """Rewrites activations, max/lp pooling, unpooling and dropout per ``_RULES`` (see module doc).

    With ``detach_global`` it also cuts the global paths (see ``_REDUCTIONS``/``_PRODUCTS``/``_NORMS``).
    """

    def __init__(self, weights: str = "positive", detach_global: bool = False):
        super().__init__()
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        self.ones = weights == "ones"
        self.detach_global = detach_global

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", None)
        if self.detach_global and name in _NORMS:
            x = args[0] if args else kwargs["input"]
            y = func(x.detach(), *args[1:], **kwargs).detach()
            return y + (x - x.detach())  # statistics constant: a same-position path with gradient 1
        out = NotImplemented
        rule = _RULES.get(name)
        if rule is not None:
            out = rule(self, func, func.__name__, args, kwargs)
        if out is NotImplemented:
            out = func(*args, **kwargs)
        if self.detach_global and name is not None and _is_global_reduction(name, args, kwargs):
            out = _detach_all(out)
        return out


# ---------------------------------------------------------------------------------------------
# linearized copy


def linearized(model: nn.Module, *, weights: str = "positive", dtype: torch.dtype = torch.float64,
               detach_global: bool = False) -> nn.Module:
    """A linearized deep copy of ``model`` (see module doc).  The model itself is not touched.

    The copy keeps the module tree (same ``named_modules`` paths) and runs its forward under
    ``LinearizeMode``.  It is marked so that ``probe`` does not copy it again.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    lin = copy.deepcopy(model)
    lin.eval()
    lin.to(dtype)
    with torch.no_grad():
        for p in lin.parameters():
            if p.is_floating_point():
                if weights == "ones":
                    p.fill_(1.0)
                else:
                    p.abs_().add_(0.01)
            p.requires_grad_(True)
        for m in lin.modules():
            rv = getattr(m, "running_var", None)
            if isinstance(rv, torch.Tensor) and rv.is_floating_point():
                if weights == "ones":
                    rv.fill_(1.0)
                    rm = getattr(m, "running_mean", None)
                    if isinstance(rm, torch.Tensor):
                        rm.zero_()
                    if hasattr(m, "eps"):
                        m.eps = 0.0
                else:
                    rv.abs_().add_(0.01)
    orig_forward = lin.forward

    def forward(*args, **kwargs):
        with LinearizeMode(weights, detach_global):
            return orig_forward(*args, **kwargs)

    lin.forward = forward  # instance attribute: Module.__call__ uses it, module paths unchanged
    lin._oracle_linearized = (weights, dtype, detach_global)
    return lin


# ---------------------------------------------------------------------------------------------
# probing


@dataclass
class ProbeResult:
    support: np.ndarray  # bool over the input's spatial grid
    bbox: list[tuple[int, int]] | None  # per spatial axis (lo, hi) of the support; None if empty
    grad: np.ndarray  # float64 |grad| summed over input channels, mean over the probe inputs
    unit: tuple[int, ...]  # the unit probed (non-negative indices)
    shape: tuple[int, ...]  # shape of the probed tensor T


class _Captured(Exception):
    pass


_LAYER_RE = re.compile(r"^(?P<name>.*?)(?:#(?P<call>\d+))?(?:\[(?P<key>[^\]]+)\])?$")


def _select(out: Any, key: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        if key in out:
            return out[key]
        return list(out.values())[int(key)]
    if isinstance(out, (tuple, list)):
        return out[int(key)]
    raise TypeError(f"cannot take element {key!r} of a {type(out).__name__} output")


def _forward_capture(lin: nn.Module, x: torch.Tensor, layer: str | None, output_index: Any) -> torch.Tensor:
    """Run ``lin`` on ``x`` and return the output of ``layer``'s requested call (stops the forward there)."""
    m = _LAYER_RE.match(layer or "")
    name, call = m.group("name"), int(m.group("call") or 1)
    key: Any = output_index
    if m.group("key") is not None:
        key = m.group("key")
        key = int(key) if key.lstrip("-").isdigit() else key.strip("'\"")
    modules = dict(lin.named_modules())
    if name not in modules:
        raise KeyError(f"no module {name!r} in the model")
    box: dict[str, Any] = {}
    seen = [0]

    def hook(mod, inp, out):
        seen[0] += 1
        if seen[0] == call:
            box["out"] = out
            raise _Captured

    h = modules[name].register_forward_hook(hook)
    try:
        lin(x)
    except _Captured:
        pass
    finally:
        h.remove()
    if "out" not in box:
        raise RuntimeError(f"module {name!r} was called {seen[0]} time(s), call {call} requested")
    return _select(box["out"], key)


def _probe_inputs(input_shape, inputs, seed, dtype, device):
    g = torch.Generator().manual_seed(seed)
    xs = [0.5 + torch.rand(tuple(input_shape), generator=g, dtype=dtype)]
    if inputs >= 2:
        xs.append(torch.randn(tuple(input_shape), generator=g, dtype=dtype))
    for _ in range(2, inputs):
        xs.append(torch.randn(tuple(input_shape), generator=g, dtype=dtype) * 3)
    return [x.to(device).requires_grad_(True) for x in xs]


def _device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _spatial_dims(t: torch.Tensor, channel_dim: int | None, first: int = 1) -> tuple[list[int], int | None]:
    cd = None
    if channel_dim is not None and t.ndim >= 2:
        cd = channel_dim % t.ndim
    return [d for d in range(first, t.ndim) if d != cd], cd


def _norm_unit(unit, t, sdims) -> tuple[int, ...]:
    if not sdims:
        return ()
    if unit is None:
        return tuple(t.shape[d] // 2 for d in sdims)
    unit = tuple(int(u) for u in unit)
    if len(unit) != len(sdims):
        raise ValueError(f"unit {unit} has {len(unit)} indices, tensor of shape {tuple(t.shape)} has {len(sdims)} spatial axes")
    out = []
    for u, d in zip(unit, sdims):
        n = t.shape[d]
        if not -n <= u < n:
            raise IndexError(f"unit index {u} out of range for axis of size {n}")
        out.append(u % n)
    return tuple(out)


def _result(grad: np.ndarray, unit, shape, tol: float) -> ProbeResult:
    mx = float(grad.max()) if grad.size else 0.0
    support = grad > tol * mx if mx > 0 else np.zeros(grad.shape, dtype=bool)
    if support.any():
        bbox = []
        for ax in range(support.ndim):
            other = tuple(a for a in range(support.ndim) if a != ax)
            idx = np.nonzero(support.any(axis=other) if other else support)[0]
            bbox.append((int(idx[0]), int(idx[-1])))
    else:
        bbox = None
    return ProbeResult(support=support, bbox=bbox, grad=grad, unit=tuple(unit), shape=tuple(shape))


def _lin(model, weights, dtype, detach_global=False):
    if getattr(model, "_oracle_linearized", None) == (weights, dtype, detach_global):
        return model
    return linearized(model, weights=weights, dtype=dtype, detach_global=detach_global)


def probe_many(
    model: nn.Module,
    input_shape: Sequence[int],
    layer: str | None = None,
    units: Sequence[Sequence[int]] | None = None,
    *,
    detach_global: bool = False,
    inputs: int = 2,
    seed: int = 0,
    output_index: Any = 0,
    channel_dim: int | None = 1,
    weights: str = "positive",
    tol: float = 0.0,
    dtype: torch.dtype = torch.float64,
    batch_dim: bool = True,
) -> list[ProbeResult]:
    """``probe`` for several units, sharing one forward pass per input.

    ``units=None`` probes every unit of the probed tensor (row-major order). ``batch_dim=False``:
    dim 0 of the probed tensor is no batch but part of the unit (the windows of a window partition
    folded into it; the network's input still has batch 1).
    """
    lin = _lin(model, weights, dtype, detach_global)
    device = _device(lin)
    xs = _probe_inputs(input_shape, inputs, seed, dtype, device)
    spatial = tuple(input_shape[2:])
    grads: list[np.ndarray] | None = None
    results_units: list[tuple[int, ...]] = []
    shape: tuple[int, ...] = ()
    for x in xs:
        t = _forward_capture(lin, x, layer, output_index)
        shape = tuple(t.shape)
        sdims, cd = _spatial_dims(t, channel_dim, first=1 if batch_dim else 0)
        if units is None:
            ulist = [tuple(u) for u in np.ndindex(*[t.shape[d] for d in sdims])] if sdims else [()]
        else:
            ulist = list(units)
        nunits = [_norm_unit(u, t, sdims) for u in ulist]
        if cd is not None:
            if weights == "ones":
                r = torch.ones(t.shape[cd], dtype=t.dtype, device=t.device)
            else:
                g = torch.Generator().manual_seed(seed + 1)
                r = (0.5 + torch.rand(t.shape[cd], generator=g, dtype=torch.float64)).to(t.dtype).to(t.device)
        if grads is None:
            grads = [np.zeros(spatial, dtype=np.float64) for _ in nunits]
            results_units = nunits
        if not t.requires_grad:  # every path to the probed tensor was detached (global paths cut)
            continue
        # one vector-Jacobian product per unit (a loop: faster here than a vmapped batch), its one-hot
        # seed made for it alone (a stack of them for every unit of a large tensor would take GBs)
        for i, u in enumerate(nunits):
            onehot = torch.zeros(t.shape, dtype=t.dtype, device=t.device)
            idx: list[Any] = [0] if batch_dim else []
            it = iter(u)
            for d in range(1 if batch_dim else 0, t.ndim):
                idx.append(slice(None) if d == cd else next(it))
            onehot[tuple(idx)] = r if cd is not None else 1.0
            (gx,) = torch.autograd.grad(t, x, grad_outputs=onehot, retain_graph=True, allow_unused=True)
            if gx is not None:
                grads[i] += gx[0].abs().sum(dim=0).detach().cpu().double().numpy() / len(xs)
    assert grads is not None
    return [_result(g, u, shape, tol) for g, u in zip(grads, results_units)]


def probe(
    model: nn.Module,
    input_shape: Sequence[int],
    layer: str | None = None,
    unit: Sequence[int] | None = None,
    *,
    inputs: int = 2,
    seed: int = 0,
    output_index: Any = 0,
    channel_dim: int | None = 1,
    weights: str = "positive",
    tol: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> ProbeResult:
    """Gradient support of one unit of ``layer``'s output on the input grid (see module doc).

    ``input_shape`` is (N, C, *spatial).  ``model`` is linearized (copied) unless it is already
    the result of ``linearized`` with the same ``weights`` and ``dtype``.
    """
    return probe_many(model, input_shape, layer, [unit],
                      inputs=inputs, seed=seed, output_index=output_index, channel_dim=channel_dim,
                      weights=weights, tol=tol, dtype=dtype)[0]


# ---------------------------------------------------------------------------------------------
# unbounded geometry along one axis


@dataclass
class Geometry:
    rf: int  # largest hi - lo + 1 over the interior units
    stride: Fraction  # p / q (reduced)
    offset: Fraction  # mean over one period of centre(u) - u * stride
    period: int  # q: the smallest period of lo(u) and hi(u)
    step: int  # p: lo(u + q) - lo(u)
    lo: dict[int, int]  # interior units only
    hi: dict[int, int]
    n_in: int  # input size along the axis
    n_out: int  # probed tensor size along the axis
    unreachable: list[int] = field(default_factory=list)  # probed units with no support


def unbounded_geometry(
    model: nn.Module | Callable[[], nn.Module],
    input_shape: Sequence[int] | Callable[[], Sequence[int]],
    layer: str | None = None,
    axis: int = 0,
    *,
    unit: Sequence[int] | None = None,
    max_period: int = 64,
    max_units: int = 160,
    inputs: int = 2,
    seed: int = 0,
    output_index: Any = 0,
    channel_dim: int | None = 1,
    tol: float = 0.0,
    dtype: torch.dtype = torch.float64,
) -> Geometry:
    """rf, stride and offset of ``layer`` along spatial ``axis`` (0 = first spatial axis).

    The caller supplies a model and an input big enough that the middle units are far from the
    borders (``model`` / ``input_shape`` may also be zero-argument callables).  Up to ``max_units``
    consecutive units around the middle of the probed tensor are probed along ``axis`` (other axes
    at ``unit``'s coordinates, default centre); the probed tensor's spatial axes are assumed to
    correspond one to one to the input's.

    A unit is *interior* when its bbox on ``axis`` keeps a margin of ``W`` from both borders, ``W``
    the widest bbox seen: a window that reached into the padding would then be wider than ``W``,
    which cannot happen for a translation-equivariant chain (so gridding holes at the border cannot
    fake a window).  Unreachable units (no support) are skipped and listed.  The period ``q`` is the
    smallest ``q <= max_period`` such that ``lo(u+q) - lo(u)`` and ``hi(u+q) - hi(u)`` are one
    constant ``p`` over all interior pairs (at least ``q`` pairs are required); stride = p/q.
    Raises ``ValueError`` when no interior unit or no period is found (e.g. global layers).
    """
    if callable(model) and not isinstance(model, nn.Module):
        model = model()
    if callable(input_shape):
        input_shape = input_shape()
    input_shape = tuple(input_shape)
    lin = _lin(model, "positive", dtype)
    device = _device(lin)
    with torch.no_grad():
        x0 = torch.zeros(input_shape, dtype=dtype, device=device)
        t0 = _forward_capture(lin, x0, layer, output_index)
    sdims, _ = _spatial_dims(t0, channel_dim)
    if axis >= len(sdims):
        raise ValueError(f"axis {axis} out of range: probed tensor {tuple(t0.shape)} has {len(sdims)} spatial axes")
    n_out = t0.shape[sdims[axis]]
    n_in = input_shape[2 + axis]
    base = list(_norm_unit(unit, t0, sdims))
    count = min(n_out, max_units)
    start = max(0, n_out // 2 - count // 2)
    us = list(range(start, start + count))
    units = []
    for u in us:
        b = list(base)
        b[axis] = u
        units.append(tuple(b))
    res = probe_many(lin, input_shape, layer, units, inputs=inputs, seed=seed, output_index=output_index,
                     channel_dim=channel_dim, tol=tol, dtype=dtype)
    lo_all: dict[int, int] = {}
    hi_all: dict[int, int] = {}
    unreachable = []
    for u, r in zip(us, res):
        if r.bbox is None:
            unreachable.append(u)
        else:
            lo_all[u], hi_all[u] = r.bbox[axis]
    if not lo_all:
        raise ValueError("no probed unit is reachable")
    W = max(hi_all[u] - lo_all[u] + 1 for u in lo_all)
    # far from both input borders, and from the output's own borders (reflect/replicate padding
    # make border units read mirrored pixels that can still lie inside the input)
    m = max(1, math.ceil(W * n_out / n_in), n_out // 4)  # W input pixels in output units; the middle half
    interior = [u for u in lo_all if lo_all[u] >= W and hi_all[u] <= n_in - 1 - W and m <= u <= n_out - 1 - m]
    if not interior:
        raise ValueError(f"no interior unit (widest window {W} on an input of {n_in}); use a larger input")
    # keep the longest run of consecutive units that are interior (or phase gaps): a run with
    # holes (units dropped as non-interior) can show a false period
    dead_set = set(unreachable)
    runs, run = [], []
    for u in us:
        if u in interior or (u in dead_set and run):
            run.append(u)
        else:
            if run:
                runs.append(run)
            run = []
    if run:
        runs.append(run)
    best = max(runs, key=len) if runs else []
    interior = [u for u in best if u in lo_all]
    if not interior:
        raise ValueError("no run of interior units")
    lo = {u: lo_all[u] for u in interior}
    hi = {u: hi_all[u] for u in interior}
    span = range(min(interior), max(interior) + 1)
    dead = set(unreachable)
    for q in range(1, max_period + 1):
        diffs = {d for u in interior if u + q in lo for d in (lo[u + q] - lo[u], hi[u + q] - hi[u])}
        pairs = sum(1 for u in interior if u + q in lo)
        # reachability must repeat with the same period (transposed convs leave phase gaps)
        periodic_gaps = all((u in dead) == (u + q in dead) for u in span if u + q in span)
        # p = 0 is no stride (a run of units inside one upsampled pixel looks like it): keep looking
        if pairs >= q and len(interior) >= 2 * q + 2 and len(diffs) == 1 and periodic_gaps and 0 not in diffs:
            p = diffs.pop()
            break
    else:
        raise ValueError(f"no period <= {max_period} found over interior units {interior[0]}..{interior[-1]}")
    stride = Fraction(p, q)
    rf = max(hi[u] - lo[u] + 1 for u in interior)
    # a full period of units that are all interior (or truly unreachable: phase gaps)
    u0 = next((u for u in sorted(interior) if all(v in lo or v in dead for v in range(u, u + q))), min(interior))
    period_units = [u for u in range(u0, u0 + q) if u in lo]
    offset = sum((Fraction(lo[u] + hi[u], 2) - u * stride for u in period_units), Fraction(0)) / len(period_units)
    return Geometry(rf=rf, stride=stride, offset=offset, period=q, step=p, lo=lo, hi=hi, n_in=n_in,
                    n_out=n_out, unreachable=unreachable)


# ---------------------------------------------------------------------------------------------
# torch's own shapes


def _first_tensor(o: Any) -> torch.Tensor | None:
    if isinstance(o, torch.Tensor):
        return o
    if isinstance(o, dict):
        o = list(o.values())
    if isinstance(o, (tuple, list)):
        for e in o:
            t = _first_tensor(e)
            if t is not None:
                return t
    return None


def torch_shapes(model: nn.Module, input_shape: Sequence[int], *, all_calls: bool = False) -> dict[str, tuple[int, ...]]:
    """Output shape of every module call from a real forward (eval mode, no grad) with hooks.

    Keys are module paths (root ``""``); first call per module, first tensor of tuple/list/dict
    outputs.  With ``all_calls=True`` later calls appear as ``name#2``, ``name#3``, ...  The model's
    training flags are restored afterwards.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    calls: dict[str, int] = {}
    hooks = []

    def make(name):
        def hook(mod, inp, out):
            calls[name] = calls.get(name, 0) + 1
            t = _first_tensor(out)
            if t is None:
                return
            key = name if calls[name] == 1 else f"{name}#{calls[name]}"
            if calls[name] == 1 or all_calls:
                shapes[key] = tuple(t.shape)

        return hook

    training = {m: m.training for m in model.modules()}
    ref = next((t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    try:
        for name, m in model.named_modules():
            hooks.append(m.register_forward_hook(make(name)))
        model.eval()
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            model(torch.randn(tuple(input_shape), generator=g, dtype=dtype).to(device))
    finally:
        for h in hooks:
            h.remove()
        for m, tr in training.items():
            m.training = tr
    return shapes
