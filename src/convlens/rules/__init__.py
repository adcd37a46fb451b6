"""Per-op geometry and cost rules (importing this package fills the registry)."""

from . import cost, elementwise, mixing, shape, spatial, writes  # noqa: F401  (registration side effects)
from .registry import COST, GEOMETRY, Cost, Plan, RuleContext, Source, key_of, register_cost, register_geometry

__all__ = ["COST", "GEOMETRY", "Cost", "Plan", "RuleContext", "Source", "key_of", "register_cost",
           "register_geometry"]
