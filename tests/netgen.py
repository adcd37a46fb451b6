"""Random small PyTorch networks for oracle tests (a hypothesis strategy).

``networks()`` draws a :class:`GeneratedNet`: a :class:`PlanNet` that executes a recorded *plan* (a
list of :class:`Step` records, plain data) over a value table, so the network is a small DAG: a main
chain of 1-8 steps, with occasional forks whose two arms are merged back (add/mul/sub, cat along
channels, cat along a spatial axis) and a few terminal ops (reduction, linear head, attention). A
*token stage* (``tokens``) flattens the grid into tokens, puts extra tokens (class, register) around
them, applies a per-token layer and perhaps global attention (SDPA or ``softmax(q kᵀ) v``, with or
without a residual), slices the extra tokens off and reshapes the tokens back to the grid. A
*window stage* (``windows``) pads each axis to a multiple of a window, perhaps shifts it cyclically
(Swin; then perhaps masks the pairs the shift brought together, with -100 or -inf), partitions it
into windows folded into the batch, mixes each window's tokens (attention, attention over the window
with a halo cut by ``Tensor.unfold``, or a conv zero-padded at the window's borders) and puts
everything back. An *unfold stage* (2-D) cuts blocks with ``F.unfold`` and folds them back after a
Linear, or reads them as a grid of blocks.
Every module lives in ``model.layers`` (an ``nn.ModuleDict``), so module paths are
``layers.conv0``, ``layers.attention0.q``, ...; a module called twice (``shared_module``) gets two
calls under the same path.

How shapes are kept valid
-------------------------
The builder tracks, for every value, its channel count and per spatial axis an :class:`Ax`: the
size at the drawn input size, the *slope* (exact ``Fraction``: how the size grows with the input
size; 1/2 after a stride-2 conv, 0 after adaptive pooling) and the *period* (the input-size step
for which every integer division on the way stays exact). Each op draws its parameters from ranges
computed from the current sizes, so no draw needs filtering: kernel ranges come from the padded
size, reflect/circular padding from the axis size, output padding from ``max(stride, dilation)``,
strides and scale factors from the per-axis cap (``4 * max_px``, ``2 * 12`` in 3-D) and an element
cap. When two arms are merged, the second arm is first brought back to the first arm's slope (a
transposed conv / interpolate / pixel shuffle for upsampling ratios, a strided conv / pool for
downsampling ones), its channels are fixed by a 1x1 conv, and the remaining size differences are
removed by a ``match`` step that crops (center/start/end, "crop" family) or zero-pads ("pad") at
*run time* from the two tensors' shapes, so the network also runs on larger inputs.

``larger_input_shape(k)`` adds ``k * period`` to every spatial input size; for ``resizable`` nets
the model runs there and every intermediate shape is ``expected_shape(i, k)``. The self-check test
verifies that, and that every step's shape at the drawn size matches the tracked one.

Flags
-----
``size_dependent``: some unit's window depends on the input size (adaptive pooling, interpolate
with an explicit size or ``align_corners=True``, cat along a spatial axis (the second part's units
are offset by the first part's size), flip/roll/cumsum, a flatten + Linear head, or a merge of arms
whose slopes could not be reconciled). ``global_output``: some spatial axis of the output is global
(reduction, adaptive pooling to 1, flatten head, attention). ``global_context``:
local features are combined with a global statistic (squeeze-excitation gates, ``x + mean(x)``,
GroupNorm's statistics); attention added back to the features is global. ``resizable``: the model runs at
``larger_input_shape(k)`` with predictable shapes (false for a flatten + Linear head, an
unreconciled merge, or attention that would see more than 4096 positions at k = 4).

Family bookkeeping: ``families`` lists every op family present in the graph, including helper ops
(a 1x1 "conv" that fixes channels, the "pad"/"crop" of a ``match``; "lppool" is always preceded
by a softplus ("activation") so that ``sqrt`` never sees an all-zero window). The squeeze-excitation
style means used for broadcasting gates count as "elementwise", not "reduce"; the q/k/v/o
Linears of attention count as "attention" only.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import reject
from hypothesis import strategies as st

__all__ = [
    "ALL_FAMILIES",
    "FamilyCounter",
    "GeneratedNet",
    "PlanNet",
    "Step",
    "networks",
]

ALL_FAMILIES: frozenset[str] = frozenset(
    {
        "conv",
        "conv_transpose",
        "maxpool",
        "avgpool",
        "lppool",
        "maxunpool",
        "adaptive_pool",
        "interpolate",
        "pixel_shuffle",
        "pad",
        "crop",
        "cat_channels",
        "cat_spatial",
        "elementwise",
        "activation",
        "norm",
        "view",
        "reduce",
        "linear",
        "attention",
        "tokens",
        "windows",
        "unfold",
        "shared_module",
        "unsupported",
        "branch",
        "view_write",
        "pick_channels",
    }
)

# ----------------------------------------------------------------------------------------------
# plan data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ax:
    """One spatial axis of a tracked value."""

    size: int  # size at the drawn input size
    slope: Fraction  # d size / d input size (exact while within one period)
    period: int  # input-size step keeping every floor/ceil on the way exact
    origin: int  # which input spatial axis this axis comes from


@dataclass(frozen=True)
class Val:
    c: int
    axes: tuple[Ax, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, self.c, *(a.size for a in self.axes))


@dataclass
class Step:
    """One plan step: ``values.append(EXEC[op](net, step, *[values[i] for i in inputs]))``."""

    op: str
    inputs: tuple[int, ...]
    kw: dict[str, Any]
    mod: str | None
    shape: tuple[int, ...]  # expected output shape at the drawn input size
    families: frozenset[str]

    def describe(self, index: int) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.kw.items())
        mod = f" [layers.{self.mod}]" if self.mod else ""
        ins = ",".join(f"v{i}" for i in self.inputs)
        return f"v{index} = {self.op}({ins}){mod} {{{kw}}} -> {tuple(self.shape)}"


def _u(t):
    """1-tuples to ints (some 1-D functionals want ints)."""
    return t[0] if isinstance(t, tuple) and len(t) == 1 else t


def _nd(name: str, d: int):
    return getattr(nn, name.format(d=d))


def _fn(name: str, d: int):
    return getattr(F, name.format(d=d))


class Params(nn.Module):
    """Parameter/buffer holder for functional calls (never called itself)."""

    def __init__(self, params: dict[str, torch.Tensor | None], buffers: dict[str, torch.Tensor] | None = None):
        super().__init__()
        for k, v in params.items():
            if v is None:
                self.register_parameter(k, None)
            else:
                self.register_parameter(k, nn.Parameter(v.detach().clone()))
        for k, v in (buffers or {}).items():
            self.register_buffer(k, v.detach().clone())


# ----------------------------------------------------------------------------------------------
# executors (one per plan op)
# ----------------------------------------------------------------------------------------------


def _x_conv(net, s, x):
    kw = s.kw
    m = net.layers[s.mod]
    if kw["functional"]:
        f = _fn("conv{d}d", kw["d"])
        return f(x, m.weight, m.bias, kw["stride"], kw["padding"], kw["dilation"], kw["groups"])
    return m(x)


def _x_conv_transpose(net, s, x):
    kw = s.kw
    m = net.layers[s.mod]
    if kw["functional"]:
        f = _fn("conv_transpose{d}d", kw["d"])
        return f(x, m.weight, m.bias, kw["stride"], kw["padding"], kw["output_padding"], kw["groups"], kw["dilation"])
    return m(x)


def _x_pool(net, s, x):
    kw = s.kw
    d, kind = kw["d"], kw["kind"]
    if kind == "lp":
        x = F.softplus(x)
    if s.mod:
        return net.layers[s.mod](x)
    k, st_, p = _u(kw["kernel"]), _u(kw["stride"]), _u(kw["padding"])
    if kind == "max":
        return _fn("max_pool{d}d", d)(x, k, st_, p, _u(kw["dilation"]), ceil_mode=kw["ceil_mode"])
    if kind == "avg":
        return _fn("avg_pool{d}d", d)(x, k, st_, p, kw["ceil_mode"], kw["count_include_pad"])
    return _fn("lp_pool{d}d", d)(x, 2.0, k, st_, kw["ceil_mode"])


def _x_maxunpool(net, s, x):
    kw = s.kw
    d = kw["d"]
    k, st_, p = _u(kw["kernel"]), _u(kw["stride"]), _u(kw["padding"])
    mods = net.layers[s.mod] if s.mod else {}
    if "pool" in mods:
        y, idx = mods["pool"](x)
    else:
        y, idx = _fn("max_pool{d}d", d)(x, k, st_, p, return_indices=True)
    osz = tuple(x.shape[2:]) if kw["output_size"] else None
    if "unpool" in mods:
        return mods["unpool"](y, idx, output_size=osz)
    return _fn("max_unpool{d}d", d)(y, idx, k, st_, p, output_size=osz)


def _x_adaptive(net, s, x):
    kw = s.kw
    if s.mod:
        return net.layers[s.mod](x)
    return _fn("adaptive_" + kw["kind"] + "_pool{d}d", kw["d"])(x, _u(kw["output_size"]))


def _x_interp(net, s, x):
    kw = s.kw
    if s.mod:
        return net.layers[s.mod](x)
    return F.interpolate(
        x, size=kw["size"], scale_factor=kw["scale_factor"], mode=kw["mode"], align_corners=kw["align_corners"]
    )


def _x_pixel_shuffle(net, s, x):
    kw = s.kw
    if s.mod:
        return net.layers[s.mod](x)
    if kw["kind"] == "shuffle":
        return F.pixel_shuffle(x, kw["r"])
    return F.pixel_unshuffle(x, kw["r"])


def _x_pad(net, s, x):
    kw = s.kw
    if s.mod:
        return net.layers[s.mod](x)
    if kw["mode"] == "constant":
        return F.pad(x, kw["pads"], mode="constant", value=kw["value"])
    return F.pad(x, kw["pads"], mode=kw["mode"])


def _slices(spec):
    return tuple(
        slice(None) if sp is None else slice(sp[0], -sp[1] if sp[1] else None, sp[2] if sp[2] != 1 else None)
        for sp in spec
    )


def _x_crop(net, s, x):
    kw = s.kw
    sl = _slices(kw["slices"])
    if kw["ellipsis"]:
        return x[..., sl[-1]]
    return x[(slice(None), slice(None), *sl)]


def _x_act(net, s, x):
    kw = s.kw
    k = kw["kind"]
    if s.mod:
        return net.layers[s.mod](x)
    if k == "relu":
        return F.relu(x) if kw["style"] == "F" else torch.relu(x)
    if k == "relu_inplace":
        st_ = kw["style"]
        if st_ == "F":
            return F.relu(x, inplace=True)
        if st_ == "method":
            return x.relu_()
        return torch.relu_(x)
    if k == "gelu":
        return F.gelu(x)
    if k == "sigmoid":
        return torch.sigmoid(x)
    if k == "tanh":
        return torch.tanh(x)
    if k == "leaky_relu":
        return F.leaky_relu(x, 0.2)
    raise ValueError(k)


def _act_fn(name, x):
    if name is None:
        return x
    if name == "gelu":
        return F.gelu(x)
    if name == "relu":
        return F.relu(x)
    if name == "tanh":
        return torch.tanh(x)
    raise ValueError(name)


def _x_norm(net, s, x):
    kw = s.kw
    k = kw["kind"]
    m = net.layers[s.mod]
    if k == "bn":
        if kw["functional"]:
            return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.1, 1e-5)
        return m(x)
    if k == "gn":
        if kw["functional"]:
            return F.group_norm(x, kw["groups"], m.weight, m.bias, 1e-5)
        return m(x)
    # layer norm over channels, channels-last
    nd = x.dim()
    if kw["style"] == "movedim":
        y = x.movedim(1, -1)
    else:
        y = x.permute(0, *range(2, nd), 1)
    if kw["functional"]:
        y = F.layer_norm(y, (x.shape[1],), m.weight, m.bias, 1e-5)
    else:
        y = m(y)
    if kw["style"] == "movedim":
        return y.movedim(-1, 1)
    return y.permute(0, nd - 1, *range(1, nd - 1))


def _x_view(net, s, x):
    kw = s.kw
    k = kw["kind"]
    nd = x.dim()
    if k == "flatten":
        shape = x.shape
        if kw["method"] == "flatten":
            y = x.flatten(2)
        elif kw["method"] == "reshape":
            y = x.reshape(shape[0], shape[1], -1)
        else:
            y = x.contiguous().view(shape[0], shape[1], -1)
        y = _act_fn(kw["inner"], y)
        if kw["back"] == "unflatten":
            return y.unflatten(2, tuple(shape[2:]))
        return y.reshape(shape)
    if k == "permute":
        y = x.permute(0, *range(2, nd), 1)
        if kw["contiguous"]:
            y = y.contiguous()
        y = _act_fn(kw["inner"], y)
        return y.permute(0, nd - 1, *range(1, nd - 1))
    if k == "unsqueeze":
        pos = kw["pos"]
        y = _act_fn(kw["inner"], x.unsqueeze(pos))
        return y.squeeze(pos)
    if k == "chshuffle":
        g = kw["groups"]
        n, c = x.shape[:2]
        return x.reshape(n, g, c // g, *x.shape[2:]).transpose(1, 2).reshape(x.shape)
    if k == "transpose":
        return x.transpose(kw["dims"][0], kw["dims"][1])
    raise ValueError(k)


def _x_linear1x1(net, s, x):
    m = net.layers[s.mod]
    if s.kw["style"] == "movedim":
        return m(x.movedim(1, -1)).movedim(-1, 1)
    nd = x.dim()
    y = m(x.permute(0, *range(2, nd), 1))
    return y.permute(0, nd - 1, *range(1, nd - 1))


def _x_unsupported(net, s, x):
    kw = s.kw
    if kw["kind"] == "roll":
        return torch.roll(x, shifts=kw["shifts"], dims=kw["dims"])
    if kw["kind"] == "flip":
        return torch.flip(x, dims=kw["dims"])
    return torch.cumsum(x, dim=kw["dims"][0])


def _x_gate(net, s, x):
    kw = s.kw
    k = kw["kind"]
    sp = tuple(range(2, x.dim()))
    if k in ("se", "se_conv"):
        g = x.mean(dim=sp, keepdim=True)
        if s.mod:
            g = net.layers[s.mod](g)
        return x * torch.sigmoid(g)
    if k == "spatial_mean":
        return x * torch.sigmoid(x.mean(dim=1, keepdim=True))
    if k == "spatial_max":
        return x * torch.sigmoid(torch.amax(x, dim=1, keepdim=True))
    if k == "batch_spatial":  # a (1, 1, *S) tensor
        return x * torch.sigmoid(x.mean(dim=(0, 1), keepdim=True))
    if k == "l2norm":  # F.normalize over channels: per position, no global context
        return F.normalize(x, dim=1, eps=1e-3)
    if k == "ctx_add":
        return x + x.mean(dim=sp, keepdim=True)
    if k == "ctx_sub":
        return x - x.mean(dim=sp, keepdim=True)
    raise ValueError(k)


def _match_amounts(n: int, m: int, mode: str, align: str):
    """For one axis: ('crop', lo, size) / ('pad', lo, hi) / None bringing size n towards m."""
    if mode == "crop" and n > m:
        diff = n - m
        lo = {"center": diff // 2, "start": 0, "end": diff}[align]
        return ("crop", lo, m)
    if mode == "pad" and n < m:
        diff = m - n
        lo = {"center": diff // 2, "start": 0, "end": diff}[align]
        return ("pad", lo, diff - lo)
    return None


def _x_match(net, s, x, other):
    nd = x.dim() - 2
    idx = [slice(None)] * x.dim()
    pads = [0] * (2 * nd)
    crop = False
    for j, mode, align in s.kw["axes"]:
        a = _match_amounts(x.shape[2 + j], other.shape[2 + j], mode, align)
        if a is None:
            continue
        if a[0] == "crop":
            idx[2 + j] = slice(a[1], a[1] + a[2])
            crop = True
        else:
            pads[2 * (nd - 1 - j)] = a[1]
            pads[2 * (nd - 1 - j) + 1] = a[2]
    if crop:
        x = x[tuple(idx)]
    if any(pads):
        x = F.pad(x, pads)
    return x


def _x_merge(net, s, a, b):
    kw = s.kw
    k = kw["kind"]
    if k == "add":
        return a + b if kw["style"] == "op" else torch.add(a, b)
    if k == "sub":
        return a - b
    if k == "mul":
        return a * b if kw["style"] == "op" else torch.mul(a, b)
    if k == "cat_channels":
        return torch.cat([a, b], dim=1)
    return torch.cat([a, b], dim=kw["dim"])


def _x_pick_channels(net, s, x):
    kw = s.kw
    if kw["kind"] == "slice":
        return x[:, kw["lo"]:kw["hi"]:kw["step"]]
    if kw["kind"] == "split":
        return torch.split(x, kw["sizes"], 1)[kw["part"]]
    if kw["kind"] == "chunk":
        return x.chunk(kw["n"], 1)[kw["part"]]
    return x.select(1, kw["index"]).unsqueeze(1)


def _x_view_write(net, s, x):
    """Writes into a copy of x through a view, reading a conv of x (never of the copy: autograd
    needs the conv's input unchanged): a region of spatial and channel slices, one position of an
    axis (select), or channels through a transposed view; assigned, added or multiplied in place."""
    kw = s.kw
    y = x.clone()
    if kw["kind"] == "channels":
        lo, hi = kw["channels"]
        z = net.layers[s.mod](x[:, lo:hi])
        target = y[:, lo:hi]
    elif kw["kind"] == "transposed":
        lo, hi = kw["channels"]
        z = net.layers[s.mod](x).transpose(1, -1)[..., lo:hi]
        target = y.transpose(1, -1)[..., lo:hi]
    elif kw["kind"] == "select":
        a, i, j = kw["select"]
        z = net.layers[s.mod](x).select(2 + a, j)
        target = y.select(2 + a, i)
    else:
        lo, hi = kw["channels"]
        region = (slice(None), slice(lo, hi), *_slices(kw["slices"]))
        z = net.layers[s.mod](x)[region]
        target = y[region]
    if kw["how"] == "assign":
        target.copy_(z)
    elif kw["how"] == "add":
        target += z
    elif kw["how"] == "mul":
        target.mul_(z)
    else:
        target.fill_(0.5)
    return y


def _x_reduce(net, s, x):
    kw = s.kw
    dims, kd = kw["dims"], kw["keepdim"]
    if kw["fn"] == "vector_norm":
        return torch.linalg.vector_norm(x, ord=kw["ord"], dim=dims, keepdim=kd)
    if kw["fn"] == "norm":
        return x.norm(p=2, dim=dims, keepdim=kd)
    if kw["fn"] == "mean":
        return x.mean(dim=dims, keepdim=kd)
    if kw["fn"] == "sum":
        return torch.sum(x, dim=dims, keepdim=kd)
    return torch.amax(x, dim=dims, keepdim=kd)


def _x_head(net, s, x):
    kw = s.kw
    m = net.layers[s.mod]
    k = kw["kind"]
    if k == "gap":
        y = x.mean(dim=tuple(range(2, x.dim()))) if x.dim() > 2 else x
    else:
        if k == "pool_flatten":
            x = _fn("adaptive_avg_pool{d}d", kw["d"])(x, _u(kw["pool"]))
        if kw["method"] == "flatten":
            y = torch.flatten(x, 1)
        elif kw["method"] == "reshape":
            y = x.reshape(x.size(0), -1)
        else:
            y = x.contiguous().view(x.size(0), -1)
    return m(y)


def _x_attention(net, s, x):
    m = net.layers[s.mod]
    t = x.flatten(2).transpose(1, 2)  # (N, L, C)
    q, k, v = m["q"](t), m["k"](t), m["v"](t)
    a = torch.softmax(torch.matmul(q, k.transpose(1, 2)) * s.kw["scale"], dim=-1)
    o = m["o"](torch.matmul(a, v)).transpose(1, 2).reshape(x.shape)
    return x + o if s.kw["residual"] else o


def _attend(m: nn.Module, t: torch.Tensor, kind: str, scale: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention among the tokens of t (N, L, C) through m's q, k, v, o layers: SDPA ("sdpa") or
    ``softmax(q kᵀ * scale + mask) v`` written out (window and token stages); ``mask`` (N, L, L) is
    added to the scores (SDPA's float ``attn_mask``)."""
    q, k, v = m.q(t), m.k(t), m.v(t)
    if kind == "sdpa":
        o = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1),
                                           attn_mask=None if mask is None else mask.unsqueeze(1)).squeeze(1)
    else:
        scores = q @ k.transpose(1, 2) * scale
        o = torch.softmax(scores if mask is None else scores + mask, dim=-1) @ v
    return m.o(o)


