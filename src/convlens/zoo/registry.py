"""The zoo's one table: every named model, how to build it, its input and the count it must match.

An entry's ``params`` is the parameter count of the paper's (or reference code's) layer table at the
default arguments, written down from that source (``source`` says where); the tests compare it with
``sum(p.numel() for p in build().parameters())``. ``input_shape`` has no batch: (C, *spatial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn


@dataclass(frozen=True)
class ZooModel:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    params: int
    source: str
    summary: str


def entries(*models: ZooModel) -> dict[str, ZooModel]:
    """Name -> entry, refusing duplicates."""
    table: dict[str, ZooModel] = {}
    for m in models:
        if m.name in table:
            raise ValueError(f"zoo name {m.name!r} registered twice")
        table[m.name] = m
    return table
