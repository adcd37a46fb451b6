"""Careless input: no traceback, no runaway job, no silent nonsense (the CLI and the API).

The fuzz part generates invocations of every subcommand (malformed values for every option,
unwritable outputs, hostile names, models that raise or exit) and runs them in process through
``convlens.cli.main(argv)``: for each, no traceback, the exit status, and what stderr says. Where a
process is the point (Ctrl-C, ``sys.exit``, deep recursion), a subprocess runs the CLI.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import convlens
from convlens.cli import main

MODELS = textwrap.dedent('''
    import sys, time
    import torch
    import torch.nn as nn

    def tiny():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2))

    HOSTILE = ["[bold]x[/bold]", "[/]", ":thumbs_up:", "$\\\\foo{$", "<script>alert(1)</script>", "=1+2",
               "@SUM(A1)", "+cmd", "a" * 300]

    class Hostile(nn.Module):
        def __init__(self):
            super().__init__()
            for name in HOSTILE:
                self.add_module(name, nn.Conv2d(3, 3, 3, padding=1))

        def forward(self, x):
            for m in self.children():
                x = m(x)
            return x

    def hostile():
        return Hostile()

    Bracketed = type("Net[/]x", (nn.Sequential,), {})

    def bracketed():
        return Bracketed(nn.Conv2d(3, 3, 3))

    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            raise ValueError("my own failure")

    def raises():
        return Raises()

    class Exits(nn.Module):
        def forward(self, x):
            sys.exit(7)

    def exits():
        return Exits()

    class Interrupts(nn.Module):
        def forward(self, x):
            raise KeyboardInterrupt

    def interrupts():
        return Interrupts()

    def builder_raises():
        raise RuntimeError("cannot build")

    def builder_exits():
        sys.exit(9)

    def deep():
        m = nn.Conv2d(3, 3, 1)
        for _ in range(200):
            m = nn.Sequential(m)
        return m

    class FFT(nn.Module):
        def forward(self, x):
            return torch.fft.rfft2(x).abs()

    def fft():
        return FFT()

    class NaN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            return self.conv(x) * float("nan")

    def nan():
        return NaN()

    def scripted():
        return torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))

    class Slow(nn.Module):
        """Writes a marker file on its first real forward, then takes its time."""
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            if x.device.type != "meta":
                open(__file__ + ".started", "w").close()
                time.sleep(0.05)
            return self.conv(x)

    def slow():
        return Slow()
''')


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("careless")
    (folder / "models.py").write_text(MODELS)
    (folder / "imports_badly.py").write_text("raise ImportError('no such thing')\n")
    (folder / "exits_on_import.py").write_text("import sys\nsys.exit(5)\n")
    return folder


@dataclass
class Done:
    status: int
    out: str
    err: str


def cli(*argv: str) -> Done:
    """``convlens ARGV`` in this process: its exit status, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), _quiet_warnings():
        try:
            status = main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            status = e.code
    return Done(status, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _quiet_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script's deprecation, from the user's file
        yield


def error_line(done: Done) -> str:
    """The one error line on stderr; argparse's usage lines may precede it, nothing else may."""
    assert "Traceback" not in done.err, done.err
    lines = done.err.strip().splitlines()
    assert lines, f"status {done.status} and nothing on stderr"
    *before, last = lines
    assert last.startswith("convlens"), done.err
    assert "error:" in last or last.startswith("convlens: interrupted"), done.err
    assert all(line.startswith("usage:") or line.startswith(" ") for line in before), done.err
    return last


# ------------------------------------------------------------------------------------------ the fuzz

BAD_COUNT = ["", "abc", "1.5", "-1", "1e3", "nan", "[/]", "$\\foo{$", "-99999999999999999999999"]
ANY_NUMBER = ["0", "1", "99999999999999999999999", "2147483648"]
BAD_TEXT = ["", "abc", "[/]", "$\\foo{$", "<script>", "a" * 300, "\N{SLIGHTLY SMILING FACE}", "3x", "x3",
            "-1", "3x16x16x16x16", "3x0x16", "3x99999999999x16", "1,5"]
HOSTILE_FILE = "[bold]$x<y>=1"


def _outputs(suffix: str, suffix_checked: bool) -> list[tuple[str, str]]:
    """(value, expectation) for an output option; {tmp} becomes the case's own folder."""
    return [("", "fail"), ("{tmp}", "fail"), ("{tmp}/missing/x" + suffix, "fail"), ("/proc/version", "fail"),
            ("{tmp}/afile/x" + suffix, "fail"), *([("/dev/full", "fail")] if not suffix_checked else []),
            ("{tmp}/x.txt", "fail" if suffix_checked else "ok"), ("{tmp}/" + HOSTILE_FILE + suffix, "ok")]


def _count(option: str, low: int = 1) -> list[tuple[str, str, str]]:
    cases = [(option, v, "fail") for v in BAD_COUNT]
    cases += [(option, v, "any") for v in ANY_NUMBER if not (v == "0" and low == 0)]
    return cases


def _text(option: str, skip: tuple[str, ...] = ()) -> list[tuple[str, str, str]]:
    return [(option, v, "fail") for v in BAD_TEXT if v not in skip]


def _cases() -> list[tuple[str, list[str], str, str, str]]:
    """(id, base argv, option, value, expectation) for every subcommand; expectation 'fail' (exit 2),
    'ok' (exit 0) or 'any' (0 or 2: the value may be valid)."""
    tiny, size = "{models}/models.py:tiny", ["--input", "3x16x16"]
    commands = {
        "analyze": (["analyze", tiny, *size],
                    _text("--input") + _count("--batch") + _count("--depth", 0) + _text("--format")
                    + [("-o", v, e) for v, e in _outputs(".json", False)]
                    + [("--html", v, e) for v, e in _outputs(".html", False)] + _text("MODEL")),
        "coverage": (["coverage", tiny, *size],
                     _text("--unit", skip=("-1", "1,5")) + _text("--layer", skip=("",)) + _text("--input")
                     + [("-o", v, e) for v, e in _outputs(".json", True)] + _count("--max-pixels")
                     + [("--unit", "-1,0", "fail"), ("--unit", "99,99", "fail"), ("--unit", "1.5,2", "fail")]),
        "erf": (["erf", tiny, *size, "--samples", "2", "--batch-size", "2"],
                _count("--samples") + _count("--batch-size") + _count("--seed", 0) + _text("--unit", skip=("-1", "1,5"))
                + _text("--layer", skip=("",)) + [("-o", v, e) for v, e in _outputs(".npy", True)]),
        "shift": (["shift", tiny, *size, "--shift", "2"],
                  _count("--shift") + _count("--seed", 0) + _text("--layer", skip=("",)) + _text("--format")
                  + _text("--input")),
        "animate": (["animate", "--input", "5", "--kernel", "3", "-o", "{tmp}/a.png"],
                    _text("--input") + _text("--kernel") + _text("--stride") + _text("--dilation")
                    + _count("--ms") + _count("--max-frames") + _count("--max-cells") + _text("--dims")
                    + [("-o", v, e) for v, e in _outputs(".gif", True)]
                    + [("--padding", v, "fail") for v in ("", "abc", "-1", "1.5")]
                    + [("--output-padding", v, "fail") for v in ("1", "-1", "abc")]),
        "plot": (["plot", tiny, *size, "--kind", "rf", "-o", "{tmp}/p.png"],
                 _text("--kind") + _text("--layer", skip=("",)) + _count("--samples") + _count("--max-pixels")
                 + [("-o", v, e) for v, e in _outputs(".svg", True)]),
        "zoo": (["zoo", "dilation8_voc"], _text("NAMES") + _text("--format")),
        "survey": (["survey", "zoo:tcn_seqmnist", "-o", "{tmp}/s.csv", "--jobs", "1"],
                   _text("PATTERN") + _text("--input", skip=("1,5",)) + [("--input", "1,5", "ok")] + _count("--jobs") + _count("--timeout") + _count("--memory")
                   + [("-o", v, e) for v, e in _outputs(".csv", True)]),
        "plan": (["plan", "--rf", "33"],
                 _count("--rf") + _count("--kernel") + _count("--channels") + _count("--max-layers")
                 + _count("--max-params") + _count("--map-size") + _count("--top") + _count("--max-pixels")
                 + _text("--format")),
        "arith": (["arith", "conv", "-i", "32", "-k", "3"],
                  _count("-i") + _count("-k") + _count("-s") + _count("-d") + _count("--target")
                  + [("-p", v, "fail") for v in ("", "abc", "-1", "1.5")] + _text("WHAT")),
    }
    out = []
    for command, (base, options) in commands.items():
        for i, (option, value, expect) in enumerate(options):
            out.append((f"{command}-{i}-{option}", base, option, value, expect))
    return out


CASES = _cases()


def _argv(base: list[str], option: str, value: str) -> list[str]:
    """The base command with ``option`` set to ``value`` (positional ones replace theirs)."""
    argv = list(base)
    if option == "MODEL":
        argv[1] = value
    elif option == "NAMES":
        argv[1:] = [value]
    elif option == "PATTERN":
        argv[1] = value
    elif option == "WHAT":
        argv[1] = value
    elif option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


def _mentions(line: str, option: str, value: str) -> bool:
    """The error line names the option (in any of its spellings) or shows the value."""
    names = {option, option.lstrip("-"), option.lstrip("-").replace("-", "_"), option.lstrip("-").replace("-", " ")}
    if option in ("MODEL", "NAMES", "PATTERN"):
        names |= {"model", "no zoo model", "pattern"}
    if option == "WHAT":
        names |= {"argument what"}
    short = {"-i": "input", "-k": "kernel", "-s": "stride", "-d": "dilation", "-p": "padding"}
    names |= {short[option]} if option in short else set()
    lowered = line.lower()
    shown = (value[:40], repr(value)[1:41])
    return any(n.lower() in lowered for n in names if n) or value != "" and any(v in line for v in shown)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_fuzz_one_line_and_the_right_status(case, models, tmp_path):
    name, base, option, value, expect = case
    (tmp_path / "afile").write_text("a regular file")
    fill = {"models": str(models), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in _argv(base, option, value.replace("{", "{{").replace("}", "}}")
                                          if "{tmp}" not in value else value)]
    before = set(tmp_path.iterdir())
    done = cli(*argv)
    assert "Traceback" not in done.err + done.out, done.err
    assert done.status in (0, 2), (argv, done.status, done.err)
    if expect == "fail":
        assert done.status == 2, (argv, done.out[-500:])
    if expect == "ok":
        assert done.status == 0, (argv, done.err)
    if done.status == 2:
        line = error_line(done)
        assert _mentions(line, option, value) or option in ("-o", "--html") and (
            "-o" in line or "--html" in line or "write" in line or "suffix" in line or "must end" in line), \
            (argv, line)
        leftovers = {p for p in set(tmp_path.iterdir()) - before if p.name.startswith(".")}
        assert not leftovers, leftovers  # no temporary file left behind
    else:
        assert "error" not in done.err.lower(), done.err


def test_the_fuzz_is_large_and_covers_every_subcommand():
    from convlens.cli import build_parser
    commands = {c[0].split("-")[0] for c in CASES}
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert commands == set(subparsers.choices)
    assert len(CASES) >= 300


# ------------------------------------------------------------------------------------------ names are data

def test_hostile_names_in_every_renderer(models, tmp_path):
    model = f"{models}/models.py:hostile"
    table = cli("analyze", model, "--input", "3x12x12", "--depth", "1")
    assert table.status == 0, table.err
    for name in ("[bold]x[/bold]", "[/]", ":thumbs_up:", "$\\foo{$", "<script>alert(1)</script>"):
        assert name in table.out  # printed as written: no markup, no emoji
    csv_out = cli("analyze", model, "--input", "3x12x12", "--format", "csv")
    rows = {line.split(",")[0] for line in csv_out.out.splitlines()}
    assert "'=1+2" in rows and "'@SUM(A1)" in rows and "'+cmd" in rows and "=1+2" not in rows
    html = tmp_path / "r.html"
    done = cli("analyze", model, "--input", "3x12x12", "--html", str(html))
    assert done.status == 0, done.err
    page = html.read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    for kind in ("rf", "cost", "coverage", "checkerboard"):
        layer = ["--layer", "$\\foo{$"] if kind in ("coverage", "checkerboard") else []
        done = cli("plot", model, "--input", "3x12x12", "--kind", kind, *layer, "-o", str(tmp_path / f"{kind}.svg"))
        assert done.status == 0 and done.err == "", (kind, done.err)
    done = cli("coverage", model, "--input", "3x12x12", "--layer", "$\\foo{$", "-o", str(tmp_path / "c.png"))
    assert done.status == 0, done.err


def test_a_model_class_or_path_with_markup_prints(models, tmp_path):
    folder = tmp_path / "dir[" / "]sub"
    folder.mkdir(parents=True)
    (folder / "m.py").write_text((models / "models.py").read_text())
    done = cli("analyze", f"{folder}/m.py:bracketed", "--input", "3x8x8")
    assert done.status == 0, done.err
    assert "dir[/]sub" in done.out and "Net[/]x" in done.out


def test_csv_keeps_numbers_that_start_with_a_sign():
    from convlens.report import _spreadsheet_safe
    for number in ("-1/2", "-3", "+4", "-1/2x3", "1e-3"):
        assert _spreadsheet_safe(number) == number
    for formula in ("=A1", "+A1", "-A1+1", "@SUM(A1)", "\tx"):
        assert _spreadsheet_safe(formula) == "'" + formula


# ------------------------------------------------------------------------------------------ user code

@pytest.mark.parametrize("command", ["analyze", "coverage", "erf", "shift", "plot"])
def test_a_model_that_raises_is_named_with_its_own_exception(command, models, tmp_path):
    extra = {"plot": ["--kind", "rf", "-o", str(tmp_path / "p.png")], "shift": ["--shift", "2"]}.get(command, [])
    done = cli(command, f"{models}/models.py:raises", "--input", "3x8x8", *extra)
    assert done.status == 2
    line = error_line(done)
    assert "ValueError: my own failure" in line and "(Raises)" in line, line


@pytest.mark.parametrize("builder, message", [("builder_raises", "RuntimeError: cannot build"),
                                              ("builder_exits", "sys.exit(9)"),
                                              ("exits", "sys.exit(7)"),
                                              ("interrupts", "raised KeyboardInterrupt")])
def test_user_code_that_raises_or_exits_while_building_or_running(builder, message, models):
    for command in ("analyze", "erf"):
        done = cli(command, f"{models}/models.py:{builder}", "--input", "3x8x8")
        assert done.status == 2, (command, done.err)
        assert message in error_line(done), done.err


@pytest.mark.parametrize("file, message", [("imports_badly.py", "ImportError: no such thing"),
                                           ("exits_on_import.py", "sys.exit(5)")])
def test_a_file_that_fails_on_import(file, message, models):
    done = cli("analyze", f"{models}/{file}:build")
    assert done.status == 2 and message in error_line(done)


def test_the_failing_module_and_op_are_named_without_a_real_rerun(monkeypatch):
    import convlens.loading as loading
    built = []
    real_build = loading.build_model
    monkeypatch.setattr(loading, "build_model", lambda f, on_meta=True: built.append(on_meta) or real_build(f, on_meta))
    done = cli("analyze", "dilation8_voc", "--input", "3x64x64")
    assert done.status == 2
    line = error_line(done)
    assert "'frontend.conv4_2' (Conv2d)" in line and "aten.convolution" in line, line
    assert built == [True]  # built once, on meta: no real model, no second forward

    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 5)

        def forward(self, x):
            calls.append(x.device.type)
            return self.conv(x)
    with pytest.raises(convlens.ConvlensError, match=r"in module 'conv' \(Conv2d\) on input 1x3x4x4"):
        convlens.analyze(Counting(), (1, 3, 4, 4))
    assert calls == ["meta"]


