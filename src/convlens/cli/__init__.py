"""Command line: a thin shell over the Python API.

No command prints a traceback. Every ``ConvlensError`` (bad input; the user's model that raises or
exits, named as such) becomes one line on stderr and exit status 2; argparse's usage errors exit 2 as
well. Ctrl-C exits 130 after the model and any existing output file are put back, in one line. A bug
in convlens itself is one line too, with exit status 1 (``CONVLENS_TRACEBACK=1`` shows where).
Outputs are checked before the work starts and written atomically after it succeeded
(:mod:`convlens.render.files`).

This module parses and dispatches without importing torch (``--help``, ``--version`` and ``arith``
answer in a fraction of a second); the commands that analyze, draw or measure live in
:mod:`convlens.cli.commands`, imported when one of them runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from typing import Callable, Iterator, Sequence

from .. import __version__, arith
from ..defaults import (COLUMN_NAMES, DEFAULT_COLUMNS, DEFAULT_DEPTH, DEFAULT_MODEL, FORMS, MAX_CELLS, MAX_FRAMES,
                        MAX_PIXELS, TIMEOUT_S)
from ..errors import ConvlensError, first_line


def _command(name: str) -> Callable[[argparse.Namespace], None]:
    """Subcommand ``name``'s handler, ``convlens.cli.commands._NAME``, imported when it runs."""
    def run(args: argparse.Namespace) -> None:
        from . import commands
        getattr(commands, f"_{name}")(args)
    return run


ARITH_HELP = """\
conv:      output size of a convolution (or pooling with --ceil-mode)
transposed: output size of a transposed convolution
same:      padding (left, right) that keeps the size (stride 1) or gives ceil(i/s)
padding:   smallest padding that gives output size --target
output-padding: output_padding that makes a transposed conv give --target
unread:    real border pixels on the far side that the stride never reads
"""


def _arith(args: argparse.Namespace) -> None:
    k, s, p, d = args.kernel, args.stride, args.padding, args.dilation
    if args.what not in ("padding", "output-padding"):
        _no_target(args)
    if args.what == "conv":
        print(arith.conv_output_size(args.input, k, s, p, d, ceil_mode=args.ceil_mode))
    elif args.what == "transposed":
        print(arith.transposed_conv_output_size(args.input, k, s, p, args.output_padding, d))
    elif args.what == "same":
        print(*arith.same_padding(k, s, d, args.input))
    elif args.what == "padding":
        print(*arith.padding_for_output(args.input, _target(args), k, s, d))
    elif args.what == "output-padding":
        print(arith.output_padding_for(args.input, _target(args), k, s, p, d))
    else:
        print(arith.unread_border(args.input, k, s, p, d))


def _no_target(args: argparse.Namespace) -> None:
    if args.target is not None:
        raise ConvlensError(f"--target applies to convlens arith padding and output-padding, not {args.what}")


def _target(args: argparse.Namespace) -> int:
    if args.target is None:
        raise ConvlensError(f"convlens arith {args.what} needs --target SIZE")
    return args.target


def _model_args(p: argparse.ArgumentParser, layer: bool = True, unit: bool = False, several: bool = True) -> None:
    """MODEL, --input (``several``: named and repeated, with --kwarg and --grid) and, for unit-level
    commands, --layer and --unit."""
    _model_arg(p)
    if several:
        _input_args(p)
    else:
        p.add_argument("--input", action="append", metavar="SHAPE",
                       help="input shape without batch (default: the model's own, else 3x224x224)")
    if layer:
        p.add_argument("--layer", default="", help="row name (module path; default: the model's output)")
    if unit:
        p.add_argument("--unit", help="unit index per spatial axis, e.g. 10,12 (default: the centre)")


def _weights_arg(p: argparse.ArgumentParser, what: str = "the ERF and the shift check run with them") -> None:
    p.add_argument("--weights", metavar="FILE", help=f"trained weights: a state dict in .pt/.pth (loaded with "
                   f"weights_only=True) or .safetensors; {what}")


def _model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=DEFAULT_MODEL, help=f"{FORMS} (default: {DEFAULT_MODEL})")
    p.add_argument("--config", action="append", metavar="KEY=VALUE",
                   help="an hf: model's config value (hidden_size=192, depths=[1,1,3,1]); repeatable")


def _input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", metavar="[NAME=]SHAPE[:DTYPE]",
                   help="input shape without batch: 3x224x224, 8x4096, 1x16x64x64 (default: the model's own, else "
                   "3x224x224); repeat it for several inputs, named for keyword (pixel_values=3x224x224) or dict "
                   "inputs (batch[image]=3x64x64), with a dtype for integer ones (mask=1x224x224:int64)")
    p.add_argument("--kwarg", action="append", metavar="NAME=VALUE",
                   help="a constant argument of the forward (interpolate_pos_encoding=true, scale=0.5); repeatable")
    p.add_argument("--grid", metavar="NAME", help="the input whose pixels geometry is measured in (default: the "
                   "only floating (C, *spatial) one)")


