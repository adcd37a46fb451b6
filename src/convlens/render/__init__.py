"""Renderers: every one reads a :class:`convlens.Report` and nothing else."""

from .table import DEFAULT_DEPTH, render_table

__all__ = ["DEFAULT_DEPTH", "render_table"]