# ------------------------------------------------------------------------------------------ processes

def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "convlens.cli", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


@pytest.mark.parametrize("model, status, message", [("exits", 2, "sys.exit(7)"),
                                                    ("interrupts", 2, "raised KeyboardInterrupt"),
                                                    ("deep", 0, "")])
def test_exits_interrupts_and_recursion_in_a_process(model, status, message, models):
    done = _run("analyze", f"{models}/models.py:{model}", "--input", "3x8x8", "--format", "json")
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    if status:
        assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr
    else:
        import json
        assert len(json.loads(done.stdout)["layers"]) == 201  # 200 nested Sequentials and the conv
    # plain PyTorch runs the 200 nested Sequentials, and so does the capture


def test_ctrl_c_during_erf_exits_130_in_one_line_and_keeps_the_old_output(models, tmp_path):
    out = tmp_path / "erf.json"
    out.write_text("the earlier result")
    marker = Path(f"{models}/models.py.started")
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "convlens.cli", "erf", f"{models}/models.py:slow", "--input",
                             "3x16x16", "--samples", "100000", "--batch-size", "1", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), proc.communicate()
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["convlens: interrupted; the model and any earlier output file are as "
                                        "they were"], err
    assert out.read_text() == "the earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["erf.json"]


# ------------------------------------------------------------------------------------------ outputs

