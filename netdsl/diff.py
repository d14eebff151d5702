"""Comparing two checked nets: which layers were added, removed or changed, and what that does to the totals.

Layers are matched by name first; the rest by position, aligning the two orders of layer kinds
(difflib's longest matching runs), so a renamed layer or one whose kind changed at the same place is
reported as changed rather than as one removal and one addition. A matched pair differs in any of:
kind, hyper-parameters (the IR's normalised values), what it reads, output shape, parameters, MACs and
tower mode. Torch-free, like `check`.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any

from .ir import Graph, Node, fmt_shape
from .report import Report, _bytes, tower_mode


@dataclass
class LayerChange:
    status: str  # "added", "removed", "changed"
    a: Node | None
    b: Node | None
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # (what, before, after)

    @property
    def name(self) -> str:
        if self.a and self.b and self.a.name != self.b.name:
            return f"{self.a.name} -> {self.b.name}"
        return (self.a or self.b).name

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "a": self.a.name if self.a else None, "b": self.b.name if self.b else None,
                "kind": (self.b or self.a).kind,
                "changes": [{"what": w, "a": x, "b": y} for w, x, y in self.fields]}


@dataclass
class Diff:
    a: Report
    b: Report
    changes: list[LayerChange]
    pairs: list[tuple[Node | None, Node | None]]  # every layer of a and b, matched (match's order)
    totals: list[tuple[str, int | str, int | str]]

    @property
    def equal(self) -> bool:
        return not self.changes and all(x == y for _, x, y in self.totals)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.graph.source, "b": self.b.graph.source, "equal": self.equal,
                "layers": [c.to_dict() for c in self.changes],
                "totals": {what: {"a": x, "b": y, **({"delta": y - x} if isinstance(x, int) else {})}
                           for what, x, y in self.totals}}

    def to_text(self) -> str:
        lines = [f"a: {self.a.graph.name}  ({self.a.graph.source})", f"b: {self.b.graph.name}  ({self.b.graph.source})", ""]
        if self.equal:
            return "\n".join(lines + ["the same network: every layer, shape and count is equal"])
        marks = {"added": "+", "removed": "-", "changed": "~"}
        if self.changes:
            width = max(len(c.name) for c in self.changes)
            kinds = max(len((c.b or c.a).kind) for c in self.changes)
            for c in self.changes:
                kind = (c.b or c.a).kind
                head = f"{marks[c.status]} {c.name:<{width}}  {kind:<{kinds}}"
                if c.status != "changed":
                    node = c.a or c.b
                    lines.append(f"{head}  {c.status}: {_io(node)}")
                    continue
                for i, (what, x, y) in enumerate(c.fields):
                    lines.append(f"{head if i == 0 else ' ' * len(head)}  {what}: {x} -> {y}")
        counts = {s: sum(c.status == s for c in self.changes) for s in marks}
        lines += ["", ", ".join(f"{n} {s}" for s, n in counts.items()), "", "totals"]
        width = max(len(w) for w, _, _ in self.totals)
        rows = [(w, _fmt(w, x), _fmt(w, y), _delta(w, x, y)) for w, x, y in self.totals]
        cols = [max(len(r[i]) for r in rows) for i in range(1, 4)]
        for w, x, y, d in rows:
            lines.append(f"  {w:<{width}}  {x:>{cols[0]}}  {y:>{cols[1]}}  {d:>{cols[2]}}".rstrip())
        return "\n".join(lines)


def diff(a: Graph, b: Graph) -> Diff:
    ra, rb = Report.build(a), Report.build(b)
    pairs = match(a, b)
    b_for = {x.name: y.name for x, y in pairs if x and y}
    changes = []
    for x, y in pairs:
        if x is None:
            changes.append(LayerChange("added", None, y))
        elif y is None:
            changes.append(LayerChange("removed", x, None))
        else:
            fields = compare(x, y, b_for, bool(a.towers and b.towers))
            if fields:
                changes.append(LayerChange("changed", x, y, fields))
    totals = [
        ("input", ", ".join(f"{n.name} {fmt_shape(n.shape)}" for n in a.inputs()),
         ", ".join(f"{n.name} {fmt_shape(n.shape)}" for n in b.inputs())),
        ("output", ", ".join(f"{n.name} {fmt_shape(n.shape)}" for n in a.outputs()),
         ", ".join(f"{n.name} {fmt_shape(n.shape)}" for n in b.outputs())),
        ("towers", _towers(a), _towers(b)),
        ("layers", len(a), len(b)),
        ("parameters", ra.total_params, rb.total_params),
        ("MACs", ra.total_macs, rb.total_macs),
        ("activations", ra.total_activation_bytes, rb.total_activation_bytes),
    ]
    return Diff(ra, rb, changes, pairs, totals)


def merged(a: Graph, b: Graph) -> tuple[Graph, dict[str, str]]:
    """b's graph with a's removed layers put back where they were, and each changed, added or removed
    layer's mark: what `netdsl draw B --diff A`-style pictures colour. A removed layer keeps a's shapes;
    it reads b's names for the layers it read that b still has."""
    d = diff(a, b)
    marks = {(c.b or c.a).name: c.status for c in d.changes}
    b_for = {x.name: y.name for x, y in d.pairs if x and y}
    nodes = []
    for x, y in d.pairs:
        if y is not None:
            nodes.append(y)
        else:
            nodes.append(dataclasses.replace(x, inputs=[b_for.get(i, i) for i in x.inputs],
                                             towers=x.towers if x.towers in b.towers else None,
                                             scope=tuple(s for s in x.scope if s in b.instances)))
    graph = Graph(b.name, title=b.title, source=b.source, nodes=nodes, towers=b.towers, instances=b.instances)
    return graph, marks