def _count_arg(low: int, high: int = 2**31 - 1) -> Callable[[str], int]:
    """An argparse type: an integer from ``low`` to ``high`` (argparse reports anything else)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value
    return parse


def _depth_arg(text: str) -> int | None:
    """An argparse type: a module depth (0, 1, ...) or 'all' (None: every row)."""
    if text.strip().lower() == "all":
        return None
    try:
        return _count_arg(0, 10**6)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be 'all' or an integer from 0, got {text!r}") from None


def _columns_arg(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated table columns, each one of :data:`COLUMN_NAMES`."""
    names = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in names if c not in COLUMN_NAMES and c != "name"]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown column {', '.join(map(repr, unknown)) or repr(text)}: choose "
                                         f"from {', '.join(COLUMN_NAMES)}")
    return names


def _max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=_count_arg(1, 2**62), default=MAX_PIXELS,
                   help=f"refuse coverage maps of more input pixels (default {MAX_PIXELS:,})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convlens", description="Exact receptive fields, windows and cost "
                                     "of every unit of a PyTorch CNN.")
    parser.add_argument("--version", action="version", version=f"convlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="geometry and cost of every module call")
    _model_arg(a)
    _input_args(a)
    a.add_argument("--batch", type=_count_arg(1), default=1, help="batch size N (default 1)")
    a.add_argument("--format", choices=("table", "json", "csv"), default="table")
    a.add_argument("--depth", type=_depth_arg, default=DEFAULT_DEPTH,
                   help=f"table rows up to this module depth, or 'all' (default {DEFAULT_DEPTH}; JSON/CSV hold "
                   "every row)")
    a.add_argument("--columns", type=_columns_arg, default=DEFAULT_COLUMNS, metavar="A,B,...",
                   help=f"table columns after the name, from {', '.join(COLUMN_NAMES)} (default "
                   f"{','.join(DEFAULT_COLUMNS)}); a narrow terminal leaves some out, and says which")
    a.add_argument("-o", "--output", help="write to this file instead of stdout")
    a.add_argument("--html", metavar="FILE", help="also write a self-contained HTML report (table, plots, "
                   "coverage maps)")
    _weights_arg(a, "the HTML report then shows the output's ERF with them")
    a.set_defaults(run=_command("analyze"))

    c = sub.add_parser("coverage", help="path counts from every input pixel to one unit")
    _model_args(c, unit=True)
    c.add_argument("-o", "--output", help="out.png / .svg / .pdf (figure), .npy (input-sized map), .json "
                   "(default: JSON on stdout)")
    _max_pixels(c)
    c.set_defaults(run=_command("coverage"))

    e = sub.add_parser("erf", help="effective receptive field: mean |d unit / d input| over samples")
    _model_args(e, unit=True, several=False)
    _weights_arg(e)
    e.add_argument("--samples", type=int, default=16, help="random normal inputs to average (default 16)")
    e.add_argument("--batch-size", type=int, default=8, help="inputs per forward/backward (default 8)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("-o", "--output", help="out.png / .svg / .pdf (figure), .npy (the map), .json "
                   "(default: summary JSON on stdout)")
    e.set_defaults(run=_command("erf"))

    h = sub.add_parser("shift", help="shift equivariance, measured: which input shifts the output follows")
    _model_args(h, several=False)
    _weights_arg(h)
    h.add_argument("--shift", type=int, default=8, help="try shifts 1 .. SHIFT pixels per axis (default 8)")
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--format", choices=("text", "json"), default="text")
    h.set_defaults(run=_command("shift"))

    n = sub.add_parser("animate", help="animate one convolution's arithmetic (GIF) or draw it (PNG/SVG)")
    n.add_argument("--input", required=True, help="input size: 5 or 5x7")
    n.add_argument("--kernel", required=True, help="kernel size: 3 or 3x2")
    n.add_argument("--stride", default="1")
    n.add_argument("--padding", default="0")
    n.add_argument("--dilation", default="1")
    n.add_argument("--transposed", action="store_true", help="a transposed convolution (one frame per input)")
    n.add_argument("--output-padding", default="0")
    n.add_argument("--dims", type=int, choices=(1, 2), default=2, help="axes when every size is one number "
                   "(default 2: --input 5 is 5x5)")
    n.add_argument("--ms", type=int, help="milliseconds per frame of a GIF, 10 to 60000 (default 600)")
    n.add_argument("--max-frames", type=_count_arg(1),
                   help=f"refuse animations with more frames (default {MAX_FRAMES})")
    n.add_argument("--max-cells", type=_count_arg(1), default=MAX_CELLS,
                   help=f"refuse pictures with more grid cells, input and output (default {MAX_CELLS})")
    n.add_argument("-o", "--output", required=True, help="conv.gif (animation) or conv.png / .svg / .pdf (still)")
    n.set_defaults(run=_command("animate"))

    f = sub.add_parser("plot", help="one figure: rf against depth, coverage, ERF, checkerboard or cost")
    _model_args(f, unit=True)
    _weights_arg(f, "for --kind erf")
    f.add_argument("--kind", choices=("rf", "coverage", "erf", "checkerboard", "cost"), required=True)
    f.add_argument("--samples", type=int, help="ERF samples (--kind erf; default 16)")
    f.add_argument("-o", "--output", required=True, help="fig.png / fig.svg / fig.pdf")
    _max_pixels(f)
    f.set_defaults(run=_command("plot"))

    v = sub.add_parser("survey", help="many models in worker processes, one row each, resumable",
                       description="PATTERN: timm:GLOB, torchvision:GLOB (classification and segmentation), "
                       "zoo:GLOB, a file with one 'MODEL [CxHxW]' per line, or a MODEL. A rerun skips the models "
                       "the output already holds.")
    v.add_argument("patterns", nargs="+", metavar="PATTERN")
    v.add_argument("-o", "--output", required=True, help="out.csv, out.json or out.md (markdown, summary on top)")
    v.add_argument("--input", help="input shape without batch for every model (default: each model's own)")
    v.add_argument("--jobs", type=_count_arg(1, 1024), help="worker processes (default: the core count)")
    v.add_argument("--timeout", type=_count_arg(1, 10**6), default=int(TIMEOUT_S),
                   help=f"seconds per model (default {TIMEOUT_S:g})")
    v.add_argument("--memory", type=_count_arg(1, 2**20), metavar="GIB",
                   help="GiB per worker (default: 80 %% of the memory, shared by the jobs)")
    v.set_defaults(run=_command("survey"))

    z = sub.add_parser("zoo", help="the built-in models with their rf and cost (each name works as MODEL)")
    z.add_argument("names", nargs="*", help="only these (default: all)")
    z.add_argument("--format", choices=("table", "json"), default="table")
    z.set_defaults(run=_command("zoo"))

    p = sub.add_parser("plan", help="dilation schedules without holes that reach a receptive field")
    p.add_argument("--rf", type=int, required=True, help="target receptive field side, pixels")
    p.add_argument("--kernel", type=int, default=3, help="kernel side of every layer (default 3)")
    p.add_argument("--channels", type=int, default=64, help="maps per layer, for the parameter count (default 64)")
    p.add_argument("--max-layers", type=int, help="layer budget")
    p.add_argument("--max-params", type=int, help="parameter budget")
    p.add_argument("--map-size", type=int, help="side of the map the stack runs on: dilations stay below it")
    p.add_argument("--top", type=int, default=5, help="schedules to list (default 5)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    _max_pixels(p)
    p.set_defaults(run=_command("plan"))

    r = sub.add_parser("arith", help="convolution arithmetic along one axis", description=ARITH_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("what", choices=("conv", "transposed", "same", "padding", "output-padding", "unread"))
    r.add_argument("--input", "-i", type=int, required=True, help="input size along the axis")
    r.add_argument("--kernel", "-k", type=int, required=True)
    r.add_argument("--stride", "-s", type=int, default=1)
    r.add_argument("--padding", "-p", type=int, default=0)
    r.add_argument("--dilation", "-d", type=int, default=1)
    r.add_argument("--output-padding", type=int, default=0)
    r.add_argument("--ceil-mode", action="store_true")
    r.add_argument("--target", type=int, help="wanted output size (padding, output-padding)")
    r.set_defaults(run=_arith)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status (0, 1 for a bug in convlens, 2 for bad input, 130 for Ctrl-C).
    argparse's own errors and ``--help`` raise ``SystemExit`` as usual."""
    args = build_parser().parse_args(argv)
    with _sigint() as interrupted:
        try:
            args.run(args)
        except ConvlensError as e:
            return _fail(str(e), 2)
        except KeyboardInterrupt:
            if interrupted():
                return _fail("interrupted; the model and any earlier output file are as they were", 130,
                             prefix="convlens: ")
            return _fail("the model's code raised KeyboardInterrupt", 2)
        except SystemExit as e:  # argparse is done: only the user's code exits from here on
            return _fail(f"the model's code called sys.exit({e.code!r}); convlens needs a model that returns", 2)
        except MemoryError:
            return _fail("out of memory: use a smaller --input or --batch", 2)
        except Exception as e:  # noqa: BLE001 - a bug in convlens: one line, the traceback on request
            if os.environ.get("CONVLENS_TRACEBACK"):
                raise
            return _fail(f"internal error (a bug in convlens; please report the command): {type(e).__name__}: "
                         f"{first_line(e)} (CONVLENS_TRACEBACK=1 shows where)", 1)
    return 0


def _fail(message: str, status: int, prefix: str = "convlens: error: ") -> int:
    print(prefix + " ".join(message.split()), file=sys.stderr)
    return status


@contextlib.contextmanager
def _sigint() -> Iterator[Callable[[], bool]]:
    """While the command runs, Ctrl-C still raises ``KeyboardInterrupt`` but is also remembered, so
    that a ``KeyboardInterrupt`` raised by the user's code is told apart from the user's Ctrl-C."""
    got: list[int] = []

    def handler(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt
    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: signals cannot be caught here, so every one is real
        yield lambda: True
        return
    try:
        yield lambda: bool(got)
    finally:
        signal.signal(signal.SIGINT, old)
