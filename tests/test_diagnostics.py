"""Diagnostics: each one on a model that shows it and one that does not.

Expected values are worked out by hand (in the comments) or by brute force with torch itself (real
convolutions of all-ones inputs and one-hot kernels, real gradients), never by convlens's rules.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import convlens


def _kinds(report, kind):
    return [d for d in report.diagnostics if d.kind == kind]


def _brute_unread(i, k, s, p, d) -> int:
    """Trailing real pixels that no output of the conv reads: zero gradient of the output sum."""
    x = torch.ones(1, 1, i, dtype=torch.float64, requires_grad=True)
    F.conv1d(x, torch.ones(1, 1, k, dtype=torch.float64), stride=s, padding=p, dilation=d).sum().backward()
    read = (x.grad[0, 0] != 0).nonzero()
    return i if len(read) == 0 else i - 1 - int(read.max())


def _brute_dead(i, k, s, p, d) -> int:
    """Taps whose one-hot kernel gives an all-zero output on an all-ones input."""
    x = torch.ones(1, 1, i, dtype=torch.float64)
    dead = 0
    for t in range(k):
        w = torch.zeros(1, 1, k, dtype=torch.float64)
        w[0, 0, t] = 1
        dead += int(not F.conv1d(x, w, stride=s, padding=p, dilation=d).any())
    return dead


@settings(max_examples=150, deadline=None)
@given(i=st.integers(1, 30), k=st.integers(1, 5), s=st.integers(1, 4), p=st.integers(0, 3), d=st.integers(1, 12))
def test_unread_border_and_dead_taps_match_brute_force(i, k, s, p, d):
    if p > d * (k - 1) // 2 or i + 2 * p < d * (k - 1) + 1:
        return  # torch refuses the conv
    report = convlens.analyze(nn.Conv1d(1, 1, k, stride=s, padding=p, dilation=d), (1, 1, i))
    unread, dead = _brute_unread(i, k, s, p, d), _brute_dead(i, k, s, p, d)
    got = _kinds(report, "unread-border")
    assert (got[0].data["pixels"] if got else [0]) == [unread]
    got = _kinds(report, "dead-taps")
    assert (got[0].data["dead"] if got else [0]) == [dead]


def test_dilation_larger_than_the_map_degenerates_to_one_tap():
    # DeepLab v3's remark: a 3x3 conv at rate 24 on a 9x9 map with padding 24 reads real pixels
    # only through its centre tap (the others land 24 pixels away, outside the map)
    report = convlens.analyze(nn.Conv2d(1, 1, 3, padding=24, dilation=24), (1, 1, 9, 9))
    (diag,) = _kinds(report, "dead-taps")
    assert diag.data["dead"] == [2, 2] and "one tap" in diag.message
    assert diag.message in report[""].notes
    # rate 6 on the same map: every tap reads real pixels for some output
    assert not _kinds(convlens.analyze(nn.Conv2d(1, 1, 3, padding=6, dilation=6), (1, 1, 9, 9)), "dead-taps")


def test_max_pool_gradient_share():
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    nn.MaxPool2d(2)(x).sum().backward()
    assert (x.grad != 0).float().mean() == 0.25  # brute force: one input per 2x2 window
    (diag,) = _kinds(convlens.analyze(nn.MaxPool2d(2), (1, 1, 8, 8)), "sparse-gradient")
    assert diag.data["share"] == 0.25 and "25 %" in diag.message
    # stride 1, padding 1: as many outputs as inputs, no bound below 100 %
    assert not _kinds(convlens.analyze(nn.MaxPool2d(3, 1, 1), (1, 1, 8, 8)), "sparse-gradient")


def test_half_pixel_shift_of_even_kernels():
    # 4 taps: output v is centred on v + 1.5 (between pixels); 3 taps: on v + 1; 2 taps at dilation 2:
    # on v + 1 (effective kernel 3)
    (diag,) = _kinds(convlens.analyze(nn.Conv2d(1, 1, (4, 3)), (1, 1, 9, 9)), "half-pixel-shift")
    assert "axis 0" in diag.message and "axis 1" not in diag.message
    assert not _kinds(convlens.analyze(nn.Conv2d(1, 1, 3), (1, 1, 9, 9)), "half-pixel-shift")
    assert not _kinds(convlens.analyze(nn.Conv2d(1, 1, 2, dilation=2), (1, 1, 9, 9)), "half-pixel-shift")
    assert _kinds(convlens.analyze(nn.Conv2d(1, 1, 4, padding="same"), (1, 1, 9, 9)), "half-pixel-shift")


def test_units_that_see_mostly_padding():
    # 7x7 conv, padding 3, on 5x5: unit u sees [u-3, u+3], of which 4, 5, 5, 5, 4 pixels are real
    # (u = 0..4). Mostly padding: (a/7)(b/7) < 1/2, i.e. a*b < 24.5: every unit with a border
    # coordinate (4*4, 4*5) but not the 3x3 interior (5*5): 16 of 25 units = 64 %
    report = convlens.analyze(nn.Conv2d(1, 1, 7, padding=3), (1, 1, 5, 5))
    (diag,) = _kinds(report, "mostly-padding")
    assert diag.data["share"] == 16 / 25 and "64.0 %" in diag.message
    # rf 3 on a 5x5 input never exceeds it
    assert not _kinds(convlens.analyze(nn.Conv2d(1, 1, 3, padding=1), (1, 1, 5, 5)), "mostly-padding")


class Shifted(nn.Module):
    """A merge misaligned along both axes: body's unit u is centred on u + 1, the shortcut's on u."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ZeroPad2d((0, 2, 0, 2)))

    def forward(self, x):
        return self.body(x) + x


