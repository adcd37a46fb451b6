"""The subcommands that analyze, draw or measure a model (they import torch): each ``_NAME(args)``
runs ``convlens NAME`` on the parsed arguments of :func:`convlens.cli.build_parser`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from ..coverage import check_pixels
from ..defaults import MAX_FRAMES
from ..effective_rf import erf
from ..errors import ConvlensError
from ..inputs import Inputs
from ..loading import analyze_spec, build_model, default_input, model_factory, parse_inputs, parse_shape
from ..plan import plan
from ..render import figures, render_plan, render_table, render_zoo
from ..render.animate import ConvSpec, animate, still
from ..render.files import atomic_output, check_destination, write_text
from ..report import Report
from ..shift import shift_check
from ..survey import summary_line, survey
from ..weights import load_weights
from ..zoo import ZOO, analyze_zoo


def _inputs(args: argparse.Namespace) -> tuple[int, ...] | Inputs:
    """The model's call from --input, --kwarg and --batch (:func:`convlens.loading.parse_inputs`; default:
    the model's own input, else 3x224x224)."""
    return parse_inputs(args.input, getattr(args, "kwarg", None), getattr(args, "batch", 1),
                        lambda: default_input(args.model, getattr(args, "config", None)))


def _factory(args: argparse.Namespace):
    """The builder of MODEL, with --config applied (hf: models)."""
    return model_factory(args.model, getattr(args, "config", None))


def _real_model(args: argparse.Namespace):
    """MODEL built with real weights (the ERF and the shift check run it), --weights loaded into it."""
    model = build_model(_factory(args), on_meta=False)
    if getattr(args, "weights", None):
        load_weights(model, args.weights)
    return model


def _shape(args: argparse.Namespace) -> tuple[int, ...]:
    """(N, C, *spatial) for the commands that run the model for real on one input (erf, shift)."""
    inputs = _inputs(args)
    if isinstance(inputs, Inputs) or getattr(args, "grid", None):
        what = "plot --kind erf" if args.command == "plot" else args.command
        raise ConvlensError(f"{what} takes one input shape (--input CxHxW, given once); named or several inputs "
                            "and --kwarg work with analyze, coverage and plot --kind rf, cost, coverage, checkerboard")
    return inputs


def _grid_pixels(args: argparse.Namespace) -> int | None:
    """Pixels of the grid input when known before the analysis (one plain shape), else None."""
    inputs = _inputs(args)
    return None if isinstance(inputs, Inputs) else _pixels(inputs)


def _report(args: argparse.Namespace) -> Report:
    return analyze_spec(_factory(args), _inputs(args), name=args.model, grid=getattr(args, "grid", None))


