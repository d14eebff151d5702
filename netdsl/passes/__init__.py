"""Passes: plain functions over the IR that annotate node.meta and return diagnostics."""
from .cost import count_costs
from .shapes import infer_shapes
from .towers import place_towers

__all__ = ["place_towers", "infer_shapes", "count_costs"]
