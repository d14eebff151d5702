"""Tower placement: which tensors are partitioned across towers, and which ops are grouped.

Inside a split every tensor made by a conv or fc is partitioned along channels, one contiguous
slice per tower. A local weight layer reading a partitioned tensor is a grouped op (groups x N);
a `cross` one reads every tower. Tensors from outside the split are replicated to all towers.
"""
from __future__ import annotations

from .. import layers
from ..diagnostics import Diagnostic
from ..errors import SpecError
from ..ir import Graph


def place_towers(graph: Graph) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for node in graph:
        try:
            _place(graph, node)
        except SpecError as err:
            node.meta["invalid"] = True
            out.append(err.diagnostic(node.name, node.span))
    return out


def _place(graph: Graph, node) -> None:
    kind = layers.lookup(node.kind)
    if node.cross and not node.towers:
        raise SpecError("'cross' only means something inside `towers N { ... }`", code="towers")
    if node.cross and not kind.splits_channels:
        raise SpecError(f"{node.kind} always works within its tower; 'cross' applies to conv and fc",
                        notes=["LRN, pooling, activations and dropout see only their own tower's channels"],
                        code="towers")
    if not node.towers:
        return
    partitioned = False
    for name in node.inputs:
        src = graph.node(name)
        if src.towers and src.towers != node.towers:
            raise SpecError(f"reads '{name}' from another split ({src.towers})", code="towers")
        partitioned |= src.partitioned
    if node.kind == "concat" and partitioned:
        raise SpecError("concat of tower-partitioned tensors is not supported inside towers",
                        notes=["put the concat outside the towers block"], code="towers")
    count = graph.towers[node.towers].count
    if kind.splits_channels:
        node.meta["tower_groups"] = count if partitioned and not node.cross else 1
        node.meta["placement"] = "partitioned"
        node.meta["reads_all_towers"] = partitioned and node.cross
    else:
        node.meta["placement"] = "partitioned" if partitioned else "replicated"
