"""Survey many models in one command: one row per model, measured in worker processes.

A PATTERN names models: ``timm:GLOB`` (over ``timm.list_models()``), ``torchvision:GLOB`` (over
torchvision's classification and segmentation models; any other torchvision model by its exact name),
``zoo:GLOB`` (convlens's zoo), a path to a text file with one ``MODEL [CxHxW]`` per line (``#`` starts
a comment), or any single MODEL the CLI takes. A pattern that matches nothing is an error before any
work starts.

Each model is built on the meta device (no weight memory) and analyzed at its default input
(:func:`convlens.loading.default_input`) in a worker process with a time and a memory limit; a model
that fails to build or to run, a worker that dies, runs out of time or over its memory: a row that
says so. The output file is rewritten (atomically) after every model, and a rerun skips the models it
already holds, so an interrupted survey resumes where it stopped. Rows come in the order of the
patterns, whatever order the workers finish in; rows the file holds for other models are kept after
them.

Columns (all formats; see :class:`SurveyRow`): the model, its input, status (``full``: a geometry in
every row, attention scores (pairs of query and key windows, :class:`~convlens.geometry.Paired`)
counted as known; ``partial``: some axes unknown, the ops named in ``unknown``; ``failed``, ``timeout``,
``memory``, ``died``), params, MACs, peak activation bytes (batch 1), per stage output (timm's
``feature_info`` where the model has one, else its top-level children) the stride, rf and offset per
spatial axis in input pixels, the analysis time and a bare meta forward's time in seconds, measured in
the worker (each the faster of two runs, the analysis where it is under :data:`RETIME_BELOW`), and the
backend (``meta``, or ``cpu`` when the model needed a real run).
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import io
import json
import multiprocessing
import multiprocessing.connection
import os
import statistics
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .api import analyze
from .defaults import TIMEOUT_S
from .errors import ConvlensError, NeedsRealWeights, first_line
from .geometry import Global, Paired, Unknown
from .loading import build_model, default_input, model_factory, parse_shape
from .modelstate import evaluated
from .render.files import write_text
from .report import Report
from .zoo import BUILTIN, ZOO

STATUSES = ("full", "partial", "failed", "timeout", "memory", "died")
RECYCLE_TASKS = 50  # a worker is replaced after this many models (fragmented memory, caches)
COLUMNS = ("model", "input", "status", "params", "macs", "peak_activation_bytes", "stages", "unknown",
           "analysis_s", "forward_s", "backend", "error")
TIMING = ("analysis_s", "forward_s")


@dataclass(frozen=True)
class Stage:
    """One stage output: per spatial axis its stride, rf and offset as text (``"16"``, ``"1/2"``,
    ``"global"``; ``"?"`` where unknown). As text: ``name:stride:rf:offset``, one value where every
    axis has the same, else the values per axis joined by ``x``."""

    name: str
    stride: tuple[str, ...]
    rf: tuple[str, ...]
    offset: tuple[str, ...]

    def text(self) -> str:
        return f"{self.name}:{_axes(self.stride)}:{_axes(self.rf)}:{_axes(self.offset)}"

    @classmethod
    def parse(cls, text: str, k: int) -> "Stage":
        """The stage :meth:`text` wrote, for ``k`` spatial axes."""
        name, *fields = text.rsplit(":", 3)
        values = [tuple(f.split("x")) for f in fields]
        if len(fields) != 3 or any(len(v) not in (1, k) for v in values):
            raise ValueError(f"bad stage {text!r}")
        return cls(name, *(v * k if len(v) == 1 else v for v in values))


def _axes(values: Sequence[str]) -> str:
    return values[0] if len(set(values)) == 1 else "x".join(values)


@dataclass
class SurveyRow:
    """One model's measurements; ``error`` is one line where the status is not full or partial."""

    model: str
    input: str
    status: str
    params: int | None = None
    macs: int | None = None
    peak_activation_bytes: int | None = None
    stages: list[Stage] = field(default_factory=list)
    unknown: dict[str, int] = field(default_factory=dict)  # "op (why)" -> calls
    analysis_s: float | None = None
    forward_s: float | None = None
    backend: str = ""
    error: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.input)

    def cells(self) -> dict[str, str]:
        """The row as text cells (CSV and markdown), lossless: :meth:`from_cells` reads them back."""
        def num(x: Any) -> str:
            return "" if x is None else str(x)
        return {"model": self.model, "input": self.input, "status": self.status, "params": num(self.params),
                "macs": num(self.macs), "peak_activation_bytes": num(self.peak_activation_bytes),
                "stages": " ".join(s.text() for s in self.stages),
                "unknown": " ; ".join(f"{op} x{n}" for op, n in self.unknown.items()),
                "analysis_s": "" if self.analysis_s is None else f"{self.analysis_s:.4f}",
                "forward_s": "" if self.forward_s is None else f"{self.forward_s:.4f}",
                "backend": self.backend, "error": self.error}

    @classmethod
    def from_cells(cls, cells: dict[str, str]) -> "SurveyRow":
        def num(x: str, kind: Callable) -> Any:
            return None if x in ("", None) else kind(x)
        unknown = {}
        for item in filter(None, (cells.get("unknown") or "").split(" ; ")):
            op, _, n = item.rpartition(" x")
            unknown[op] = int(n)
        return cls(cells["model"], cells["input"], cells["status"], num(cells["params"], int), num(cells["macs"], int),
                   num(cells["peak_activation_bytes"], int),
                   [Stage.parse(t, cells["input"].count("x")) for t in (cells.get("stages") or "").split()], unknown,
                   num(cells.get("analysis_s"), float), num(cells.get("forward_s"), float), cells.get("backend") or "",
                   cells.get("error") or "")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = [asdict(s) for s in self.stages]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SurveyRow":
        d = dict(d)
        d["stages"] = [Stage(s["name"], tuple(s["stride"]), tuple(s["rf"]), tuple(s["offset"])) for s in d["stages"]]
        return cls(**d)

    def comparable(self) -> dict[str, Any]:
        """Everything but the timings (what a regenerated table must reproduce exactly)."""
        return {k: v for k, v in self.to_dict().items() if k not in TIMING}