@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_a_failed_render_leaves_the_earlier_file_as_it_was(fmt, models, tmp_path, monkeypatch):
    import convlens.cli.commands as cli_module
    out = tmp_path / "r.out"
    out.write_text("the earlier result")

    def broken(*args, **kwargs):
        raise ConvlensError("the renderer broke")
    from convlens import ConvlensError
    target = {"table": "render_table", "json": None, "csv": None}[fmt]
    if target:
        def half_then_broken(report, depth=None, console=None, columns=None):
            console.print("half a table")
            broken()
        monkeypatch.setattr(cli_module, target, half_then_broken)
    else:
        monkeypatch.setattr(convlens.Report, "to_json" if fmt == "json" else "to_csv", broken)
    done = cli("analyze", f"{models}/models.py:tiny", "--input", "3x8x8", "--format", fmt, "-o", str(out))
    assert done.status == 2 and "the renderer broke" in error_line(done)
    assert out.read_text() == "the earlier result"
    assert [p.name for p in tmp_path.iterdir()] == ["r.out"]


def test_a_model_that_fails_leaves_the_earlier_file_as_it_was(models, tmp_path):
    out = tmp_path / "r.json"
    out.write_text("the earlier result")
    for command in (["analyze", "--format", "json"], ["coverage"], ["erf"], ["plot", "--kind", "rf"]):
        suffix = ".png" if command[0] == "plot" else ".json"
        target = out.with_suffix(suffix)
        target.write_text("the earlier result")
        done = cli(command[0], f"{models}/models.py:raises", "--input", "3x8x8", *command[1:], "-o", str(target))
        assert done.status == 2
        assert target.read_text() == "the earlier result"


