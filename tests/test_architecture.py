"""docs/architecture.md stays true: every dotted name it mentions in backticks exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _resolve(dotted: str) -> object:
    """The module, or the attribute of the longest importable module prefix, named by ``dotted``."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def test_every_name_in_the_tour_exists():
    names = sorted(set(re.findall(r"`((?:convlens|rich)(?:\.\w+)+)`", DOC.read_text())))
    assert len(names) > 40
    missing = []
    for name in names:
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert not missing, missing


def test_the_tour_names_every_layer_of_the_contract():
    config = (DOC.parents[1] / "pyproject.toml").read_text()
    layers = re.search(r"layers = \[(.*?)\]", config, re.S).group(1)
    modules = set(re.findall(r"convlens\.\w+", layers))
    assert modules <= set(re.findall(r"`(convlens\.\w+)`", DOC.read_text())), modules
