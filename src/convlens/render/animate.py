"""Animations and stills of one convolution's arithmetic (Dumoulin & Visin's pictures, any parameters).

A direct convolution gets one frame per output position: the padded input (padding cells grey,
real cells blue), the taps that output reads highlighted, and the output grid with that cell
marked. A transposed convolution gets one frame per *input* position, drawn on the zero-inserted
view (the direct convolution it equals: stride - 1 zeros between input cells, d (k - 1) - p padding
around them, o_p extra on the far side; zeros white): the input cell and the output cells it writes
(its taps). The still shows the whole arithmetic: the first window of a direct conv; the
zero-inserted input of a transposed one.

Index arithmetic here is written out from the definitions (one loop per tap), independently of the
analysis rules. Sizes are per axis; 1-D configurations are drawn as one row.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..defaults import MAX_CELLS, MAX_FRAMES
from ..errors import ConvlensError, check_int
from .figures import pyplot, save_figure_file
from .files import atomic_output

REAL, PAD, TAP, OUT, OUT_CELL, ZERO = "#9ecae1", "#e5e5e5", "#f28e2b", "#c7e9c0", "#d62728", "#ffffff"


@dataclass(frozen=True)
class ConvSpec:
    """One convolution, per axis: input size, kernel, stride, padding, dilation, output_padding."""

    input: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    @classmethod
    def make(cls, input: int | Sequence[int], kernel: int | Sequence[int], stride: int | Sequence[int] = 1,
             padding: int | Sequence[int] = 0, dilation: int | Sequence[int] = 1, transposed: bool = False,
             output_padding: int | Sequence[int] = 0, dims: int = 2) -> ConvSpec:
        """Single numbers apply to every axis; ``dims`` (1 or 2) is used when every size is a single
        number (``5`` is 5x5, as in Dumoulin & Visin's pictures)."""
        def axes(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (v,)
        given = [axes(v) for v in (input, kernel, stride, padding, dilation, output_padding)]
        k = max(len(g) for g in given)
        k = dims if k == 1 else k
        if k > 2:
            sizes = ", ".join(f"--{n} {'x'.join(map(str, g))}" for n, g in
                              zip(("input", "kernel", "stride", "padding", "dilation", "output-padding"), given)
                              if len(g) > 2)
            raise ConvlensError(f"animations draw 1-D or 2-D convolutions: give 1 or 2 sizes, got {sizes}")

        def per(v, name, lo):
            t = axes(v)
            t = t * k if len(t) == 1 else t
            if len(t) != k or not all(isinstance(x, int) and x >= lo for x in t):
                raise ConvlensError(f"--{name} must be {k} integer(s) >= {lo} (e.g. 3 or 3x2), got {v}")
            return t
        spec = cls(per(input, "input", 1), per(kernel, "kernel", 1), per(stride, "stride", 1),
                   per(padding, "padding", 0), per(dilation, "dilation", 1), transposed,
                   per(output_padding, "output-padding", 0))
        for i, k_, s, p, d, op in zip(spec.input, spec.kernel, spec.stride, spec.padding, spec.dilation,
                                      spec.output_padding):
            if transposed and op >= max(s, d):
                raise ConvlensError(f"output padding {op} must be smaller than the stride or the dilation")
            if not transposed and op:
                raise ConvlensError("--output-padding applies to transposed convolutions only")
        if any(n < 1 for n in spec.output):
            raise ConvlensError(f"the kernel does not fit: output size {spec.output} (input {spec.input} with "
                                f"padding {spec.padding}, effective kernel "
                                f"{tuple(d * (k - 1) + 1 for k, d in zip(spec.kernel, spec.dilation))})")
        return spec

    @property
    def output(self) -> tuple[int, ...]:
        if self.transposed:
            return tuple((i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, k, s, p, d, op in
                         zip(self.input, self.kernel, self.stride, self.padding, self.dilation, self.output_padding))
        return tuple((i + 2 * p - d * (k - 1) - 1) // s + 1 for i, k, s, p, d in
                     zip(self.input, self.kernel, self.stride, self.padding, self.dilation))


@dataclass(frozen=True)
class Frame:
    """``cell``: the output position (direct) or input position (transposed) of this frame;
    ``taps``: the input positions it reads (padding included, negative or >= size) or, transposed,
    the output positions it writes."""

    cell: tuple[int, ...]
    taps: tuple[tuple[int, ...], ...]




def frame_count(spec: ConvSpec) -> int:
    """Frames of the animation: one per output position (per input position when transposed)."""
    return math.prod(spec.input if spec.transposed else spec.output)


def drawn_input(spec: ConvSpec) -> tuple[int, ...]:
    """The input grid as drawn: padded (direct), or zero-inserted with s - 1 zeros between cells,
    d (k - 1) - p around them and o_p more on the far side (transposed: the direct conv it equals)."""
    if spec.transposed:
        return tuple((n - 1) * s + 1 + 2 * (d * (k - 1) - p) + op for n, k, s, p, d, op in
                     zip(spec.input, spec.kernel, spec.stride, spec.padding, spec.dilation, spec.output_padding))
    return tuple(n + 2 * p for n, p in zip(spec.input, spec.padding))


def check_size(spec: ConvSpec, animation: bool, max_frames: int = MAX_FRAMES, max_cells: int = MAX_CELLS) -> None:
    """Refuse, before drawing anything, a picture with more than ``max_cells`` cells or an animation
    with more than ``max_frames`` frames; the message gives the size, the limit and what lifts it."""
    cells = math.prod(drawn_input(spec)) + math.prod(spec.output)
    if cells > max_cells:
        raise ConvlensError(f"the picture would draw {cells:,} cells (input with padding, and output), more than "
                            f"the limit of {max_cells:,}: use a smaller --input, or raise --max-cells")
    if animation and frame_count(spec) > max_frames:
        raise ConvlensError(f"the animation would have {frame_count(spec):,} frames (one per "
                            f"{'input' if spec.transposed else 'output'} position), more than the limit of "
                            f"{max_frames:,}: use a smaller --input, a still (-o x.png), or raise --max-frames")


def frames(spec: ConvSpec) -> Iterator[Frame]:
    """The frames in order, made one at a time (see :class:`Frame`)."""
    grid = spec.input if spec.transposed else spec.output
    for cell in itertools.product(*(range(n) for n in grid)):
        per_axis = []
        for a, c in enumerate(cell):
            k, s, p, d = spec.kernel[a], spec.stride[a], spec.padding[a], spec.dilation[a]
            if spec.transposed:  # input c writes outputs c s - p + t d that exist
                per_axis.append([c * s - p + t * d for t in range(k) if 0 <= c * s - p + t * d < spec.output[a]])
            else:  # output c reads inputs c s - p + t d
                per_axis.append([c * s - p + t * d for t in range(k)])
        yield Frame(cell, tuple(itertools.product(*per_axis)))


def _grid(ax, origin, shape, colors, label):
    """One grid of cells (rows x cols, 1-D as one row), coloured by ``colors(r, c)``, as one collection."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    x0, y0 = origin
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    ax.add_collection(PatchCollection([Rectangle((x0 + c, y0 + r), 0.92, 0.92) for r, c in cells],
                                      facecolors=[colors(r, c) for r, c in cells], edgecolors="#555",
                                      linewidths=0.6))
    ax.text(x0, y0 - 0.35, label, fontsize=9, va="bottom")


def _draw(spec: ConvSpec, frame: Frame | None):
    plt = pyplot()
    two = len(spec.input) == 2
    pads = spec.padding
    # a transposed conv is drawn on its zero-inserted input: s - 1 zeros between cells, d(k - 1) - p
    # around them, o_p more on the far side (the direct convolution it equals)
    q = [d * (k - 1) - p for k, p, d in zip(spec.kernel, spec.padding, spec.dilation)]
    shape_in = drawn_input(spec)
    w_in = shape_in[-1]
    rows = max(shape_in[0], spec.output[0]) if two else 1
    fig_w = (w_in + spec.output[-1] + 3) * 0.42 + 0.4
    fig_h = (rows + 1.8) * 0.42 + 0.3
    fig, ax = plt.subplots(figsize=(max(fig_w, 3.0), max(fig_h, 1.6)), dpi=100)
    ax.set_xlim(-0.5, w_in + spec.output[-1] + 2.5)
    ax.set_ylim(rows + 0.5, -1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    out_x = w_in + 2

    def coord(r, c):
        return (r, c) if two else (c,)

    taps = set(frame.taps) if frame is not None else set()
    size = f"{'x'.join(map(str, spec.input))}"
    if spec.transposed:
        current = None if frame is None else tuple(qq + c * s for qq, c, s in zip(q, frame.cell, spec.stride))

        def colors_in(r, c):
            pos = coord(r, c)
            if pos == current:
                return TAP
            inside = all(qq <= x and (x - qq) % s == 0 and (x - qq) // s < n
                         for x, qq, s, n in zip(pos, q, spec.stride, spec.input))
            return REAL if inside else ZERO
        _grid(ax, (0, 0), shape_in, colors_in, f"input {size}, zero-inserted (the equivalent direct conv)")
        _grid(ax, (out_x, 0), spec.output, lambda r, c: TAP if coord(r, c) in taps else OUT,
              f"output {'x'.join(map(str, spec.output))}")
    else:
        def colors_in(r, c):
            pos = tuple(x - p for x, p in zip(coord(r, c), pads))
            if pos in taps:
                return TAP
            return REAL if all(0 <= x < n for x, n in zip(pos, spec.input)) else PAD
        _grid(ax, (0, 0), shape_in, colors_in, f"input {size} + padding")
        _grid(ax, (out_x, 0), spec.output,
              lambda r, c: OUT_CELL if frame is not None and coord(r, c) == frame.cell else OUT,
              f"output {'x'.join(map(str, spec.output))}")
    return fig


def _title(spec: ConvSpec) -> str:
    kind = "transposed conv" if spec.transposed else "conv"
    fmt = "x".join
    text = (f"{kind}: input {fmt(map(str, spec.input))}, kernel {fmt(map(str, spec.kernel))}, stride "
            f"{fmt(map(str, spec.stride))}, padding {fmt(map(str, spec.padding))}, dilation "
            f"{fmt(map(str, spec.dilation))}")
    if spec.transposed:
        text += f", output padding {fmt(map(str, spec.output_padding))}"
    return text + f" -> output {fmt(map(str, spec.output))}"


def _rgba(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def animate(spec: ConvSpec, path: str | Path, ms_per_frame: int = 600, *, max_frames: int = MAX_FRAMES,
            max_cells: int = MAX_CELLS) -> list[Frame]:
    """Write a GIF with one frame per output position (per input position when transposed), drawn one
    at a time as the GIF is written; the file appears only when every frame is done
    (:mod:`convlens.render.files`). Sizes are checked first (:func:`check_size`)."""
    from PIL import Image
    ms_per_frame = check_int(ms_per_frame, "ms_per_frame (--ms)", 10, 60_000)
    check_size(spec, True, max_frames, max_cells)
    plt = pyplot()
    found = list(frames(spec))

    def image(frame: Frame):
        fig = _draw(spec, frame)
        fig.suptitle(_title(spec), fontsize=7)
        try:
            return Image.fromarray(_rgba(fig)).convert("RGB")
        finally:
            plt.close(fig)
    with atomic_output(path) as tmp:
        image(found[0]).save(tmp, format="GIF", save_all=True, append_images=(image(f) for f in found[1:]),
                             duration=ms_per_frame, loop=0, optimize=False)
    return found


def still(spec: ConvSpec, path: str | Path, *, max_cells: int = MAX_CELLS) -> None:
    """The whole arithmetic in one picture (PNG/SVG/PDF by suffix; see the module doc)."""
    check_size(spec, False, max_cells=max_cells)
    fig = _draw(spec, next(frames(spec)) if not spec.transposed else None)
    fig.suptitle(_title(spec), fontsize=7)
    save_figure_file(fig, path)