def test_a_full_disk_is_one_line(models):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    done = cli("analyze", f"{models}/models.py:tiny", "--input", "3x8x8", "--format", "json", "-o", "/dev/full")
    assert done.status == 2 and "No space left" in error_line(done)


def test_a_read_only_folder_is_refused_before_the_work(models, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as root: permissions do not apply")
        done = cli("analyze", f"{models}/models.py:tiny", "--input", "3x8x8", "-o", str(folder / "x.txt"))
        assert done.status == 2 and "cannot write into" in error_line(done)
    finally:
        folder.chmod(0o700)


def test_written_files_get_the_usual_permissions(models, tmp_path):
    out = tmp_path / "r.json"
    done = cli("analyze", f"{models}/models.py:tiny", "--input", "3x8x8", "--format", "json", "-o", str(out))
    assert done.status == 0
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask
    out.chmod(0o640)
    cli("analyze", f"{models}/models.py:tiny", "--input", "3x8x8", "--format", "json", "-o", str(out))
    assert out.stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode


# ------------------------------------------------------------------------------------------ limits up front

@pytest.mark.parametrize("argv, message", [
    (["animate", "--input", "60", "--kernel", "3", "-o", "{tmp}/x.gif"], "4,096"),
    (["animate", "--input", "500", "--kernel", "3", "-o", "{tmp}/x.png"], "--max-cells"),
    (["animate", "--input", "30", "--kernel", "3", "-o", "{tmp}/x.gif"], "--max-frames"),
    (["plan", "--rf", "1000000"], "--max-pixels"),
    (["coverage", "torchvision:resnet18", "--input", "3x65536x65536", "-o", "{tmp}/c.npy"], "--max-pixels"),
    (["shift", "{models}/models.py:tiny", "--input", "3x16x16", "--shift", "99999999999"], "between 1 and 15"),
])
def test_work_too_large_is_refused_before_it_starts(argv, message, models, tmp_path):
    start = time.perf_counter()
    done = cli(*[a.format(tmp=tmp_path, models=models) for a in argv])
    assert done.status == 2 and message in error_line(done)
    assert time.perf_counter() - start < 60  # not a limit on speed: a runaway job would take hours
    assert not list(tmp_path.iterdir())


def test_limits_can_be_lifted(tmp_path):
    done = cli("animate", "--input", "30", "--kernel", "29", "--max-frames", "4", "-o", str(tmp_path / "x.gif"))
    assert done.status == 0, done.err
    done = cli("animate", "--input", "30", "--kernel", "29", "--max-frames", "3", "-o", str(tmp_path / "y.gif"))
    assert done.status == 2 and "4 frames" in error_line(done)


def test_coverage_window_limit_counts_the_window_not_the_input(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 1, 9), nn.Conv2d(1, 1, 9))
    report = convlens.analyze(net, (1, 1, 64, 64))
    assert report.coverage("", max_pixels=17 * 17).covered == 17 * 17
    with pytest.raises(convlens.ConvlensError, match="289 input pixels, more than the limit of 288"):
        report.coverage("", max_pixels=17 * 17 - 1)


