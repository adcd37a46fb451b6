"""The layering contract: a module imports only from the layers below it (import-linter, configured in
pyproject.toml), and no import hides inside a function except those of optional heavy dependencies
and the contract's one named exception."""

from __future__ import annotations

import ast
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "convlens"

OPTIONAL = ("matplotlib", "PIL", "jinja2", "pandas", "torchvision", "timm", "transformers", "safetensors")
"""Heavy or optional dependencies, imported only when a feature needs them."""
NAMED_EXCEPTION = ("report.py", ".render.html")
"""Report.save_html and Report._repr_html_ import the HTML renderer (a higher layer) when called."""
CLI_COMMANDS = ("__init__.py", ".")
"""convlens.cli imports its commands (``from . import commands``, which imports torch) when one runs, so
that ``--help``, ``--version`` and ``arith`` start without torch (tests/test_cli.py checks that)."""


def test_the_layers_are_kept(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True) == 0


def _function_imports() -> list[tuple[str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    found += [(path.name, alias.name) for alias in sub.names]
                elif isinstance(sub, ast.ImportFrom):
                    found.append((path.name, "." * sub.level + (sub.module or "")))
    return found


def test_no_import_hides_in_a_function():
    hidden = [(file, name) for file, name in _function_imports()
              if name.split(".")[0] not in OPTIONAL and (file, name) not in (NAMED_EXCEPTION, CLI_COMMANDS)]
    assert not hidden, f"imports inside functions that belong at the top of their module: {hidden}"


def test_the_named_exception_is_the_only_upward_import():
    # the contract ignores exactly this import; if it went away, the exception should go too
    assert NAMED_EXCEPTION in _function_imports()
    config = (ROOT / "pyproject.toml").read_text()
    assert 'ignore_imports = ["convlens.report -> convlens.render.html"]' in config


def test_no_module_imports_another_modules_private_names():
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                private += [(path.name, node.module, a.name) for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private, private
