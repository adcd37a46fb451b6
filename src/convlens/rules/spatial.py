"""Rules for ops that move windows along spatial axes: convolution, pooling, resampling, padding.

Index maps follow each aten kernel's own arithmetic (the CPU kernels' formulas, in the dtype the model
runs in), so that exact-zero interpolation taps and clamped borders come out as torch computes them.
"""

from __future__ import annotations

from fractions import Fraction
from math import gcd

import functools

import numpy as np
import torch

from ..capture import CIRCULAR_PAD
from ..geometry import IndexFn
from .plans import affine, axes_of, identity, is_tokens, plain, windowed
from .args import CONVOLUTIONS, conv_args, pad_args, pool_args
from .registry import Channels, Plan, RuleContext, Source, extras, live_extras, register_geometry, token_dim

aten = torch.ops.aten


# ---------------------------------------------------------------- convolution

def transposed_taps(stride: int, padding: int, kernel: int, dilation: int) -> IndexFn:
    """Transposed conv: output v receives input j when v = j*stride - padding + t*dilation, t < kernel.

    The taps j form an arithmetic progression with step dilation / gcd(stride, dilation); outputs no
    tap reaches (kernel shorter than stride) get an empty set.
    """
    step = dilation // gcd(stride, dilation)

    def fn(v: np.ndarray, finite: bool):
        a = np.full_like(v, 1)
        b = np.full_like(v, 0)
        found = np.zeros(len(v), dtype=bool)
        for t in range(kernel):
            num = v + padding - t * dilation
            ok = num % stride == 0
            j = num // stride
            a = np.where(ok & (~found | (j < a)), j, a)
            b = np.where(ok & (~found | (j > b)), j, b)
            found |= ok
        return a, b, step
    return fn


@register_geometry(list(CONVOLUTIONS))
def convolution(ctx: RuleContext) -> Plan:
    c = conv_args(ctx.node, ctx.tensors)
    rank = len(ctx.shape(c.input))
    maps = {}
    for i in range(c.k):
        s, p, kk, d = c.stride[i], c.padding[i], c.kernel[i], c.dilation[i]
        maps[rank - c.k + i] = ((transposed_taps(s, p, kk, d), Fraction(1, s)) if c.transposed
                                else (affine(s, -p, kk, d), Fraction(s)))
    plan = windowed(ctx, c.input, maps, fold=[rank - c.k - 1])
    if c.groups == 1:
        plan.channels = Channels.MIX
    channels = rank - c.k - 1
    if c.groups == ctx.shape(c.input)[channels] == ctx.out_shape[channels] and not axes_of(ctx.dims(c.input)[channels]):
        # depthwise: output channel i reads input channel i alone (and sample b sample b)
        plan.same_index[c.input.id] = {d: (d, Fraction(1)) for d in range(channels + 1) if ctx.shape(c.input)[d] > 1}
    return plan


# ---------------------------------------------------------------- pooling

def pool(ctx: RuleContext) -> Plan:
    """Max and average pools: output v reads taps stride*v - padding + dilation*t, t < kernel."""
    p = pool_args(ctx.node)
    rank = len(ctx.shape(p.input))
    maps = {rank - p.k + i: (affine(p.stride[i], -p.padding[i], p.kernel[i], p.dilation[i]), Fraction(p.stride[i]))
            for i in range(p.k)}
    return windowed(ctx, p.input, maps, per_channel=True)


register_geometry([getattr(aten, f"{kind}{k}d{suffix}") for kind in ("max_pool", "avg_pool") for k in (1, 2, 3)
                   for suffix in ("", "_with_indices") if hasattr(aten, f"{kind}{k}d{suffix}")])(pool)


