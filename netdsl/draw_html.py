"""`netdsl draw SPEC -o net.html`: one self-contained page to explore a big net in a browser.

The page holds the checked graph's facts as JSON and lays them out itself with dagre (vendored in
netdsl/assets/, MIT, inlined into the page with netdsl's viewer script): pan and zoom, block
instances that fold into one box and unfold into a dashed cluster on click (laid out again each
time), a box's row of the `netdsl check` table on hover, towers as clusters, tensor shapes on the
edges. The page fetches nothing and needs no Graphviz; the same graph gives the same bytes. This
module reads the Graph like netdsl.draw does, with draw's boxes, labels and colours, and never
imports torch.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .draw import (RANKDIRS, Box, _mark_attrs, _node_attrs, block_text, box_text, copies, edges, folded_boxes,
                   layer_text, title_lines)
from .ir import Graph, Node, fmt_shape
from .report import Report, _bytes, _int, tower_mode

ASSETS = Path(__file__).resolve().parent / "assets"
LAYOUT_JS = "dagre.min.js"  # see assets/DAGRE-LICENSE.md
VIEWER_JS = "netdsl-view.js"

CSS = """\
html, body { margin: 0; height: 100%; overflow: hidden; background: #ffffff;
  font-family: Helvetica, Arial, sans-serif; color: #222222; }
#canvas { position: fixed; inset: 0; width: 100%; height: 100%; cursor: grab; user-select: none; }
#canvas.dragging { cursor: grabbing; }
#bar { position: fixed; top: 8px; left: 8px; right: 8px; display: flex; flex-wrap: wrap; gap: 6px 16px;
  align-items: center; padding: 6px 10px; background: rgba(255, 255, 255, 0.92); border: 1px solid #dddddd;
  border-radius: 6px; z-index: 2; }
#head .title { font-weight: bold; font-size: 15px; }
#head .subtitle { font-size: 11px; color: #555555; }
#tools button { font: 13px Helvetica, Arial, sans-serif; min-width: 30px; height: 26px; margin-right: 3px;
  border: 1px solid #bbbbbb; border-radius: 4px; background: #f7f7f7; cursor: pointer; }
