"""Checkerboard counts against a brute-force transposed convolution of all-ones inputs and kernels.

With every input pixel and every kernel tap 1 (one channel), the value of an output unit is the
number of paths that reach it: the overlap count. Torch computes it; convlens must agree, per axis
(the same stack in 1-D) and over the grid of phases (the stack in 2-D).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import convlens
from convlens.diagnostics import transposed_overlap


@st.composite
def _layer(draw):
    k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    p = draw(st.integers(0, (d * (k - 1)) // 2))
    return dict(kernel_size=k, stride=s, padding=p, dilation=d)


def _ones(layers, dim):
    conv = nn.ConvTranspose1d if dim == 1 else nn.ConvTranspose2d
    mods = []
    for axis_params in layers:
        kw = {key: (tuple(a[key] for a in axis_params) if dim == 2 else axis_params[0][key])
              for key in axis_params[0]}
        m = conv(1, 1, bias=False, **kw).double()
        nn.init.ones_(m.weight)
        mods.append(m)
    return nn.Sequential(*mods)


@settings(max_examples=60, deadline=None)
@given(layers=st.lists(st.tuples(_layer(), _layer()), min_size=1, max_size=3))
def test_overlap_counts_equal_brute_force(layers):
    model = _ones(layers, 2)
    n = 12
    x = torch.ones(1, 1, n, n, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)[0, 0].numpy()
    report = convlens.analyze(model, (1, 1, n, n))
    try:
        cb = report.checkerboard("")
    except convlens.ConvlensError as e:
        assert "larger input" in str(e)
        return
    (s0, s1), (p0, p1) = cb.start, cb.period
    block = out[s0:s0 + p0, s1:s1 + p1]
    if cb.grid is not None:
        assert np.array_equal(cb.grid, block)
    else:
        assert p0 * p1 > 256  # only then is the grid left out
    for a in range(2):
        model1 = _ones([[axis[a]] for axis in layers], 1)
        with torch.no_grad():
            line = model1(torch.ones(1, 1, n, dtype=torch.float64))[0, 0].numpy()
        assert list(cb.per_axis[a]) == list(line[cb.start[a]:cb.start[a] + cb.period[a]])
    assert cb.ratio == (float("inf") if block.min() == 0 else block.max() / block.min())


@settings(max_examples=100, deadline=None)
@given(layer=_layer())
def test_single_layer_overlap_per_phase(layer):
    m = _ones([[layer]], 1)
    with torch.no_grad():
        out = m(torch.ones(1, 1, 20, dtype=torch.float64))[0, 0].numpy()
    s, p = layer["stride"], layer["padding"]
    interior = range(12, 12 + s)  # far from both ends: every tap of each phase lands inside
    want = {o % s: int(out[o]) for o in interior}
    assert transposed_overlap(layer["kernel_size"], s, p, layer["dilation"]) == [want[r] for r in range(s)]


def test_checkerboard_diagnostic_and_its_fix():
    # kernel 3, stride 2: even outputs get taps 0 and 2, odd ones tap 1 -> 2:1 per axis, 4:1 in 2-D
    r = convlens.analyze(nn.ConvTranspose2d(1, 1, 3, stride=2), (1, 1, 8, 8))
    (diag,) = [d for d in r.diagnostics if d.kind == "checkerboard"]
    assert diag.data["ratio"] == 4 and "kernel size divisible by the stride" in diag.message
    # kernel 4, stride 2: two taps per phase; resize-then-convolve: one path per tap
    for even in (nn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),
                 nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3, padding=1))):
        report = convlens.analyze(even, (1, 1, 8, 8))
        assert not [d for d in report.diagnostics if d.kind == "checkerboard"]
        assert report.checkerboard("").even and report.checkerboard("").fix is None


def test_checkerboard_needs_local_rows_and_room():
    with pytest.raises(convlens.ConvlensError, match="larger input"):
        convlens.analyze(nn.ConvTranspose1d(1, 1, 3, stride=2), (1, 1, 1)).checkerboard("")
    head = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d(1))
    with pytest.raises(convlens.ConvlensError, match="not local"):
        convlens.analyze(head, (1, 1, 8, 8)).checkerboard("")
