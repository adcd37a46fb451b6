"""convlens: exact receptive fields, windows and cost of every unit of a PyTorch model.

>>> import torch.nn as nn, convlens
>>> report = convlens.analyze(nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 32, 32))
>>> report[""].rf, report[""].stride
((3, 3), (Fraction(2, 1), Fraction(2, 1)))
"""

from .api import analyze
from .erf import ERFResult, erf
from .errors import ConvlensError
from .report import Layer, Report, Totals
from .shift import ShiftResult, shift_check

__all__ = ["analyze", "erf", "shift_check", "ConvlensError", "ERFResult", "Layer", "Report", "ShiftResult", "Totals"]
__version__ = "0.1.0"
