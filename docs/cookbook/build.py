"""Build the cookbook: run every snippet (``s01_*.py`` ... ``s10_*.py``), write their pictures to
``docs/cookbook/img/`` and render ``docs/cookbook.md`` from ``cookbook.md.j2`` with each snippet's source,
its printed output and its pictures.

    .venv/bin/python docs/cookbook/build.py

``tests/test_cookbook.py`` runs the same snippets, checks every number they return against torch, brute
force or arithmetic, and checks that :func:`render` of their outputs is exactly the committed cookbook.md.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
MARKDOWN = HERE.parent / "cookbook.md"
IMAGES = HERE / "img"
PICTURES = (".png", ".gif")


@dataclass
class Section:
    key: str                 # the snippet's file stem, e.g. "s01_dilation"
    module: ModuleType
    source: str              # the snippet's text, as shown
    stdout: str              # what run() printed
    values: dict[str, Any]   # what run() returned
    images: list[str]        # picture file names it wrote (sNN_*.png / .gif), sorted


def snippets() -> list[Path]:
    return sorted(HERE.glob("s[0-9][0-9]_*.py"))


def load(path: Path) -> ModuleType:
    """Import a snippet by path (a fresh module each time)."""
    spec = importlib.util.spec_from_file_location(f"cookbook_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_section(path: Path, out_dir: Path) -> Section:
    """Run one snippet's ``run(out_dir)``, capturing what it prints."""
    module = load(path)
    prefix = path.stem.split("_")[0] + "_"
    before = {p.name for p in out_dir.glob(prefix + "*")}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        values = module.run(out_dir)
    images = sorted(p.name for p in out_dir.glob(prefix + "*") if p.suffix in PICTURES and p.name not in before)
    return Section(path.stem, module, path.read_text(), buf.getvalue(), values, images)


def run_all(out_dir: Path) -> dict[str, Section]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {path.stem: run_section(path, out_dir) for path in snippets()}


def _percent(x: float, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f} %"


def render(sections: dict[str, Section]) -> str:
    """The markdown text of the cookbook (pictures are referenced, not written)."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["percent"] = _percent
    env.filters["thousands"] = lambda n: f"{n:,}"
    values = {key: s.values for key, s in sections.items()}
    return env.get_template("cookbook.md.j2").render(sections=sections, v=values)


def main() -> int:
    import torch
    torch.set_num_threads(1)  # as in the tests (tests/conftest.py): the same float round-off in the ERF
    IMAGES.mkdir(exist_ok=True)
    for old in IMAGES.iterdir():
        if old.suffix in PICTURES:
            old.unlink()
    start = time.perf_counter()
    sections = {}
    for path in snippets():
        t = time.perf_counter()
        sections[path.stem] = run_section(path, IMAGES)
        print(f"{path.stem}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
    MARKDOWN.write_text(render(sections))
    print(f"wrote {MARKDOWN.relative_to(HERE.parent.parent)} and {sum(len(s.images) for s in sections.values())} "
          f"pictures in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
