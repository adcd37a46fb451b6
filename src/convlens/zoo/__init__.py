"""Built-in models, constructible without downloading anything (random weights).

``ZOO`` maps each name to its ``ZooModel`` entry (builder, default input, the parameter count of its
source); every name also works as MODEL on the command line. ``convlens zoo`` lists them.
"""

from __future__ import annotations

import torch

from ..api import analyze
from ..defaults import DEFAULT_MODEL
from ..errors import ConvlensError
from ..report import Report
from . import deeplab, dilation, drn, segnet, tcn, unet, wavenet
from .dilation import dilated_vgg16_voc
from .registry import ZooModel, entries

_MODULES = (dilation, wavenet, tcn, unet, segnet, drn, deeplab)
ZOO: dict[str, ZooModel] = entries(*(e for m in _MODULES for e in m.ENTRIES))
BUILTIN = {name: m.build for name, m in ZOO.items()}
DEFAULT_INPUT = {name: m.input_shape for name, m in ZOO.items()}

__all__ = ["BUILTIN", "DEFAULT_INPUT", "DEFAULT_MODEL", "ZOO", "ZooModel", "analyze_zoo", "dilated_vgg16_voc"]


def analyze_zoo(names: list[str] | None = None) -> dict[str, Report]:
    """Each zoo model (all by default) built on the meta device and analyzed at its default input
    (batch 1): nothing is allocated, so the whole zoo takes seconds."""
    unknown = sorted(set(names or []) - set(ZOO))
    if unknown:
        raise ConvlensError(f"no zoo model {', '.join(unknown)}; the zoo has {', '.join(ZOO)}")
    reports = {}
    for name in names or list(ZOO):
        entry = ZOO[name]
        with torch.device("meta"):
            model = entry.build()
        reports[name] = analyze(model, (1, *entry.input_shape), name=name)
    return reports