def match(a: Graph, b: Graph) -> list[tuple[Node | None, Node | None]]:
    """Pairs (a layer, b layer), None for a layer on one side only, in b's order with removals placed
    after the layer they followed in a."""
    by_name = {n.name for n in a} & {n.name for n in b}
    rest_a = [n for n in a if n.name not in by_name]
    rest_b = [n for n in b if n.name not in by_name]
    paired: dict[str, Node] = {}  # b name -> a node
    for name in by_name:
        paired[name] = a.node(name)
    matcher = difflib.SequenceMatcher(a=[n.kind for n in rest_a], b=[n.kind for n in rest_b], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":  # the same kind at the same place under another name: renamed
            for x, y in zip(rest_a[i1:i2], rest_b[j1:j2]):
                paired[y.name] = x
    used = {x.name for x in paired.values()}
    out: list[tuple[Node | None, Node | None]] = []
    order_a = {n.name: i for i, n in enumerate(a)}
    removed = [n for n in a if n.name not in used]
    last_a = -1
    for y in b:
        x = paired.get(y.name)
        if x is not None:
            out += [(r, None) for r in removed if last_a < order_a[r.name] < order_a[x.name]]
            last_a = max(last_a, order_a[x.name])
        out.append((x, y))
    out += [(r, None) for r in removed if order_a[r.name] > last_a]
    return out


def compare(x: Node, y: Node, b_for: dict[str, str], towers: bool) -> list[tuple[str, str, str]]:
    """What differs between two matched layers; tower modes only when both nets have towers (otherwise
    the totals' `towers` line says it once, not every layer)."""
    out = []
    if x.kind != y.kind:
        out.append(("kind", x.kind, y.kind))
    elif x.kind != "input":  # an input's one parameter is its shape, compared below
        for key in dict.fromkeys([*x.params, *y.params]):
            px, py = x.params.get(key), y.params.get(key)
            if px != py:
                out.append((key, _value(px), _value(py)))
    reads_a = [b_for.get(i, i) for i in x.inputs]  # in b's names, so a renamed input is not a change
    if reads_a != list(y.inputs):
        out.append(("reads", ", ".join(x.inputs) or "-", ", ".join(y.inputs) or "-"))
    if x.shape != y.shape:
        out.append(("shape", fmt_shape(x.shape), fmt_shape(y.shape)))
    for what, key in (("parameters", "param_count"), ("MACs", "macs")):
        if x.meta.get(key) != y.meta.get(key):
            out.append((what, f"{x.meta.get(key, 0):,}", f"{y.meta.get(key, 0):,}"))
    if towers and tower_mode(x) != tower_mode(y):
        out.append(("tower", tower_mode(x) or "none", tower_mode(y) or "none"))
    return out


def _towers(g: Graph) -> str:
    return ", ".join(f"{t.name} {t.count}" for t in g.towers.values()) or "none"


def _value(v: Any) -> str:
    """A normalised parameter as a person writes it: [3, 3] -> 3, [[1, 1], [1, 1]] -> 1."""
    if isinstance(v, list):
        flat = _flatten(v)
        if flat and len(set(map(repr, flat))) == 1:
            return _value(flat[0])
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, dict):  # an initialiser
        args = ", ".join(f"{k}={_value(x)}" for k, x in v.items() if k != "fn")
        return f"{v.get('fn')}({args})" if args else str(v.get("fn"))
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def _flatten(v: list) -> list:
    out = []
    for i in v:
        out += _flatten(i) if isinstance(i, list) else [i]
    return out


def _fmt(what: str, v: int | str) -> str:
    if isinstance(v, str):
        return v
    return _bytes(v) if what == "activations" else f"{v:,}"


def _delta(what: str, x: int | str, y: int | str) -> str:
    if isinstance(x, str) or isinstance(y, str):
        return "" if x == y else "changed"
    d = y - x
    if not d:
        return "="
    text = ("+" if d > 0 else "-") + (_bytes(abs(d)) if what == "activations" else f"{abs(d):,}")
    return text + (f" ({d / x:+.1%})" if x else "")


def _io(node: Node) -> str:
    ins = " + ".join(fmt_shape(s) for s in node.meta.get("in_shapes", []))
    shape = f"{ins} -> {fmt_shape(node.shape)}" if ins else fmt_shape(node.shape)
    counts = [f"{node.meta[k]:,} {w}" for k, w in (("param_count", "params"), ("macs", "MACs")) if node.meta.get(k)]
    return shape + (f" ({', '.join(counts)})" if counts else "")


__all__ = ["diff", "match", "Diff", "LayerChange"]