def _analyze(args: argparse.Namespace) -> None:
    check_destination(args.output, "-o")
    check_destination(args.html, "--html")
    if args.weights and not args.html:
        raise ConvlensError("--weights applies to analyze with --html (the report's ERF), and to erf, shift and plot")
    report = _report(args)
    if args.html:
        trained = erf(_real_model(args), _shape(args)) if args.weights else None
        report.save_html(args.html, erf=trained)
    if args.format == "table":
        if args.output:
            with atomic_output(args.output) as tmp, open(tmp, "w", encoding="utf-8") as f:
                render_table(report, depth=args.depth, console=Console(file=f, width=160), columns=args.columns)
        else:
            render_table(report, depth=args.depth, columns=args.columns)
        return
    text = report.to_json() if args.format == "json" else report.to_csv()
    if args.output:
        write_text(args.output, text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


COVERAGE_SUFFIXES = (".png", ".svg", ".pdf", ".npy", ".json")


def _coverage(args: argparse.Namespace) -> None:
    suffix = Path(args.output).suffix.lower() if args.output else ".json"
    if suffix not in COVERAGE_SUFFIXES:
        raise ConvlensError(f"-o must end in one of {', '.join(COVERAGE_SUFFIXES)}, got {args.output!r}")
    check_destination(args.output, "-o")
    if suffix in (".npy", ".png", ".svg", ".pdf"):  # these hold the input-sized map
        _check_map_pixels(args, f"an input-sized map ({suffix})")
    report = _report(args)
    if suffix in (".npy", ".png", ".svg", ".pdf"):
        check_pixels(_pixels(report.input_shape), f"an input-sized map ({suffix})", args.max_pixels)
    unit = None if args.unit is None else _parse_unit(args.unit)
    cov = report.coverage(args.layer, unit, max_pixels=args.max_pixels)
    summary = (f"{args.layer or 'output'} unit {cov.unit}: window {cov.window}, {cov.covered} of {cov.pixels} pixels "
               f"covered, holes per axis {cov.holes}")
    if not args.output:
        sys.stdout.write(json.dumps(cov.to_dict(), indent=2) + "\n")
        return
    if suffix == ".npy":
        _save_npy(args.output, cov.map)
    elif suffix == ".json":
        write_text(args.output, json.dumps(cov.to_dict(), indent=2) + "\n")
    else:
        figures.save_coverage_figure(cov, args.output)
    print(summary)
    for note in cov.notes:
        print(f"note: {note}")


def _erf(args: argparse.Namespace) -> None:
    suffix = Path(args.output).suffix.lower() if args.output else ".json"
    if suffix not in COVERAGE_SUFFIXES:
        raise ConvlensError(f"-o must end in one of {', '.join(COVERAGE_SUFFIXES)}, got {args.output!r}")
    check_destination(args.output, "-o")
    shape = _shape(args)
    model = _real_model(args)  # the ERF needs real weights (as built, or --weights)
    unit = None if args.unit is None else _parse_unit(args.unit)
    result = erf(model, shape, layer=args.layer, unit=unit, samples=args.samples, batch_size=args.batch_size,
                 seed=args.seed)
    text = json.dumps(result.to_dict(include_map=suffix == ".json" and bool(args.output)), indent=2) + "\n"
    if not args.output:
        sys.stdout.write(text)
        return
    if suffix == ".npy":
        _save_npy(args.output, result.map)
    elif suffix == ".json":
        write_text(args.output, text)
    else:
        figures.save_erf_figure(result, args.output)
    print(f"{args.layer or 'output'} unit {result.unit}: ERF std per axis "
          f"{', '.join(f'{s:.2f}' for s in result.std)} px, 99 % of the mass within radius "
          f"{', '.join(map(str, result.radius[0.99]))}, rf {'x'.join(map(str, result.rf))}")


def _shift(args: argparse.Namespace) -> None:
    result = shift_check(_real_model(args), _shape(args), args.shift,
                         layer=args.layer, seed=args.seed)
    if args.format == "json":
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    for axis in result.axes:
        errors = ", ".join(f"{t}: {e:.1e}" for t, e in axis.errors.items())
        verdict = "every shift" if axis.equivariant else (
            f"multiples of {axis.smallest} px" if axis.smallest else f"no shift up to {max(axis.errors)} px")
        print(f"axis {axis.axis}: stride {axis.stride}, follows {verdict}; relative error per shift {errors}")


def _animate(args: argparse.Namespace) -> None:
    def sizes(text: str, name: str):
        try:
            return tuple(int(x) for x in str(text).lower().replace("×", "x").split("x"))
        except ValueError:
            raise ConvlensError(f"--{name} must be integers like 5 or 5x7, got {text!r}") from None
    spec = ConvSpec.make(sizes(args.input, "input"), sizes(args.kernel, "kernel"), sizes(args.stride, "stride"),
                         sizes(args.padding, "padding"), sizes(args.dilation, "dilation"), args.transposed,
                         sizes(args.output_padding, "output-padding"), dims=args.dims)
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".gif", ".png", ".svg", ".pdf"):
        raise ConvlensError(f"-o must end in .gif (animation) or .png/.svg/.pdf (still), got {args.output!r}")
    check_destination(args.output, "-o")
    _only_for(args, "-o", "a still" if suffix != ".gif" else "a .gif",
              {"--ms": ("a .gif",), "--max-frames": ("a .gif",)})
    if suffix == ".gif":
        found = animate(spec, args.output, 600 if args.ms is None else args.ms,
                        max_frames=MAX_FRAMES if args.max_frames is None else args.max_frames,
                        max_cells=args.max_cells)
        print(f"{len(found)} frames, output {'x'.join(map(str, spec.output))}")
    else:
        still(spec, args.output, max_cells=args.max_cells)
        print(f"output {'x'.join(map(str, spec.output))}")


