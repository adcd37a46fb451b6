"""Kronecker-factored convolution and the single kernel of a linear stack of convolutions.

A cascade of dilated convolutions is a large convolution whose kernel is built from the small ones
(the seed text "Multi-Scale Context Aggregation by Dilated Convolutions", section "Kronecker
products"): a single-channel stack of 3x3 convolutions with dilations 1, 3, 9 equals one 27x27
convolution with kernel ``kron(k9, kron(k3, k1))``; with dilations 1, 2, 4 the taps overlap and the
15x15 kernel is not a Kronecker product. ``KroneckerConv2d`` (Zhou et al., "Exploiting Local Structures
with the Kronecker Layer in Convolutional Networks", 2015) parametrises a kernel that way directly;
``compose`` computes the kernel of any linear stack.

Tap convention (torch's): a convolution computes ``y[t] = sum_j w[j] * x[t * s + j * d - p]``, so the
Kronecker product's first factor is the most significant (the coarsest, most dilated) one.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class KroneckerConv2d(nn.Module):
    """A 2-D convolution whose kernel, for every (output map, input map) pair, is a sum of ``rank``
    Kronecker products of small kernels: ``factors=(3, 3)`` gives 9x9 kernels from 2 x 9 numbers.

    ``factors`` lists the factor sizes, most significant first (an int or an (h, w) pair each); the
    kernel size is their product per axis. ``stride``, ``padding``, ``dilation`` and ``groups`` are those
    of ``nn.Conv2d`` applied to the full kernel. ``weight`` (a property) is the full kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, factors: Sequence[int | Sequence[int]] = (3, 3), *,
                 rank: int = 1, stride: int | Sequence[int] = 1, padding: int | Sequence[int] | str = 0,
                 dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        if len(factors) < 2 or rank < 1:
            raise ValueError(f"KroneckerConv2d needs at least two factors and rank >= 1; got {factors}, rank {rank}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels ({in_channels}, {out_channels}) must be divisible by groups ({groups})")
        sizes = [_pair(f) for f in factors]
        self.factor_sizes = tuple(sizes)
        self.kernel_size = (math.prod(h for h, _ in sizes), math.prod(w for _, w in sizes))
        self.in_channels, self.out_channels, self.rank = in_channels, out_channels, rank
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.factors = nn.ParameterList(
            nn.Parameter(torch.empty(rank, out_channels, in_channels // groups, h, w)) for h, w in sizes)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Factors ~ N(0, std^2) with std chosen so every entry of the full kernel has the variance of
        ``nn.Conv2d``'s default init, 1 / (3 fan_in): a product of n factors has variance std^(2n)."""
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        target = 1.0 / (3 * fan_in * self.rank)  # variance of one product term
        std = target ** (1.0 / (2 * len(self.factors)))
        for f in self.factors:
            f.normal_(0.0, std)
        if self.bias is not None:
            self.bias.uniform_(-fan_in ** -0.5, fan_in ** -0.5)

    @property
    def weight(self) -> torch.Tensor:
        """The full kernel, (out, in / groups, kh, kw): ``sum_r kron(f1[r], f2[r], ...)`` per map pair."""
        kernel = self.factors[0]
        for f in self.factors[1:]:
            r, o, i, h1, w1 = kernel.shape
            h2, w2 = f.shape[-2:]
            kernel = torch.einsum("roiac,roibd->roiabcd", kernel, f).reshape(r, o, i, h1 * h2, w1 * w2)
        return kernel.sum(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, factors={self.factor_sizes}, rank={self.rank}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, groups={self.groups}")


def _layers(stack: nn.Module | Iterable[nn.Module]) -> list[nn.Module]:
    items = [stack] if isinstance(stack, nn.Module) and not isinstance(stack, nn.Sequential) else list(stack)
    out: list[nn.Module] = []
    for m in items:
        if isinstance(m, nn.Sequential):
            out.extend(_layers(m))
        elif not isinstance(m, nn.Identity):
            out.append(m)
    return out


def _dense_weight(conv: nn.modules.conv._ConvNd) -> torch.Tensor:
    """(out, in, *k): a grouped kernel written out with zeros between groups."""
    w, g = conv.weight.detach(), conv.groups
    if g == 1:
        return w
    o, i = w.shape[0] // g, w.shape[1]
    dense = w.new_zeros(w.shape[0], i * g, *w.shape[2:])
    for k in range(g):
        dense[k * o:(k + 1) * o, k * i:(k + 1) * i] = w[k * o:(k + 1) * o]
    return dense


def compose(stack: nn.Module | Iterable[nn.Module]) -> nn.Module:
    """The one convolution equal to a linear stack of convolutions (``nn.Conv1d/2d/3d``, any kernel,
    stride, dilation, groups and integer zero padding; ``nn.Identity`` is skipped; anything else is
    refused, because a nonlinearity has no single kernel).

    The result has dilation 1, groups 1, stride ``prod(s)``, kernel side ``1 + sum_l d_l (k_l - 1)
    prod_{i<l} s_i`` and padding ``sum_l p_l prod_{i<l} s_i``. It equals the stack exactly when no layer
    pads; when inner layers pad, the stack's padding zeros are not the input's, so the two agree on the
    units whose windows reach no padding and may differ at the borders.
    """
    layers = _layers(stack)
    if not layers:
        raise ValueError("compose needs at least one convolution")
    kind = type(layers[0])
    for m in layers:
        if type(m) not in _CONV.values():
            raise ValueError(f"compose takes only nn.Conv1d/2d/3d (and nn.Identity); got {type(m).__name__}: "
                             "a nonlinear or non-convolutional layer has no single kernel")
        if type(m) is not kind:
            raise ValueError(f"compose needs convolutions of one dimension; got {kind.__name__} and {type(m).__name__}")
        if isinstance(m.padding, str) or m.padding_mode != "zeros":
            raise ValueError(f"compose needs integer zero padding; {m} has padding={m.padding!r}, "
                             f"padding_mode={m.padding_mode!r}")
    first = layers[0]
    k = first.weight.dim() - 2
    weight = _dense_weight(first)
    weight = _dilate(weight, first.dilation)
    bias = first.bias.detach() if first.bias is not None else None
    stride, padding = list(first.stride), list(first.padding)
    for m in layers[1:]:
        if m.in_channels != weight.shape[0]:
            raise ValueError(f"{m} takes {m.in_channels} maps but the stack before it gives {weight.shape[0]}")
        w2 = _dense_weight(m)
        step = [d * s for d, s in zip(m.dilation, stride)]
        # W[o, i, t] = sum_m sum_j w2[o, m, j] W[m, i, t - j * step]: a transposed convolution of the
        # kernel so far (batch = input maps) by w2
        weight = _CONV_T[k](weight.transpose(0, 1), w2.transpose(0, 1), dilation=step).transpose(0, 1)
        if bias is not None:  # the bias of the layers so far, seen through every tap of this one
            bias = torch.einsum("om...,m->o", w2, bias)
            if m.bias is not None:
                bias = bias + m.bias.detach()
        elif m.bias is not None:
            bias = m.bias.detach().clone()
        padding = [p + q * s for p, q, s in zip(padding, m.padding, stride)]
        stride = [s * t for s, t in zip(stride, m.stride)]
    out = _CONV[k](weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=tuple(stride),
                   padding=tuple(padding), bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


def _dilate(weight: torch.Tensor, dilation: Sequence[int]) -> torch.Tensor:
    """The kernel with ``d - 1`` zeros between taps along each axis."""
    if all(d == 1 for d in dilation):
        return weight
    sizes = [d * (n - 1) + 1 for d, n in zip(dilation, weight.shape[2:])]
    out = weight.new_zeros(*weight.shape[:2], *sizes)
    out[(slice(None), slice(None), *(slice(None, None, d) for d in dilation))] = weight
    return out
