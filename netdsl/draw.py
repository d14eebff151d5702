"""The graphviz back end: architecture diagrams from the IR, headless and deterministic.

`to_dot` turns a checked Graph into a `graphviz.Digraph`: one box per layer (or per folded block),
tensor shapes on the edges, one cluster per tower with the split's layers drawn in every tower and
the edges that cross between towers drawn dashed. `render` lays it out with graphviz's `dot`
program; `.dot` output is the graph's source and works without it. Without `dot`, SVG output falls
back to `layered_svg`, a simpler layout netdsl does itself, and `.html` output (netdsl.draw_html: an
interactive page laid out in the browser) never needs it. Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import html
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import graphviz

from . import layers
from .errors import DotNotFound, DrawError
from .ir import Graph, Node, Shape, fmt_shape

if TYPE_CHECKING:
    from .api import Net

FORMATS = ("svg", "png", "pdf", "dot", "html")
RANKDIRS = ("TB", "LR")
PNG_DPI = 144  # 96 looks blurry in a paper or on a slide
MAX_BLOCK_CLUSTERS = 200

INSTALL_HINT = """\
netdsl draws through Graphviz's `dot` program, which is not installed (or not on PATH).
Install Graphviz, then run the command again:
  Debian/Ubuntu:  sudo apt-get install graphviz
  Fedora:         sudo dnf install graphviz
  macOS:          brew install graphviz
  conda:          conda install -c conda-forge graphviz
  Windows:        winget install graphviz   (then add its bin folder to PATH)
