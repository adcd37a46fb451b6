"""Gridding: the exact verdict (holes in the centre unit's coverage) and Wang et al.'s rule beside it.

Expected pixel counts come from the gradient oracle's support (tests/oracle.py); the rule's values
are worked out by hand from its definition.
"""

from __future__ import annotations

import pytest
import torch.nn as nn

import convlens
from convlens.gridding import hdc_max_distance
from oracle import probe


def _stack(rates, k=3):
    return nn.Sequential(*[m for r in rates for m in (nn.Conv2d(1, 1, k, dilation=r, padding=r * (k // 2)),
                                                      nn.ReLU())])


@pytest.mark.parametrize("rates, m2", [
    ([1, 2, 5], 2),  # M_3 = 5, M_2 = max(5 - 4, 5 - 6, 2) = 2
    ([2, 4, 8], 4),  # M_3 = 8, M_2 = max(8 - 8, 8 - 8, 4) = 4
    ([2, 2, 2], 2),  # M_3 = 2, M_2 = max(2 - 4, 2 - 0, 2) = 2
    ([1, 2, 9], 5),  # the paper's failing example: max(9 - 4, 9 - 14, 2) = 5
    ([3], None),
])
def test_hdc_rule_by_hand(rates, m2):
    assert hdc_max_distance(rates) == m2


@pytest.mark.parametrize("rates, grids, rule_ok", [
    ([2, 4, 8], True, False),
    ([2, 2, 2], True, True),  # the rule passes, the map has holes: the coverage decides
    ([1, 2, 5], False, True),
    # M_7 = 1, M_6 = max(1 - 32, 1 + 30, 16) = 31, M_5 = 15, M_4 = 7, M_3 = 3, M_2 = max(1, -1, 1) = 1
    ([1, 1, 2, 4, 8, 16, 1], False, True),
])
def test_exact_verdict_against_the_oracle(rates, grids, rule_ok):
    model = _stack(rates)
    shape = (1, 1, 160, 160)
    report = convlens.analyze(model, shape)
    g = report.gridding("")
    support = probe(model, shape, unit=g.unit).support
    assert g.covered == int(support.sum())
    assert g.grids == grids
    (run,) = g.runs
    assert [r[0] for r in run.rates] == rates and all(ok == rule_ok for ok in run.hdc_ok)
    found = [d for d in report.diagnostics if d.kind == "gridding"]
    assert bool(found) == grids
    if grids:
        assert f"sees {int(support.sum())} of" in found[0].message
        assert ("passes, yet the map has holes" in found[0].message) == rule_ok


def test_a_dense_conv_before_the_run_fills_the_holes():
    # 2, 2 alone grids; a 3x3 conv in front fills every odd offset
    model = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 5, padding=4, dilation=2),
                          nn.Conv2d(1, 1, 5, padding=4, dilation=2))
    report = convlens.analyze(model, (1, 1, 64, 64))
    g = report.gridding("")
    assert not g.grids and g.covered == int(probe(model, (1, 1, 64, 64), unit=g.unit).support.sum())
    assert not [d for d in report.diagnostics if d.kind == "gridding"]


def test_strided_taps_grid_and_are_named_as_the_cause():
    # a 1x1 conv at stride 2 keeps even pixels only; the 3x3 conv after it reaches 3 of them per
    # axis over 5 pixels: 9 of 25
    model = nn.Sequential(nn.Conv2d(1, 1, 1, stride=2), nn.Conv2d(1, 1, 3, padding=1))
    report = convlens.analyze(model, (1, 1, 40, 40))
    g = report.gridding("")
    assert (g.covered, g.pixels) == (int(probe(model, (1, 1, 40, 40), unit=g.unit).support.sum()), 25)
    assert g.causes == ["0"] and not g.runs
    # a 3x3 conv in front fills the gaps
    filled = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), *model)
    assert not convlens.analyze(filled, (1, 1, 40, 40)).gridding("").grids