def adaptive_taps(n_in: int, n_out: int) -> IndexFn:
    """Adaptive pooling: output v pools [floor(v*in/out), ceil((v+1)*in/out)) — windows vary with v."""
    def fn(v: np.ndarray, finite: bool):
        start = (v * n_in) // n_out
        end = -((-(v + 1) * n_in) // n_out)
        return start, end - 1, 1
    return fn


def _adaptive(ctx: RuleContext) -> Plan:
    x = ctx.node.arg(0, "self")
    in_shape, out_shape = ctx.shape(x), ctx.out_shape
    k = len(ctx.node.arg(1, "output_size"))
    rank = len(in_shape)
    spatial = range(rank - k, rank)
    fold = [d for d in spatial if out_shape[d] == 1]
    maps = {d: (adaptive_taps(in_shape[d], out_shape[d]), Fraction(in_shape[d], out_shape[d]))
            for d in spatial if d not in fold}
    return windowed(ctx, x, maps, fold=fold, per_channel=True)


register_geometry([getattr(aten, o) for o in ("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool2d",
                                              "adaptive_max_pool3d", "adaptive_max_pool1d", "adaptive_avg_pool1d",
                                              "_adaptive_avg_pool1d")
                   if hasattr(aten, o)])(_adaptive)


@register_geometry(aten.max_unpool2d)
def max_unpool(ctx: RuleContext) -> Plan:
    """Max-unpooling writes input j to the position its indices name, which lies in the window the
    pairing max pool read for j: the taps are those of a transposed conv with the pool's parameters.
    The pool is found by following ``indices`` to the op that made it.

    Only 2-D: generated 3-D networks with max_unpool3d disagreed with the gradient oracle in two
    cases not yet understood, so max_unpool3d has no rule and is reported as unknown."""
    n = ctx.node
    x, idx = n.arg(0, "self"), n.arg(1, "indices")
    pool = ctx.producer(idx)
    out_shape = ctx.out_shape
    k = len(out_shape) - len(ctx.shape(x)) + (3 if "3d" in n.name else 2)
    if pool is None or "max_pool" not in pool.name or ctx.shape(pool.arg(0, "self"))[-k:] != tuple(out_shape[-k:]):
        return Plan(dims=tuple(plain(s) for s in out_shape),
                    unsupported="max_unpool whose indices do not come from a max pool of the output's size")
    p = pool_args(pool)
    rank = len(ctx.shape(x))
    maps = {rank - k + i: (transposed_taps(p.stride[i], p.padding[i], p.kernel[i], p.dilation[i]),
                           Fraction(1, p.stride[i])) for i in range(k)}
    return windowed(ctx, x, maps, extra=[idx], per_channel=True)


# ---------------------------------------------------------------- resampling

def _float(dtype: torch.dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def _torch_float(ftype) -> torch.dtype:
    return torch.float64 if ftype == np.float64 else torch.float32


def _scale(n_in: int, n_out: int, scale, align_corners: bool, ftype) -> np.floating:
    """torch's area_pixel_compute_scale: input positions per output position, in the kernel's dtype."""
    if align_corners:
        return ftype(n_in - 1) / ftype(n_out - 1) if n_out > 1 else ftype(0)
    if scale is not None and scale > 0:
        return ftype(1.0 / scale)
    return ftype(n_in) / ftype(n_out)


def _floorf(x: np.ndarray) -> np.ndarray:
    """C's ``floorf``, which torch's resampling kernels use whatever the dtype: the value is rounded to
    float32 first, so a source index a hair below an integer (46.99999999999999) floors to it (47)."""
    return np.floor(np.asarray(x).astype(np.float32)).astype(np.int64)


def nearest_taps(n_in: int, n_out: int, scale, exact: bool, ftype) -> IndexFn:
    """torch's nearest_idx / nearest_exact_idx: the scale is a float32 whatever the dtype."""
    s = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(n_in) / np.float32(n_out)

    def fn(v: np.ndarray, finite: bool):
        if exact:  # floorf((dst + 0.5) * scale): a double product, then floorf
            src = _floorf((v.astype(np.float64) + 0.5) * np.float64(s))
        elif n_out == n_in:
            src = v.copy()
        elif n_out == 2 * n_in:
            src = v >> 1
        else:  # floorf(dst * scale) in float32
            src = _floorf(v.astype(np.float32) * s)
        if finite:
            src = np.minimum(src, n_in - 1)
        return src, src, 1
    return fn


@functools.cache
def _fuses_source_index(kind: str, dtype: torch.dtype) -> bool:
    """Whether this torch build computes the source index ``scale * (dst + 0.5) - 0.5`` of its
    ``kind`` ("linear" or "cubic") resampling kernels as one fused multiply-add (the exact value
    rounded once) rather than a product and a difference, each rounded.

    It is a compiler's choice, not an API: on x86 torch's linear kernels are built per CPU capability
    (AVX2 and up contract to FMA) and its bicubic kernels for the baseline (no FMA). So it is asked
    of torch once: scale 5 from 3 positions, output 2, where the two roundings give 0.2 * 2.5 - 0.5
    = 0 (one tap) and the fused one 2.8e-17 (float64) or 7.5e-9 (float32): two taps."""
    mode = "bilinear" if kind == "linear" else "bicubic"
    with torch.inference_mode(False), torch.enable_grad():  # (whatever the caller's context: analyze under no_grad)
        x = torch.zeros(1, 1, 1, 3, dtype=dtype, requires_grad=True)
        y = torch.nn.functional.interpolate(x, scale_factor=(1.0, 5.0), mode=mode, align_corners=False)
        (grad,) = torch.autograd.grad(y[0, 0, 0, 2], x)
    return bool(grad[0, 0, 0, 1] != 0)


def _source_index(s, v: np.ndarray, align_corners: bool, ftype, fused: bool) -> np.ndarray:
    """area_pixel_compute_source_index (before its clamp at 0 for the linear modes), rounded as the
    kernel rounds it (``fused``: see _fuses_source_index). A double rounding can land exactly on an
    integer where the fused one lands a hair above it, and so drop a tap whose weight torch keeps
    (1e-16, but a real dependency of the gradient)."""
    if align_corners:
        return s * v.astype(ftype)
    if not fused:
        return s * (v.astype(ftype) + ftype(0.5)) - ftype(0.5)
    if ftype == np.float32:  # a float32 times (dst + 0.5) is exact in float64, and so is the
        # difference wherever it is >= -0.25 (below, the clamps and floors make rounding moot)
        exact = np.float64(s) * (v.astype(np.float64) + 0.5) - 0.5
        return exact.astype(np.float32)
    num, den = float(s).as_integer_ratio()  # s = num / den, den a power of two
    # (num * (2 dst + 1) - den) / (2 den): Python's int division rounds the exact quotient once
    return np.array([(num * (2 * int(d) + 1) - den) / (2 * den) for d in v.ravel()],
                    dtype=np.float64).reshape(v.shape)


def resample_ratio(n_in: int, n_out: int, scale, align_corners: bool) -> Fraction:
    """Input positions per output position in exact arithmetic: what the kernel's float scale
    stands for (``1/scale_factor`` when one is given, else the size ratio)."""
    if align_corners:
        return Fraction(n_in - 1, n_out - 1) if n_out > 1 else Fraction(0)
    return 1 / Fraction(scale).limit_denominator(10**6) if scale else Fraction(n_in, n_out)


def _exact_source(ratio: Fraction, v: np.ndarray, align_corners: bool) -> tuple[np.ndarray, np.ndarray]:
    """The unbounded model's source index, ``ratio * (v + 1/2) - 1/2`` (or ``ratio * v``) in exact
    arithmetic: its floor, and whether it is an integer (one tap)."""
    p, q = ratio.numerator, ratio.denominator
    v = v.astype(np.int64)
    num, den = (p * v, q) if align_corners else (p * (2 * v + 1) - q, 2 * q)
    return num // den, num % den == 0


def linear_taps(n_in: int, n_out: int, scale, align_corners: bool, ftype, ratio: Fraction) -> IndexFn:
    """(bi/tri)linear, as compute_source_index_and_lambda: a copy when the size is kept, else taps
    floorf(src) and the next one, unless its weight is exactly zero.

    Real windows (``finite``) follow torch's float rounding of src; the unbounded model takes src in
    exact arithmetic (``ratio``), so that its pattern is periodic (rounding is not: a tap of weight
    1e-16 comes and goes with the magnitude of v)."""
    s = _scale(n_in, n_out, scale, align_corners, ftype)
    fused = _fuses_source_index("linear", _torch_float(ftype))

    def fn(v: np.ndarray, finite: bool):
        if n_out == n_in:
            return v.copy(), v.copy(), 1
        if not finite:
            i0, whole = _exact_source(ratio, v, align_corners)
            return i0, i0 + ~whole, 1
        src = np.maximum(_source_index(s, v, align_corners, ftype, fused), ftype(0))
        i0 = np.minimum(_floorf(src), n_in - 1)
        lam = src - i0.astype(ftype)
        i1 = np.where(i0 < n_in - 1, i0 + (lam > 0), i0)
        return i0, i1, 1
    return fn


def _cubic_weights(t: np.ndarray, ftype) -> tuple[np.ndarray, ...]:
    """get_cubic_upsample_coefficients: the weights of taps floor-1 .. floor+2 for fraction ``t``,
    evaluated in the kernel's dtype and order (A = -0.75), so the weights that round to exactly 0
    (a far tap at t = 2e-7 in float32) are the ones torch drops."""
    a = ftype(-0.75)

    def near(x):  # cubic_convolution1, |x| <= 1
        return ((a + ftype(2)) * x - (a + ftype(3))) * x * x + ftype(1)

    def far(x):  # cubic_convolution2, 1 <= |x| <= 2
        return ((a * x - ftype(5) * a) * x + ftype(8) * a) * x - ftype(4) * a

    t = t.astype(ftype)
    return far(t + ftype(1)), near(t), near(ftype(1) - t), far(ftype(1) - t + ftype(1))


def cubic_taps(n_in: int, n_out: int, scale, align_corners: bool, ftype, ratio: Fraction,
               copy: bool = False) -> IndexFn:
    """Bicubic, as upsample_bicubic2d_backward: a copy when no axis changes size (``copy``), else
    the taps floorf(src)-1 .. floorf(src)+2 (the fraction as guard_index_and_lambda's, clamped to
    [0, 1]) whose cubic weight is not exactly zero, clamped to the input. The unbounded model, as
    linear_taps's, takes src in exact arithmetic: four taps, or one where src is an integer."""
    s = _scale(n_in, n_out, scale, align_corners, ftype)
    fused = _fuses_source_index("cubic", _torch_float(ftype))

    def fn(v: np.ndarray, finite: bool):
        if copy:
            return v.copy(), v.copy(), 1
        if not finite:
            i0, whole = _exact_source(ratio, v, align_corners)
            return np.where(whole, i0, i0 - 1), np.where(whole, i0, i0 + 2), 1
        src = _source_index(s, v, align_corners, ftype, fused)
        i0 = np.minimum(_floorf(src), n_in - 1)
        t = np.clip(src - i0.astype(ftype), 0, 1)
        live = np.stack([w != 0 for w in _cubic_weights(t, ftype)])  # (4, n): taps i0-1 .. i0+2
        first, last = np.argmax(live, axis=0), 3 - np.argmax(live[::-1], axis=0)
        return np.clip(i0 - 1 + first, 0, n_in - 1), np.clip(i0 - 1 + last, 0, n_in - 1), 1
    return fn


_UPSAMPLE = {  # aten name -> (spatial dims, tap builder, has align_corners)
    "upsample_nearest1d": (1, "nearest", False), "upsample_nearest2d": (2, "nearest", False),
    "upsample_nearest3d": (3, "nearest", False), "_upsample_nearest_exact1d": (1, "exact", False),
    "_upsample_nearest_exact2d": (2, "exact", False), "_upsample_nearest_exact3d": (3, "exact", False),
    "upsample_linear1d": (1, "linear", True), "upsample_bilinear2d": (2, "linear", True),
    "upsample_trilinear3d": (3, "linear", True), "upsample_bicubic2d": (2, "cubic", True),
}


def _upsample_rule(k: int, kind: str, has_align: bool):
    def rule(ctx: RuleContext) -> Plan:
        n = ctx.node
        x = n.arg(0, "input")
        align = bool(n.arg(2, "align_corners")) if has_align else False
        first_scale = 3 if has_align else 2
        if n.op._overloadname == "vec":
            factors = n.arg(first_scale, "scale_factors")
            scales = list(factors) if factors else [None] * k
        else:
            scales = [n.args[first_scale + i] if first_scale + i < len(n.args) else None for i in range(k)]
        in_shape, out_shape = ctx.shape(x), ctx.out_shape
        ftype = _float(ctx.dtype(x))
        rank = len(in_shape)
        kept = tuple(in_shape[rank - k:]) == tuple(out_shape[rank - k:])
        maps = {}
        for i in range(k):
            d = rank - k + i
            n_in, n_out = in_shape[d], out_shape[d]
            exact = resample_ratio(n_in, n_out, scales[i], align)
            if kind in ("nearest", "exact"):
                fn = nearest_taps(n_in, n_out, scales[i], kind == "exact", ftype)
            elif kind == "linear":
                fn = linear_taps(n_in, n_out, scales[i], align, ftype, exact)
            else:
                fn = cubic_taps(n_in, n_out, scales[i], align, ftype, exact, copy=kept)
            if kind == "nearest" and n_out in (n_in, 2 * n_in):
                exact = Fraction(n_in, n_out)  # torch copies or halves the index here, whatever the scale
            if (kind == "linear" and n_out == n_in) or (kind == "cubic" and kept):
                exact = Fraction(1)  # a copy, whatever the scale
            maps[d] = (fn, exact)
        return windowed(ctx, x, maps, per_channel=True)
    return rule


for _name, (_k, _kind, _align) in _UPSAMPLE.items():
    if hasattr(aten, _name):
        register_geometry(getattr(aten, _name))(_upsample_rule(_k, _kind, _align))


@register_geometry(aten.pixel_shuffle)
def pixel_shuffle(ctx: RuleContext) -> Plan:
    x, r = ctx.node.arg(0, "self"), ctx.node.arg(1, "upscale_factor")
    rank = len(ctx.shape(x))
    if ctx.channels_split(x):
        # output (r i + a, r j + b) reads channel group (a, b) only; channels are not told apart
        return Plan(dims=tuple(plain(s) for s in ctx.out_shape),
                    unsupported="pixel_shuffle of channels that see different windows (a cat along channels "
                                "or a pixel_unshuffle with no channel-mixing layer since)")

    def fn(v: np.ndarray, finite: bool):
        return v // r, v // r, 1
    return windowed(ctx, x, {rank - 2: (fn, Fraction(1, r)), rank - 1: (fn, Fraction(1, r))})


@register_geometry(aten.pixel_unshuffle)
def pixel_unshuffle(ctx: RuleContext) -> Plan:
    x, r = ctx.node.arg(0, "self"), ctx.node.arg(1, "downscale_factor")
    rank = len(ctx.shape(x))
    step = (affine(r, 0, r), Fraction(r))
    plan = windowed(ctx, x, {rank - 2: step, rank - 1: step})
    plan.channels = Channels.SPLIT  # each channel holds one phase of the r x r block
    return plan


@register_geometry(aten.im2col)
def im2col(ctx: RuleContext) -> Plan:
    """``F.unfold``: (N, C, H, W) -> (N, C * kh * kw, L), L the blocks row-major over their grid. Along
    each axis a block reads a conv's taps; each kernel offset has channels of its own (split, as
    after ``pixel_unshuffle``: a later pick or col2im of them is named untracked). L holds both
    axes as a flattened grid."""
    n = ctx.node
    x = n.arg(0, "self")
    kernel, dilation, padding, stride = (list(n.arg(i, name)) for i, name in
                                         enumerate(("kernel_size", "dilation", "padding", "stride"), 1))
    rank = len(ctx.shape(x))
    grid = [(ctx.shape(x)[rank - 2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
            for i in range(2)]
    maps = {rank - 2 + i: (affine(stride[i], -padding[i], kernel[i], dilation[i]), Fraction(stride[i]))
            for i in range(2)}
    shape = list(ctx.out_shape[:-1]) + grid
    plan = windowed(ctx, x, maps, out_shape=shape)
    rows, cols = plan.dims[-2:]
    if len(rows) + len(cols) != 2 or rows[0][0] is None or cols[0][0] is None or extras(rows) != (0, 0) \
            or extras(cols) != (0, 0):
        return Plan(dims=tuple(plain(size) for size in ctx.out_shape),
                    unsupported="unfold of dims that are not one spatial axis each")
    plan.dims = plan.dims[:-2] + (tuple(rows) + tuple(cols),)
    plan.channels = Channels.SPLIT
    return plan


@register_geometry(aten.col2im)
def col2im(ctx: RuleContext) -> Plan:
    """``F.fold``: (N, C * kh * kw, L) -> (N, C, H, W), every block's taps summed into the positions
    they cover: along each axis a transposed conv's taps from L's grid of blocks. Exact when the
    kernel offsets' channels were mixed since the unfold (VOLO's outlook attention); before that a
    channel holds one offset only, which a union over channels would overstate: untracked."""
    n = ctx.node
    x = n.arg(0, "self")
    output_size, kernel, dilation, padding, stride = (list(n.arg(i, name)) for i, name in enumerate(
        ("output_size", "kernel_size", "dilation", "padding", "stride"), 1))
    rank = len(ctx.shape(x))
    blocks = ctx.dims(x)[-1]
    grid = [(output_size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(2)]
    if ctx.channels_split(x):
        return Plan(dims=tuple(plain(size) for size in ctx.out_shape),
                    unsupported="fold of channels that see different windows (an unfold's kernel offsets not mixed "
                                "since)")
    if len(blocks) != 2 or extras(blocks) != (0, 0) or [f for _, f in blocks] != grid \
            or any(a is None for a, _ in blocks):
        return Plan(dims=tuple(plain(size) for size in ctx.out_shape),
                    unsupported="fold of a dim that is not the unfold's grid of blocks")
    plan = windowed(ctx, x, fold=[rank - 2], drop=[rank - 1], out_shape=list(ctx.out_shape[:-2]))
    plan.dims = plan.dims + tuple(((a, output_size[i]),) for i, (a, _) in enumerate(blocks))
    for i, (a, _) in enumerate(blocks):
        plan.untracked.pop(a, None)
        plan.local[a] = [Source(x.id, transposed_taps(stride[i], padding[i], kernel[i], dilation[i]),
                                Fraction(1, stride[i]))]
    return plan


# ---------------------------------------------------------------- padding

def pad_taps(left: int, n_in: int, mode: str) -> IndexFn:
    """Output v shows input v - left; the finite model maps padded positions back as torch does
    (constant: nothing real; reflect: mirror without the edge; replicate: clamp; circular: wrap)."""
    def fn(v: np.ndarray, finite: bool):
        j = v - left
        if finite and mode == "reflect":
            j = np.abs(j)
            j = np.where(j > n_in - 1, 2 * (n_in - 1) - j, j)
        elif finite and mode == "replicate":
            j = np.clip(j, 0, n_in - 1)
        elif finite and mode == "circular":
            j = j % n_in
        return j, j, 1
    return fn


def _pad(ctx: RuleContext, x, pad: list[int], mode: str) -> Plan:
    in_shape = ctx.shape(x)
    rank = len(in_shape)
    maps, tokens = {}, {}
    for i in range(len(pad) // 2):
        d = rank - 1 - i
        left, right = pad[2 * i], pad[2 * i + 1]
        if is_tokens(ctx.dims(x)[d]) and mode == "constant" and left >= 0 and right >= 0 \
                and not live_extras(ctx.dims(x)[d]):
            tokens[d] = (left, right)  # zero tokens before and after a token grid: constant extra tokens
        elif left or right:
            maps[d] = (pad_taps(left, in_shape[d], mode), Fraction(1))
    plan = windowed(ctx, x, maps, per_channel=True)
    for d, (left, right) in tokens.items():
        dim = ctx.dims(x)[d]
        before, after = extras(dim)
        plan.dims = tuple(token_dim(tuple(dim), before + left, after + right) if k == d else dd
                          for k, dd in enumerate(plan.dims))
        for a in axes_of(dim):
            plan.local[a] = [Source(x.id, identity)]
    return plan


def padding(ctx: RuleContext) -> Plan:
    """Every padding op (:func:`~convlens.rules.args.pad_args`)."""
    p = pad_args(ctx.node)
    return _pad(ctx, p.input, list(p.pad), "constant" if p.mode == "zeros" else p.mode)


register_geometry([aten.constant_pad_nd, CIRCULAR_PAD] + [getattr(aten, f"{kind}_pad{k}d") for kind in ("reflection", "replication")
                                                          for k in (1, 2, 3)])(padding)