def test_animation_frames_are_drawn_while_the_gif_is_written(tmp_path, monkeypatch):
    from PIL import Image

    from convlens.render import animate as anim
    writing, drawn_while_writing = [False], []
    real_draw, real_save = anim._draw, Image.Image.save

    def draw(spec, frame):
        drawn_while_writing.append(writing[0])
        return real_draw(spec, frame)

    def save(self, *args, **kwargs):
        writing[0] = True
        try:
            return real_save(self, *args, **kwargs)
        finally:
            writing[0] = False
    monkeypatch.setattr(anim, "_draw", draw)
    monkeypatch.setattr(Image.Image, "save", save)
    found = anim.animate(anim.ConvSpec.make(6, 3), tmp_path / "a.gif", 100)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == len(found) == 16
    assert drawn_while_writing == [False] + [True] * 15  # all frames but the first are made on demand


# ------------------------------------------------------------------------------------------ silent nonsense

@pytest.mark.parametrize("argv, message", [
    (["analyze", "--depth", "-1"], "--depth"),
    (["analyze", "--input", ""], "--input"),
    (["analyze", "-o", ""], "-o is empty"),
    (["analyze", "--html", ""], "--html is empty"),
    (["erf", "--seed", "99999999999999999999999"], "seed must be between"),
    (["animate", "--input", "5", "--kernel", "3", "--ms", "-5", "-o", "x.gif"], "--ms"),
])
def test_nonsense_options_are_refused(argv, message):
    done = cli(*argv)
    assert done.status == 2 and message in error_line(done)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_the_input_dtype_is_the_models(dtype):
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2)).to(dtype)
    report = convlens.analyze(net, (1, 3, 20, 20))
    with torch.no_grad():
        x = torch.randn(1, 3, 20, 20, dtype=dtype)
        first = net[0](x)
        out = net(x)
    assert report["0"].activation_bytes == first.nbytes  # torch's own byte counts of the real outputs
    assert report[""].activation_bytes == out.nbytes