def test_misaligned_merge_is_listed():
    report = convlens.analyze(Shifted(), (1, 1, 9, 9))
    (found,) = _kinds(report, "misaligned-merge")  # one message for both axes, which differ alike
    assert found.data["axes"] == [0, 1] and found.row == ""
    assert "along axes 0 and 1" in found.message
    assert "the centres of the input lie 1 px before those of body at every unit" in found.message
    assert report[""].notes.count(found.message) == 1  # once, on its own row
    assert not any(found.message in layer.notes for layer in report if layer.name)
    aligned = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1))
    assert not _kinds(convlens.analyze(aligned, (1, 1, 9, 9)), "misaligned-merge")


class SkipAndUp(nn.Module):
    """A U-Net's skip beside an upsampled path: ``up`` pools 2 and a transposed conv (kernel 2,
    stride 2) brings it back, so units 2i and 2i + 1 of ``up`` both see pixels 2i and 2i + 1."""

    def __init__(self, kernel: int = 2):
        super().__init__()
        self.skip = nn.Conv1d(1, 1, 1)
        self.up = nn.Sequential(nn.MaxPool1d(2), nn.ConvTranspose1d(1, 1, kernel, stride=2))

    def forward(self, x):
        return torch.cat([self.skip(x), self.up(x)], dim=1)


def test_a_misaligned_merge_says_where_and_by_how_much_the_centres_differ():
    import re
    import sys
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from oracle import probe
    model, shape = SkipAndUp(), (1, 1, 16)
    (found,) = _kinds(convlens.analyze(model, shape), "misaligned-merge")
    # the centre of each unit of each branch from the oracle's gradient support, and their difference
    def centre(layer, u):
        lo, hi = probe(model, shape, layer, (u,)).bbox[0]
        return Fraction(lo + hi, 2)
    diff = {u: centre("up", u) - centre("skip", u) for u in range(2, 14)}
    stated = re.findall(r"(\d+(?:/\d+)?) px (after|before) those of skip at units u ≡ (\d) \(mod 2\)", found.message)
    assert len(stated) == 2, found.message
    for amount, side, phase in stated:
        expected = {Fraction(amount) * (1 if side == "after" else -1)}
        assert {d for u, d in diff.items() if u % 2 == int(phase)} == expected


def test_diagnostics_in_json_and_table(capsys):
    report = convlens.analyze(nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.MaxPool2d(2)), (1, 1, 10, 10))
    data = report.to_dict()["diagnostics"]
    assert {d["kind"] for d in data} >= {"unread-border", "sparse-gradient"}
    from convlens.render import render_table
    render_table(report)
    assert "diagnostics (" in capsys.readouterr().out


@given(st.lists(st.integers(-6, 6), min_size=1, max_size=5), st.integers(12, 40), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_centre_differences_state_the_numbers(pattern, n, edge):
    # centres as lo + hi (half pixels): a periodic pattern of differences, with `edge` units at the
    # start that differ by one more half pixel (a border effect breaks the period)
    import re
    from convlens.analysis import centre_differences
    ref = np.arange(n, dtype=np.float64) * 2
    d = np.array([pattern[u % len(pattern)] for u in range(n)], dtype=np.float64)
    d[:edge] += 1
    text = centre_differences(ref, ref + d, 1)
    if not d.any():
        assert text is None
        return
    numbers = [Fraction(a) * (1 if side == "after" else -1)
               for a, side in re.findall(r"(\d+(?:/\d+)?) px (after|before)", text)]
    halves = {Fraction(int(x), 2) for x in d}
    if "every unit" in text:
        assert len(halves) == 1 and numbers == [halves.pop()]
    elif "differ from those of {0} at" in text:
        count, total = map(int, re.search(r"at (\d+) of (\d+) units", text).groups())
        first = int(re.search(r"the first, unit (\d+)", text).group(1))
        assert (count, total) == (int((d != 0).sum()), n) and first == int(np.flatnonzero(d)[0])
        assert numbers == [Fraction(int(d[first]), 2)]
    else:
        p = int(re.search(r"mod (\d+)", text).group(1))
        assert all(d[u] == d[u % p] for u in range(n))  # the stated period holds
        moved = {r: Fraction(int(d[r]), 2) for r in range(p) if d[r]}
        if "repeats" in text:
            assert (min(numbers), max(numbers)) == (min(moved.values()), max(moved.values()))
        else:
            phases = re.findall(r"(\d+(?:/\d+)?) px (after|before) those of \{0\} at units u ≡ (\d+)", text)
            assert {int(r): Fraction(a) * (1 if side == "after" else -1) for a, side, r in phases} == moved
