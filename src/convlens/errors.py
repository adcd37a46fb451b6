"""The exceptions convlens raises for bad input, and the checks of public arguments.

Deep code raises short messages; the public boundary (``analyze``, the CLI) adds the user's context.
The CLI prints ``str(error)`` on one line and exits with status 2.
"""

from __future__ import annotations

import numbers
from typing import Any, Sequence


class ConvlensError(Exception):
    """One clear line: what is wrong and what to do."""


class ModelError(ConvlensError):
    """The user's own code (the model's forward, its builder, its file) raised or exited; the message
    names the user's exception type and text, and where it happened."""


class NeedsRealWeights(ConvlensError):
    """A model whose weights are on the meta device runs an op that meta tensors cannot run; only a
    copy with real weights can be analyzed (the CLI then builds one)."""


def check_int(value: Any, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int within [low, high]; ``ConvlensError`` naming ``name`` otherwise (bools and
    floats such as 2.5 are refused, not truncated)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConvlensError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low or high is not None and value > high:
        bounds = (f"between {low} and {high}" if low is not None and high is not None
                  else f"at least {low}" if low is not None else f"at most {high}")
        raise ConvlensError(f"{name} must be {bounds}, got {value}")
    return value


def check_input_shape(input_shape: Any) -> tuple[int, ...]:
    """``input_shape`` as a tuple (N, C, *spatial) of positive ints with 1 to 3 spatial sizes."""
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ConvlensError(f"input_shape must be a tuple (N, C, *spatial) with 1 to 3 positive spatial sizes, "
                            f"got {type(input_shape).__name__} {input_shape!r}")
    shape = tuple(input_shape)
    if (not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s > 0 for s in shape)
            or not 3 <= len(shape) <= 5):
        raise ConvlensError(f"input_shape must be (N, C, *spatial) with 1 to 3 positive spatial sizes, got {shape}")
    return tuple(int(s) for s in shape)


def first_line(e: BaseException) -> str:
    """An exception's first line of text (its type name when it has none)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