def test_a_scripted_model_is_refused_with_a_message(models):
    done = cli("analyze", f"{models}/models.py:scripted", "--input", "3x8x8")
    assert done.status == 2 and "TorchScript" in error_line(done)
    with _quiet_warnings():
        traced = torch.jit.trace(nn.Conv2d(3, 3, 3), torch.zeros(1, 3, 8, 8))
    with pytest.raises(convlens.ConvlensError, match="pass the original nn.Module"):
        convlens.analyze(traced, (1, 3, 8, 8))


def test_complex_tensors_are_sized_and_their_ops_named(models):
    done = cli("analyze", f"{models}/models.py:fft", "--input", "3x8x8", "--format", "json")
    assert done.status == 0, done.err
    import json
    assert any("_fft_r2c" in note for note in json.loads(done.out)["notes"])

    class Spectrum(nn.Module):
        def forward(self, x):
            return torch.fft.rfft2(x)
    report = convlens.analyze(Spectrum(), (1, 3, 8, 8))
    assert report[""].activation_bytes == torch.fft.rfft2(torch.zeros(1, 3, 8, 8)).nbytes


def test_nan_gradients_and_outputs_are_named(models):
    for command in ("erf", "shift"):
        done = cli(command, f"{models}/models.py:nan", "--input", "3x16x16")
        assert done.status == 2 and "NaN" in error_line(done), done.err