#tools button:hover { background: #ececec; }
#hint { font-size: 11px; color: #777777; }
.box { cursor: default; }
.box.foldable { cursor: pointer; }
.box text { font-family: Helvetica, Arial, sans-serif; text-anchor: middle; fill: #111111; }
.box text.title { font-size: 12px; font-weight: bold; white-space: pre; }
.box text.line { font-size: 10px; }
.box tspan.kind { font-weight: normal; fill: #555555; }
.box text.glyph { font-size: 10px; text-anchor: start; fill: #8a6a3a; }
.box.foldable:hover rect { filter: brightness(0.96); }
.cluster .frame { fill: none; stroke: #b08850; stroke-dasharray: 5,3; }
.cluster.tower .frame { fill: #f7f7f7; stroke: #999999; stroke-dasharray: none; }
.cluster .cluster-label { font-size: 11px; fill: #6b5331; font-weight: bold; paint-order: stroke; stroke: #ffffff;
  stroke-width: 4px; stroke-linejoin: round; }
.cluster.tower .cluster-label { fill: #555555; font-weight: normal; stroke: #f7f7f7; }
.cluster.foldable .cluster-label { cursor: pointer; }
.cluster.foldable .cluster-label:hover { text-decoration: underline; }
.edge path { fill: none; stroke: #555555; stroke-width: 1; }
.edge.cross path { stroke: #c0392b; stroke-dasharray: 5,3; stroke-width: 1.3; }
.edge text { font-size: 10px; fill: #555555; text-anchor: middle; paint-order: stroke;
  stroke: #ffffff; stroke-width: 3px; stroke-linejoin: round; }
.edge.cross text { fill: #c0392b; }
#tip { position: fixed; z-index: 3; pointer-events: none; background: #fffff4; border: 1px solid #999999;
  border-radius: 4px; padding: 6px 8px; font-size: 12px; box-shadow: 0 2px 6px rgba(0, 0, 0, 0.2);
  max-width: 520px; }
#tip .tip-head { font-weight: bold; margin-bottom: 3px; }
#tip th { text-align: left; color: #555555; font-weight: normal; padding: 0 10px 0 0; vertical-align: top; }
#tip td { font-family: Menlo, Consolas, monospace; font-size: 11px; }
#tip .tip-note { color: #777777; margin-top: 3px; font-size: 11px; }
#error { position: fixed; bottom: 8px; left: 8px; right: 8px; padding: 8px; background: #fbe3e1;
  border: 1px solid #c0392b; z-index: 4; white-space: pre-wrap; font-size: 12px; }
"""

PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="netdsl draw">
<title>@TITLE@</title>
<style>
@CSS@</style>
</head>
<body>
<div id="bar">
<div id="head"></div>
<div id="tools"><button id="zoom-in" title="zoom in (+)">+</button\
><button id="zoom-out" title="zoom out (-)">\u2212</button\
><button id="fit" title="fit the net to the window (0)">fit</button\
><button id="fold-all" title="fold every block">fold all</button\
><button id="unfold-all" title="unfold every block">unfold all</button></div>
<div id="hint">click a block to unfold it, its frame's label to fold it \u00b7 drag to pan, wheel to zoom \u00b7 \
hover a box for its row of <code>netdsl check</code></div>
</div>
<svg id="canvas" role="img" aria-label="@TITLE@"><defs>
<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"\
><path d="M0,1 L10,5 L0,9 z" fill="#555555"/></marker>
<marker id="arrow-cross" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"\
><path d="M0,1 L10,5 L0,9 z" fill="#c0392b"/></marker>
</defs><g id="viewport"></g></svg>
<div id="tip" hidden></div>
<div id="error" hidden></div>
<noscript><p>This page draws the net with JavaScript; turn it on, or use netdsl draw SPEC -o net.svg.</p></noscript>
<script type="application/json" id="netdsl-view">@VIEW@</script>
<script type="application/json" id="netdsl-facts">@FACTS@</script>
<script>
window.addEventListener("error", function (e) {
  var box = document.getElementById("error");
  box.hidden = false;
  box.textContent = "netdsl viewer error: " + e.message;
});
</script>
<script>
@LAYOUT@
</script>
<script>
@VIEWER@
</script>
</body>
</html>
"""


def to_html(graph: Graph, rankdir: str = "TB", shapes: bool = True, counts: bool = True, fold: bool = True,
            marks: dict[str, str] | None = None) -> bytes:
    """The page for a checked graph. `fold` folds every block instance at first (else all unfold);
    `marks` (from netdsl.diff.merged) colours added, changed and removed layers as draw.to_dot does."""
    if rankdir.upper() not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    data = view_data(graph, rankdir.upper(), shapes, counts, fold, marks)
    page = PAGE
    for key, value in (("@TITLE@", html.escape(graph.title or graph.name)), ("@CSS@", CSS),
                       ("@VIEW@", _json(data)), ("@FACTS@", _json(facts(graph))),
                       ("@LAYOUT@", _script(LAYOUT_JS)), ("@VIEWER@", _script(VIEWER_JS))):
        page = page.replace(key, value)
    return page.encode("utf-8")


def facts(graph: Graph) -> dict[str, Any]:
    """What `netdsl check --json` says of the graph (per layer: shapes, counts, receptive field)."""
    return Report.build(graph).to_dict()


def view_data(graph: Graph, rankdir: str = "TB", shapes: bool = True, counts: bool = True, fold: bool = True,
              marks: dict[str, str] | None = None) -> dict[str, Any]:
    """What the viewer draws: every layer (with the block groups around it, outermost first), the
    groups (block instances, runs of identical instances, runs of repeat iterations), the edges
    between layer copies (one copy per tower inside a split) and each box's row of the check table."""
    report = Report.build(graph)
    rows = {n.name: report._row(n) for n in report.rows}
    outputs = {n.name for n in graph.outputs()}
    consumers = graph.consumers()
    groups: dict[str, dict[str, Any]] = {}
    outer: dict[str, str] = {}  # layer or top-level instance -> the run group around it

    def add(gid: str, box: Box, parent: str | None, label: str, foldable: bool, folded: bool) -> None:
        title, kind, lines = box_text(graph, box, counts)
        chain = ([*groups[parent]["chain"], parent] if parent else [])
        per_unit = box.nodes[:len(box.nodes) // box.count]
        groups[gid] = {
            "id": gid, "title": title, "kind": kind, "lines": lines, "label": label,
            "towers": box.towers if foldable else None, "foldable": foldable, "folded": folded and foldable,
            "chain": chain, "layers": len(box.nodes), "style": _style(graph, box, counts, outputs, marks),
            "row": _group_row(graph, title, kind, box.nodes, per_unit, rows, consumers)}

    for box in folded_boxes(graph):
        if box.count > 1:  # a run of identical block instances, or of repeat iterations
            gid = f"run:{box.id}"
            title, kind, _ = box_text(graph, box, counts)
            add(gid, box, None, f"{title}: {kind}", True, fold)
            for n in box.nodes:
                outer[n.scope[0] if box.block is not None else n.name] = gid
    for name, nodes in _instances(graph).items():
        depth = nodes[0].scope.index(name)
        parent = f"block:{nodes[0].scope[depth - 1]}" if depth else outer.get(name)
        foldable = len({n.towers for n in nodes}) == 1  # a block across a split's edge stays open
        # at first: blocks folded (those in a run too, once the run unfolds), their inner blocks open
        add(f"block:{name}", Box(name, nodes, block=name), parent, f"{name}: {block_text(graph, name)}",
            foldable, fold and (depth == 0 or parent is not None and parent.startswith("run:")))

    owner = {n.name: Box(n.name, [n]) for n in graph}
    copy_of = {cid: (n.name, t if n.towers else -1)
               for n in graph for t, cid in enumerate(copies(graph, owner[n.name]))}
    links = [[*copy_of[e.src], *copy_of[e.dst], e.label, e.cross] for e in edges(graph, owner, shapes)]
    return {
        "name": graph.name, "rankdir": rankdir, "header": title_lines(graph, counts, fold, marks),
        "towers": {name: t.count for name, t in graph.towers.items()},
        "layers": [_layer(graph, n, counts, outputs, marks, rows, outer) for n in graph],
        "groups": list(groups.values()), "edges": links,
    }


def _instances(graph: Graph) -> dict[str, list[Node]]:
    """Each block instance's layers, in the graph's order (outer instances before inner ones)."""
    out: dict[str, list[Node]] = {}
    for n in graph:
        for name in n.scope:
            out.setdefault(name, []).append(n)
    return out


def _layer(graph: Graph, n: Node, counts: bool, outputs: set[str], marks: dict[str, str] | None,
           rows: dict[str, list[str]], outer: dict[str, str]) -> dict[str, Any]:
    title, kind, lines = layer_text(graph, n, counts)
    run = outer.get(n.scope[0] if n.scope else n.name)
    return {"name": n.name, "title": title, "kind": kind, "lines": lines, "towers": n.towers,
            "chain": ([run] if run else []) + [f"block:{s}" for s in n.scope],
            "style": _style(graph, Box(n.name, [n]), counts, outputs, marks),
            "row": rows.get(n.name) or [n.name, n.kind, "-", fmt_shape(n.shape), "", "-", "-", "-", "-"]}


def _style(graph: Graph, box: Box, counts: bool, outputs: set[str], marks: dict[str, str] | None) -> dict[str, Any]:
    """draw.to_dot's colours and borders for the box, as the viewer needs them."""
    attrs = _node_attrs(graph, box, counts, outputs)
    if marks:
        attrs.update(_mark_attrs(box, marks))
    style = attrs.get("style", "rounded,filled")
    return {"fill": attrs.get("fillcolor", "#f3f3f3"), "stroke": attrs.get("color", "#444444"),
            "pen": float(attrs.get("penwidth", "1")), "rounded": "rounded" in style, "dashed": "dashed" in style,
            "stack": attrs.get("shape") == "box3d"}


def _group_row(graph: Graph, title: str, kind: str, nodes: list[Node], unit: list[Node],
               rows: dict[str, list[str]], consumers: dict[str, list[Node]]) -> list[str]:
    """A folded box's row of the check table: what enters and leaves it, its layers' totals."""
    names = {n.name for n in nodes}
    entering: dict[str, None] = {}
    for n in nodes:
        for i in n.inputs:
            if i not in names:
                entering[fmt_shape(graph.node(i).shape)] = None
    leaving = [n for n in nodes if not consumers[n.name] or any(c.name not in names for c in consumers[n.name])]
    io = " + ".join(entering) + " -> " + " + ".join(fmt_shape(n.shape) for n in leaving)
    modes = sorted({tower_mode(n) for n in nodes} - {None})
    meta = [n.meta for n in nodes]
    rf = rows[leaving[-1].name][8] if leaving and leaving[-1].name in rows else "-"
    return [title, kind, "/".join(modes) or "-", io, _config(unit, rows),
            _int(sum(m.get("param_count", 0) for m in meta)), _int(sum(m.get("macs", 0) for m in meta)),
            _bytes(sum(m.get("activation_bytes", 0) for m in meta)), rf]


def _config(nodes: list[Node], rows: dict[str, list[str]], most: int = 4) -> str:
    """What one unit of a folded box holds, in the check table's words (whole layers, not one tower's
    share as on the boxes): like draw.summary, each distinct layer with its count, or kind counts."""
    seen: dict[str, int] = {}
    for n in nodes:
        config = rows[n.name][4] if n.name in rows else ""
        seen[f"{n.kind} {config}".strip()] = seen.get(f"{n.kind} {config}".strip(), 0) + 1
    if len(seen) > most:
        seen = {}
        for n in nodes:
            seen[n.kind] = seen.get(n.kind, 0) + 1
    return "; ".join(f"{c}× {what}" if c > 1 else what for what, c in seen.items())


def _json(data: Any) -> str:
    """JSON safe inside a <script> element: no `<` at all (so no `</script>`), same bytes every time."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _script(name: str) -> str:
    text = (ASSETS / name).read_text(encoding="utf-8").strip()
    if "</script" in text.lower():
        raise ValueError(f"{name} cannot be inlined: it contains '</script'")
    return text


__all__ = ["to_html", "view_data", "facts"]
