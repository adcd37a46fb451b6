"""The dilation planner: every schedule it returns is checked against the gradient oracle's support,
and its "fewest layers" against a brute-force search written here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch.nn as nn

from convlens.errors import ConvlensError
from convlens.plan import plan
from oracle import probe


def _stack(dilations, k):
    return nn.Sequential(*[nn.Conv2d(1, 1, k, dilation=d) for d in dilations])


def _oracle_support(dilations, k):
    rf = 1 + (k - 1) * sum(dilations)
    return probe(_stack(dilations, k), (1, 1, rf, rf), unit=(0, 0)).support


def _hole_free_1d(dilations, k) -> bool:
    """Brute force: offsets reachable through the taps, as a convolution of indicator vectors."""
    reach = np.ones(1)
    for d in dilations:
        taps = np.zeros(d * (k - 1) + 1)
        taps[::d] = 1
        reach = np.convolve(reach, taps)
    return bool(np.all(reach > 0))


@pytest.mark.parametrize("target", [33, 65, 129, 257])
def test_planned_schedules_have_no_holes(target):
    result = plan(target, kernel=3)
    assert result.schedules
    for s in result.schedules:
        support = _oracle_support(s.dilations, 3)
        assert support.all(), s.dilations  # every pixel of the window has a path
        assert support.shape[0] == s.rf >= target
        assert s.holes == 0 and s.covered == support.sum()
        assert list(s.dilations) == sorted(s.dilations)
        # every layer of the stack is hole-free too (the ascending order's prefixes)
        assert all(_hole_free_1d(s.dilations[:j], 3) for j in range(1, s.layers + 1))
    layers = [s.layers for s in result.schedules]
    assert layers == sorted(layers)
    exp = result.exponential
    assert exp.dilations == tuple(2 ** i for i in range(exp.layers)) and exp.rf >= target
    assert exp.rf < 2 * target  # one layer fewer would not reach the target
    assert result.schedules[0].layers <= exp.layers


@pytest.mark.parametrize("target, k", [(33, 3), (65, 3), (27, 3), (20, 2), (61, 5)])
def test_no_schedule_with_fewer_layers_exists(target, k):
    best = plan(target, kernel=k).schedules[0]
    need = -(-(target - 1) // (k - 1))
    fewer = best.layers - 1
    for ds in itertools.combinations_with_replacement(range(1, need + 1), fewer):
        if 1 + (k - 1) * sum(ds) >= target:
            assert not _hole_free_1d(ds, k), ds


def test_the_kronecker_schedule_is_the_largest_hole_free_one():
    """1, 3, 9 reaches 27 with three 3x3 layers and no holes; 27 is planned exactly that way."""
    (best, *_) = plan(27, kernel=3).schedules
    assert best.dilations == (1, 3, 9) and best.rf == 27
    assert _oracle_support((1, 3, 9), 3).all()


def test_budgets_and_map_size():
    capped = plan(129, kernel=3, map_size=20)
    assert all(max(s.dilations) < 20 for s in capped.schedules)
    assert all(_oracle_support(s.dilations, 3).all() for s in capped.schedules)
    s = plan(65, kernel=3, channels=8).schedules[0]
    assert s.params == s.layers * (9 * 8 * 8 + 8)
    with pytest.raises(ConvlensError, match="no hole-free schedule"):
        plan(257, kernel=3, max_layers=4)
    with pytest.raises(ConvlensError, match="kernel"):
        plan(33, kernel=1)


def test_gridding_schedules_are_what_the_planner_avoids():
    """2, 4, 8 has holes (the oracle agrees); the planner never starts above 1."""
    assert not _oracle_support((2, 4, 8), 3).all()
    assert all(s.dilations[0] == 1 for t in (33, 65) for s in plan(t).schedules)