# ---------------------------------------------------------------------------------------------- patterns
@dataclass(frozen=True)
class Task:
    model: str
    shape: tuple[int, ...]  # (C, *spatial), no batch

    @property
    def input(self) -> str:
        return "x".join(map(str, self.shape))


def _torchvision_names(everything: bool) -> list[str]:
    try:
        import torchvision.models as tvm
    except ImportError:
        raise ConvlensError("torchvision: patterns need torchvision: pip install 'convlens[vision]'") from None
    if everything:
        return sorted(tvm.list_models())
    return sorted(set(tvm.list_models(module=tvm)) | set(tvm.list_models(module=tvm.segmentation)))


def _timm_names() -> list[str]:
    try:
        import timm
    except ImportError:
        raise ConvlensError("timm: patterns need timm: pip install timm") from None
    return timm.list_models()


SOURCES: dict[str, Callable[[bool], list[str]]] = {
    "timm": lambda everything: _timm_names(),
    "torchvision": _torchvision_names,
    "zoo": lambda everything: list(ZOO),
}


def expand(patterns: Sequence[str], shape: tuple[int, ...] | None = None) -> list[Task]:
    """The models the patterns name, in order, each once (see the module doc)."""
    if not patterns:
        raise ConvlensError("give at least one PATTERN (timm:GLOB, torchvision:GLOB, zoo:GLOB, a file or a MODEL)")
    tasks: dict[str, Task] = {}
    for pattern in patterns:
        found = _expand_one(pattern)
        if not found:
            raise ConvlensError(f"pattern {pattern!r} matches no model")
        for name, own in found:
            if name not in tasks:
                tasks[name] = Task(name, own or shape or default_input(name))
    return list(tasks.values())