(`pip install graphviz` installs only the Python bindings, not the `dot` program.)
Without Graphviz these work: netdsl draw SPEC -o net.html (an interactive page to pan, zoom and
unfold), -o net.svg (netdsl's own simpler layout) and -o net.dot (Graphviz source)."""

FALLBACK_NOTE = ("note: Graphviz's `dot` is not installed, so netdsl laid this SVG out itself; Graphviz's "
                 "layout is better: install it (sudo apt-get install graphviz, brew install graphviz, "
                 "conda install -c conda-forge graphviz) and draw again")

FONT = "Helvetica"
CROSS_COLOR = "#c0392b"
MUTED = "#555555"
FILL = {  # by layer kind; anything not named here is an activation-like layer
    "conv": "#fde3c8", "fc": "#e4dcf2", "lrn": "#fbf1bd", "batchnorm": "#fbf1bd",
    "maxpool": "#d5e8f7", "avgpool": "#d5e8f7", "adaptive_avgpool": "#d5e8f7",
    "adaptive_maxpool": "#d5e8f7", "global_avgpool": "#d5e8f7",
    "concat": "#dcefd5", "add": "#dcefd5", "input": "#bcd7ee",
    "convtranspose": "#fde3c8", "layernorm": "#fbf1bd", "groupnorm": "#fbf1bd", "global_maxpool": "#d5e8f7",
    "upsample": "#d5e8f7", "multiply": "#dcefd5", "maximum": "#dcefd5", "weighted_sum": "#dcefd5",
}
FILL_OTHER = "#f3f3f3"
FILL_BLOCK = "#fdf0e1"
FILL_OUTPUT = "#c9e6c0"


# ------------------------------------------------------------------------ boxes

@dataclass
class Box:
    """One drawn box: a layer, a folded block instance, or a run of identical ones (xN)."""

    id: str
    nodes: list[Node]
    count: int = 1  # identical block instances or repeat iterations folded into this box
    block: str | None = None  # the (first) block instance it stands for
    clusters: tuple[str, ...] = ()  # enclosing block instances drawn as clusters (expanded view)

    @property
    def towers(self) -> str | None:
        return self.nodes[0].towers

    @property
    def folded(self) -> bool:
        return len(self.nodes) > 1 or self.block is not None


def expanded_boxes(graph: Graph) -> list[Box]:
    boxed = boxes_blocks(graph)
    return [Box(n.name, [n], clusters=n.scope if boxed else ()) for n in graph]


def boxes_blocks(graph: Graph) -> bool:
    """Whether the expanded view draws block instances as clusters: dot slows down about fivefold
    with hundreds of clusters, and the layers' names (u_17.conv) still say which block they are in."""
    return len(graph.instances) <= MAX_BLOCK_CLUSTERS


def folded_boxes(graph: Graph) -> list[Box]:
    """Block instances become one box each; runs of identical instances or repeat iterations, one xN box."""
    boxes: list[Box] = []
    for run in _runs(_units(graph)):
        boxes.extend(_run_boxes(run))
    for box in boxes:
        if box.block is not None and box.id in graph:  # a layer may share a block instance's name
            box.id += " (block)"
    return boxes


@dataclass
class _Unit:
    nodes: list[Node]
    block: str | None  # the outermost block instance, or None for a top-level layer
    signature: tuple | None  # equal signatures fold together; None never folds
    suffix: tuple[int, ...] = ()  # repeat iteration numbers of a top-level layer


def _units(graph: Graph) -> list[_Unit]:
    units: list[_Unit] = []
    for node in graph:
        block = node.scope[0] if node.scope else None
        suffix = node.repeat if block is None else ()
        last = units[-1] if units else None
        if last and last.block == block and (block is not None or (suffix and last.suffix == suffix)):
            last.nodes.append(node)
        else:
            units.append(_Unit([node], block, None, suffix))
    for unit in units:
        unit.signature = _signature(graph, unit)
    return units


def _local_name(unit: _Unit, node: Node) -> str:
    if unit.block is not None:
        return node.name[len(unit.block) + 1:]
    return node.stem


def _signature(graph: Graph, unit: _Unit) -> tuple | None:
    """What must match for two units to fold: layers, parameters, wiring and towers; not input sizes."""
    if unit.block is None and not unit.suffix:
        return None
    if len({n.towers for n in unit.nodes}) > 1:
        return None
    names = {n.name for n in unit.nodes}
    layers_sig = tuple(
        (_local_name(unit, n), n.kind, repr(n.params), n.cross, n.meta.get("tower_groups"),
         n.meta.get("reads_all_towers"),
         tuple(_local_name(unit, graph.node(i)) if i in names else "<in>" for i in n.inputs))
        for n in unit.nodes)
    return (graph.instances[unit.block].block if unit.block else None, unit.nodes[0].towers, layers_sig)


def _runs(units: list[_Unit]) -> Iterator[list[_Unit]]:
    run: list[_Unit] = []
    for unit in units:
        if run and _continues(run[-1], unit):
            run.append(unit)
            continue
        if run:
            yield run
        run = [unit]
    if run:
        yield run


def _continues(prev: _Unit, unit: _Unit) -> bool:
    if unit.signature is None or unit.signature != prev.signature:
        return False
    if unit.block is not None:
        return True
    # consecutive iterations of one repeat: same outer iterations, the innermost one step on
    return unit.suffix[:-1] == prev.suffix[:-1] and unit.suffix[-1] == prev.suffix[-1] + 1


def _run_boxes(run: list[_Unit]) -> list[Box]:
    first = run[0]
    nodes = [n for u in run for n in u.nodes]
    if first.block is not None and first.signature is not None:
        return [Box(first.block, nodes, count=len(run), block=first.block)]
    if len(run) > 1:
        return [Box(first.nodes[0].name, nodes, count=len(run))]
    return [Box(n.name, [n], clusters=n.scope) for n in nodes]


# ------------------------------------------------------------------------ labels

def tower_shape(graph: Graph, node: Node) -> Shape | None:
    """The slice of this layer's output that one tower holds."""
    shape, share = node.shape, graph.tower_count(node)
    if shape is None or share == 1:
        return shape
    return (shape[0] // share, *shape[1:])


def hyper(graph: Graph, node: Node) -> str:
    """The layer's hyper-parameters as one tower sees them (conv1 of 96 in 2 towers: 48)."""
    kind = layers.lookup(node.kind)
    share = graph.tower_count(node)
    if kind is None or node.meta.get("invalid"):
        return ""
    if share > 1 and kind.splits_channels and "out" in node.params:
        node = dataclasses.replace(node, params={**node.params, "out": node.params["out"] // share},
                                   meta={**node.meta, "tower_groups": 1})
    try:
        return kind.label(node)
    except (KeyError, TypeError, ValueError):
        return ""


def params_of(graph: Graph, nodes: list[Node]) -> int:
    return sum(n.meta.get("param_count", 0) // graph.tower_count(n) for n in nodes)


def _text(text: str) -> str:
    return html.escape(text, quote=False)


def _html(title: str, kind: str, lines: list[str]) -> str:
    head = f"<b>{_text(title)}</b>" + (f'  <font color="{MUTED}">{_text(kind)}</font>' if kind else "")
    return _rows([head] + [f'<font point-size="10">{_text(line)}</font>' for line in lines if line])


def _rows(cells: list[str]) -> str:
    """An HTML-like label, one table row per line: with plain <br/> lines, cairo draws an underscore
    of one line across the top of the next."""
    rows = "".join(f"<tr><td>{cell}</td></tr>" for cell in cells)
    return f'<<table border="0" cellborder="0" cellspacing="0" cellpadding="1">{rows}</table>>'


def layer_label(graph: Graph, node: Node, counts: bool) -> str:
    return _html(*layer_text(graph, node, counts))


def layer_text(graph: Graph, node: Node, counts: bool) -> tuple[str, str, list[str]]:
    """A layer's box as plain text: title, kind, lines (its hyper-parameters, its parameters)."""
    lines = [hyper(graph, node)]
    params = params_of(graph, [node])
    if counts and params:
        lines.append(f"{params:,} params")
    return node.name, node.kind, [line for line in lines if line]


def box_label(graph: Graph, box: Box, counts: bool) -> str:
    return _html(*box_text(graph, box, counts))


def box_text(graph: Graph, box: Box, counts: bool) -> tuple[str, str, list[str]]:
    """A box as plain text: title (`inception_3a`), kind (the block call, ×N), lines (what it holds)."""
    if not box.folded:
        return layer_text(graph, box.nodes[0], counts)
    per_unit = len(box.nodes) // box.count
    names = [box.nodes[i * per_unit].name if box.block is None else box.nodes[i * per_unit].scope[0]
             for i in (0, box.count - 1)]
    if box.block is not None and box.count == 1:
        names = [box.block]  # also a nested instance, whose layers' scope[0] is the outer one
    title = names[0] if box.count == 1 else f"{names[0]}{' …' if box.count > 2 else ','} {names[1]}"
    if box.block is not None:
        kind = block_text(graph, box.block)
    else:
        kind = "repeat"
    if box.count > 1:
        kind += f" ×{box.count}"
    lines = summary(graph, box.nodes[:per_unit])
    params = params_of(graph, box.nodes)
    if counts and params:
        lines.append(f"{params:,} params" + (" in all" if box.count > 1 else ""))
    return title, kind, lines


def summary(graph: Graph, nodes: list[Node], most: int = 4) -> list[str]:
    """What a folded block holds: each distinct layer with its count, or kind counts when too varied."""
    seen: dict[tuple[str, str], int] = {}
    for n in nodes:
        key = (n.kind, hyper(graph, n))
        seen[key] = seen.get(key, 0) + 1
    if len(seen) <= most:
        return [f"{f'{c}× ' if c > 1 else ''}{kind} {label}".strip() for (kind, label), c in seen.items()]
    kinds: dict[str, int] = {}
    for n in nodes:
        kinds[n.kind] = kinds.get(n.kind, 0) + 1
    parts = [f"{f'{c}× ' if c > 1 else ''}{k}" for k, c in kinds.items()]
    return [", ".join(parts[i:i + 3]) for i in range(0, len(parts), 3)]


def block_text(graph: Graph, instance: str) -> str:
    """A block instance as its call was written (`inception(64, 96, 128, 16, 32, 32)`), else its block."""
    inst = graph.instances[instance]
    return inst.call or inst.block


# ------------------------------------------------------------------------ edges

@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str
    cross: bool = False


def copies(graph: Graph, box: Box) -> list[str]:
    """The graphviz ids of a box: one per tower inside a split."""
    if box.towers:
        return [f"{box.id}@{t}" for t in range(graph.towers[box.towers].count)]
    return [box.id]


def edges(graph: Graph, owner: dict[str, Box], shapes: bool) -> list[Edge]:
    out: dict[Edge, None] = {}  # an ordered set
    for node in graph:
        dst = owner[node.name]
        for name in node.inputs:
            src = owner.get(name)
            if src is None or src is dst:
                continue
            for edge in _edges_between(graph, graph.node(name), node, src, dst, shapes):
                out[edge] = None
    return list(out)


def _edges_between(graph: Graph, src_node: Node, dst_node: Node, src: Box, dst: Box,
                   shapes: bool) -> list[Edge]:
    label = fmt_shape(tower_shape(graph, src_node)) if shapes and src_node.shape else ""
    srcs, dsts = copies(graph, src), copies(graph, dst)
    if len(srcs) == len(dsts) and src.towers == dst.towers and src.towers:
        local = [Edge(s, d, label) for s, d in zip(srcs, dsts)]
        if not dst_node.meta.get("reads_all_towers"):
            return local
        return local + [Edge(s, d, label, cross=True)
                        for d_i, d in enumerate(dsts) for s_i, s in enumerate(srcs) if s_i != d_i]
    return [Edge(s, d, label) for s in srcs for d in dsts]


# ------------------------------------------------------------------------ the graph

@dataclass
class _Cluster:
    name: str
    label: str
    attrs: dict[str, str]
    nodes: list[tuple[str, dict[str, str]]] = dataclasses.field(default_factory=list)
    children: dict[str, "_Cluster"] = dataclasses.field(default_factory=dict)


def to_dot(graph: Graph, rankdir: str = "TB", shapes: bool = True, counts: bool = True,
           fold: bool = True, marks: dict[str, str] | None = None) -> graphviz.Digraph:
    """The diagram of a checked graph. `marks` (layer -> added | changed | removed, from diff.merged)
    colours what a comparison found; a folded box takes the mark of any layer in it."""
    if rankdir.upper() not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    boxes = folded_boxes(graph) if fold else expanded_boxes(graph)
    owner = {n.name: box for box in boxes for n in box.nodes}
    dot = graphviz.Digraph(graph.name, graph_attr=_graph_attrs(graph, rankdir.upper(), counts, fold, marks),
                           node_attr={"shape": "box", "style": "rounded,filled", "fontname": FONT,
                                      "fontsize": "12", "color": "#444444", "margin": "0.1,0.03"},
                           edge_attr={"fontname": FONT, "fontsize": "10", "fontcolor": MUTED,
                                      "color": "#555555", "arrowsize": "0.7"})
    root = _Cluster("", "", {})
    outputs = {n.name for n in graph.outputs()}
    for box in boxes:
        attrs = _node_attrs(graph, box, counts, outputs)
        if marks:
            attrs.update(_mark_attrs(box, marks))
        for t, node_id in enumerate(copies(graph, box)):
            _cluster_for(graph, root, box, t).nodes.append((node_id, attrs))
    _emit(dot, root)
    for edge in edges(graph, owner, shapes):
        dot.edge(edge.src, edge.dst, **_edge_attrs(edge))
    return dot


def _graph_attrs(graph: Graph, rankdir: str, counts: bool, fold: bool,
                 marks: dict[str, str] | None = None) -> dict[str, str]:
    lines = title_lines(graph, counts, fold, marks)
    title = _rows([f"<b>{_text(lines[0])}</b>"]
                  + [f'<font point-size="11" color="{MUTED}">{_text(line)}</font>' for line in lines[1:]])
    return {"rankdir": rankdir, "label": title, "labelloc": "t", "fontname": FONT,
            "fontsize": "16", "nodesep": "0.3", "ranksep": "0.3", "newrank": "true",
            "bgcolor": "white", "pad": "0.2"}


def title_lines(graph: Graph, counts: bool, fold: bool, marks: dict[str, str] | None = None) -> list[str]:
    """The diagram's title: the net's title, then what to know to read it (totals, towers, marks)."""
    lines = [graph.title or graph.name]
    if marks is not None:
        lines.append("compared: green added, amber changed, red dashed removed ("
                     + ", ".join(f"{sum(m == s for m in marks.values())} {s}" for s in MARKS) + ")")
    if counts:
        total_params = sum(n.meta.get("param_count", 0) for n in graph)
        total_macs = sum(n.meta.get("macs", 0) for n in graph)
        lines.append(f"{total_params:,} parameters · {total_macs:,} multiply-adds per image")
    if graph.towers:
        per_tower = "channels and parameters" if counts else "channels"
        lines.append(f"inside a tower: {per_tower} per tower; dashed red: reads every tower")
    if not fold and not boxes_blocks(graph):
        lines.append(f"{len(graph.instances):,} block instances, too many to box: a layer's name says its block")
    return lines


def _node_attrs(graph: Graph, box: Box, counts: bool, outputs: set[str]) -> dict[str, str]:
    attrs = {"label": box_label(graph, box, counts)}
    kind = box.nodes[0].kind
    if box.folded:
        attrs.update(fillcolor=FILL_BLOCK, penwidth="1.5")
        if box.count > 1:
            attrs.update(shape="box3d", style="filled", margin="0.16,0.05")
    elif kind == "input":
        attrs.update(fillcolor=FILL["input"], penwidth="2", style="filled,bold")
    elif box.nodes[-1].name in outputs:
        attrs.update(fillcolor=FILL_OUTPUT, penwidth="2", style="rounded,filled,bold")
    else:
        attrs["fillcolor"] = FILL.get(kind, FILL_OTHER)
    if any(n.meta.get("reads_all_towers") for n in box.nodes):
        attrs.update(color=CROSS_COLOR, penwidth="2")
    return attrs


MARKS = {  # diff marks: (fill, border)
    "added": ("#c9efc0", "#2e8b3a"), "changed": ("#ffe2a8", "#d68910"), "removed": ("#fbe3e1", CROSS_COLOR),
}


def _mark_attrs(box: Box, marks: dict[str, str]) -> dict[str, str]:
    found = [marks.get(n.name) for n in box.nodes]
    if not any(found):
        return {}
    mark = found[0] if len(set(found)) == 1 else "changed"  # a folded block partly changed is changed
    fill, border = MARKS[mark]
    attrs = {"fillcolor": fill, "color": border, "penwidth": "2.5"}
    if mark == "removed":
        attrs["style"] = "rounded,filled,dashed"
    return attrs


def _edge_attrs(edge: Edge) -> dict[str, str]:
    attrs = {"label": edge.label} if edge.label else {}
    if edge.cross:
        attrs.update(style="dashed", color=CROSS_COLOR, fontcolor=CROSS_COLOR, penwidth="1.3")
    return attrs


def _cluster_for(graph: Graph, root: _Cluster, box: Box, tower: int) -> _Cluster:
    cluster = root
    if box.towers:
        key = f"cluster_{box.towers}_{tower}"
        label = f"tower {tower}" if len(graph.towers) == 1 else f"{box.towers}: tower {tower}"
        cluster = cluster.children.setdefault(key, _Cluster(key, label, {
            "style": "rounded,filled", "fillcolor": "#f7f7f7", "color": "#999999"}))
    for instance in box.clusters:
        key = f"cluster_{instance}" + (f"@{tower}" if box.towers else "")
        label = f"{instance}: {block_text(graph, instance)}"
        cluster = cluster.children.setdefault(key, _Cluster(key, label, {
            "style": "rounded,dashed", "color": "#b08850"}))
    return cluster


def _emit(dot: graphviz.Digraph, cluster: _Cluster) -> None:
    for node_id, attrs in cluster.nodes:
        dot.node(node_id, **attrs)
    for child in cluster.children.values():
        sub = graphviz.Digraph(child.name, graph_attr={"label": child.label, "fontname": FONT,
                                                       "fontsize": "12", "labeljust": "l", **child.attrs})
        _emit(sub, child)
        dot.subgraph(sub)


# ------------------------------------------------------------------------ output

def format_for(path: str | os.PathLike | None, fmt: str | None) -> str:
    """The output format: `fmt` when given, else the file's extension."""
    if fmt:
        chosen = fmt.lower()
    else:
        suffix = Path(path).suffix.lower().lstrip(".") if path else ""
        chosen = "dot" if suffix == "gv" else suffix
        if not chosen:
            raise ValueError(f"cannot tell the format of '{path}' without an extension; "
                             f"use --format ({', '.join(FORMATS)})")
    if chosen not in FORMATS:
        raise ValueError(f"unknown format '{chosen}': netdsl draws {', '.join(FORMATS)}")
    return chosen


def render_graph(graph: Graph, fmt: str, fallback: bool = True, **options) -> bytes:
    """The diagram as the bytes of a file in `fmt`; `dot` and `html` need no Graphviz installed, nor
    does `svg` with `fallback` (netdsl's own layout, with a note on stderr, when `dot` is missing)."""
    if fmt == "html":
        from .draw_html import to_html  # draw_html builds on this module
        return to_html(graph, **options)
    dot = to_dot(graph, **options)
    if fmt == "dot":
        return dot.source.encode("utf-8")
    if fmt == "png":
        dot.graph_attr["dpi"] = str(PNG_DPI)
    try:
        data = dot.pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
        if fmt == "svg" and fallback:
            print(FALLBACK_NOTE, file=sys.stderr)
            return layered_svg(graph, **options)
        raise DotNotFound(INSTALL_HINT) from None
    except graphviz.CalledProcessError as err:
        detail = (err.stderr or b"").decode("utf-8", "replace").strip()
        raise DrawError(f"Graphviz's dot failed (exit {err.returncode})" + (f": {detail}" if detail else "")) from None
    return fixed_pdf_dates(data) if fmt == "pdf" else data


_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \((D:[^)]*)\)")


def fixed_pdf_dates(data: bytes) -> bytes:
    """Cairo stamps PDFs with the time; use SOURCE_DATE_EPOCH (default 0) so builds are reproducible.

    The replacement keeps the string's length, so the PDF's cross-reference offsets stay valid.
    """
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    stamp = ("D:" + time.strftime("%Y%m%d%H%M%S", time.gmtime(epoch)) + "Z").encode()

    def fix(match: re.Match) -> bytes:
        old = match.group(2)
        new = stamp[:len(old)].ljust(len(old), b" ")
        return b"/" + match.group(1) + b" (" + new + b")"

    return _PDF_DATE.sub(fix, data)


# ------------------------------------------------------------------------ without Graphviz

_SVG_FONT = "Helvetica, Arial, sans-serif"
_RANKSEP, _NODESEP, _PADX, _PADY = 34.0, 22.0, 9.0, 5.0


@dataclass
class _Place:
    """A box (one tower's copy) or a bend of a long edge in the layered layout; x, y is its centre."""

    id: str
    width: float
    height: float
    lines: list[str] = dataclasses.field(default_factory=list)
    title: str = ""
    kind: str = ""
    attrs: dict[str, str] = dataclasses.field(default_factory=dict)
    rank: int = 0
    x: float = 0.0
    y: float = 0.0


def _text_width(text: str, size: float, bold: bool = False) -> float:
    """About what Helvetica needs (there are no font metrics without a renderer): on the wide side."""
    narrow = sum(ch in "iljtf1.,:;|!' ()[]" for ch in text)
    return ((len(text) - narrow) * 0.6 + narrow * 0.32) * size * (1.08 if bold else 1.0)


def layered_svg(graph: Graph, rankdir: str = "TB", shapes: bool = True, counts: bool = True,
                fold: bool = True, marks: dict[str, str] | None = None) -> bytes:
    """The diagram laid out by netdsl itself, for when Graphviz's `dot` is missing: the same boxes,
    labels, colours and edges as `to_dot`, in layers (a box's layer is its longest path from the
    input), ordered within a layer by their neighbours' order, edges drawn as polylines. Towers are a
    tag on each copy rather than clusters; blocks show in the layers' names rather than as clusters."""
    if rankdir.upper() not in RANKDIRS:
        raise ValueError(f"rankdir must be one of {', '.join(RANKDIRS)}, got {rankdir!r}")
    lr = rankdir.upper() == "LR"
    boxes = folded_boxes(graph) if fold else expanded_boxes(graph)
    owner = {n.name: box for box in boxes for n in box.nodes}
    outputs = {n.name for n in graph.outputs()}
    places: dict[str, _Place] = {}
    for box in boxes:
        title, kind, lines = box_text(graph, box, counts)
        attrs = _node_attrs(graph, box, counts, outputs)
        if marks:
            attrs.update(_mark_attrs(box, marks))
        for t, node_id in enumerate(copies(graph, box)):
            tag = ([f"tower {t}" if len(graph.towers) == 1 else f"{box.towers}: tower {t}"] if box.towers else [])
            body = [line for line in lines if line] + tag
            width = max([_text_width(title, 12, True) + (_text_width("  " + kind, 12) if kind else 0)]
                        + [_text_width(line, 10) for line in body]) + 2 * _PADX
            places[node_id] = _Place(node_id, width, 15 + 13 * len(body) + 2 * _PADY, body, title, kind, attrs)
    links = edges(graph, owner, shapes)
    ranks = _layers(places, links)
    routes = _bend_points(places, ranks, links)
    _order(ranks, places, routes)
    _place(ranks, places, routes, lr, links)
    return _svg_text(graph, places, links, routes, lr, counts, fold, marks)


def _layers(places: dict[str, _Place], links: list[Edge]) -> list[list[str]]:
    """Longest-path layers, in the boxes' order (the graph's order, which is topological)."""
    preds: dict[str, list[str]] = {k: [] for k in places}
    for e in links:
        preds[e.dst].append(e.src)
    done: set[str] = set()
    for key, place in places.items():
        place.rank = max((places[p].rank + 1 for p in preds[key] if p in done), default=0)
        done.add(key)
    ranks: list[list[str]] = [[] for _ in range(max((p.rank for p in places.values()), default=0) + 1)]
    for key, place in places.items():
        ranks[place.rank].append(key)
    return ranks


def _bend_points(places: dict[str, _Place], ranks: list[list[str]], links: list[Edge]) -> list[list[str]]:
    """Each edge's route: its ends and a bend point in every layer it passes (so it goes round boxes)."""
    routes = []
    for i, e in enumerate(links):
        src, dst = places[e.src], places[e.dst]
        route = [e.src]
        for r in range(src.rank + 1, dst.rank):
            bend = _Place(f"\0{i}.{r}", 10.0, 10.0, rank=r)
            places[bend.id] = bend
            ranks[r].append(bend.id)
            route.append(bend.id)
        routes.append(route + [e.dst])
    return routes


def _order(ranks: list[list[str]], places: dict[str, _Place], routes: list[list[str]]) -> None:
    """Order each layer by the mean position of its neighbours in the layer above (then below, then
    above again): few crossings, towers side by side; ties keep the graph's order."""
    up: dict[str, list[str]] = {k: [] for k in places}
    down: dict[str, list[str]] = {k: [] for k in places}
    for route in routes:
        for a, b in zip(route, route[1:]):
            up[b].append(a)
            down[a].append(b)
    pos = {k: float(i) for rank in ranks for i, k in enumerate(rank)}
    for sweep in (up, down, up):
        seq = range(1, len(ranks)) if sweep is up else range(len(ranks) - 2, -1, -1)
        for r in seq:
            ranks[r].sort(key=lambda k: sum(pos[n] for n in sweep[k]) / len(sweep[k]) if sweep[k] else pos[k])
            for i, k in enumerate(ranks[r]):
                pos[k] = float(i)


def _place(ranks: list[list[str]], places: dict[str, _Place], routes: list[list[str]], lr: bool,
           links: list[Edge]) -> None:
    """Coordinates: layers one after another, each box centred under its inputs where there is room."""
    up: dict[str, list[str]] = {k: [] for k in places}
    for route in routes:
        for a, b in zip(route, route[1:]):
            up[b].append(a)
    across = (lambda p: p.height) if lr else (lambda p: p.width)
    along = (lambda p: p.width) if lr else (lambda p: p.height)
    gap = _RANKSEP
    if lr and _labelled(links):
        gap = max(gap, max(_text_width(e.label, 10) for e in links) + 16)
    depth = 0.0
    for rank in ranks:
        thick = max((along(places[k]) for k in rank), default=0.0)
        want = [sum(places[n].x for n in up[k]) / len(up[k]) if up[k] else None for k in rank]
        packed, edge = [], 0.0
        for k in rank:
            packed.append(edge + across(places[k]) / 2)
            edge += across(places[k]) + _NODESEP
        mid = (edge - _NODESEP) / 2
        desired = [w if w is not None else p - mid for w, p in zip(want, packed)]
        centres: list[float] = []
        for i, k in enumerate(rank):
            c = desired[i]
            if centres:
                c = max(c, centres[-1] + across(places[rank[i - 1]]) / 2 + _NODESEP + across(places[k]) / 2)
            centres.append(c)
        shift = sum(c - d for c, d in zip(centres, desired)) / len(rank) if rank else 0.0
        for k, c in zip(rank, centres):
            places[k].x, places[k].y = c - shift, depth + thick / 2
        depth += thick + gap
    if lr:
        for p in places.values():
            p.x, p.y = p.y, p.x


def _labelled(links: list[Edge]) -> bool:
    return any(e.label for e in links)


def _svg_text(graph: Graph, places: dict[str, _Place], links: list[Edge], routes: list[list[str]], lr: bool,
              counts: bool, fold: bool, marks: dict[str, str] | None) -> bytes:
    esc = html.escape
    head = title_lines(graph, counts, fold, marks)
    head_h = 22 + 16 * (len(head) - 1) + 12
    boxes = [p for p in places.values() if not p.id.startswith("\0")]
    left = min(p.x - p.width / 2 for p in places.values()) - 12
    top = min(p.y - p.height / 2 for p in places.values()) - 12 - head_h
    right = max(p.x + p.width / 2 for p in places.values()) + 12
    if lr or _labelled(links):
        right += 60  # the labels of the rightmost edges
    bottom = max(p.y + p.height / 2 for p in places.values()) + 12
    right = max(right, left + max(_text_width(head[0], 16, True), *(_text_width(h, 11) for h in head)) + 24)
    width, height = right - left, bottom - top

    def xy(x: float, y: float) -> str:
        return f"{x - left:.1f},{y - top:.1f}"

    out = ['<?xml version="1.0" encoding="UTF-8" standalone="no"?>',
           "<!-- netdsl's own layout (Graphviz's dot was not found); install Graphviz for a better one -->",
           f'<svg width="{width:.0f}pt" height="{height:.0f}pt" viewBox="0 0 {width:.1f} {height:.1f}" '
           'xmlns="http://www.w3.org/2000/svg">',
           f'<g id="graph0" class="graph" font-family="{_SVG_FONT}">',
           f"<title>{esc(graph.name)}</title>",
           f'<rect x="0" y="0" width="{width:.1f}" height="{height:.1f}" fill="white"/>',
           f'<text x="{width / 2:.1f}" y="22" text-anchor="middle" font-size="16" font-weight="bold">'
           f"{esc(head[0])}</text>"]
    out += [f'<text x="{width / 2:.1f}" y="{22 + 16 * i}" text-anchor="middle" font-size="11" fill="{MUTED}">'
            f"{esc(line)}</text>" for i, line in enumerate(head[1:], 1)]
    fan_out = {e.src: sum(f.src == e.src for f in links) for e in links}
    fan_in = {e.dst: sum(f.dst == e.dst for f in links) for e in links}
    for i, (e, route) in enumerate(zip(links, routes), 1):
        at = 0.5 if lr else 0.72 if fan_out[e.src] > 1 else 0.3 if fan_in[e.dst] > 1 and len(route) == 2 else 0.5
        out.append(_svg_edge(i, e, [places[k] for k in route], lr, xy, at))
    for i, p in enumerate(boxes, 1):
        out.append(_svg_box(i, p, xy))
    out += ["</g>", "</svg>", ""]
    return "\n".join(out).encode("utf-8")


def _svg_box(i: int, p: _Place, xy) -> str:
    esc = html.escape
    a = p.attrs
    style = a.get("style", "rounded,filled")
    stroke, pen = a.get("color", "#444444"), a.get("penwidth", "1")
    dash = ' stroke-dasharray="5,2"' if "dashed" in style else ""
    rx = ' rx="4"' if "rounded" in style else ""
    x0, y0 = xy(p.x - p.width / 2, p.y - p.height / 2).split(",")
    parts = [f'<g id="node{i}" class="node">', f"<title>{esc(p.id)}</title>"]
    if a.get("shape") == "box3d":  # a run of identical blocks: a stack
        for d in (6, 3):
            parts.append(f'<rect x="{float(x0) + d:.1f}" y="{float(y0) - d:.1f}" width="{p.width:.1f}" '
                         f'height="{p.height:.1f}" fill="{a.get("fillcolor", FILL_OTHER)}" stroke="{stroke}"/>')
    parts.append(f'<rect x="{x0}" y="{y0}" width="{p.width:.1f}" height="{p.height:.1f}"{rx} '
                 f'fill="{a.get("fillcolor", FILL_OTHER)}" stroke="{stroke}" stroke-width="{pen}"{dash}/>')
    cx, y = xy(p.x, p.y - p.height / 2 + _PADY + 12).split(",")
    kind = f'<tspan fill="{MUTED}" font-weight="normal">  {esc(p.kind)}</tspan>' if p.kind else ""
    parts.append(f'<text x="{cx}" y="{y}" text-anchor="middle" font-size="12" font-weight="bold" '
                 f'xml:space="preserve">{esc(p.title)}{kind}</text>')
    for j, line in enumerate(p.lines, 1):
        parts.append(f'<text x="{cx}" y="{float(y) + 13 * j:.1f}" text-anchor="middle" font-size="10">'
                     f"{esc(line)}</text>")
    return "\n".join(parts + ["</g>"])


def _svg_edge(i: int, e: Edge, route: list[_Place], lr: bool, xy, at: float) -> str:
    """An edge as a polyline through its bend points; its label `at` a fraction of its first segment
    (near the end of a fan-out, near the start of a fan-in, where the lines are apart)."""
    esc = html.escape
    src, dst = route[0], route[-1]
    bends = [(p.x, p.y) for p in route[1:-1]]
    if lr:
        points = [(src.x + src.width / 2, src.y), *bends, (dst.x - dst.width / 2, dst.y)]
    else:
        points = [(src.x, src.y + src.height / 2), *bends, (dst.x, dst.y - dst.height / 2)]
    (x1, y1), (x2, y2) = points[-2], points[-1]
    length = max(((x2 - x1) ** 2 + (y2 - y1) ** 2) ** 0.5, 1e-6)
    ux, uy = (x2 - x1) / length, (y2 - y1) / length
    tip, base = (x2, y2), (x2 - 7 * ux, y2 - 7 * uy)
    points[-1] = base
    wing = [(base[0] - 3 * uy, base[1] + 3 * ux), (base[0] + 3 * uy, base[1] - 3 * ux)]
    color = CROSS_COLOR if e.cross else "#555555"
    dash = ' stroke-dasharray="5,2"' if e.cross else ""
    parts = [f'<g id="edge{i}" class="edge">', f"<title>{esc(e.src)}&#45;&gt;{esc(e.dst)}</title>",
             f'<path fill="none" stroke="{color}"{dash} d="M{" L".join(xy(*pt) for pt in points)}"/>',
             f'<polygon fill="{color}" stroke="{color}" points="{" ".join(xy(*pt) for pt in (tip, *wing, tip))}"/>']
    if e.label:
        (ax, ay), (bx, by) = points[0], points[1]
        left = not lr and bx < ax - 1  # the line leans left: the label goes on its left
        lx, ly = xy(ax + (bx - ax) * at + (0 if lr else -4 if left else 4),
                    ay + (by - ay) * at + (-4 if lr else 3)).split(",")
        anchor = "middle" if lr else "end" if left else "start"
        fill = CROSS_COLOR if e.cross else MUTED
        parts.append(f'<text x="{lx}" y="{ly}" text-anchor="{anchor}" font-size="10" fill="{fill}">'
                     f"{esc(e.label)}</text>")
    return "\n".join(parts + ["</g>"])


def render(graph: "Graph | Net", path: str | os.PathLike | None, fmt: str | None = None,
           fallback: bool = True, **options) -> bytes:
    """Draw a checked graph (or a Net: NetdslError when it has errors) into `path` (None: only return
    the bytes). Returns the file's bytes. Without Graphviz, SVG is netdsl's own layout unless
    `fallback` is False (then DotNotFound, as for PNG and PDF)."""
    fmt = format_for(path, fmt)
    data = render_graph(_checked(graph), fmt, fallback, **options)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def to_svg(graph: "Graph | Net", **options) -> str:
    """Graphviz's SVG (DotNotFound without it: a notebook then shows the net as text)."""
    return render(graph, None, "svg", fallback=False, **options).decode("utf-8")


def _checked(graph: "Graph | Net") -> Graph:
    if isinstance(graph, Graph):
        return graph
    return graph.raise_for_errors().graph  # a Net: what `netdsl.load` returns


__all__ = ["to_dot", "render", "render_graph", "to_svg", "layered_svg", "format_for", "DrawError", "DotNotFound",
           "FORMATS", "RANKDIRS", "INSTALL_HINT"]
