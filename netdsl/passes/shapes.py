"""Static shape inference (the ShapeProp of netdsl): every layer's output shape, with the arithmetic
in every error, expectations (`expect 96x55x55`) verified, and tower divisibility checked."""
from __future__ import annotations

from .. import layers
from ..diagnostics import Diagnostic
from ..errors import SpecError
from ..ir import Graph, fmt_shape
from ..layers import Inferred
from ..layers.window import WINDOW_WARNINGS


def infer_shapes(graph: Graph) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for node in graph:
        if node.meta.get("invalid"):
            continue
        ins = [graph.node(i).shape for i in node.inputs]
        if any(s is None for s in ins):
            continue  # an input already failed; its own error says why
        kind = layers.lookup(node.kind)
        node.meta["in_shapes"] = ins
        try:
            inferred = kind.infer(node, ins)
            if not isinstance(inferred, Inferred):
                inferred = Inferred(tuple(inferred))
            shape = tuple(inferred.shape)
            _check_towers(graph, node, shape)
        except SpecError as err:
            if err.code == "spec":
                err.code = "shape"
            out.append(err.diagnostic(node.name, node.span))
            continue
        node.meta["shape"] = shape
        if inferred.windows:
            node.meta["windows"] = inferred.windows
            quiet = node.params.get("quiet") or ()  # the warnings the spec silenced for this layer
            for code, warnings in WINDOW_WARNINGS.items():
                if code not in quiet:
                    for message, notes in warnings(node, inferred.windows):
                        out.append(Diagnostic("warning", message, node.span, node.name, notes, code))
        if node.expect is not None and node.expect != shape and not node.meta.get("suspect"):
            notes = [f"{node.name}: {' + '.join(fmt_shape(s) for s in ins) or 'no input'} -> {fmt_shape(shape)}"]
            if kind.explain:
                notes = kind.explain(node, ins, node.expect) or notes
            out.append(Diagnostic("error", f"expected {fmt_shape(node.expect)}, inferred {fmt_shape(shape)}",
                                  node.expect_span or node.span, node.name, notes, "expect"))
    return out


def _check_towers(graph: Graph, node, shape) -> None:
    if not node.partitioned:
        return
    count = graph.towers[node.towers].count
    if shape[0] % count:
        notes = [f"{node.name}: {shape[0]} / {count} = {shape[0] / count:.4g}"]
        if layers.lookup(node.kind).flattens:
            notes.append("a classifier after the towers block reads them gathered, whatever its size")
        raise SpecError(f"its {shape[0]} channels do not split evenly over {count} towers", notes=notes,
                        code="towers")
