"""Animations of one convolution: frame counts, and the highlighted taps against a brute-force index
computation with torch (unfold on index-coded inputs; transposed convs of one-hot inputs), which
shares nothing with convlens's own index arithmetic. The drawn frames are checked by colour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import convlens
from convlens.render.animate import OUT_CELL, TAP, ConvSpec, animate, frames, still


@st.composite
def specs(draw, transposed: bool):
    dims = draw(st.sampled_from([1, 2]))
    k = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    d = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    p = tuple(draw(st.integers(0, dd * (kk - 1))) for kk, dd in zip(k, d))
    i = tuple(draw(st.integers(1, 6)) for _ in range(dims))
    op = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d)) if transposed else (0,) * dims
    try:
        return ConvSpec.make(i, k, s, p, d, transposed, op)
    except convlens.ConvlensError:
        return None


def _as2d(t: torch.Tensor, dims: int) -> torch.Tensor:
    return t if dims == 2 else t.unsqueeze(-2)


@settings(max_examples=80, deadline=None)
@given(spec=specs(transposed=False))
def test_direct_conv_taps_match_unfold(spec):
    if spec is None:
        return
    dims = len(spec.input)
    two = lambda v: v if dims == 2 else (1, v[0])  # noqa: E731
    h, w = two(spec.input)
    codes = torch.arange(1, h * w + 1, dtype=torch.float64).reshape(1, 1, h, w)
    ph, pw = two(spec.padding)
    padded = F.pad(codes, (pw, pw, ph, ph))  # padding cells are code 0
    cols = F.unfold(padded, two(spec.kernel), dilation=two(spec.dilation), stride=two(spec.stride))
    found = list(frames(spec))
    assert len(found) == int(np.prod(spec.output)) == cols.shape[-1]
    for j, frame in enumerate(found):
        want = sorted(int(c) for c in cols[0, :, j])
        got = []
        for tap in frame.taps:
            r, c = two(tap)
            got.append(r * w + c + 1 if 0 <= r < h and 0 <= c < w else 0)
        assert sorted(got) == want


@settings(max_examples=80, deadline=None)
@given(spec=specs(transposed=True))
def test_transposed_conv_taps_match_one_hot_inputs(spec):
    if spec is None:
        return
    dims = len(spec.input)
    conv = F.conv_transpose1d if dims == 1 else F.conv_transpose2d
    weight = torch.ones(1, 1, *spec.kernel, dtype=torch.float64)
    found = list(frames(spec))
    assert len(found) == int(np.prod(spec.input))
    for frame in found:
        x = torch.zeros(1, 1, *spec.input, dtype=torch.float64)
        x[(0, 0, *frame.cell)] = 1
        y = conv(x, weight, stride=spec.stride, padding=spec.padding, output_padding=spec.output_padding,
                 dilation=spec.dilation)
        assert tuple(y.shape[2:]) == spec.output
        want = {tuple(int(v) for v in idx) for idx in (y[0, 0] != 0).nonzero()}
        assert set(frame.taps) == want


def _cells(img: np.ndarray, color: str) -> int:
    """Cells drawn in ``color``: connected blobs of that colour (cells are separated by their edges)."""
    rgb = np.array([int(color[i:i + 2], 16) for i in (1, 3, 5)])
    mask = np.abs(img[..., :3].astype(int) - rgb).sum(axis=-1) < 24
    seen = np.zeros_like(mask)
    blobs = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        blobs += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return blobs


@pytest.mark.parametrize("spec", [
    ConvSpec.make(5, 3, 2, 1),
    ConvSpec.make((5, 7), (3, 2), (1, 2), (1, 0), (2, 1)),
    ConvSpec.make(6, 3, 1, 0, 2, dims=1),
])
def test_drawn_frames_highlight_exactly_the_taps(spec, tmp_path):
    path = tmp_path / "conv.gif"
    found = animate(spec, path, ms_per_frame=100)
    gif = Image.open(path)
    assert gif.n_frames == len(found)
    for f, frame in enumerate(found):
        gif.seek(f)
        img = np.asarray(gif.convert("RGB"))
        assert _cells(img, OUT_CELL) == 1  # the output cell being computed
        assert _cells(img, TAP) == len(set(frame.taps))


def test_transposed_frames_and_still(tmp_path):
    spec = ConvSpec.make(3, 3, 2, 1, 1, transposed=True, output_padding=1)
    found = animate(spec, tmp_path / "t.gif", ms_per_frame=100)
    gif = Image.open(tmp_path / "t.gif")
    assert gif.n_frames == len(found) == 9
    for f, frame in enumerate(found):
        gif.seek(f)
        img = np.asarray(gif.convert("RGB"))
        assert _cells(img, TAP) == 1 + len(frame.taps)  # the input cell and the outputs it writes
    still(spec, tmp_path / "t.svg")
    assert (tmp_path / "t.svg").read_text().lstrip().startswith("<?xml")


def test_bad_configurations_are_one_clear_error():
    with pytest.raises(convlens.ConvlensError, match="kernel does not fit"):
        ConvSpec.make(3, 5)
    with pytest.raises(convlens.ConvlensError, match="output padding"):
        ConvSpec.make(3, 3, 2, transposed=True, output_padding=2)
    with pytest.raises(convlens.ConvlensError, match="1-D or 2-D"):
        ConvSpec.make((5, 5), (3, 3, 3))
    with pytest.raises(convlens.ConvlensError, match="--kernel must be 2 integer"):
        ConvSpec.make((5, 5), 0)