def _expand_one(pattern: str) -> list[tuple[str, tuple[int, ...] | None]]:
    """(MODEL, its input where a list file gives one) for each model one pattern names."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConvlensError(f"bad pattern {pattern!r}: give timm:GLOB, torchvision:GLOB, zoo:GLOB, a file or a MODEL")
    prefix, sep, rest = pattern.partition(":")
    if sep and prefix in SOURCES:
        glob = any(c in rest for c in "*?[")
        names = SOURCES[prefix](not glob)
        matched = fnmatch.filter(names, rest) if glob else [rest] if rest in names else []
        return [(name if prefix == "zoo" else f"{prefix}:{name}", None) for name in matched]
    path = Path(pattern)
    if not sep and _is_file(path):
        return _read_list(path)
    if not sep and ("/" in pattern or pattern.endswith((".txt", ".lst"))):
        raise ConvlensError(f"no file {pattern!r} (a PATTERN is timm:GLOB, torchvision:GLOB, zoo:GLOB, a file or a "
                            "MODEL)")
    if not sep:
        return [(pattern, None)] if pattern in BUILTIN else []
    return [(pattern, None)]  # path.py:CALLABLE or module:CALLABLE: what is wrong with it is its row's error


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL
        return False


def _read_list(path: Path) -> list[tuple[str, tuple[int, ...] | None]]:
    tasks = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConvlensError(f"cannot read {str(path)!r}: {first_line(e)}") from None
    for number, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2:
            raise ConvlensError(f"{path}:{number}: write one MODEL and optionally its input (3x224x224) per line")
        tasks.append((words[0], parse_shape(words[1]) if len(words) == 2 else None))
    return tasks


# ---------------------------------------------------------------------------------------------- one model
def _stage_names(model: torch.nn.Module) -> list[str]:
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(i, dict) and "module" in i for i in info):
        return [i["module"] for i in info]
    return [name for name, _ in model.named_children()]


def _text(x: Any, state: Any) -> str:
    if isinstance(state, Global):
        return "global"
    if x is None:
        return "?"
    if isinstance(x, Fraction):
        return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"
    return str(x)


def _stages(report: Report, names: list[str]) -> list[Stage]:
    stages = []
    for name in names:
        row = next((r for r in report if r.name == name or r.name.startswith(f"{name}[")), None)  # a tuple or dict
        # output: its first tensor
        if row is None or not row.axes:
            continue
        stages.append(Stage(name, tuple(_text(s, a) for s, a in zip(row.stride, row.axes)),
                            tuple(_text(r if isinstance(r, int) else None, a) for r, a in zip(row.rf, row.axes)),
                            tuple(_text(o, a) for o, a in zip(row.offset, row.axes))))
    return stages


RETIME_BELOW = 1.0
"""Seconds: an analysis faster than this is timed a second time and the faster run kept, as the bare
forward always is (one-shot times of a few milliseconds are mostly the machine's noise)."""


def _forward_time(model: torch.nn.Module, shape: tuple[int, ...]) -> float | None:
    """Seconds of a bare forward where the weights live (meta for a meta-built model): the faster of
    two, after one untimed forward; None where the forward fails."""
    device = next((p.device for p in model.parameters()), torch.device("meta"))
    x = torch.empty(shape, device=device)
    try:
        with evaluated(model), torch.no_grad():
            model(x)
            times = []
            for _ in range(2):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            return round(min(times), 4)
    except Exception:  # noqa: BLE001 - the analysis reports what is wrong with the forward
        return None


def _analysis_time(model: torch.nn.Module, shape: tuple[int, ...], name: str) -> tuple[Report, float]:
    """The report and its analysis's seconds (the faster of two below :data:`RETIME_BELOW`)."""
    start = time.perf_counter()
    report = analyze(model, shape, name=name)
    seconds = time.perf_counter() - start
    if seconds < RETIME_BELOW:
        start = time.perf_counter()
        analyze(model, shape, name=name)
        seconds = min(seconds, time.perf_counter() - start)
    return report, seconds


def measure(task: Task) -> SurveyRow:
    """Build and analyze one model (in the calling process; :func:`survey` runs it in workers)."""
    try:
        factory = model_factory(task.model)
        model = build_model(factory, on_meta=True)
        full_shape = (1, *task.shape)
        forward_s = _forward_time(model, full_shape)
        try:
            report, seconds = _analysis_time(model, full_shape, task.model)
        except NeedsRealWeights:
            model = build_model(factory, on_meta=False)
            forward_s = _forward_time(model, full_shape)
            report, seconds = _analysis_time(model, full_shape, task.model)
        analysis_s = round(seconds, 4)  # what every format keeps (0.1 ms, as the forward)
    except ConvlensError as e:
        return SurveyRow(task.model, task.input, "failed", error=first_line(e))
    except Exception as e:  # noqa: BLE001 - a bug in convlens on someone's model: the row says so
        return SurveyRow(task.model, task.input, "failed",
                         error=f"convlens internal error: {type(e).__name__}: {first_line(e)}")
    # (attention scores are known: pairs of windows, not one, and their rows say so)
    partial = report.stopped is not None or any(isinstance(s, Unknown) and not isinstance(s, Paired)
                                                for row in report for s in row.axes)
    return SurveyRow(task.model, task.input, "partial" if partial else "full", report.totals.params, report.totals.macs,
                     report.totals.peak_activation_bytes, _stages(report, _stage_names(model)),
                     dict(report.unsupported_ops), analysis_s, forward_s, report.backend)


# ---------------------------------------------------------------------------------------------- workers
def _orphan_watch(parent: int) -> None:
    """Exit at once when the parent is gone (killed without a word: a worker on a hanging model would
    otherwise run on forever)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def serve(fd: int) -> None:
    """A worker's main: measure the tasks the parent sends over the connection at file descriptor
    ``fd`` until it sends None."""
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    conn = multiprocessing.connection.Connection(fd)
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    with contextlib.suppress(ImportError):
        import timm  # noqa: F401 - imported before the first task's clock starts
    _warm_up()
    conn.send("ready")
    while True:
        task = conn.recv()
        if task is None:
            return
        conn.send(measure(task))


def _warm_up() -> None:
    """One analysis of a small net before the first task's clock starts. A process's first analysis
    pays once for what no model's analysis should: lazy imports inside torch's dispatch modes, op
    schemas decoded and cached (about 40 ms here: nearly half of lambda_resnet26t's analysis, more than
    twice a VGG's)."""
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Upsample(scale_factor=2.0, mode="bilinear"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    analyze(net, (1, 3, 16, 16))


def _rss(pid: int) -> int:
    """Resident bytes of a process (Linux /proc; 0 where it cannot be read)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class _Process:
    """A worker process: a fresh interpreter running :func:`serve`, so that it never imports the
    caller's ``__main__`` (as multiprocessing's spawn would) and shares no state with it."""

    def __init__(self, fd: int):
        package_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self.popen = subprocess.Popen(
            [sys.executable, "-c", "import sys; from convlens.survey import serve; serve(int(sys.argv[1]))", str(fd)],
            pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        self.pid = self.popen.pid

    @property
    def exitcode(self) -> int | None:
        return self.popen.poll()

    def is_alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.kill()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)


class _Worker:
    def __init__(self):
        self.conn, child = multiprocessing.Pipe()
        try:
            self.process = _Process(child.fileno())
        except OSError as e:
            self.conn.close()
            raise ConvlensError(f"a survey worker could not start: {first_line(e)}") from None
        finally:
            child.close()
        self.task: Task | None = None
        self.ready = False
        self.baseline = 0  # resident bytes once ready (torch and timm imported)
        self.started = 0.0
        self.done = 0

    def give(self, task: Task) -> None:
        self.task, self.started = task, time.monotonic()
        self.conn.send(task)

    def stop(self, kill: bool = False) -> None:
        if kill or self.task is not None:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                self.process.kill()
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def default_memory() -> int:
    """80 % of the machine's memory in bytes (8 GiB if unknown); :func:`survey` shares it among the jobs."""
    try:
        return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def run_tasks(tasks: Sequence[Task], jobs: int, timeout: float, memory: int,
              on_row: Callable[[SurveyRow], None]) -> None:
    """Measure every task in ``jobs`` worker processes; ``on_row`` gets each row as it finishes."""
    pending = list(tasks)[::-1]
    workers: list[_Worker] = []
    try:
        while pending or any(w.task is not None for w in workers):
            busy = sum(w.task is not None for w in workers)
            while len(workers) < min(jobs, busy + len(pending)):
                workers.append(_Worker())
            for w in workers:
                if w.ready and w.task is None and pending:
                    w.give(pending.pop())
            watched = [w for w in workers if w.task is not None or not w.ready]
            ready = multiprocessing.connection.wait([w.conn for w in watched], timeout=0.25)
            for w in watched:
                if not w.ready:
                    _starting(w, w.conn in ready)
                    continue
                row = None
                if w.conn in ready:
                    try:
                        row = w.conn.recv()
                    except (EOFError, OSError):
                        row = _lost(w, "died", "the worker died (exit status {code})")
                elif time.monotonic() - w.started > timeout:
                    row = _lost(w, "timeout", f"no result within {timeout:g} s")
                elif _rss(w.process.pid) > memory:
                    row = _lost(w, "memory", f"the worker held more than {memory / 2**30:.1f} GiB")
                elif not w.process.is_alive():
                    row = _lost(w, "died", "the worker died (exit status {code})")
                if row is None:
                    continue
                w.task = None
                w.done += 1
                grown = _rss(w.process.pid) - w.baseline > (memory - w.baseline) // 2
                if not w.process.is_alive() or w.done >= RECYCLE_TASKS or grown:
                    w.stop(kill=not w.process.is_alive())
                    workers.remove(w)
                on_row(row)
    finally:
        for w in workers:
            w.stop(kill=True)


def _starting(w: _Worker, answered: bool) -> None:
    """A starting worker says it is ready; one that dies first means workers cannot start here."""
    try:
        if answered and w.conn.recv() == "ready":
            w.ready, w.baseline = True, _rss(w.process.pid)
            return
    except (EOFError, OSError):
        pass
    if answered or not w.process.is_alive():
        raise ConvlensError(f"a survey worker could not start (exit status {w.process.exitcode})")


def _lost(w: _Worker, status: str, why: str) -> SurveyRow:
    if status != "died":
        w.process.kill()
    w.process.join(5)
    if w.process.is_alive():
        w.process.kill()
        w.process.join()
    return SurveyRow(w.task.model, w.task.input, status, error=why.format(code=w.process.exitcode))


# ---------------------------------------------------------------------------------------------- files
FORMATS = (".csv", ".json", ".md")


def _format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConvlensError(f"survey output {str(path)!r}: the suffix must be one of {', '.join(FORMATS)}")
    return suffix


def render(rows: Sequence[SurveyRow], fmt: str) -> str:
    """The rows as CSV, JSON or markdown (with the summary on top)."""
    if fmt == ".json":
        return json.dumps({"summary": summary(rows), "models": [r.to_dict() for r in rows]}, indent=1) + "\n"
    if fmt == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow(r.cells())
        return buf.getvalue()
    lines = [summary_markdown(rows), "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_md_cell(r.cells()[c]) for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_split(line: str) -> list[str]:
    cells, cur, i = [], "", 1
    body = line.strip()
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            cur += body[i + 1]
            i += 2
            continue
        if c == "|":
            cells.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    return cells


def read_rows(path: str | os.PathLike) -> list[SurveyRow]:
    """The rows an earlier survey wrote to ``path`` (none if there is no file)."""
    fmt = _format(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise ConvlensError(f"cannot read {str(path)!r}: {first_line(e)}") from None
    try:
        if fmt == ".json":
            return [SurveyRow.from_dict(d) for d in json.loads(text)["models"]]
        if fmt == ".csv":
            return [SurveyRow.from_cells(c) for c in csv.DictReader(io.StringIO(text))]
        header = "| " + " | ".join(COLUMNS) + " |"
        lines = text.splitlines()
        start = lines.index(header) + 2
        return [SurveyRow.from_cells(dict(zip(COLUMNS, _md_split(line)))) for line in lines[start:]
                if line.startswith("|")]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ConvlensError(f"{str(path)!r} is not a convlens survey ({type(e).__name__}: {first_line(e)}); "
                            "choose another output file") from None


# ---------------------------------------------------------------------------------------------- summary
def _ratios(rows: Sequence[SurveyRow]) -> list[tuple[float, str]]:
    return sorted(((r.analysis_s / r.forward_s, r.model) for r in rows
                   if r.analysis_s is not None and r.forward_s and r.backend == "meta"), reverse=True)


def summary(rows: Sequence[SurveyRow]) -> dict[str, Any]:
    """Counts by status, the unknown ops ranked by how many models they touch, and analysis time over
    a bare meta forward (median, 99th percentile, the worst five)."""
    touched: dict[str, int] = {}
    for r in rows:
        for op in r.unknown:
            touched[op] = touched.get(op, 0) + 1
    ratios = _ratios(rows)
    values = sorted(x for x, _ in ratios)
    return {
        "models": len(rows),
        "status": {s: sum(r.status == s for r in rows) for s in STATUSES},
        "unknown_ops": dict(sorted(touched.items(), key=lambda kv: (-kv[1], kv[0]))),
        "analysis_over_forward": None if not values else {
            "median": statistics.median(values), "p99": values[min(len(values) - 1, int(0.99 * len(values)))],
            "worst": [{"model": m, "ratio": x} for x, m in ratios[:5]]},
    }


def summary_line(rows: Sequence[SurveyRow]) -> str:
    """'N models: full a, partial b, failed c'."""
    s = summary(rows)
    return f"{s['models']} models: " + ", ".join(f"{k} {v}" for k, v in s["status"].items() if v)


def summary_markdown(rows: Sequence[SurveyRow]) -> str:
    s = summary(rows)
    n = s["models"]
    lines = [summary_line(rows) + (f" ({100 * s['status']['full'] / n:.0f} % with a geometry in every row)" if n else "")]
    if s["analysis_over_forward"]:
        a = s["analysis_over_forward"]
        lines.append("")
        lines.append(f"Analysis time over a bare meta forward: median {a['median']:.1f}x, 99th percentile "
                     f"{a['p99']:.1f}x; worst: " + ", ".join(f"{w['model']} {w['ratio']:.1f}x" for w in a["worst"]))
    if s["unknown_ops"]:
        lines += ["", "| what convlens declines | models |", "|---|--:|"]
        lines += [f"| {_md_cell(op)} | {count} |" for op, count in s["unknown_ops"].items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- driver
def survey(patterns: Sequence[str], output: str | os.PathLike | None = None, *, shape: Sequence[int] | None = None,
           jobs: int | None = None, timeout: float = TIMEOUT_S, memory: int | None = None,
           progress: bool = False) -> list[SurveyRow]:
    """Measure every model the patterns name (see the module doc) and return the rows in pattern
    order. With ``output``, the rows already there are kept and not measured again, and the file is
    rewritten (atomically) as rows come in. ``jobs``: worker processes (default: the core count);
    ``timeout``: seconds per model; ``memory``: bytes per worker (default :func:`default_memory`
    shared by the jobs); ``shape``: (C, *spatial) for every model instead of its default input."""
    jobs = jobs or os.cpu_count() or 1
    if jobs < 1 or timeout <= 0:
        raise ConvlensError("jobs and timeout must be positive")
    memory = memory or default_memory() // jobs
    fmt = _format(output) if output is not None else None
    tasks = expand(patterns, tuple(shape) if shape is not None else None)
    done = {r.model: r for r in read_rows(output)} if output is not None else {}
    todo = [t for t in tasks if t.model not in done]
    order = {t.model: i for i, t in enumerate(tasks)}
    got: dict[str, SurveyRow] = dict(done)

    def ordered() -> list[SurveyRow]:
        ranked = sorted((r for m, r in got.items() if m in order), key=lambda r: order[r.model])
        return ranked + [r for m, r in got.items() if m not in order]

    def flush() -> None:  # after every row: an interruption loses only the models in flight
        if output is not None:
            write_text(output, render(ordered(), fmt))

    bar = _Progress(len(todo)) if progress and todo else None

    def on_row(row: SurveyRow) -> None:
        got[row.model] = row
        if bar is not None:
            bar.advance(row)
        flush()

    try:
        run_tasks(todo, jobs, timeout, memory, on_row)
    finally:
        if bar is not None:
            bar.close()
        flush()
    return [r for r in ordered() if r.model in order]


class _Progress:
    """A rich progress bar on stderr (only where stderr is a terminal)."""

    def __init__(self, total: int):
        console = Console(stderr=True)
        self.progress = Progress(TextColumn("survey"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                 TextColumn("{task.description}"), console=console, disable=not console.is_terminal)
        self.task = self.progress.add_task("", total=total)
        self.progress.start()

    def advance(self, row: SurveyRow) -> None:
        self.progress.update(self.task, advance=1, description=f"{row.model}: {row.status}")

    def close(self) -> None:
        self.progress.stop()