# ------------------------------------------------------------------------------------------ the API

def _meta_conv():
    with torch.device("meta"):
        return nn.Conv2d(3, 3, 3)


@pytest.mark.parametrize("call", [
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), None),
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), dtype="float16"),
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), (1, 3, 8.0, 8)),
    lambda: convlens.analyze("resnet18", (1, 3, 8, 8)),
    lambda: convlens.erf(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), samples=2.5),
    lambda: convlens.erf(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), seed=-1),
    lambda: convlens.erf(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), unit=(1.5, 2)),
    lambda: convlens.erf(_meta_conv(), (1, 3, 8, 8)),
    lambda: convlens.shift_check(_meta_conv(), (1, 3, 8, 8)),
    lambda: convlens.shift_check(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), shift=2.5),
    lambda: convlens.shift_check(nn.Conv2d(3, 3, 3), (1, 3, 8, 8), shift=[]),
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), (1, 3, 8, 8))[""].window(1.5, 1),
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), (1, 3, 8, 8))[10**6],
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), (1, 3, 8, 8))[1.5],
    lambda: convlens.analyze(nn.Conv2d(3, 3, 3), (1, 3, 8, 8)).coverage("", (1.5, 2)),
    lambda: convlens.plan.plan(33, top=2.5),
    lambda: convlens.plan.plan(33, top=10**9),
])
def test_api_bad_arguments_raise_convlens_error(call):
    import convlens.plan  # noqa: F401
    with pytest.raises(convlens.ConvlensError) as e:
        call()
    assert "\n" not in str(e.value)


def test_a_report_indexes_like_a_list_too():
    report = convlens.analyze(nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU()), (1, 3, 8, 8))
    assert report[0] is list(report)[0] and report[-1] is list(report)[-1]
    assert [report[i].name for i in range(len(report))] == [layer.name for layer in report]
