"""The example of the README ("Why dilation, shown") runs, and its models are what it says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from oracle import probe

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "why_dilation.py"


def _load():
    spec = importlib.util.spec_from_file_location("why_dilation", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_models_differ_only_in_dilation_and_see_17_and_69_pixels():
    example = _load()
    plain, context = example.build_model("plain", 4), example.build_model("context", 4)
    assert [p.shape for p in plain.parameters()] == [p.shape for p in context.parameters()]
    shape = (1, 2, 160, 160)
    for model, side in ((plain, 3 + 2 * 7), (context, 3 + 2 * (1 + 1 + 2 + 4 + 8 + 16 + 1))):
        (lo0, hi0), (lo1, hi1) = probe(model, shape, unit=(80, 80)).bbox
        assert hi0 - lo0 + 1 == hi1 - lo1 + 1 == side


def test_labels_are_the_pixels_within_the_radius_of_a_beacon():
    example = _load()
    rows, cols = torch.tensor([[3, 30, 50]]), torch.tensor([[60, 10, 40]])
    keep = torch.tensor([[True, True, False]])
    mask = example.near(rows, cols, keep, 20, 64)[0]
    expected = torch.zeros(64, 64, dtype=torch.bool)
    for y in range(64):
        for x in range(64):
            expected[y, x] = any(max(abs(y - r), abs(x - c)) <= 20 for r, c in ((3, 60), (30, 10)))
    assert torch.equal(mask, expected)


def test_the_script_runs():
    done = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "2", "--size", "48", "--channels", "4", "--seeds", "1",
                           "--markdown"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| context |" in done.stdout and "| plain |" in done.stdout
