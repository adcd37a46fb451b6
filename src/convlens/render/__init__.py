"""Renderers: every one reads a result object (a :class:`convlens.Report`, the zoo's reports, a
:class:`convlens.plan.PlanResult`) and nothing else."""

from .table import DEFAULT_DEPTH, render_plan, render_table, render_zoo

__all__ = ["DEFAULT_DEPTH", "render_plan", "render_table", "render_zoo"]
