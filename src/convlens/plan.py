"""Dilation schedules without holes: the fewest stride-1 k x k layers that reach a target receptive
field, the coverage of each schedule measured exactly.

Why the search is small and complete. One unit's coverage through stride-1 layers of kernel ``k`` and
dilations ``d_1 .. d_n`` is the Minkowski sum of the sets ``{0, d_i, ..., (k-1) d_i}`` per axis: it does
not depend on the order, and the receptive field is ``1 + (k-1) * sum(d)``. Sorted ascending, the first
``j`` layers cover ``[0, (k-1) S_j]`` without holes (S_j = d_1 + ... + d_j) exactly when every
``d_{j+1} <= (k-1) S_j + 1``; if some ``d_{j+1}`` breaks that, the offset ``(k-1) S_j + 1`` can never be
reached (every later dilation is at least d_{j+1}, already too long a step), so the whole stack has holes. Hence: a schedule is hole-free
iff its ascending order meets that bound, and then every layer of it is hole-free too. The largest
sum n layers can reach is ``(k^n - 1) / (k - 1)`` (dilations 1, k, k^2, ...: the Kronecker schedule),
which fixes the fewest layers. Every returned schedule is nevertheless verified with
``convlens.analyze(...).coverage``, not with this argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from .api import analyze
from .coverage import check_pixels
from .defaults import MAX_PIXELS
from .errors import ConvlensError, check_int

MAX_TOP = 100
"""Schedules listed at most: each one is measured with a coverage map."""


@dataclass(frozen=True)
class Schedule:
    """One stack of stride-1 ``kernel`` x ``kernel`` convolutions, ``channels`` maps in and out.

    ``rf``: receptive field side in pixels; ``params``: weights + biases of the stack; ``covered`` and
    ``pixels``: input pixels with at least one path to the centre unit, and in its window (2-D,
    measured by ``coverage``); ``holes`` = pixels - covered.
    """

    dilations: tuple[int, ...]
    kernel: int
    rf: int
    params: int
    covered: int
    pixels: int

    @property
    def layers(self) -> int:
        return len(self.dilations)

    @property
    def holes(self) -> int:
        return self.pixels - self.covered

    def to_dict(self) -> dict:
        return {"dilations": list(self.dilations), "kernel": self.kernel, "layers": self.layers, "rf": self.rf,
                "params": self.params, "covered": self.covered, "pixels": self.pixels, "holes": self.holes}


@dataclass(frozen=True)
class PlanResult:
    """Hole-free schedules, best first (fewest layers, then least overshoot of the target, then fewest
    parameters, then the smallest largest dilation), and the plain exponential 1, 2, 4, ... schedule
    that reaches the target, for comparison."""

    target_rf: int
    kernel: int
    schedules: list[Schedule]
    exponential: Schedule

    def to_dict(self) -> dict:
        return {"target_rf": self.target_rf, "kernel": self.kernel,
                "schedules": [s.to_dict() for s in self.schedules], "exponential": self.exponential.to_dict()}


def stack(dilations: tuple[int, ...], kernel: int, channels: int = 1) -> nn.Sequential:
    """The schedule as a module: ``kernel`` x ``kernel`` convolutions, no padding, ReLU between."""
    layers: list[nn.Module] = []
    for i, d in enumerate(dilations):
        layers.append(nn.Conv2d(channels, channels, kernel, dilation=d))
        if i < len(dilations) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def measure(dilations: tuple[int, ...], kernel: int, channels: int = 64) -> Schedule:
    """rf, parameters and the centre unit's coverage of one schedule, from ``convlens.analyze``."""
    rf = 1 + (kernel - 1) * sum(dilations)
    with torch.device("meta"):
        model = stack(dilations, kernel, channels)
    params = sum(p.numel() for p in model.parameters())
    report = analyze(stack(dilations, kernel), (1, 1, rf, rf))
    cov = report.coverage("", (0, 0), max_pixels=rf * rf)  # the caller decides how large is too large
    return Schedule(tuple(dilations), kernel, report[""].rf[0], params, cov.covered, cov.pixels)


