"""convlens: exact receptive fields, windows and cost of every unit of a PyTorch model.

>>> import torch.nn as nn, convlens
>>> report = convlens.analyze(nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 32, 32))
>>> report[""].rf, report[""].stride
((3, 3), (Fraction(2, 1), Fraction(2, 1)))

The names below are imported on first use (PEP 562), so that ``import convlens.arith`` and the
command line's ``--help`` start without importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {"analyze": "api", "erf": "effective_rf", "ERFResult": "effective_rf", "ConvlensError": "errors", "Layer": "report",
          "Report": "report", "Totals": "report", "shift_check": "shift", "ShiftResult": "shift", "Inputs": "inputs",
          "TensorSpec": "inputs", "Const": "inputs", "hf_model": "huggingface",
          "load_weights": "weights"}
"""Each public name's module."""

__all__ = ["analyze", "erf", "hf_model", "load_weights", "shift_check", "Const", "ConvlensError", "ERFResult", "Inputs", "Layer", "Report",
           "ShiftResult", "TensorSpec", "Totals"]

if TYPE_CHECKING:
    from .api import analyze
    from .effective_rf import ERFResult, erf
    from .errors import ConvlensError
    from .huggingface import hf_model
    from .inputs import Const, Inputs, TensorSpec
    from .report import Layer, Report, Totals
    from .shift import ShiftResult, shift_check
    from .weights import load_weights


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'convlens' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value  # (found directly from now on)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
