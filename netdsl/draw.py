"""The graphviz back end: architecture diagrams from the IR, headless and deterministic.

`to_dot` turns a checked Graph into a `graphviz.Digraph`: one box per layer (or per folded block),
tensor shapes on the edges, one cluster per tower with the split's layers drawn in every tower and
the edges that cross between towers drawn dashed. `render` lays it out with graphviz's `dot`
program; `.dot` output is the graph's source and works without it. Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import html
import os
import re
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

FORMATS = ("svg", "png", "pdf", "dot")
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
`.dot` output needs no Graphviz: netdsl draw SPEC -o net.dot"""

FONT = "Helvetica"
CROSS_COLOR = "#c0392b"
MUTED = "#555555"
FILL = {  # by layer kind; anything not named here is an activation-like layer
    "conv": "#fde3c8", "fc": "#e4dcf2", "lrn": "#fbf1bd", "batchnorm": "#fbf1bd",
    "maxpool": "#d5e8f7", "avgpool": "#d5e8f7", "adaptive_avgpool": "#d5e8f7",
    "adaptive_maxpool": "#d5e8f7", "global_avgpool": "#d5e8f7",
    "concat": "#dcefd5", "add": "#dcefd5", "input": "#bcd7ee",
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
    lines = [hyper(graph, node)]
    params = params_of(graph, [node])
    if counts and params:
        lines.append(f"{params:,} params")
    return _html(node.name, node.kind, lines)


def box_label(graph: Graph, box: Box, counts: bool) -> str:
    if not box.folded:
        return layer_label(graph, box.nodes[0], counts)
    per_unit = len(box.nodes) // box.count
    names = [box.nodes[i * per_unit].name if box.block is None else box.nodes[i * per_unit].scope[0]
             for i in (0, box.count - 1)]
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
    return _html(title, kind, lines)


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
    title = _rows([f"<b>{_text(lines[0])}</b>"]
                  + [f'<font point-size="11" color="{MUTED}">{_text(line)}</font>' for line in lines[1:]])
    return {"rankdir": rankdir, "label": title, "labelloc": "t", "fontname": FONT,
            "fontsize": "16", "nodesep": "0.3", "ranksep": "0.3", "newrank": "true",
            "bgcolor": "white", "pad": "0.2"}


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


def render_graph(graph: Graph, fmt: str, **options) -> bytes:
    """The diagram as the bytes of a file in `fmt`; `dot` needs no Graphviz installed."""
    dot = to_dot(graph, **options)
    if fmt == "dot":
        return dot.source.encode("utf-8")
    if fmt == "png":
        dot.graph_attr["dpi"] = str(PNG_DPI)
    try:
        data = dot.pipe(format=fmt, quiet=True)
    except graphviz.ExecutableNotFound:
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


def render(graph: "Graph | Net", path: str | os.PathLike | None, fmt: str | None = None, **options) -> bytes:
    """Draw a checked graph (or a Net: NetdslError when it has errors) into `path` (None: only return
    the bytes). Returns the file's bytes."""
    fmt = format_for(path, fmt)
    data = render_graph(_checked(graph), fmt, **options)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def to_svg(graph: "Graph | Net", **options) -> str:
    return render(graph, None, "svg", **options).decode("utf-8")


def _checked(graph: "Graph | Net") -> Graph:
    if isinstance(graph, Graph):
        return graph
    return graph.raise_for_errors().graph  # a Net: what `netdsl.load` returns


__all__ = ["to_dot", "render", "render_graph", "to_svg", "format_for", "DrawError", "DotNotFound",
           "FORMATS", "RANKDIRS", "INSTALL_HINT"]
