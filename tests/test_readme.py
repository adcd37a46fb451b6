"""The README runs as written: every Python block and every ``convlens`` command in it.

A line ending in ``# -> VALUE`` states its result: the repr of a Python expression, or what a command
prints, and the test checks it (``...`` stands for any text; prose after three spaces is prose).
The README's placeholders get tiny stand-ins in a scratch folder that is the current directory:
``path/to/net.py:build``, ``mypackage.models:UNet``, ``mymodels.txt``. Commands that take minutes (a
survey of many models, the 5-seed ``why_dilation`` run, the Chromium screenshot) run only with
``CONVLENS_README_LONG=1``; the long run also checks the ``why_dilation`` table the README quotes.
``make analyze`` and ``make test`` are the README's two set-up commands, which CI itself runs.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
LONG = os.environ.get("CONVLENS_README_LONG") == "1"
LONG_WORK = ("convlens survey", "survey(", "examples/why_dilation.py", "docs/screenshot.py")
"""Lines (and Python blocks holding them) that take minutes: run in the long mode only."""
SETUP = ("make analyze", "make test")


def blocks(language: str) -> list[tuple[int, str]]:
    """(first line number, text) of every fenced block of ``language`` in the README."""
    found, current, start = [], None, 0
    for number, line in enumerate(README.read_text(encoding="utf-8").splitlines(), start=1):
        if current is None and line.strip() == f"```{language}":
            current, start = [], number + 1
        elif current is not None and line.strip() == "```":
            found.append((start, "\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    return found


def stated(line: str) -> tuple[str, str | None]:
    """(code, the value its ``# -> VALUE`` comment states, else None)."""
    code, arrow, rest = line.partition("# -> ")
    if not arrow:
        return line, None
    return code.rstrip(), re.split(r"\s{3,}", rest.strip())[0]


def matches(value: str, expected: str) -> bool:
    """``value`` equals ``expected``, where ``...`` in expected stands for any text."""
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, value, flags=re.S) is not None


def _long(text: str) -> bool:
    return any(w in text for w in LONG_WORK)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """The README's placeholders as tiny stand-ins, in a folder that is the current directory."""
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "net.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def build():
            return nn.Sequential(nn.Conv1d(8, 8, 3, dilation=2), nn.ReLU(), nn.Conv1d(8, 4, 3, dilation=4))
    """))
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    (tmp_path / "mypackage" / "models.py").write_text(textwrap.dedent("""
        import torch.nn as nn
        def UNet():
            return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))
    """))
    (tmp_path / "path" / "to" / "stereo.py").write_text(textwrap.dedent("""
        import torch, torch.nn as nn
        class Stereo(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, 2, 1))
                self.head = nn.Conv2d(16, 1, 3, padding=1)
            def forward(self, left, right):
                return self.head(torch.cat([self.encoder(left), self.encoder(right)], 1))
    """))
    (tmp_path / "path" / "to" / "rgbd.py").write_text(textwrap.dedent("""
        import torch, torch.nn as nn
        class RGBD(nn.Module):
            def __init__(self):
                super().__init__()
                self.rgb, self.depth = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
                self.label = nn.Embedding(10, 4)
            def forward(self, batch):
                x = self.rgb(batch["image"]) + self.depth(batch["depth"])
                return x + self.label(batch["label"])[..., None, None]
    """))
    net: dict = {}  # (the weights of the README's --weights example: net.pt)
    exec((tmp_path / "path" / "to" / "net.py").read_text(), net)
    torch.save(net["build"]().state_dict(), tmp_path / "net.pt")
    (tmp_path / "mymodels.txt").write_text("zoo:tcn_seqmnist\ntorchvision:resnet18 3x64x64\n")
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


PYTHON = blocks("python")
COMMANDS = [(start + i, line.split("#")[0].strip() and line) for start, text in blocks("sh")
            for i, line in enumerate(text.splitlines())]
COMMANDS = [(n, line) for n, line in COMMANDS if line and not line.startswith(SETUP)]


def test_the_readme_has_what_this_test_runs():
    assert len(PYTHON) >= 4 and len(COMMANDS) >= 15
    assert sum(stated(line)[1] is not None for _, text in PYTHON for line in text.splitlines()) >= 6


@pytest.mark.parametrize("start, code", PYTHON, ids=[f"line{n}" for n, _ in PYTHON])
def test_python_block(start, code, scratch):
    if _long(code) and not LONG:
        pytest.skip("takes minutes: CONVLENS_README_LONG=1 runs it")
    namespace: dict = {"__name__": "__readme__"}
    lines = code.splitlines()
    # statement by statement (a class or a loop spans lines); one on a line with "# -> VALUE" is an
    # expression whose repr is checked
    for statement in ast.parse(code).body:
        number = start + statement.lineno - 1
        source = "\n".join(lines[statement.lineno - 1:statement.end_lineno])
        expected = stated(lines[statement.end_lineno - 1])[1]
        if expected is None:
            exec(compile(ast.Module([statement], []), f"README.md:{number}", "exec"), namespace)
            continue
        assert isinstance(statement, ast.Expr), f"README.md:{number}: '# ->' follows an expression, not {source}"
        value = eval(compile(ast.Expression(statement.value), f"README.md:{number}", "eval"), namespace)
        assert matches(repr(value), expected), f"README.md:{number}: {source} gives {value!r}, not {expected}"


@pytest.mark.parametrize("number, line", COMMANDS, ids=[f"line{n}" for n, _ in COMMANDS])
def test_command(number, line, scratch):
    command, expected = stated(line)
    command = command.split("#")[0].strip()
    if _long(command) and not LONG:
        pytest.skip("takes minutes: CONVLENS_README_LONG=1 runs it")
    argv = shlex.split(command)
    if argv[0] == "convlens":
        from convlens.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            status = main(argv[1:])
        printed = out.getvalue()
    else:  # a script of the repository, run as the README writes it (from the repository's root, whose
        # .venv the README's set-up made: a plain `python` would lack the test extra's playwright)
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=3600)
        status, printed = done.returncode, done.stdout
        assert status == 0, done.stderr
        if "why_dilation" in command:
            _check_why_dilation_table(printed)
    assert status == 0, f"README.md:{number}: {command}"
    if expected is not None:
        assert matches(printed.strip(), expected), f"README.md:{number}: {command} prints {printed!r}"


def _check_why_dilation_table(printed: str) -> None:
    """Every row of the README's why_dilation table is what the script prints."""
    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]
    quoted = README.read_text(encoding="utf-8").split("### Why dilation, shown")[1].split("\n## ")[0]
    rows = [cells(line) for line in quoted.splitlines() if line.startswith("| ") and "---" not in line]
    printed_rows = {cells(line)[0]: cells(line) for line in printed.splitlines() if line.startswith("| ")}
    assert len(rows) == 5
    for row in rows:
        # the README leaves out the training-time column, which depends on the machine
        assert printed_rows.get(row[0], [])[:-1] == row, (row, printed_rows.get(row[0]))


def test_links_point_inside_the_repository():
    # every relative link of the README and docs/ names a file of the repository
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # (a web address)
            path = (page.parent / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), f"{page.name}: {target}"


def test_the_report_needs_no_extra():
    # `pip install convlens` then `convlens analyze --html` works: jinja2 and matplotlib are dependencies
    from importlib.metadata import requires
    plain = {re.split(r"[<>=!~ ;\[]", r)[0].lower() for r in requires("convlens") if "extra ==" not in r}
    assert {"jinja2", "matplotlib", "torch", "numpy", "rich"} <= plain
