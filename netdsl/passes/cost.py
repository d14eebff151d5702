"""Cost accounting: parameters, multiply-adds (MACs; FLOPs = 2 x MACs), activation memory,
receptive field, and the bytes that cross between towers per image."""
from __future__ import annotations

from .. import layers
from ..diagnostics import Diagnostic
from ..ir import Graph, numel

BYTES_PER_VALUE = 4  # fp32


def count_costs(graph: Graph) -> list[Diagnostic]:
    for node in graph:
        shape = node.shape
        if shape is None:
            continue
        kind = layers.lookup(node.kind)
        ins = node.meta.get("in_shapes", [])
        cost = kind.cost(node, ins, shape)
        node.meta.update(param_count=cost.params, macs=cost.macs, flops=2 * cost.macs,
                         activation_bytes=numel(shape) * BYTES_PER_VALUE)
        node.meta["cross_bytes"] = _cross_bytes(graph, node, ins)
        _receptive_field(graph, node, kind)
    return []


def _cross_bytes(graph: Graph, node, ins) -> int:
    """Bytes per image that this layer pulls from towers other than the one computing it."""
    if node.meta.get("reads_all_towers"):
        count = graph.towers[node.towers].count
        return (count - 1) * numel(ins[0]) * BYTES_PER_VALUE
    total = 0
    if not node.towers:  # leaving a split: the towers' slices are gathered onto one device
        for name, shape in zip(node.inputs, ins):
            src = graph.node(name)
            if src.partitioned:
                count = graph.towers[src.towers].count
                total += numel(shape) * (count - 1) // count * BYTES_PER_VALUE
    return total


def _receptive_field(graph: Graph, node, kind) -> None:
    """Receptive field and jump per spatial axis; None means the whole input."""
    if node.kind == "input":
        node.meta["rf"], node.meta["jump"] = [1, 1], [1, 1]
        return
    sources = [graph.node(i).meta for i in node.inputs]
    if any(m.get("rf") is None for m in sources) or len(node.shape) != 3:
        node.meta["rf"], node.meta["jump"] = None, None
        return
    rf = [max(m["rf"][a] for m in sources) for a in (0, 1)]
    jump = [max(m["jump"][a] for m in sources) for a in (0, 1)]
    window = kind.receptive_field(node)
    if window == "global":
        node.meta["rf"], node.meta["jump"] = None, None
        return
    if window:
        for a, (k, s, d, _) in enumerate(window):
            rf[a] += (k - 1) * d * jump[a]
            jump[a] *= s
    node.meta["rf"], node.meta["jump"] = rf, jump