def _ascending(n: int, total: int, kernel: int, max_dilation: int) -> Iterator[tuple[int, ...]]:
    """Ascending hole-free schedules of ``n`` layers whose dilations sum to ``total``."""
    def grow(prefix: list[int], s: int, left: int) -> Iterator[tuple[int, ...]]:
        if left == 0:
            if s == total:
                yield tuple(prefix)
            return
        lo = prefix[-1] if prefix else 1
        hi = min((kernel - 1) * s + 1, max_dilation, total - s - (left - 1) * lo)
        for d in range(lo, hi + 1):
            # the rest, each at least d, must fit; and from here at most this much more is reachable
            rest = s + d
            reach = rest
            for _ in range(left - 1):
                reach += min((kernel - 1) * reach + 1, max_dilation)
            if reach < total:
                continue
            prefix.append(d)
            yield from grow(prefix, rest, left - 1)
            prefix.pop()
    yield from grow([], 0, n)


def plan(rf: int, kernel: int = 3, *, channels: int = 64, max_layers: int | None = None,
         max_params: int | None = None, map_size: int | None = None, top: int = 5,
         max_pixels: int = MAX_PIXELS) -> PlanResult:
    """Dilation schedules of ``kernel`` x ``kernel`` stride-1 layers with receptive field at least
    ``rf`` and no holes in any layer's coverage.

    ``channels`` sets the parameter count (C -> C maps per layer). ``max_layers`` / ``max_params`` are
    budgets; ``map_size`` (the side of the feature map the stack runs on) caps every dilation below it,
    since a larger one puts every unit's outer taps in padding. Every schedule is measured on an
    rf x rf coverage map: rf^2 above ``max_pixels`` is refused before any work. Raises
    ``ConvlensError`` when no schedule fits the budgets.
    """
    rf, kernel, channels = check_int(rf, "rf", 1), check_int(kernel, "kernel", 1), check_int(channels, "channels", 1, 2**16)
    top = check_int(top, "top", 1, MAX_TOP)
    max_layers, max_params, map_size = (None if v is None else check_int(v, name, 1) for v, name in
                                        ((max_layers, "max_layers"), (max_params, "max_params"),
                                         (map_size, "map_size")))
    if kernel < 2:
        raise ConvlensError(f"kernel must be at least 2 (a 1x1 kernel never grows the receptive field); got {kernel}")
    if rf < kernel:
        raise ConvlensError(f"target rf {rf} is below one layer's {kernel}: one undilated layer already reaches it")
    max_dilation = rf if map_size is None else min(rf, map_size - 1)
    if max_dilation < 1:
        raise ConvlensError(f"map_size {map_size} leaves no usable dilation (needs at least 2)")
    need = -(-(rf - 1) // (kernel - 1))  # sum of dilations that reaches rf
    exponential = _exponential(rf, kernel)
    largest = 1 + (kernel - 1) * max(need, sum(exponential))  # the widest schedule measured
    check_pixels(largest * largest, f"measuring the schedules (up to a {largest}x{largest} coverage map)", max_pixels,
                 "a smaller --rf")
    per_layer = kernel * kernel * channels * channels + channels
    limit = max_layers if max_layers is not None else need  # need layers of dilation 1 always suffice
    if max_params is not None:
        limit = min(limit, max_params // per_layer)

    found: list[tuple[int, ...]] = []
    n = 1
    while n <= limit and not found:
        # the smallest largest dilation first: schedules capped at m, for m = need / n upwards
        m = max(1, -(-need // n))
        while len(found) < top and m <= max_dilation:
            found += sorted((d for d in _ascending(n, need, kernel, m) if d[-1] == m), key=lambda d: d[::-1])
            m += 1
        n += 1
    if not found:
        budget = ", ".join(f"{k} {v}" for k, v in (("max_layers", max_layers), ("max_params", max_params),
                                                    ("map_size", map_size)) if v is not None)
        raise ConvlensError(f"no hole-free schedule of {kernel}x{kernel} layers reaches rf {rf} within {budget}: "
                            "raise a budget or lower the target")
    schedules = [measure(d, kernel, channels) for d in found[:top]]
    for s in schedules:  # the search's argument, checked by the coverage map
        if s.holes:
            raise RuntimeError(f"convlens.plan: schedule {s.dilations} has {s.holes} holes; please report this")
    return PlanResult(rf, kernel, schedules, measure(exponential, kernel, channels))


def _exponential(rf: int, kernel: int) -> tuple[int, ...]:
    """1, 2, 4, ... until the receptive field reaches ``rf``."""
    dilations = [1]
    while 1 + (kernel - 1) * sum(dilations) < rf:
        dilations.append(2 * dilations[-1])
    return tuple(dilations)