def _plot(args: argparse.Namespace) -> None:
    if Path(args.output).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConvlensError(f"-o must end in .png, .svg or .pdf, got {args.output!r}")
    check_destination(args.output, "-o")
    _only_for(args, "--kind", args.kind, {"--layer": ("coverage", "erf", "checkerboard"),
                                         "--unit": ("coverage", "erf"), "--samples": ("erf",), "--weights": ("erf",)})
    if args.kind in ("coverage", "erf"):
        _check_map_pixels(args, f"the {args.kind} figure's input-sized map")
    unit = None if args.unit is None else _parse_unit(args.unit)
    if args.kind == "erf":
        result = erf(_real_model(args), _shape(args), layer=args.layer,
                     unit=unit, samples=16 if args.samples is None else args.samples)
        figures.save_erf_figure(result, args.output)
        return
    report = _report(args)
    if args.kind == "rf":
        figures.save_figure(figures.rf_figure(report), args.output)
    elif args.kind == "cost":
        figures.save_figure(figures.cost_figure(report), args.output)
    elif args.kind == "coverage":
        check_pixels(_pixels(report.input_shape), f"the {args.kind} figure's input-sized map", args.max_pixels)
        figures.save_coverage_figure(report.coverage(args.layer, unit, max_pixels=args.max_pixels), args.output)
    else:
        figures.save_figure(figures.checkerboard_figure(report.checkerboard(args.layer)), args.output)


def _only_for(args: argparse.Namespace, option: str, choice: str, applies: dict[str, tuple[str, ...]]) -> None:
    """Refuse an option given where it would be ignored (``applies``: option -> the choices it is for)."""
    for name, choices in applies.items():
        given = getattr(args, name.lstrip("-").replace("-", "_"))
        if given not in (None, "") and choice not in choices:
            raise ConvlensError(f"{name} applies to {option} {', '.join(choices)} only, not {choice}")


def _check_map_pixels(args: argparse.Namespace, what: str) -> None:
    """Refuse an input-sized map that is too large before the analysis, where the grid is known."""
    pixels = _grid_pixels(args)
    if pixels is not None:
        check_pixels(pixels, what, args.max_pixels)


def _pixels(shape: tuple[int, ...]) -> int:
    """Spatial pixels of an (N, C, *spatial) shape."""
    n = 1
    for s in shape[2:]:
        n *= s
    return n


def _save_npy(path: str, array: np.ndarray) -> None:
    with atomic_output(path) as tmp:
        np.save(tmp, array)


def _parse_unit(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.replace("x", ",").split(","))
    except ValueError:
        raise ConvlensError(f"--unit must be integers separated by commas (one per spatial axis), got {text!r}") \
            from None


def _survey(args: argparse.Namespace) -> None:
    check_destination(args.output, "-o")
    shape = parse_shape(args.input) if args.input is not None else None
    rows = survey(args.patterns, args.output, shape=shape, jobs=args.jobs, timeout=args.timeout,
                  memory=args.memory << 30 if args.memory else None, progress=True)
    sys.stderr.write(f"{summary_line(rows)}; written to {args.output}\n")


def _zoo(args: argparse.Namespace) -> None:
    reports = analyze_zoo(args.names or None)
    if args.format == "table":
        render_zoo(reports, {name: ZOO[name].summary for name in reports})
        return
    rows = [{"name": name, "summary": ZOO[name].summary, "source": ZOO[name].source,
             "input_shape": list(ZOO[name].input_shape), "output_shape": list(r.output.output_shape[1:]),
             "rf": r.output.to_dict()["rf"], "stride": r.output.to_dict()["stride"], "params": r.totals.params,
             "source_params": ZOO[name].params, "macs": r.totals.macs} for name, r in reports.items()]
    print(json.dumps(rows, indent=2))


def _plan(args: argparse.Namespace) -> None:
    result = plan(args.rf, args.kernel, channels=args.channels, max_layers=args.max_layers,
                  max_params=args.max_params, map_size=args.map_size, top=args.top, max_pixels=args.max_pixels)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        render_plan(result)