def _shift_mask(full: list[int], ws: tuple[int, ...], shift: tuple[int, ...], fill: float, n: int) -> torch.Tensor:
    """Swin's mask of shifted windows, (n * windows, tokens, tokens): in the rolled map each axis has
    the regions [0, f - w), [f - w, f - s) and [f - s, f) (one where s is 0); pairs of a window from
    different regions get ``fill``. Built in the forward from factory tensors, as torchvision does."""
    label = torch.zeros(full, dtype=torch.long)
    for a, (f, w, sh) in enumerate(zip(full, ws, shift)):
        p = torch.arange(f)
        region = (p >= f - w).long() + (p >= f - sh).long() if sh else torch.zeros(f, dtype=torch.long)
        label = label + (region * 3 ** a).reshape([f if i == a else 1 for i in range(len(full))])
    d = len(full)
    label = label.reshape([v for f, w in zip(full, ws) for v in (f // w, w)])
    label = label.permute([2 * i for i in range(d)] + [2 * i + 1 for i in range(d)]).reshape(-1, math.prod(ws))
    diff = label.unsqueeze(1) != label.unsqueeze(2)
    return torch.zeros(diff.shape).masked_fill(diff, fill).repeat(n, 1, 1)


class _Windows(nn.Module):
    """A window stage's layers (see ``_x_windows``): attention among a window's tokens (or of its
    tokens over the window with a halo around it), a depthwise conv inside each window, or
    relative-position logits along the window's last axis (``rel``: one key per relative offset,
    (2 w - 1, C))."""

    def __init__(self, c: int, d: int, dk: int, op: str, k: int, w: int = 1):
        super().__init__()
        if op == "conv":
            self.conv = getattr(nn, f"Conv{d}d")(c, c, k, padding=k // 2, groups=c)
        elif op == "relpos":
            self.rel = nn.Parameter(torch.randn(2 * w - 1, c))
        elif op != "context":
            self.q, self.k, self.v, self.o = (nn.Linear(c, dk), nn.Linear(c, dk), nn.Linear(c, dk), nn.Linear(dk, c))


def _x_windows(net, s, x):
    """Swin-style windows: channels last, padded at the end of each axis to a multiple of the window,
    perhaps cyclically shifted, partitioned into (N * windows, tokens, C), mixed within each window,
    and put back (reverse, shift back, crop, channels first)."""
    kw = s.kw
    m = net.layers[s.mod]
    ws, shift = kw["ws"], kw["shift"]
    n, c, *grid = x.shape
    d = len(grid)
    y = x.permute(0, *range(2, d + 2), 1)
    pads = [-g % w for g, w in zip(grid, ws)]
    y = F.pad(y, [0, 0] + [v for p in reversed(pads) for v in (0, p)])
    full = [g + p for g, p in zip(grid, pads)]
    axes = tuple(range(1, d + 1))
    if any(shift):
        y = torch.roll(y, tuple(-t for t in shift), axes)
    whole = y
    y = y.reshape([n] + [v for f, w in zip(full, ws) for v in (f // w, w)] + [c])
    y = y.permute([0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [2 * d + 1])
    t = y.reshape(-1, math.prod(ws), c)
    if kw["op"] == "conv":
        o = m.conv(t.transpose(1, 2).reshape(-1, c, *ws)).reshape(-1, c, math.prod(ws)).transpose(1, 2)
    elif kw["op"] == "relpos":
        # BoTNet's and HaloNet's relative positions (timm's rel_logits_1d): per query along the
        # window's last axis, logits over the relative offsets, moved to absolute key positions by a
        # skew (pad, flatten, pad, reshape, slice: steps no dims follow), summed over the keys
        w = ws[-1]
        r = t.reshape(-1, w, c) @ m.rel.t()
        r = F.pad(F.pad(r, [0, 1]).flatten(1), [0, w - 1])
        r = r.reshape(-1, w + 1, 2 * w - 1)[:, :w, w - 1:]
        o = t * r.sum(-1).reshape(t.shape[0], -1, 1)
    elif kw["op"] == "halo":
        # HaloNet's attention: each window's queries attend to the keys of the window and a halo of
        # h positions around it along every axis, blocks cut by Tensor.unfold from the zero-padded map
        h = kw["halo"]
        kv = F.pad(whole, [0, 0] + [h, h] * d)
        for i, w in enumerate(ws):
            kv = kv.unfold(1 + i, w + 2 * h, w)
        kv = kv.permute([0] + list(range(1, d + 1)) + list(range(d + 2, 2 * d + 2)) + [d + 1]).reshape(t.shape[0], -1, c)
        o = m.o(torch.softmax(m.q(t) @ m.k(kv).transpose(1, 2) * kw["scale"], -1) @ m.v(kv))
    elif kw["op"] == "context":
        # MobileViT-V2's linear attention: a context per position within a window, pooled over the
        # windows and broadcast back over them
        o = t * (t.softmax(0) * t).sum(0, keepdim=True)
    else:
        mask = _shift_mask(full, ws, shift, kw["mask"], n).to(t) if kw.get("mask") is not None else None
        o = _attend(m, t, kw["op"], kw["scale"], mask)
    t = t + o if kw["residual"] else o
    y = t.reshape([n] + [f // w for f, w in zip(full, ws)] + list(ws) + [c])
    y = y.permute([0] + [v for i in range(d) for v in (1 + i, 1 + d + i)] + [2 * d + 1]).reshape([n] + full + [c])
    if any(shift):
        y = torch.roll(y, tuple(shift), axes)
    y = y[(slice(None),) + tuple(slice(0, g) for g in grid)]
    return y.permute(0, d + 1, *range(1, d + 1)).contiguous()


def _x_unfold(net, s, x):
    """im2col and back (VOLO's outlook attention, 2-D): ``F.unfold`` into (N, C * k * k, L), then
    ``fold``: a Linear mixes each block's channels and kernel offsets, ``F.fold`` sums the blocks back
    into the input's grid; ``blocks``: a Linear mixes each block into channels of a grid of blocks (a
    conv written as im2col); ``same``: ``F.fold`` of the unmixed blocks (each channel holds one kernel
    offset)."""
    kw = s.kw
    k, d, p, st = kw["kernel"], kw["dilation"], kw["padding"], kw["stride"]
    cols = F.unfold(x, k, dilation=d, padding=p, stride=st)
    if kw["op"] == "blocks":
        grid = [_conv_out(n, *a) for n, *a in zip(x.shape[2:], k, st, p, d)]
        return net.layers[s.mod](cols.transpose(1, 2)).transpose(1, 2).reshape(x.shape[0], -1, *grid)
    if kw["op"] == "fold":
        cols = net.layers[s.mod](cols.transpose(1, 2)).transpose(1, 2)
    return F.fold(cols, x.shape[2:], k, dilation=d, padding=p, stride=st)


class _Tokens(nn.Module):
    """A token stage: extra tokens (class, register) around the flattened grid, a per-token layer,
    perhaps global attention, the extra tokens sliced off and the grid restored (see ``_x_tokens``)."""

    def __init__(self, c: int, before: int, after: int, dk: int, attention: bool, norm: bool, bias: bool):
        super().__init__()
        self.before = nn.Parameter(torch.randn(1, before, c))
        self.after = nn.Parameter(torch.randn(1, after, c))
        self.norm = nn.LayerNorm(c) if norm else nn.Identity()
        self.mix = nn.Linear(c, c, bias=bias)
        if attention:
            self.q, self.k, self.v, self.o = (nn.Linear(c, dk), nn.Linear(c, dk), nn.Linear(c, dk), nn.Linear(dk, c))


def _x_tokens(net, s, x):
    kw = s.kw
    m = net.layers[s.mod]
    n, c, grid = x.shape[0], x.shape[1], x.shape[2:]
    t = x.flatten(2).transpose(1, 2)  # (N, L, C), row-major over the grid
    length = t.shape[1]
    t = torch.cat([m.before.expand(n, -1, -1), t, m.after.expand(n, -1, -1)], dim=1)
    t = m.mix(m.norm(t))
    if kw["attention"] != "none":
        o = _attend(m, t, kw["attention"], kw["scale"])
        t = t + o if kw["residual"] else o
    b = kw["before"]
    if kw["slice"] == "two":
        t = t[:, b:][:, :length]
    else:
        t = t.narrow(1, b, length)
    # contiguous: torch 2.14's CPU batch norm backward gives wrong gradients for some layouts this
    # reshape makes ((1, 2, 2, 1) with strides (2, 1, 2, 2), seen as channels-last), which would
    # corrupt the oracle, not the model
    return t.transpose(1, 2).reshape(n, c, *grid).contiguous()


_EXEC = {
    "conv": _x_conv,
    "conv_transpose": _x_conv_transpose,
    "pool": _x_pool,
    "maxunpool": _x_maxunpool,
    "adaptive_pool": _x_adaptive,
    "interpolate": _x_interp,
    "pixel_shuffle": _x_pixel_shuffle,
    "pad": _x_pad,
    "crop": _x_crop,
    "activation": _x_act,
    "norm": _x_norm,
    "view": _x_view,
    "linear1x1": _x_linear1x1,
    "unsupported": _x_unsupported,
    "gate": _x_gate,
    "match": _x_match,
    "merge": _x_merge,
    "reduce": _x_reduce,
    "head": _x_head,
    "attention": _x_attention,
    "tokens": _x_tokens,
    "windows": _x_windows,
    "unfold": _x_unfold,
    "view_write": _x_view_write,
    "pick_channels": _x_pick_channels,
}


class PlanNet(nn.Module):
    """Executes ``plan`` (a list of :class:`Step`) over a value table; value 0 is the input."""

    def __init__(self, plan: list[Step], layers: dict[str, nn.Module]):
        super().__init__()
        self.plan = list(plan)
        self.layers = nn.ModuleDict(layers)

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        vals = [x]
        for s in self.plan:
            vals.append(_EXEC[s.op](self, s, *[vals[i] for i in s.inputs]))
        return vals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x)[-1]


# ----------------------------------------------------------------------------------------------
# the generated-network record
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class GeneratedNet:
    model: nn.Module
    input_shape: tuple[int, ...]
    families: set[str]
    size_dependent: bool
    has_unsupported: bool
    global_context: bool = False
    global_output: bool = False
    resizable: bool = True
    period: tuple[int, ...] = ()
    seed: int = 0
    steps: list[Step] = field(default_factory=list)
    values: list[Val] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.values[-1].shape

    @property
    def dim(self) -> int:
        return len(self.input_shape) - 2

    def larger_input_shape(self, k: int | Sequence[int] = 1) -> tuple[int, ...]:
        """The input shape with ``k * period`` added to every spatial size (``k`` per axis where it
        is a sequence: the axes grow independently)."""
        ks = [k] * len(self.period) if isinstance(k, int) else list(k)
        return (*self.input_shape[:2], *(n + kk * p for n, kk, p in zip(self.input_shape[2:], ks, self.period)))

    def expected_shape(self, index: int, k: int = 0) -> tuple[int, ...]:
        """Shape of value ``index`` (0 = input, -1 = output) on ``larger_input_shape(k)``."""
        v = self.values[index]
        sizes = []
        for a in v.axes:
            grow = k * self.period[a.origin] * a.slope
            assert grow.denominator == 1
            sizes.append(a.size + int(grow))
        return (1, v.c, *sizes)

    def make_input(self, dtype: torch.dtype = torch.float32, seed: int = 0, k: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(self.larger_input_shape(k), generator=g, dtype=torch.float64).to(dtype)

    def describe(self) -> str:
        flags = [
            n
            for n in ("size_dependent", "has_unsupported", "global_context", "global_output")
            if getattr(self, n)
        ]
        if not self.resizable:
            flags.append("not_resizable")
        lines = [
            f"GeneratedNet(input={tuple(self.input_shape)}, output={tuple(self.output_shape)}, "
            f"period={self.period}, seed={self.seed}, flags={flags})",
            f"  families: {sorted(self.families)}",
        ]
        lines += ["  " + s.describe(i + 1) for i, s in enumerate(self.steps)]
        lines += ["  note: " + n for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe()

    def _repr_pretty_(self, p, cycle) -> None:  # used by hypothesis when printing examples
        p.text(self.describe())


class FamilyCounter:
    """How many generated networks used each family."""

    def __init__(self, families=ALL_FAMILIES):
        self.families = frozenset(families)
        self.counts: Counter[str] = Counter()
        self.n = 0

    def record(self, net: GeneratedNet) -> None:
        self.n += 1
        self.counts.update(set(net.families))

    def missing(self) -> set[str]:
        return {f for f in self.families if self.counts[f] == 0}

    def report(self) -> str:
        lines = [f"{self.n} networks"]
        for f in sorted(self.families, key=lambda f: (-self.counts[f], f)):
            c = self.counts[f]
            pct = 100.0 * c / self.n if self.n else 0.0
            lines.append(f"  {f:15s} {c:5d}  {pct:5.1f}%")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# axis bookkeeping
# ----------------------------------------------------------------------------------------------


def _ax_scale(a: Ax, size: int, p: int, q: int) -> Ax:
    """Axis after an op with output ~ input * p / q (floor/ceil divisions by q)."""
    m = a.period * a.slope
    assert m.denominator == 1, (a, p, q)
    g = math.gcd(int(m), q)
    return Ax(size, a.slope * Fraction(p, q), a.period * q // g, a.origin)


def _ax_fixed(a: Ax, size: int) -> Ax:
    return Ax(size, Fraction(0), a.period, a.origin)


def _divisors(n: int) -> list[int]:
    return [i for i in range(1, n + 1) if n % i == 0]


def _pool_out(n, k, s, p, dil, ceil):
    num = n + 2 * p - dil * (k - 1) - 1
    assert num >= 0
    if ceil:
        o = -(-num // s) + 1
        if (o - 1) * s >= n + p:
            o -= 1
    else:
        o = num // s + 1
    return o


def _conv_out(n, k, s, p, dil):
    return (n + 2 * p - dil * (k - 1) - 1) // s + 1


_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
_SCALES = (2, 2, 3, 0.5, 1.5, 0.75, 2.5, 1)

MAIN_KINDS = (
    "activation",
    "conv",
    "norm",
    "pad",
    "crop",
    "maxpool",
    "avgpool",
    "lppool",
    "conv_transpose",
    "interpolate",
    "maxunpool",
    "adaptive_pool",
    "pixel_shuffle",
    "view",
    "linear",
    "shared_module",
    "unsupported",
    "elementwise",
    "cat_channels",
    "cat_spatial",
    "branch",
    "view_write",
    "tokens",
    "windows",
    "unfold",
    "pick_channels",
)
_FORK_KINDS = ("cat_channels", "cat_spatial", "branch", "pick_channels")
_KIND_FAMILY = {k: k for k in MAIN_KINDS}


# ----------------------------------------------------------------------------------------------
# the builder
# ----------------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, draw, c_in, sizes, max_px, max_ch, need, exclude):
        self.draw = draw
        self.d = len(sizes)
        self.c_in = c_in
        self.sizes = sizes
        self.max_ch = max_ch
        self.chcap = 4 * max_ch
        self.axcap = 2 * min(max_px, 12) if self.d == 3 else 4 * max_px
        self.elcap = max(32768, c_in * math.prod(sizes))
        self.need = set(need)
        self.exclude = set(exclude)
        self.steps: list[Step] = []
        self.vals: list[Val] = []
        self.mods: dict[str, nn.Module] = {}
        self.fam: set[str] = set()
        self.counters: Counter[str] = Counter()
        self.consumers: Counter[int] = Counter()
        self.held: set[int] = set()
        self.size_dep = False
        self.gctx = False
        self.gout = False
        self.resizable = True
        self.notes: list[str] = []
        self.shared_relu_uses = 0

    # -- drawing helpers ------------------------------------------------------------------------
    def pick(self, seq):
        seq = list(seq)
        assert seq
        if len(seq) == 1:
            return seq[0]
        return self.draw(st.sampled_from(seq))

    def int_(self, lo: int, hi: int) -> int:
        assert lo <= hi, (lo, hi)
        if lo == hi:
            return lo
        return self.draw(st.integers(lo, hi))

    def coin(self, num: int = 1, den: int = 2) -> bool:
        return self.pick([True] * num + [False] * (den - num))

    def per_axis(self, d, opts):
        if d == 1 or self.coin(2, 3):
            s = self.pick(opts)
            return (s,) * d
        return tuple(self.pick(opts) for _ in range(d))

    def ok(self, fam: str) -> bool:
        return fam not in self.exclude

    def name(self, kind: str) -> str:
        n = self.counters[kind]
        self.counters[kind] += 1
        return f"{kind}{n}"

    def add(self, op, inputs, kw, val: Val, fams, mod=None) -> int:
        fams = frozenset(fams)
        self.steps.append(Step(op, tuple(inputs), kw, mod, val.shape, fams))
        self.vals.append(val)
        self.fam |= fams
        for i in inputs:
            self.consumers[i] += 1
        return len(self.vals) - 1

    def can_inplace(self, vid: int) -> bool:
        if vid == 0 or vid in self.held or self.consumers[vid]:
            return False
        s = self.steps[vid - 1]
        if s.op in ("conv", "conv_transpose"):
            return True
        if s.op == "merge" and s.kw["kind"] in ("add", "sub", "cat_channels", "cat_spatial"):
            return True
        return s.op == "norm" and s.kw["kind"] == "bn"

    # -- the net ----------------------------------------------------------------------------------
    def build(self) -> int:
        self.vals.append(Val(self.c_in, tuple(Ax(n, Fraction(1), 1, j) for j, n in enumerate(self.sizes))))
        cur = 0
        for _ in range(self.int_(1, 8)):
            cur = self.step(cur, 0, arm=False)
        extra = 0
        while self._missing_main() and extra < 16:
            cur = self.step(cur, 0, arm=False)
            extra += 1
        cur = self.terminal(cur)
        if self.shared_relu_uses >= 2:
            self.fam.add("shared_module")
        return cur

    def _missing_main(self) -> bool:
        return bool((self.need - self.fam) - {"reduce", "linear", "attention"})

    def valid(self, kind: str, vid: int, depth: int, arm: bool) -> bool:
        if not self.ok(_KIND_FAMILY[kind]):
            return False
        v = self.vals[vid]
        if kind in ("elementwise",):
            return True
        if kind in _FORK_KINDS:
            if depth >= 2:
                return False
            if kind in ("cat_channels", "pick_channels"):
                return v.c < self.chcap and self.ok("conv")
            if kind == "branch":
                return self.ok("elementwise")
            return self.ok("conv")
        if kind == "adaptive_pool":
            return not arm
        if kind == "lppool":  # softplus in front
            return self.ok("activation")
        if kind == "pixel_shuffle":
            return self.d == 2 and bool(self._shuffle_options(v))
        if kind == "unfold":  # (F.unfold and F.fold take 4-D tensors only)
            return self.d == 2 and v.c * math.prod(a.size for a in v.axes) <= self.elcap
        return True

    def step(self, vid: int, depth: int, arm: bool) -> int:
        kinds = [k for k in MAIN_KINDS if self.valid(k, vid, depth, arm)]
        if "pixel_shuffle" in kinds:  # 2-D only: weigh it up so it stays common overall
            kinds.append("pixel_shuffle")
        want = [k for k in kinds if _KIND_FAMILY[k] in self.need and _KIND_FAMILY[k] not in self.fam]
        kind = self.pick(want or kinds)
        return getattr(self, "g_" + kind)(vid, depth, arm)

    # -- conv ------------------------------------------------------------------------------------
    def _pmax(self, n: int, mode: str) -> int:
        cap = max(0, (self.axcap - n) // 2)
        if mode == "reflect":
            return max(0, min(3, n - 1, cap))
        if mode == "circular":
            return min(3, n, cap)
        return min(3, cap)

    @staticmethod
    def _same_ok(n: int, total: int, mode: str) -> bool:
        right = total - total // 2
        if mode == "reflect":
            return right <= n - 1
        if mode == "circular":
            return right <= n
        return True

    def conv_params(self, v: Val, out_c: int, stride=None, module_only=False, kernel1=False, allow_same=True,
                    mix=False):
        d = len(v.axes)
        ns = [a.size for a in v.axes]
        functional = False if module_only else self.coin(1, 3)
        divs = _divisors(math.gcd(v.c, out_c))
        groups = self.pick(divs) if len(divs) > 1 and not mix and self.coin() else 1
        if kernel1:
            mode = "zeros"
            stride = stride or (1,) * d
            dil = (1,) * d
            pk = "int"
        else:
            mode = "zeros" if functional else self.pick(["zeros", "zeros", "reflect", "replicate", "circular"])
            if stride is None:
                stride = self.per_axis(d, [1, 1, 1, 2, 3])
            dil = self.per_axis(d, [1, 1, 1, 2, 3])
            kinds = ["int", "tuple", "valid"]
            if allow_same and all(s == 1 for s in stride):
                kinds.append("same")
            pk = self.pick(kinds)
        pm = [self._pmax(n, mode) for n in ns]
        if kernel1:
            pads = (0,) * d
            padding: Any = 0
            ks = (1,) * d
        else:
            if pk == "same":
                pads = None
                padding = "same"
                kmax = [
                    max(k for k in range(1, 8) if self._same_ok(n, dl * (k - 1), mode)) for n, dl in zip(ns, dil)
                ]
            else:
                if pk == "valid":
                    pads = (0,) * d
                    padding = "valid"
                elif pk == "int":
                    p0 = self.int_(0, min(pm))
                    pads = (p0,) * d
                    padding = p0
                else:
                    pads = tuple(self.int_(0, m) for m in pm)
                    padding = pads
                kmax = [min(7, (n + 2 * p - 1) // dl + 1) for n, p, dl in zip(ns, pads, dil)]
            if self.coin(2, 3):
                k0 = self.int_(1, min(kmax))
                ks = (k0,) * d
            else:
                ks = tuple(self.int_(1, km) for km in kmax)
        if pads is None:
            outs = tuple(ns)
        else:
            outs = tuple(_conv_out(n, k, s, p, dl) for n, k, s, p, dl in zip(ns, ks, stride, pads, dil))
        return dict(
            d=d,
            functional=functional,
            out_c=out_c,
            kernel=ks,
            stride=tuple(stride),
            padding=padding,
            pads=pads,
            dilation=tuple(dil),
            groups=groups,
            bias=self.coin(),
            mode=mode,
            outs=outs,
        )

    def conv_valid_on(self, P, ns) -> tuple[int, ...] | None:
        """Output sizes of the conv described by P on sizes ns, or None where invalid."""
        outs = []
        for j, n in enumerate(ns):
            k, s, dl = P["kernel"][j], P["stride"][j], P["dilation"][j]
            if P["pads"] is None:
                if not self._same_ok(n, dl * (k - 1), P["mode"]):
                    return None
                outs.append(n)
                continue
            p = P["pads"][j]
            if P["mode"] == "reflect" and p > n - 1:
                return None
            if P["mode"] == "circular" and p > n:
                return None
            if n + 2 * p < dl * (k - 1) + 1:
                return None
            outs.append(_conv_out(n, k, s, p, dl))
        return tuple(outs)

    def conv_node(self, vid: int, P, name: str | None = None) -> int:
        v = self.vals[vid]
        d = P["d"]
        if name is None:
            name = self.name("conv")
            m = _nd("Conv{d}d", d)(
                v.c,
                P["out_c"],
                P["kernel"],
                stride=P["stride"],
                padding=P["padding"],
                dilation=P["dilation"],
                groups=P["groups"],
                bias=P["bias"],
                padding_mode=P["mode"],
            )
            self.mods[name] = Params({"weight": m.weight, "bias": m.bias}) if P["functional"] else m
        axes = tuple(_ax_scale(a, o, 1, s) for a, o, s in zip(v.axes, P["outs"], P["stride"]))
        kw = dict(
            d=d,
            functional=P["functional"],
            kernel=P["kernel"],
            stride=P["stride"],
            padding=P["padding"],
            dilation=P["dilation"],
            groups=P["groups"],
            padding_mode=P["mode"],
        )
        return self.add("conv", [vid], kw, Val(P["out_c"], axes), {"conv"}, name)

    def _out_c(self, v: Val) -> int:
        if v.c <= self.max_ch and self.coin(1, 3):
            return v.c
        return self.int_(1, self.max_ch)

    def g_conv(self, vid, depth=0, arm=False, stride=None):
        v = self.vals[vid]
        return self.conv_node(vid, self.conv_params(v, self._out_c(v), stride=stride))

    def conv1x1(self, vid: int, out_c: int, mix: bool = False) -> int:
        """A 1x1 conv (or a linear layer over channels); ``mix``: every output channel reads every input one."""
        v = self.vals[vid]
        if not self.ok("conv") and self.ok("linear"):
            return self.linear_node(vid, out_c)
        return self.conv_node(vid, self.conv_params(v, out_c, kernel1=True, mix=mix))

    # -- conv transpose --------------------------------------------------------------------------
    def g_conv_transpose(self, vid, depth=0, arm=False, stride=None):
        v = self.vals[vid]
        d = len(v.axes)
        ns = [a.size for a in v.axes]
        functional = self.coin(1, 3)
        out_c = self._out_c(v)
        divs = _divisors(math.gcd(v.c, out_c))
        groups = self.pick(divs) if len(divs) > 1 and self.coin() else 1
        if stride is None:
            stride = self.per_axis(d, [1, 2, 2, 3])
            stride = tuple(s if (n - 1) * s + 1 <= self.axcap else 1 for n, s in zip(ns, stride))
            if math.prod((n - 1) * s + 1 for n, s in zip(ns, stride)) > self.elcap:
                stride = (1,) * d
        dil = self.per_axis(d, [1, 1, 2])
        ops = tuple(self.int_(0, max(s, dl) - 1) if self.coin() else 0 for s, dl in zip(stride, dil))
        kmax = [
            max(1, min(5, (self.axcap + 6 - (n - 1) * s - 1 - op) // dl + 1))
            for n, s, op, dl in zip(ns, stride, ops, dil)
        ]
        if self.coin(2, 3):
            k0 = self.int_(1, min(kmax))
            ks = (k0,) * d
        else:
            ks = tuple(self.int_(1, km) for km in kmax)
        pads, outs = [], []
        for n, s, op, dl, k in zip(ns, stride, ops, dil, ks):
            base = (n - 1) * s + dl * (k - 1) + op + 1
            pmin = max(0, -(-(base - self.axcap) // 2))
            pmax = max(pmin, min(3, (base - 1) // 2))
            p = self.int_(pmin, pmax)
            pads.append(p)
            outs.append(base - 2 * p)
            assert outs[-1] >= 1
        pads = tuple(pads)
        padding = pads[0] if len(set(pads)) == 1 and self.coin() else pads
        bias = self.coin()
        name = self.name("convT")
        m = _nd("ConvTranspose{d}d", d)(
            v.c, out_c, ks, stride=stride, padding=padding, output_padding=ops, groups=groups, bias=bias, dilation=dil
        )
        self.mods[name] = Params({"weight": m.weight, "bias": m.bias}) if functional else m
        axes = tuple(_ax_scale(a, o, s, 1) for a, o, s in zip(v.axes, outs, stride))
        kw = dict(
            d=d,
            functional=functional,
            kernel=ks,
            stride=tuple(stride),
            padding=padding,
            output_padding=ops,
            dilation=dil,
            groups=groups,
        )
        return self.add("conv_transpose", [vid], kw, Val(out_c, axes), {"conv_transpose"}, name)

    # -- pools -----------------------------------------------------------------------------------
    def pool(self, vid, kind: str, stride=None) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        ns = [a.size for a in v.axes]
        functional = self.coin(1, 3)
        dil = self.per_axis(d, [1, 1, 2]) if kind == "max" else (1,) * d
        kcap = 4 if kind == "lp" else 5
        kmax = [min(kcap, (n - 1) // dl + 1) for n, dl in zip(ns, dil)]
        if self.coin(2, 3):
            k0 = self.int_(1, min(kmax))
            ks = (k0,) * d
        else:
            ks = tuple(self.int_(1, km) for km in kmax)
        if stride is not None:
            eff_stride, stride_arg = tuple(stride), tuple(stride)
        elif self.coin(2, 3):
            eff_stride, stride_arg = ks, None
        else:
            eff_stride = self.per_axis(d, [1, 2, 3])
            stride_arg = eff_stride
        if kind == "lp":
            pads = (0,) * d
        elif self.coin():
            p0 = self.int_(0, min(k // 2 for k in ks))
            pads = (p0,) * d
        else:
            pads = tuple(self.int_(0, k // 2) for k in ks)
        ceil = self.coin(1, 3)
        outs = tuple(_pool_out(n, k, s, p, dl, ceil) for n, k, s, p, dl in zip(ns, ks, eff_stride, pads, dil))
        kw: dict[str, Any] = dict(d=d, kind=kind, kernel=ks, stride=stride_arg, padding=pads, ceil_mode=ceil)
        name = None
        if kind == "max":
            kw["dilation"] = dil
            if not functional:
                name = self.name("maxpool")
                self.mods[name] = _nd("MaxPool{d}d", d)(ks, stride_arg, pads, dil, ceil_mode=ceil)
        elif kind == "avg":
            kw["count_include_pad"] = cip = self.coin()
            if not functional:
                name = self.name("avgpool")
                self.mods[name] = _nd("AvgPool{d}d", d)(
                    _u(ks), _u(stride_arg), _u(pads), ceil_mode=ceil, count_include_pad=cip
                )
        else:
            if not functional:
                name = self.name("lppool")
                self.mods[name] = _nd("LPPool{d}d", d)(2.0, _u(ks), _u(stride_arg), ceil_mode=ceil)
        fams = {"maxpool" if kind == "max" else "avgpool" if kind == "avg" else "lppool"}
        if kind == "lp":
            fams.add("activation")  # the softplus in front
        axes = tuple(_ax_scale(a, o, 1, s) for a, o, s in zip(v.axes, outs, eff_stride))
        return self.add("pool", [vid], kw, Val(v.c, axes), fams, name)

    def g_maxpool(self, vid, depth=0, arm=False):
        return self.pool(vid, "max")

    def g_avgpool(self, vid, depth=0, arm=False):
        return self.pool(vid, "avg")

    def g_lppool(self, vid, depth=0, arm=False):
        return self.pool(vid, "lp")

    def g_maxunpool(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        ns = [a.size for a in v.axes]
        kmax = [min(4, n) for n in ns]
        if self.coin(2, 3):
            ks = (self.int_(1, min(kmax)),) * d
        else:
            ks = tuple(self.int_(1, km) for km in kmax)
        ss = tuple(k if self.coin(2, 3) else self.int_(1, 3) for k in ks)
        if len(set(ss)) > 1 and self.coin():
            ss = (ss[0],) * d
        pads = tuple(self.int_(0, k // 2) if self.coin(1, 3) else 0 for k in ks)
        outs_pool = [_pool_out(n, k, s, p, 1, False) for n, k, s, p in zip(ns, ks, ss, pads)]
        default = [(o - 1) * s - 2 * p + k for o, s, p, k in zip(outs_pool, ss, pads, ks)]
        # max_unpool reads the pool's indices as flat offsets into its *output*: without output_size
        # that is only right when every axis but the first keeps its size (and no window reaches
        # past the default size, i.e. no padding)
        out_size = True if any(pads) or default[1:] != ns[1:] else self.coin()
        if out_size:
            outs = tuple(ns)
        else:
            outs = tuple(default)
        mods = {}
        if self.coin(2, 3):
            mods["pool"] = _nd("MaxPool{d}d", d)(ks, ss, pads, return_indices=True)
        if self.coin(2, 3):
            mods["unpool"] = _nd("MaxUnpool{d}d", d)(ks, ss, pads)
        name = None
        if mods:
            name = self.name("maxunpool")
            self.mods[name] = nn.ModuleDict(mods)
        axes = []
        for a, o, s in zip(v.axes, outs, ss):
            b = _ax_scale(a, o, 1, s)
            axes.append(Ax(o, a.slope, b.period, a.origin))
        kw = dict(d=d, kernel=ks, stride=ss, padding=pads, output_size=out_size)
        return self.add("maxunpool", [vid], kw, Val(v.c, tuple(axes)), {"maxunpool"}, name)

    def g_adaptive_pool(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        kind = self.pick(["avg", "max"])
        if self.coin(1, 3):
            outs = (1,) * d
        else:
            outs = tuple(1 if self.coin(1, 4) else self.int_(1, a.size) for a in v.axes)
        name = None
        if not self.coin(1, 3):
            name = self.name("adaptive")
            cls = "AdaptiveAvgPool{d}d" if kind == "avg" else "AdaptiveMaxPool{d}d"
            self.mods[name] = _nd(cls, d)(_u(outs))
        self.size_dep = True
        if 1 in outs:
            self.gout = True
        axes = tuple(_ax_fixed(a, o) for a, o in zip(v.axes, outs))
        kw = dict(d=d, kind=kind, output_size=outs)
        return self.add("adaptive_pool", [vid], kw, Val(v.c, axes), {"adaptive_pool"}, name)

    # -- resampling ------------------------------------------------------------------------------
    def interp(self, vid, scales=None, allow_size=False) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        ns = [a.size for a in v.axes]
        modes = ["nearest", "nearest-exact", _LINEAR_MODE[d]] + (["bicubic"] if d == 2 else [])
        mode = self.pick(modes)
        align = self.pick([None, False, True]) if mode not in ("nearest", "nearest-exact") else None
        size = scale_arg = None
        if scales is None and allow_size and self.coin(1, 4):
            outs = []
            budget = self.elcap // max(1, v.c)
            for j, n in enumerate(ns):
                rest = math.prod(outs) * math.prod(ns[j + 1 :])
                hi = max(1, min(self.axcap, 2 * n, budget // max(1, rest)))
                outs.append(self.int_(max(1, min(hi, n // 2)), hi))
            outs = tuple(outs)
            size = outs[0] if d == 1 and self.coin() else outs
            axes = tuple(_ax_fixed(a, o) for a, o in zip(v.axes, outs))
            self.size_dep = True
        else:
            if scales is None:

                def okay(n, s):
                    return 1 <= math.floor(n * s) <= self.axcap

                opts = [[s for s in _SCALES if okay(n, s)] for n in ns]
                common = [s for s in opts[0] if all(s in o for o in opts)]
                if common and self.coin(2, 3):
                    s0 = self.pick(common)
                    scales = (s0,) * d
                else:
                    scales = tuple(self.pick(o) for o in opts)
                if v.c * math.prod(math.floor(n * s) for n, s in zip(ns, scales)) > self.elcap:
                    scales = tuple(self.pick([s for s in o if s <= 1]) for o in opts)
            fr = [Fraction(s) for s in scales]
            outs = tuple(math.floor(n * f) for n, f in zip(ns, fr))
            if mode == "nearest" and any(o in (n, 2 * n) and f not in (1, 2) for n, o, f in zip(ns, outs, fr)):
                # torch's nearest kernel copies (out == in) or halves (out == 2 in) the index at this
                # size whatever the scale factor: the windows differ on another input size
                self.size_dep = True
            if mode in ("linear", "bilinear", "trilinear") and any(o == n and f != 1 for n, o, f in zip(ns, outs, fr)):
                self.size_dep = True  # likewise, the linear kernels copy when out == in
            axes = tuple(_ax_scale(a, o, f.numerator, f.denominator) for a, o, f in zip(v.axes, outs, fr))
            scales = tuple(int(s) if float(s).is_integer() and self.coin() else float(s) for s in scales)
            scale_arg = scales[0] if len(set(scales)) == 1 and self.coin() else scales
        if align:
            self.size_dep = True
        name = None
        if self.coin(1, 3):
            name = self.name("upsample")
            self.mods[name] = nn.Upsample(size=size, scale_factor=scale_arg, mode=mode, align_corners=align)
        kw = dict(size=size, scale_factor=scale_arg, mode=mode, align_corners=align)
        return self.add("interpolate", [vid], kw, Val(v.c, axes), {"interpolate"}, name)

    def g_interpolate(self, vid, depth=0, arm=False):
        return self.interp(vid, allow_size=not arm)

    def _shuffle_options(self, v: Val):
        opts = []
        if len(v.axes) != 2:
            return opts
        ns = [a.size for a in v.axes]
        for r in (2, 3):
            if all(n * r <= self.axcap for n in ns) and r * r <= self.chcap and (v.c % (r * r) == 0 or self.ok("conv")):
                opts.append(("shuffle", r))
            if all(n % r == 0 for n in ns) and v.c * r * r <= self.chcap:
                opts.append(("unshuffle", r))
        return opts

    def shuffle(self, vid, kind: str, r: int) -> int:
        v = self.vals[vid]
        if kind == "shuffle" and v.c % (r * r):
            m = self.int_(1, max(1, min(2, self.chcap // (r * r))))
            vid = self.conv1x1(vid, r * r * m)
            v = self.vals[vid]
        name = None
        if self.coin():
            name = self.name("pixel_" + kind)
            self.mods[name] = nn.PixelShuffle(r) if kind == "shuffle" else nn.PixelUnshuffle(r)
        if kind == "shuffle":
            axes = tuple(_ax_scale(a, a.size * r, r, 1) for a in v.axes)
            c = v.c // (r * r)
        else:
            axes = tuple(_ax_scale(a, a.size // r, 1, r) for a in v.axes)
            c = v.c * r * r
        out = self.add("pixel_shuffle", [vid], dict(kind=kind, r=r), Val(c, axes), {"pixel_shuffle"}, name)
        if kind == "unshuffle":
            # convlens treats channels as mixed: an unshuffle whose channel phases reach a shuffle
            # through per-channel ops only is reported with the whole r x r block (README,
            # "Conventions"); generated nets mix the channels right away
            out = self.conv1x1(out, c, mix=True)
        return out

    def g_pixel_shuffle(self, vid, depth=0, arm=False):
        kind, r = self.pick(self._shuffle_options(self.vals[vid]))
        return self.shuffle(vid, kind, r)

    # -- padding and cropping --------------------------------------------------------------------
    def g_pad(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        mode = self.pick(["constant", "constant", "reflect", "replicate", "circular"])
        functional = self.coin()
        j = self.int_(1, d) if (mode == "constant" and functional and d > 1 and self.coin()) else d
        neg = mode == "constant" and self.coin(1, 3)
        pads: list[int] = []
        axes = list(v.axes)
        for i in range(d - 1, d - 1 - j, -1):
            n = v.axes[i].size
            room = self.axcap - n
            if mode == "constant":
                lo_min = max(-2, 1 - n) if neg else 0
                lo = self.int_(lo_min, max(lo_min, min(3, room)))
                # torch narrows by the negative pads before padding: that part must stay >= 1 too
                hi_lo = max(-2 if neg else 0, 1 - n - min(lo, 0))
                hi = self.int_(hi_lo, max(hi_lo, min(3, room - lo)))
            else:
                lim = {"reflect": n - 1, "replicate": 3, "circular": n}[mode]
                lim = max(0, min(3, lim, room))
                lo = self.int_(0, lim)
                hi = self.int_(0, max(0, min(lim, room - lo)))
            pads += [lo, hi]
            axes[i] = replace(axes[i], size=n + lo + hi)
        pads_t = tuple(pads)
        value = self.pick([0.0, 0.0, 1.0, -0.5]) if mode == "constant" else None
        name = None
        if not functional:
            name = self.name("pad")
            if mode == "constant":
                if value == 0.0 and self.coin():
                    self.mods[name] = _nd("ZeroPad{d}d", d)(pads_t)
                else:
                    self.mods[name] = _nd("ConstantPad{d}d", d)(pads_t, value)
            else:
                cls = {"reflect": "ReflectionPad{d}d", "replicate": "ReplicationPad{d}d", "circular": "CircularPad{d}d"}
                self.mods[name] = _nd(cls[mode], d)(pads_t)
        kw = dict(mode=mode, pads=pads_t, value=value)
        return self.add("pad", [vid], kw, Val(v.c, tuple(axes)), {"pad"}, name)

    def g_crop(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        j0 = self.int_(0, d - 1)
        spec: list[Any] = []
        axes = []
        for j, a in enumerate(v.axes):
            if j != j0 and not self.coin():
                spec.append(None)
                axes.append(a)
                continue
            n = a.size
            lo = self.int_(0, min(3, n - 1))
            hi = self.int_(0, min(3, n - 1 - lo))
            step = self.pick([1, 1, 1, 2])
            size = len(range(lo, n - hi, step))
            spec.append((lo, hi, step))
            axes.append(_ax_scale(a, size, 1, step))
        ellipsis = all(s is None for s in spec[:-1]) and spec[-1] is not None and self.coin()
        kw = dict(slices=tuple(spec), ellipsis=ellipsis)
        return self.add("crop", [vid], kw, Val(v.c, tuple(axes)), {"crop"})

    # -- pointwise / channel ops -----------------------------------------------------------------
    def g_activation(self, vid, depth=0, arm=False, allow_shared=True):
        v = self.vals[vid]
        kinds = ["relu", "relu", "gelu", "sigmoid", "tanh", "leaky_relu"]
        if self.can_inplace(vid):
            kinds += ["relu_inplace", "relu_inplace"]
        if allow_shared:
            kinds.append("relu_shared")
        kind = self.pick(kinds)
        name = None
        kw: dict[str, Any] = dict(kind=kind)
        if kind == "relu_shared":
            name = "relu_shared"
            self.mods.setdefault(name, nn.ReLU())
            self.shared_relu_uses += 1
        elif kind == "relu_inplace":
            style = self.pick(["module", "F", "method", "torch"])
            if style == "module":
                name = self.name("relu")
                self.mods[name] = nn.ReLU(inplace=True)
            kw["style"] = style
        elif self.coin():
            name = self.name(kind)
            self.mods[name] = {
                "relu": nn.ReLU,
                "gelu": nn.GELU,
                "sigmoid": nn.Sigmoid,
                "tanh": nn.Tanh,
                "leaky_relu": lambda: nn.LeakyReLU(0.1),
            }[kind]()
        else:
            kw["style"] = self.pick(["F", "torch"])
        return self.add("activation", [vid], kw, v, {"activation"}, name)

    def _affine(self, c):
        w = torch.empty(c).uniform_(0.5, 1.5)
        b = torch.empty(c).uniform_(-0.2, 0.2)
        return w, b

    def g_norm(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        n_sp = math.prod(a.size for a in v.axes)
        # torch wants > 1 value per group; two normalised values are always -1 and +1 (zero gradient)
        gn_groups = [g for g in _divisors(v.c) if (v.c // g) * n_sp > 2]
        # layer norm over the channels of one position: with a single channel its output is constant
        # (x - mean(x) = 0), which no gradient oracle can see through, so it needs >= 2 channels
        kind = self.pick(["bn", "bn"] + (["ln"] if v.c > 1 else []) + (["gn"] if gn_groups else []))
        functional = self.coin(1, 3)
        w, b = self._affine(v.c)
        kw: dict[str, Any] = dict(kind=kind, functional=functional)
        name = self.name(kind)
        if kind == "bn":
            rm = torch.randn(v.c) * 0.2
            rv = torch.empty(v.c).uniform_(0.5, 2.0)
            if functional:
                self.mods[name] = Params({"weight": w, "bias": b}, {"running_mean": rm, "running_var": rv})
            else:
                m = _nd("BatchNorm{d}d", d)(v.c)
                with torch.no_grad():
                    m.weight.copy_(w)
                    m.bias.copy_(b)
                    m.running_mean.copy_(rm)
                    m.running_var.copy_(rv)
                self.mods[name] = m
        elif kind == "gn":
            g = self.pick(gn_groups)
            kw["groups"] = g
            self.gctx = True
            self.notes.append("GroupNorm statistics span the whole input (global context)")
            if functional:
                self.mods[name] = Params({"weight": w, "bias": b})
            else:
                m = nn.GroupNorm(g, v.c)
                with torch.no_grad():
                    m.weight.copy_(w)
                    m.bias.copy_(b)
                self.mods[name] = m
        else:
            kw["style"] = self.pick(["movedim", "permute"])
            if functional:
                self.mods[name] = Params({"weight": w, "bias": b})
            else:
                m = nn.LayerNorm(v.c)
                with torch.no_grad():
                    m.weight.copy_(w)
                    m.bias.copy_(b)
                self.mods[name] = m
        return self.add("norm", [vid], kw, v, {"norm"}, name)

    def linear_node(self, vid, out_c) -> int:
        v = self.vals[vid]
        name = self.name("linear")
        self.mods[name] = nn.Linear(v.c, out_c, bias=self.coin())
        kw = dict(style=self.pick(["movedim", "permute"]))
        return self.add("linear1x1", [vid], kw, Val(out_c, v.axes), {"linear"}, name)

    def g_linear(self, vid, depth=0, arm=False):
        return self.linear_node(vid, self._out_c(self.vals[vid]))

    def g_view(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        kinds = ["flatten", "permute", "unsqueeze"]
        if len(_divisors(v.c)) > 2:
            kinds.append("chshuffle")
        if d >= 2:
            kinds += ["transpose", "transpose"]
        kind = self.pick(kinds)
        inner = self.pick([None, None, "gelu", "relu", "tanh"]) if self.ok("activation") else None
        fams = {"view"} | ({"activation"} if inner else set())
        if kind == "flatten":
            kw = dict(
                kind=kind,
                method=self.pick(["flatten", "reshape", "contiguous_view"]),
                back=self.pick(["unflatten", "reshape"]),
                inner=inner,
            )
            return self.add("view", [vid], kw, v, fams)
        if kind == "permute":
            kw = dict(kind=kind, contiguous=self.coin(), inner=inner)
            return self.add("view", [vid], kw, v, fams)
        if kind == "unsqueeze":
            kw = dict(kind=kind, pos=self.pick([2, -1]), inner=inner)
            return self.add("view", [vid], kw, v, fams)
        if kind == "chshuffle":
            g = self.pick(_divisors(v.c)[1:-1])
            return self.add("view", [vid], dict(kind=kind, groups=g), v, {"view"})
        # transpose two spatial axes, one op on the transposed tensor, transpose back
        i = self.int_(0, d - 2)
        j = self.int_(i + 1, d - 1)
        axes = list(v.axes)
        axes[i], axes[j] = axes[j], axes[i]
        t = self.add("view", [vid], dict(kind="transpose", dims=(2 + i, 2 + j)), Val(v.c, tuple(axes)), {"view"})
        inner_kinds = [
            k for k in ("conv", "maxpool", "avgpool", "pad", "crop", "activation", "interpolate") if self.ok(k)
        ]
        k = self.pick(inner_kinds)
        if k in ("maxpool", "avgpool"):
            t = self.pool(t, k[:3])
        elif k == "interpolate":
            t = self.interp(t)
        else:
            t = getattr(self, "g_" + k)(t, depth, True)
        w = self.vals[t]
        axes = list(w.axes)
        axes[i], axes[j] = axes[j], axes[i]
        return self.add("view", [t], dict(kind="transpose", dims=(2 + i, 2 + j)), Val(w.c, tuple(axes)), {"view"})

    def g_shared_module(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        P = self.conv_params(v, v.c, module_only=True)
        outs2 = self.conv_valid_on(P, P["outs"])
        if outs2 is None:
            P = dict(P, padding="same", pads=None, stride=(1,) * len(v.axes), mode="zeros", outs=tuple(a.size for a in v.axes))
            outs2 = P["outs"]
        first = self.conv_node(vid, P)
        name = self.steps[-1].mod
        mid = first
        if self.ok("activation") and self.coin():
            mid = self.g_activation(first, allow_shared=True)
        P2 = dict(P, outs=outs2)
        out = self.conv_node(mid, P2, name=name)
        self.fam.add("shared_module")
        self.steps[-1] = replace(self.steps[-1], families=self.steps[-1].families | {"shared_module"})
        return out

    def g_unsupported(self, vid, depth=0, arm=False):
        v = self.vals[vid]
        d = len(v.axes)
        kind = self.pick(["roll", "flip", "cumsum"])
        dims = [2 + j for j in range(d) if self.coin()] or [2 + self.int_(0, d - 1)]
        kw: dict[str, Any] = dict(kind=kind, dims=tuple(dims))
        if kind == "roll":
            kw["shifts"] = tuple(self.pick([-3, -2, -1, 1, 2, 3]) for _ in dims)
        if kind == "cumsum":
            kw["dims"] = (dims[0],)
        self.size_dep = True
        return self.add("unsupported", [vid], kw, v, {"unsupported"})

    def gate(self, vid) -> int:
        v = self.vals[vid]
        # x - mean(x) over a single position is exactly 0: no gradient oracle can see through it
        kinds = ["ctx_add"] + (["ctx_sub"] if math.prod(a.size for a in v.axes) > 1 else [])
        if self.ok("activation"):
            kinds += ["se", "spatial_mean", "spatial_max", "batch_spatial"]
        if self.ok("conv") and self.ok("activation"):
            kinds.append("se_conv")
        if v.c > 1:
            kinds.append("l2norm")
        kind = self.pick(kinds)
        fams = {"elementwise"}
        name = None
        if kind == "se_conv":
            name = self.name("se")
            self.mods[name] = _nd("Conv{d}d", len(v.axes))(v.c, v.c, 1)
            fams.add("conv")
        if kind not in ("ctx_add", "ctx_sub"):
            fams.add("activation")
        if kind in ("se", "se_conv", "ctx_add", "ctx_sub"):
            self.gctx = True
        return self.add("gate", [vid], dict(kind=kind), v, fams, name)

    # -- forks -----------------------------------------------------------------------------------
    def arm(self, vid, n_ops, depth) -> int:
        for _ in range(n_ops):
            vid = self.step(vid, depth, arm=True)
        return vid

    def downup(self, vid, depth) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        stride = tuple(self.pick([1, 2]) if a.size >= 2 else 1 for a in v.axes)
        if all(s == 1 for s in stride):
            stride = (2,) * d
        kinds = [k for k in ("conv", "maxpool", "avgpool", "lppool", "interpolate", "crop") if self.ok(k)]
        if not self.ok("activation") and "lppool" in kinds:
            kinds.remove("lppool")
        if d == 2 and all(a.size % 2 == 0 for a in v.axes) and v.c * 4 <= self.chcap and self.ok("pixel_shuffle"):
            kinds.append("unshuffle")
        kind = self.pick(kinds) if kinds else "conv"
        if kind == "conv":
            t = self.g_conv(vid, stride=stride)
        elif kind in ("maxpool", "avgpool", "lppool"):
            t = self.pool(vid, kind[:-4] if kind != "lppool" else "lp", stride=stride)
        elif kind == "interpolate":
            t = self.interp(vid, scales=tuple(0.5 if s == 2 and a.size >= 2 else 1 for s, a in zip(stride, v.axes)))
        elif kind == "unshuffle":
            t = self.shuffle(vid, "unshuffle", 2)
        else:
            spec = tuple((0, 0, s) for s in stride)
            axes = tuple(_ax_scale(a, len(range(0, a.size, s)), 1, s) for a, s in zip(v.axes, stride))
            t = self.add("crop", [vid], dict(slices=spec, ellipsis=False), Val(v.c, axes), {"crop"})
        if self.coin():
            t = self.arm(t, 1, depth)
        return t

    def restore(self, vid, target: Val) -> int:
        """Bring value vid to target's slopes where a simple op can (else leave it)."""
        v = self.vals[vid]
        ratios = []
        for a, t in zip(v.axes, target.axes):
            if a.slope == t.slope:
                ratios.append(Fraction(1))
            elif a.slope == 0 or t.slope == 0:
                return vid
            else:
                ratios.append(t.slope / a.slope)
        if all(r == 1 for r in ratios):
            return vid
        ns = [a.size for a in v.axes]
        opts = []
        up = [math.floor(n * r) for n, r in zip(ns, ratios)]
        fits = all(1 <= u <= self.axcap for u in up) and v.c * math.prod(up) <= self.elcap
        if all(r.denominator == 1 for r in ratios) and fits:
            opts += [k for k in ("conv_transpose", "interpolate") if self.ok(k)]
            if (
                len(ns) == 2
                and ratios[0] == ratios[1]
                and ratios[0] in (2, 3)
                and self.ok("pixel_shuffle")
                and ("shuffle", int(ratios[0])) in self._shuffle_options(v)
            ):
                opts.append("pixel_shuffle")
        elif all(r.numerator == 1 for r in ratios):
            opts += [k for k in ("conv", "avgpool", "maxpool") if self.ok(k)]
        elif fits and all(r.denominator in (1, 2, 4) and r.numerator <= 12 for r in ratios) and self.ok("interpolate"):
            opts.append("interpolate")
        if not opts:
            return vid
        kind = self.pick(opts)
        if kind == "conv_transpose":
            return self.g_conv_transpose(vid, stride=tuple(int(r) for r in ratios))
        if kind == "interpolate":
            return self.interp(vid, scales=tuple(int(r) if r.denominator == 1 else float(r) for r in ratios))
        if kind == "pixel_shuffle":
            return self.shuffle(vid, "shuffle", int(ratios[0]))
        stride = tuple(r.denominator for r in ratios)
        if kind == "conv":
            return self.g_conv(vid, stride=stride)
        return self.pool(vid, kind[:3], stride=stride)

    def match(self, vid, other, modes) -> int:
        """Crop/pad value vid towards other on the axes listed in modes [(j, mode, align)]."""
        v, o = self.vals[vid], self.vals[other]
        axes = list(v.axes)
        fams = set()
        used = []
        for j, mode, align in modes:
            a = _match_amounts(v.axes[j].size, o.axes[j].size, mode, align)
            if v.axes[j].slope != o.axes[j].slope:
                used.append((j, mode, align))
            if a is None:
                continue
            used.append((j, mode, align))
            if a[0] == "crop":
                axes[j] = replace(axes[j], size=a[2])
                fams.add("crop")
            else:
                axes[j] = replace(axes[j], size=axes[j].size + a[1] + a[2])
                fams.add("pad")
        if not used:
            return vid
        used = tuple(dict.fromkeys(used))
        return self.add("match", [vid, other], dict(axes=used), Val(v.c, tuple(axes)), fams)

    def fork(self, vid, depth, merge: str, residual: bool = False) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        self.held.add(vid)
        a = vid
        if residual:
            b = vid
            for _ in range(self.int_(1, 2)):
                kinds = [k for k in ("conv", "maxpool", "avgpool", "crop", "activation", "norm") if self.ok(k)]
                k = self.pick(kinds)
                if k == "conv":
                    b = self.g_conv(b, stride=(1,) * d)
                elif k in ("maxpool", "avgpool"):
                    b = self.pool(b, k[:3], stride=(1,) * d)
                elif k == "crop":
                    w = self.vals[b]
                    spec = []
                    for x in w.axes:
                        lo = self.int_(0, min(2, x.size - 1))
                        spec.append((lo, self.int_(0, min(2, x.size - 1 - lo)), 1))
                    spec = tuple(spec)
                    axes = tuple(replace(x, size=x.size - lo - hi) for (lo, hi, _), x in zip(spec, w.axes))
                    b = self.add("crop", [b], dict(slices=spec, ellipsis=False), Val(w.c, axes), {"crop"})
                else:
                    b = getattr(self, "g_" + k)(b, depth + 1, True)
        else:
            if not self.coin(2, 3):
                a = self.arm(vid, self.int_(1, 2), depth + 1)
            if self.coin(1, 3):
                b = self.downup(vid, depth + 1)
            else:
                b = self.arm(vid, self.int_(1, 3), depth + 1)
        self.held.add(a)
        b = self.restore(b, self.vals[a])
        ca, cb = self.vals[a].c, self.vals[b].c
        if merge == "cat_channels":
            if ca >= self.chcap:  # arm a grew the channels (pixel unshuffle): make room
                a2 = self.conv1x1(a, self.int_(1, self.chcap - 1))
                self.held.discard(a)
                a = a2
                self.held.add(a)
                ca = self.vals[a].c
            if ca + cb > self.chcap:
                b = self.conv1x1(b, self.int_(1, self.chcap - ca))
        elif cb != ca:
            b = self.conv1x1(b, ca)
        va, vb = self.vals[a], self.vals[b]
        cat_j = self.int_(0, d - 1) if merge == "cat_spatial" else None
        modes = []
        for j in range(d):
            if j == cat_j:
                continue
            x, y = va.axes[j], vb.axes[j]
            if x.size == y.size and x.slope == y.slope:
                continue
            if residual:
                mode = "pad"
            else:
                mode = self.pick([m for m in ("crop", "pad") if self.ok(m)] or ["crop"])
            modes.append((j, mode, self.pick(["center", "center", "start", "end"])))
        if modes:
            a2 = self.match(a, b, modes)
            b = self.match(b, a, modes)
            a = a2
        self.held.discard(vid)
        va, vb = self.vals[a], self.vals[b]
        mismatch = False
        axes = []
        for j, (x, y) in enumerate(zip(va.axes, vb.axes)):
            assert x.origin == y.origin
            per = math.lcm(x.period, y.period)
            if j == cat_j:
                axes.append(Ax(x.size + y.size, x.slope + y.slope, per, x.origin))
                continue
            assert x.size == y.size, (va, vb)
            if x.slope != y.slope:
                mismatch = True
            axes.append(Ax(x.size, x.slope, per, x.origin))
        if mismatch:
            self.size_dep = True
            self.resizable = False
            self.notes.append("merge of arms with different slopes (reconciled at run time)")
        if merge == "cat_channels":
            c, fams = va.c + vb.c, {"cat_channels"}
            kw: dict[str, Any] = dict(kind="cat_channels")
        elif merge == "cat_spatial":
            c, fams = va.c, {"cat_spatial"}
            kw = dict(kind="cat_spatial", dim=2 + cat_j)
            self.size_dep = True
        else:
            c, fams = va.c, {"elementwise"}
            kw = dict(kind=merge, style=self.pick(["op", "torch"]))
            if residual:
                fams.add("branch")
        self.held.discard(a)
        return self.add("merge", [a, b], kw, Val(c, tuple(axes)), fams)

    def g_elementwise(self, vid, depth=0, arm=False):
        if depth < 2 and self.ok("conv") and self.coin():
            return self.fork(vid, depth, self.pick(["add", "add", "mul", "sub"]))
        return self.gate(vid)

    def g_cat_channels(self, vid, depth=0, arm=False):
        return self.fork(vid, depth, "cat_channels")

    def g_pick_channels(self, vid, depth=0, arm=False):
        """Channels picked from a cat of two arms (MixNet's groups, DPN's dual path), after up to two
        ops that keep each channel's index (an activation, a depthwise conv, a max pool, a gate):
        a slice with a step, one part of a split or a chunk, or one channel (select)."""
        cur = self.fork(vid, depth, "cat_channels")
        d = self.d
        for _ in range(self.int_(0, 2)):
            kinds = [k for k in ("activation", "depthwise", "maxpool", "gate") if self.ok(
                {"depthwise": "conv", "gate": "elementwise"}.get(k, k))]
            if not kinds:
                break
            k = self.pick(kinds)
            if k == "activation":
                cur = self.g_activation(cur, depth + 1, True)
            elif k == "depthwise":
                v = self.vals[cur]
                cur = self.conv_node(cur, dict(self.conv_params(v, v.c, stride=(1,) * d), groups=v.c))
            elif k == "maxpool":
                cur = self.pool(cur, "max", stride=(1,) * d)
            else:
                cur = self.gate(cur)
        v = self.vals[cur]
        c = v.c
        kind = self.pick(["slice", "split", "chunk", "select"])
        if kind == "slice":
            lo = self.int_(0, c - 1)
            step = self.pick([1, 1, 2])
            hi = self.int_(lo + 1, c)
            kw = dict(kind=kind, lo=lo, hi=hi, step=step)
            out_c = len(range(lo, hi, step))
        elif kind == "split":
            first = self.int_(1, max(1, c - 1))
            part = self.int_(0, 1) if first < c else 0
            kw = dict(kind=kind, sizes=[first, c - first] if first < c else [c], part=part)
            out_c = kw["sizes"][part]
        elif kind == "chunk":
            n = self.int_(1, min(3, c))
            part = self.int_(0, len(torch.arange(c).chunk(n)) - 1)
            kw = dict(kind=kind, n=n, part=part)
            out_c = len(torch.arange(c).chunk(n)[part])
        else:
            kw = dict(kind=kind, index=self.int_(0, c - 1))
            out_c = 1
        return self.add("pick_channels", [cur], kw, Val(out_c, v.axes), {"pick_channels"})

    def g_cat_spatial(self, vid, depth=0, arm=False):
        return self.fork(vid, depth, "cat_spatial")

    def g_branch(self, vid, depth=0, arm=False):
        return self.fork(vid, depth, "add", residual=True)

    # -- terminal ops ----------------------------------------------------------------------------
    def shrink_to(self, vid, limit) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        t = max(1, int(limit ** (1.0 / d)))
        stride = tuple(max(1, -(-a.size // t)) for a in v.axes)
        if all(s == 1 for s in stride):
            return vid
        return self.pool(vid, "avg" if self.ok("avgpool") else "max", stride=stride)

    def attention_stays_small(self, v: Val) -> None:
        """The L x L attention matrix over ``v``'s positions must stay small on larger inputs too:
        beyond 4096 positions at ``larger_input_shape(4)`` the net is not resizable."""
        period = [1] * self.d
        for w in self.vals:
            for x in w.axes:
                period[x.origin] = math.lcm(period[x.origin], x.period)
        grown = math.prod(x.size + int(4 * period[x.origin] * x.slope) for x in v.axes)
        if grown > 4096:
            self.resizable = False
            self.notes.append(f"attention over {grown} positions at larger_input_shape(4): not resizable")

    def g_attention(self, vid) -> int:
        v = self.vals[vid]
        if math.prod(a.size for a in v.axes) > 256:
            vid = self.shrink_to(vid, 256)
            v = self.vals[vid]
        self.attention_stays_small(v)
        dk = self.int_(1, 8)
        name = self.name("attention")
        self.mods[name] = nn.ModuleDict(
            {
                "q": nn.Linear(v.c, dk, bias=self.coin()),
                "k": nn.Linear(v.c, dk, bias=self.coin()),
                "v": nn.Linear(v.c, dk, bias=self.coin()),
                "o": nn.Linear(dk, v.c),
            }
        )
        residual = self.coin()
        self.gout = True  # (with a residual too: every position mixes the whole input, DESIGN "tokens")
        kw = dict(scale=1.0 / math.sqrt(dk), residual=residual)
        return self.add("attention", [vid], kw, v, {"attention"}, name)

    def g_tokens(self, vid, depth=0, arm=False):
        """A token stage (``_x_tokens``): the grid flattened, extra tokens around it, sliced off again;
        global attention among the tokens makes every axis global (with or without a residual)."""
        v = self.vals[vid]
        L = math.prod(a.size for a in v.axes)
        kinds = ["none", "none"] + (["sdpa", "matmul"] if self.ok("attention") and L <= 256 else [])
        attention = self.pick(kinds)
        fams = {"tokens"}
        if attention != "none":
            fams.add("attention")
            self.gout = True
            self.attention_stays_small(v)
        before, after = self.int_(0, 2), self.int_(0, 1)
        dk = self.int_(1, 8)
        name = self.name("tokens")
        # (a layer norm over one channel is constant: a path with an exactly zero gradient, which the
        # oracle cannot see on global rows)
        norm = v.c > 1 and self.coin()
        self.mods[name] = _Tokens(v.c, before, after, dk, attention != "none", norm, self.coin())
        kw = dict(before=before, after=after, attention=attention, residual=self.coin(), scale=1.0 / math.sqrt(dk),
                  slice=self.pick(["two", "narrow"]))
        return self.add("tokens", [vid], kw, v, fams, name)

    def g_windows(self, vid, depth=0, arm=False):
        """A window stage (``_x_windows``): every unit mixes the positions of its window (attention,
        or a conv zero-padded at the window's borders), attends to its window with a halo of 0-2
        positions around it (HaloNet's keys cut by Tensor.unfold), reads a context pooled over the
        windows at its position within them, or scales itself by its relative-position logits
        (BoTNet's skew), with windows shifted or not, the axes padded to a multiple of the window."""
        v = self.vals[vid]
        ws = tuple(self.int_(1, min(4, a.size)) for a in v.axes)
        shift = tuple(self.int_(0, w - 1) if self.coin() else 0 for w in ws)
        # (a context over the windows along an axis with windows of 1 sees the whole axis: global
        # context the oracle cannot tell, as it pools over the batch dim)
        op = self.pick(["matmul", "sdpa", "conv", "relpos", "halo"] + (["context"] if min(ws) > 1 else []))
        dk, k = self.int_(1, 4), self.pick([1, 3])
        name = self.name("windows")
        self.mods[name] = _Windows(v.c, len(v.axes), dk, op, k, ws[-1])
        kw = dict(ws=ws, shift=shift, op=op, residual=self.coin(), scale=1.0 / math.sqrt(dk))
        if op == "halo":
            kw["halo"] = self.int_(0, 2)
        if any(shift) and op in ("matmul", "sdpa") and self.coin():
            # Swin's mask of the pairs the shift brought together: -100 (read by the -80 convention)
            # or -inf (an exactly zero weight)
            kw["mask"] = self.pick([-100.0, float("-inf")])
        if op == "context":
            # a unit sees its position in every window: its window grows with the input, so rf, stride
            # and offset at one size say nothing of another (and a probe at a larger size is huge)
            self.size_dep = True
        if any(-(-a.size // w) == 1 for a, w in zip(v.axes, ws)):
            # one window along an axis (of one position too: windows of 1 on an axis of 1): the
            # partition's view is that of no partition at this size, so the unbounded model cannot
            # know the windows that a larger input has (the 10,000-network run: a conv inside windows
            # of 1 read 3 positions in the unbounded model, 1 in the real one)
            self.size_dep = True
        axes = tuple(Ax(a.size, a.slope, a.period * w // math.gcd(int(a.period * a.slope), w), a.origin)
                     for a, w in zip(v.axes, ws))
        return self.add("windows", [vid], kw, Val(v.c, axes), {"windows"}, name)

    def g_unfold(self, vid, depth=0, arm=False):
        """im2col (``F.unfold``) of a 2-D value, then fold back after a Linear mixes each block, a conv
        written as im2col and a Linear, or fold back unmixed (see ``_x_unfold``)."""
        v = self.vals[vid]
        ns = [a.size for a in v.axes]
        stride = self.per_axis(2, [1, 1, 2, 3])
        dil = self.per_axis(2, [1, 1, 2])
        pads = [self.int_(0, min(2, self._pmax(n, "zeros"))) for n in ns]
        kmax = [max(1, min(4, (n + 2 * p - 1) // dl + 1)) for n, p, dl in zip(ns, pads, dil)]
        ks = tuple(self.int_(1, km) for km in kmax)
        grid = tuple(_conv_out(n, k, s, p, dl) for n, k, s, p, dl in zip(ns, ks, stride, pads, dil))
        if v.c * math.prod(ks) * math.prod(grid) > self.elcap:  # (the blocks' elements: kernel 1 always fits)
            ks, grid = (1, 1), tuple(_conv_out(n, 1, s, p, 1) for n, s, p in zip(ns, stride, pads))
        op = self.pick(["fold", "fold", "blocks", "same"])
        c = v.c * math.prod(ks)
        out_c = self._out_c(v) if op == "blocks" else v.c
        name = self.name("unfold")
        if op != "same":
            self.mods[name] = nn.Linear(c, out_c * (1 if op == "blocks" else math.prod(ks)), bias=self.coin())
        kw = dict(kernel=ks, dilation=dil, padding=tuple(pads), stride=stride, op=op)
        if op == "blocks":
            axes = tuple(_ax_scale(a, o, 1, s) for a, o, s in zip(v.axes, grid, stride))
            return self.add("unfold", [vid], kw, Val(out_c, axes), {"unfold"}, name)
        # (fold's blocks come from the input's size: the same grid as a conv with these parameters)
        axes = tuple(Ax(a.size, a.slope, _ax_scale(a, o, 1, s).period, a.origin)
                     for a, o, s in zip(v.axes, grid, stride))
        return self.add("unfold", [vid], kw, Val(v.c, axes), {"unfold"}, name if op != "same" else None)

    def g_view_write(self, vid, depth=0, arm=False):
        """A copy of the value written through a view with a same-size conv of it (see _x_view_write)."""
        v = self.vals[vid]
        d = len(v.axes)
        kinds = ["region", "region", "channels"] + (["transposed"] if v.c > 1 else [])
        kinds += ["select"] if any(a.size > 1 for a in v.axes) else []
        kind = self.pick(kinds)
        lo = self.int_(0, v.c - 1)
        channels = (lo, self.int_(lo + 1, v.c)) if self.coin() else (0, v.c)
        kw: dict[str, Any] = dict(kind=kind, channels=channels, how=self.pick(["assign", "assign", "add", "mul",
                                                                                  "fill"]))
        c_in = channels[1] - channels[0] if kind == "channels" else v.c
        k = self.pick([1, 3, 5])
        name = self.name("vwconv")
        self.mods[name] = _nd("Conv{d}d", d)(c_in, c_in, k, padding=k // 2)
        if kind == "region":
            spec = []
            for a in v.axes:
                if self.coin(1, 3):
                    spec.append(None)
                    continue
                n = a.size
                lo_ = self.int_(0, n - 1)
                hi_ = self.int_(0, n - 1 - lo_)
                spec.append((lo_, hi_, self.pick([1, 1, 2])))
            kw["slices"] = tuple(spec)
        elif kind == "select":
            a = self.pick([j for j, x in enumerate(v.axes) if x.size > 1])
            n = v.axes[a].size
            kw["select"] = (a, self.int_(0, n - 1), self.int_(0, n - 1))
        self.size_dep = True  # regions are fixed positions and offsets from the end
        return self.add("view_write", [vid], kw, v, {"view_write"}, name)

    def g_reduce(self, vid) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        fn = self.pick(["mean", "sum", "amax", "vector_norm", "norm"])
        js = tuple(range(d)) if self.coin() else (self.int_(0, d - 1),)
        keep = self.coin()
        if keep:
            axes = tuple(_ax_fixed(a, 1) if j in js else a for j, a in enumerate(v.axes))
        else:
            axes = tuple(a for j, a in enumerate(v.axes) if j not in js)
        self.gout = True
        kw = dict(fn=fn, dims=tuple(2 + j for j in js), keepdim=keep)
        if fn == "vector_norm":
            kw["ord"] = self.pick([1, 2, 3])  # the aten op's second argument (``ord``), not a dim
            if self.coin(1, 3):  # negative dims
                kw["dims"] = tuple(dd - 2 - d for dd in kw["dims"])
        out = self.add("reduce", [vid], kw, Val(v.c, axes), {"reduce"})
        if self.ok("activation") and self.coin(1, 3):
            out = self.g_activation(out, allow_shared=True)
        return out

    def g_linear_head(self, vid, kind=None) -> int:
        v = self.vals[vid]
        d = len(v.axes)
        n_el = v.c * math.prod(a.size for a in v.axes)
        kinds = ["gap"] if self.ok("reduce") else []
        if n_el <= 1024:
            kinds += ["flatten", "flatten"]
        if self.ok("adaptive_pool") and d >= 1:
            kinds.append("pool_flatten")
        kind = kind or self.pick(kinds or ["flatten"])
        out_f = self.int_(1, 10)
        kw: dict[str, Any] = dict(kind=kind, d=d)
        fams = {"linear"}
        if kind == "gap":
            in_f = v.c
            fams.add("reduce")
        else:
            kw["method"] = self.pick(["flatten", "reshape", "contiguous_view"])
            sizes = [a.size for a in v.axes]
            if kind == "pool_flatten":
                sizes = [min(s, self.pick([1, 2, 2, 3])) for s in sizes]
                kw["pool"] = tuple(sizes)
                fams.add("adaptive_pool")
            in_f = v.c * math.prod(sizes)
            self.size_dep = True
            self.resizable = False
            self.notes.append("flatten + Linear head: fixed input size")
        self.gout = True
        name = self.name("head")
        self.mods[name] = nn.Linear(in_f, out_f)
        return self.add("head", [vid], kw, Val(out_f, ()), fams, name)

    def terminal(self, cur) -> int:
        missing = self.need - self.fam
        v = self.vals[cur]
        L = math.prod(a.size for a in v.axes)
        choices = ["none", "none", "none", "reduce", "linear_head", "attention", "attention_head"]
        choices = [
            c
            for c in choices
            if c == "none"
            or (c == "reduce" and self.ok("reduce"))
            or (c == "linear_head" and self.ok("linear"))
            or (c.startswith("attention") and self.ok("attention") and L <= 256)
        ]
        choice = self.pick(choices)
        if "attention" in missing or choice.startswith("attention"):
            cur = self.g_attention(cur)
        want_lin = "linear" in missing
        want_red = "reduce" in missing
        if want_lin and want_red:
            return self.g_linear_head(cur, kind="gap")
        if want_red:
            return self.g_reduce(cur)
        if want_lin or choice == "linear_head":
            return self.g_linear_head(cur)
        if choice == "reduce":
            return self.g_reduce(cur)
        if choice == "attention_head":
            opts = [k for k, f in (("reduce", "reduce"), ("linear_head", "linear")) if self.ok(f)]
            if opts:
                k = self.pick(opts)
                return self.g_reduce(cur) if k == "reduce" else self.g_linear_head(cur)
        return cur


# ----------------------------------------------------------------------------------------------
# the strategy
# ----------------------------------------------------------------------------------------------


def networks(max_px: int = 64, max_ch: int = 8, dims=(1, 2, 3), require=(), exclude=()):
    """Strategy for :class:`GeneratedNet`.

    ``require``: families that must appear (the builder steers towards them; "pixel_shuffle" and
    "unfold" force 2-D). ``exclude``: families that must not appear (best effort while drawing, then rejected).
    """
    require = frozenset(require)
    exclude = frozenset(exclude)
    unknown = (require | exclude) - ALL_FAMILIES
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}")
    if require & exclude:
        raise ValueError(f"families both required and excluded: {sorted(require & exclude)}")
    dims = tuple(dims)
    if require & {"pixel_shuffle", "unfold"}:
        if 2 not in dims:
            raise ValueError("pixel_shuffle and unfold need 2-D networks")
        dims = (2,)
    if not dims or any(d not in (1, 2, 3) for d in dims):
        raise ValueError(f"dims must be a subset of (1, 2, 3), got {dims}")

    @st.composite
    def _nets(draw) -> GeneratedNet:
        d = draw(st.sampled_from(dims))
        px = max_px if d < 3 else min(max_px, 12)
        small = min(16, px) if d < 3 else min(8, px)
        sizes = tuple(draw(st.one_of(st.integers(1, small), st.integers(1, px))) for _ in range(d))
        c = draw(st.integers(1, max_ch))
        seed = draw(st.integers(0, 2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            b = _Builder(draw, c, sizes, max_px, max_ch, require, exclude)
            b.build()
        if b.fam & exclude:
            reject()
        period = [1] * d
        for v in b.vals:
            for a in v.axes:
                period[a.origin] = math.lcm(period[a.origin], a.period)
        model = PlanNet(b.steps, b.mods).float().eval()
        return GeneratedNet(
            model=model,
            input_shape=(1, c, *sizes),
            families=set(b.fam),
            size_dependent=b.size_dep,
            has_unsupported="unsupported" in b.fam,
            global_context=b.gctx,
            global_output=b.gout,
            resizable=b.resizable,
            period=tuple(period),
            seed=seed,
            steps=list(b.steps),
            values=list(b.vals),
            notes=list(dict.fromkeys(b.notes)),
        )

    return _nets()
