"""Passes: plain functions over the IR that annotate node.meta and return diagnostics.

They run in this order, each reading what the one before wrote (ir.py lists the meta keys):
towers (placement and groups), shapes (shapes and windows), cost (counts and receptive fields).
"""
from ..diagnostics import Diagnostic
from ..ir import Graph
from .cost import count_costs
from .shapes import infer_shapes
from .towers import place_towers

PASSES = (place_towers, infer_shapes, count_costs)


def run_passes(graph: Graph) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for run in PASSES:
        out += run(graph)
    return out


__all__ = ["place_towers", "infer_shapes", "count_costs", "run_passes", "PASSES"]
