"""Convolution arithmetic: output sizes and the inverse problems, one spatial axis at a time.

Conventions:

- Every function describes ONE spatial axis; apply it per axis for 2-D/3-D layers.
- Sizes are in pixels (positions along that axis); ``i`` is the input size, ``o`` the output size.
- Padding is per side: ``padding`` is the left (leading) side; where ``padding_right`` exists it
  defaults to ``padding`` (torch's symmetric padding).
- A kernel of size ``k`` with dilation ``d`` spans ``k_eff = d*(k-1)+1`` pixels.
- Floor mode (convolutions, default pooling) computes ``(i + pl + pr - k_eff) // s + 1``.

Invalid arguments raise :class:`~convlens.errors.ConvlensError` with a one-line message. Pure stdlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Callable

from .errors import ConvlensError

__all__ = [
    "Relationship",
    "conv_output_size",
    "effective_kernel",
    "output_padding_for",
    "padding_for_output",
    "pool_output_size",
    "relationships",
    "same_padding",
    "transposed_conv_output_size",
    "unread_border",
]


def _int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int, or raise if it is not an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConvlensError(f"{name} must be an integer >= {minimum}, got {value!r}; pass a valid {name}.")
    return int(value)


def effective_kernel(k: int, dilation: int = 1) -> int:
    """Pixels spanned by a kernel of size ``k`` with ``dilation``: ``dilation*(k-1)+1``."""
    return _int("dilation", dilation, 1) * (_int("kernel size", k, 1) - 1) + 1


def conv_output_size(
    i: int,
    k: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    padding_right: int | None = None,
    ceil_mode: bool = False,
) -> int:
    """Output size of a convolution or pooling window sliding over ``i`` pixels.

    ``padding`` is the left padding and ``padding_right`` (default: ``padding``) the right one.
    Floor mode: ``(i + pl + pr - k_eff) // stride + 1``. ``ceil_mode`` follows torch pooling: round
    up, then drop the last window if it would start in the right padding
    (``(o-1)*stride >= i + pl``); a last window may then overhang the padded input.
    """
    i = _int("input size", i, 1)
    k_eff = effective_kernel(k, dilation)
    s = _int("stride", stride, 1)
    pl = _int("padding", padding, 0)
    pr = pl if padding_right is None else _int("padding_right", padding_right, 0)
    span = i + pl + pr - k_eff
    o = -(-span // s) + 1 if ceil_mode else span // s + 1
    if ceil_mode and (o - 1) * s >= i + pl:
        o -= 1
    if o < 1:
        raise ConvlensError(
            f"the kernel spans {k_eff} pixels but the padded input has only {i + pl + pr}; "
            "use a larger input, more padding or a smaller kernel/dilation."
        )
    return o


def pool_output_size(
    i: int,
    k: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    padding_right: int | None = None,
    ceil_mode: bool = False,
) -> int:
    """Output size of a pooling window; the same arithmetic as :func:`conv_output_size`.

    Note torch pooling layers also require ``padding <= k_eff // 2``; that layer rule is not
    arithmetic and is not enforced here. Note ``stride`` defaults to 1 here, whereas torch pooling
    defaults it to the kernel size.
    """
    return conv_output_size(
        i, k, stride, padding, dilation, padding_right=padding_right, ceil_mode=ceil_mode
    )


def transposed_conv_output_size(
    i: int, k: int, stride: int = 1, padding: int = 0, output_padding: int = 0, dilation: int = 1
) -> int:
    """Output size of a transposed convolution (torch ``ConvTransposeNd``).

    ``(i-1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``; as in torch,
    ``output_padding`` must be smaller than ``stride`` or than ``dilation``.
    """
    i = _int("input size", i, 1)
    k_eff = effective_kernel(k, dilation)
    s = _int("stride", stride, 1)
    p = _int("padding", padding, 0)
    op = _int("output_padding", output_padding, 0)
    if op >= max(s, dilation):
        raise ConvlensError(
            f"output_padding {op} must be smaller than stride ({s}) or dilation ({dilation}); "
            "lower output_padding."
        )
    o = (i - 1) * s - 2 * p + k_eff + op
    if o < 1:
        raise ConvlensError(f"the transposed convolution output size would be {o}; use less padding.")
    return o


def same_padding(k: int, stride: int = 1, dilation: int = 1, i: int | None = None) -> tuple[int, int]:
    """(left, right) padding giving output size ``ceil(i / stride)`` ("same" padding).

    The total is ``max((ceil(i/s) - 1)*s + k_eff - i, 0)`` (TensorFlow's 'SAME'), split as
    ``left = total // 2`` and the odd pixel on the right. For stride 1 the total is ``k_eff - 1``
    whatever ``i`` is, so ``i`` may be omitted; this matches torch's ``padding='same'``. For
    stride > 1 the padding depends on ``i``, which is then required.
    """
    k_eff = effective_kernel(k, dilation)
    s = _int("stride", stride, 1)
    if i is None:
        if s != 1:
            raise ConvlensError(f"same padding with stride {s} depends on the input size; pass i.")
        total = k_eff - 1
    else:
        i = _int("input size", i, 1)
        total = max((-(-i // s) - 1) * s + k_eff - i, 0)
    return total // 2, total - total // 2


def padding_for_output(i: int, o: int, k: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """Smallest total padding giving a floor-mode output of exactly ``o``, as (left, right).

    The total is split ``left = total // 2``, the rest on the right.
    """
    i = _int("input size", i, 1)
    o = _int("output size", o, 1)
    k_eff = effective_kernel(k, dilation)
    s = _int("stride", stride, 1)
    total = max(0, (o - 1) * s + k_eff - i)
    if (i + total - k_eff) // s + 1 != o:
        raise ConvlensError(
            f"no padding brings {i} pixels down to {o}: even unpadded the output is "
            f"{(i - k_eff) // s + 1}; use a larger stride or kernel, or crop the input."
        )
    return total // 2, total - total // 2


def output_padding_for(
    i: int, o: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """The ``output_padding`` that makes a transposed convolution of ``i`` pixels produce ``o``.

    Valid values are ``0 <= output_padding < max(stride, dilation)`` (torch's rule).
    """
    i = _int("input size", i, 1)
    o = _int("output size", o, 1)
    k_eff = effective_kernel(k, dilation)
    s = _int("stride", stride, 1)
    p = _int("padding", padding, 0)
    base = (i - 1) * s - 2 * p + k_eff
    limit = max(s, dilation)
    if not 0 <= o - base < limit:
        raise ConvlensError(
            f"this transposed convolution can only produce sizes {max(base, 1)} to {base + limit - 1}, "
            f"not {o}; change stride, padding or kernel size."
        )
    return o - base


def unread_border(
    i: int,
    k: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    *,
    padding_right: int | None = None,
) -> int:
    """Real pixels at the right end of the input that no output reads (floor mode).

    Usually ``max(0, (i + pl + pr - k_eff) % stride - pr)``: the pixels a stride skips after the
    last window. It is counted exactly, back from the last real pixel to the last one any kernel
    tap reads, so it also covers a last window sitting wholly in the right padding past skipped
    pixels (stride > k_eff) or dilation holes; it is ``i`` when no tap reads a real pixel.
    """
    o = conv_output_size(i, k, stride, padding, dilation, padding_right=padding_right)
    last_real = padding + i - 1  # padded coordinates: real pixels are padding .. padding+i-1
    last_read = -1
    for tap in range(0, dilation * (k - 1) + 1, dilation):
        if tap <= last_real:
            last_read = max(last_read, min(o - 1, (last_real - tap) // stride) * stride + tap)
    return min(i, last_real - last_read)


@dataclass(frozen=True)
class Relationship:
    """One numbered relationship of Dumoulin & Visin (2016).

    ``check(**params)`` evaluates the paper's specialised formula. Parameters fixed by the
    condition are not passed (e.g. Relationship 1 takes only ``i`` and ``k``). For the transposed
    relationships (8-14), ``k``, ``s``, ``p`` describe the direct convolution (they equal the
    kernel size, stride and padding of torch's ``ConvTransposeNd``), ``i_prime`` is the transposed
    convolution's input size and ``a`` (Relationship 14) its ``output_padding``.
    """

    number: int
    kind: str  # 'conv' | 'pool' | 'transposed'
    title: str
    condition: str
    formula: str
    check: Callable[..., int]


def _half(size: int, k: int) -> int:
    """Relationships 3 and 10: half padding keeps the size, for odd kernels only."""
    if k % 2 == 0:
        raise ConvlensError(f"half padding needs an odd kernel size, got {k}; use an odd k.")
    return size


def _rel14(i_prime: int, k: int, s: int, p: int, a: int) -> int:
    """Relationship 14: the general transposed convolution, ``a`` being its output_padding."""
    if not 0 <= a < s:
        raise ConvlensError(f"a = (i + 2p - k) mod s must lie in [0, {s}), got {a}; pass a valid a.")
    return s * (i_prime - 1) + a + k - 2 * p


_RELATIONSHIPS = (
    Relationship(1, "conv", "No zero padding, unit strides", "s = 1, p = 0",
                 "o = (i - k) + 1", lambda i, k: i - k + 1),
    Relationship(2, "conv", "Zero padding, unit strides", "s = 1",
                 "o = (i - k) + 2p + 1", lambda i, k, p: i - k + 2 * p + 1),
    Relationship(3, "conv", "Half (same) padding", "s = 1, k odd, p = floor(k/2)",
                 "o = i", lambda i, k: _half(i, k)),
    Relationship(4, "conv", "Full padding", "s = 1, p = k - 1",
                 "o = i + (k - 1)", lambda i, k: i + k - 1),
    Relationship(5, "conv", "No zero padding, non-unit strides", "p = 0",
                 "o = floor((i - k) / s) + 1", lambda i, k, s: (i - k) // s + 1),
    Relationship(6, "conv", "Zero padding, non-unit strides", "any i, k, s, p",
                 "o = floor((i + 2p - k) / s) + 1", lambda i, k, s, p: (i + 2 * p - k) // s + 1),
    Relationship(7, "pool", "Pooling", "no padding",
                 "o = floor((i - k) / s) + 1", lambda i, k, s: (i - k) // s + 1),
    Relationship(8, "transposed", "Transposed: no zero padding, unit strides",
                 "transpose of a convolution with s = 1, p = 0",
                 "o' = i' + (k - 1)", lambda i_prime, k: i_prime + k - 1),
    Relationship(9, "transposed", "Transposed: zero padding, unit strides",
                 "transpose of a convolution with s = 1",
                 "o' = i' + (k - 1) - 2p", lambda i_prime, k, p: i_prime + k - 1 - 2 * p),
    Relationship(10, "transposed", "Transposed: half (same) padding",
                 "transpose of a convolution with s = 1, k odd, p = floor(k/2)",
                 "o' = i'", lambda i_prime, k: _half(i_prime, k)),
    Relationship(11, "transposed", "Transposed: full padding",
                 "transpose of a convolution with s = 1, p = k - 1",
                 "o' = i' - (k - 1)", lambda i_prime, k: i_prime - k + 1),
    Relationship(12, "transposed", "Transposed: no zero padding, non-unit strides",
                 "transpose of a convolution with p = 0, s > 1, (i - k) a multiple of s",
                 "o' = s(i' - 1) + k", lambda i_prime, k, s: s * (i_prime - 1) + k),
    Relationship(13, "transposed", "Transposed: zero padding, non-unit strides",
                 "transpose of a convolution with s > 1, (i + 2p - k) a multiple of s",
                 "o' = s(i' - 1) + k - 2p", lambda i_prime, k, s, p: s * (i_prime - 1) + k - 2 * p),
    Relationship(14, "transposed", "Transposed: zero padding, non-unit strides, general",
                 "transpose of any convolution, a = (i + 2p - k) mod s",
                 "o' = s(i' - 1) + a + k - 2p", _rel14),
    Relationship(15, "conv", "Dilated convolution", "any i, k, s, p, d",
                 "o = floor((i + 2p - k - (k - 1)(d - 1)) / s) + 1",
                 lambda i, k, s, p, d: (i + 2 * p - k - (k - 1) * (d - 1)) // s + 1),
)


def relationships() -> list[Relationship]:
    """The 15 relationships of Dumoulin & Visin, "A guide to convolution arithmetic for deep
    learning" (arXiv:1603.07285, 2016), numbered as in the paper.

    1-6 convolutions (unit/non-unit strides, no/zero/half/full padding), 7 pooling, 8-14 the
    transposed convolutions of 1-6 (14 is the general case with ``a = (i + 2p - k) mod s``),
    15 dilated convolutions.
    """
    return list(_RELATIONSHIPS)
