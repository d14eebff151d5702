"""`netdsl draw`: diagrams through graphviz, checked by parsing the SVG that `dot` really produces."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import netdsl
from netdsl import draw
from conftest import ROOT, SPECS, run_netdsl

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")

REPEATS = """
net rep "repeats"
input data: 3x16x16
repeat 4 {
    c: conv(8, 3, pad=1)
    r: relu
}
head: fc(10)
"""


class Svg:
    """What a test needs from dot's SVG: nodes (title -> text), clusters, edges (title -> attributes)."""

    def __init__(self, data: bytes | str):
        self.root = ET.fromstring(data)
        self.nodes: dict[str, str] = {}
        self.edges: dict[str, dict] = {}
        self.clusters: dict[str, str] = {}
        self.positions: dict[str, tuple[float, float]] = {}
        for g in self.root.iter(f"{SVG}g"):
            kind, title = g.get("class"), g.findtext(f"{SVG}title")
            texts = [t.text or "" for t in g.iter(f"{SVG}text")]
            if kind == "node":
                self.nodes[title] = " | ".join(texts)
                first = next(g.iter(f"{SVG}text"))
                self.positions[title] = (float(first.get("x")), float(first.get("y")))
            elif kind == "cluster":
                self.clusters[title] = " | ".join(texts)
            elif kind == "edge":
                path = g.find(f"{SVG}path")
                self.edges[title] = {"label": " ".join(texts), "dashed": path.get("stroke-dasharray") is not None,
                                     "color": path.get("stroke")}

    def labels(self) -> set[str]:
        return {e["label"] for e in self.edges.values()}


def svg_of(spec: str | Path, **options) -> Svg:
    net = netdsl.load(spec)
    assert net.ok, net.render_diagnostics()
    return Svg(draw.render(net, None, "svg", **options))


def layer_names(spec: Path) -> list[str]:
    return [n.name for n in netdsl.load(spec).graph]


# ------------------------------------------------------------------ every spec

@needs_dot
@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_spec_renders_to_svg_with_every_layer(spec):
    graph = netdsl.load(spec).graph
    svg = svg_of(spec, fold=False)
    for node in graph:
        if node.towers:
            count = graph.towers[node.towers].count
            assert {f"{node.name}@{t}" for t in range(count)} <= svg.nodes.keys()
        else:
            assert node.name in svg.nodes
            assert node.name in svg.nodes[node.name]
    assert svg.edges and all(e["label"] for e in svg.edges.values())  # every edge carries a shape
    folded = svg_of(spec)
    assert graph.inputs()[0].name in folded.nodes and len(folded.nodes) <= len(svg.nodes)


# ------------------------------------------------------------------ towers

@needs_dot
def test_alexnet_draws_two_towers_with_the_cross_edges_marked():
    svg = svg_of(ROOT / "specs/alexnet.net")
    assert sorted(svg.clusters) == ["cluster_towers_0", "cluster_towers_1"]
    # each tower holds the split's layers with its share: conv1 has 48 of 96 filters per tower
    for t in (0, 1):
        text = svg.nodes[f"conv1@{t}"]
        assert "11x11/4, 48" in text and "17,472 params" in text
    assert "5x5/1 pad 2, 128" in svg.nodes["conv2@0"]
    assert "data" in svg.nodes and "prob" in svg.nodes  # the input and the softmax lie outside the towers
    cross = {title for title, e in svg.edges.items() if e["dashed"]}
    readers = {"conv3": "pool2", "fc6": "pool5", "fc7": "drop6", "fc8": "drop7"}
    assert cross == {f"{src}@{s}->{dst}@{1 - s}" for dst, src in readers.items() for s in (0, 1)}
    assert all(svg.edges[t]["color"] == draw.CROSS_COLOR for t in cross)
    assert svg.edges["pool2@0->conv3@1"]["label"] == "128x13x13"
    # local edges stay in their tower and carry the tower's slice
    assert svg.edges["conv1@0->relu1@0"]["label"] == "48x55x55"
    assert "conv1@0->relu1@1" not in svg.edges
    assert svg.edges["data->conv1@1"]["label"] == "3x224x224"  # the image goes to both towers whole
    assert svg.edges["fc8@1->prob"]["label"] == "500"  # and the towers are gathered for the softmax


@needs_dot
def test_edges_carry_full_shapes_outside_towers():
    svg = svg_of(ROOT / "specs/caffenet.net")
    assert {"96x55x55", "96x27x27", "256x13x13", "4096"} <= svg.labels()
    assert not svg.clusters
    assert "5x5/1 pad 2, 256, groups 2" in svg.nodes["conv2"]
    assert "34,944 params" in svg.nodes["conv1"]


# ------------------------------------------------------------------ folding

@needs_dot
def test_vgg16_folds_stages_and_expands_to_every_layer():
    folded, expanded = svg_of(ROOT / "specs/vgg16.net"), svg_of(ROOT / "specs/vgg16.net", fold=False)
    assert len(expanded.nodes) == len(layer_names(ROOT / "specs/vgg16.net")) == 40
    # data, stages conv1-conv3, conv4+conv5 (both stage(512, 3)) as one x2 box, fc6 ... prob
    assert list(folded.nodes)[:5] == ["data", "conv1", "conv2", "conv3", "conv4"]
    assert len(folded.nodes) == 13
    assert "stage(64, 2)" in folded.nodes["conv1"] and "38,720 params" in folded.nodes["conv1"]
    assert "conv4, conv5" in folded.nodes["conv4"] and "stage(512, 3) ×2" in folded.nodes["conv4"]
    assert folded.edges["conv4->fc6"]["label"] == "512x7x7"
    assert not folded.clusters
    assert len(expanded.clusters) == 5 and expanded.clusters["cluster_conv1"] == "conv1: stage(64, 2)"


def test_repeat_iterations_fold_to_one_box():
    dot = draw.to_dot(netdsl.load(REPEATS).graph).source
    assert "c_1 … r_4" not in dot and "c_1 … c_4" in dot and "repeat ×4" in dot
    expanded = draw.to_dot(netdsl.load(REPEATS).graph, fold=False).source
    assert all(f"c_{i} [" in expanded for i in range(1, 5))


@needs_dot
def test_googlenet_blocks_show_their_call():
    svg = svg_of(ROOT / "specs/googlenet.net")
    assert "inception(64, 96, 128, 16, 32, 32)" in svg.nodes["inception_3a"]
    assert "conv_relu(64, 7, stride=2, pad=3)" in svg.nodes["conv1"]
    assert svg.edges["inception_3b->pool3"]["label"] == "480x28x28"


# ------------------------------------------------------------------ options

@needs_dot
def test_rankdir_lays_out_top_down_or_left_right():
    tb, lr = svg_of(ROOT / "specs/lenet.net"), svg_of(ROOT / "specs/lenet.net", rankdir="LR")
    (tx0, ty0), (tx1, ty1) = tb.positions["data"], tb.positions["prob"]
    (lx0, ly0), (lx1, ly1) = lr.positions["data"], lr.positions["prob"]
    assert ty1 - ty0 > 300 and abs(tx1 - tx0) < 50
    assert lx1 - lx0 > 300 and abs(ly1 - ly0) < 50
    with pytest.raises(ValueError, match="rankdir"):
        draw.to_dot(netdsl.load(ROOT / "specs/lenet.net").graph, rankdir="BT")


def test_shapes_and_counts_can_be_hidden():
    graph = netdsl.load(ROOT / "specs/lenet.net").graph
    full = draw.to_dot(graph).source
    assert "20x24x24" in full and "params" in full and "parameters" in full
    bare = draw.to_dot(graph, shapes=False, counts=False).source
    assert "20x24x24" not in bare and "params" not in bare and "parameters" not in bare
    assert "5x5/1, 20" in bare  # hyper-parameters stay


# ------------------------------------------------------------------ formats and files

@needs_dot
def test_png_and_pdf_are_valid_files(tmp_path):
    net = netdsl.load(ROOT / "specs/alexnet.net")
    png = draw.render(net, tmp_path / "a.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    assert 600 < width < height  # two towers side by side, top to bottom
    pdf = draw.render(net, tmp_path / "a.pdf")
    assert (tmp_path / "a.pdf").read_bytes() == pdf
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    check_pdf_offsets(pdf)


def check_pdf_offsets(pdf: bytes) -> None:
    """The cross-reference table still points at every object (the date fix must keep offsets)."""
    start = int(re.findall(rb"startxref\s+(\d+)", pdf)[-1])
    assert pdf[start:start + 4] == b"xref"
    table = pdf[start:].split(b"trailer")[0].split(b"\n")
    first, count = map(int, table[1].split())
    for number, line in enumerate(table[2:2 + count], first):
        offset, _, used = line.split()[:3]
        if used == b"n":
            assert pdf[int(offset):].startswith(f"{number} 0 obj".encode()), number


@needs_dot
def test_output_is_byte_identical_across_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    net = netdsl.load(ROOT / "specs/alexnet.net")
    for fmt in ("svg", "png", "pdf", "dot"):
        assert draw.render(net, None, fmt) == draw.render(netdsl.load(ROOT / "specs/alexnet.net"), None, fmt)
    # cairo stamps PDFs with the current time; netdsl replaces it, keeping the file's layout
    pdf = draw.render(net, None, "pdf")
    assert b"/CreationDate (D:19700101000000Z)" in pdf
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = draw.render(net, None, "pdf")
    assert b"/CreationDate (D:20231114221320Z)" in dated and len(dated) == len(pdf)
    check_pdf_offsets(dated)


@needs_dot
def test_cli_writes_each_format_by_extension(tmp_path, cli):
    spec = ROOT / "specs/lenet.net"
    for ext, magic in (("svg", b"<?xml"), ("png", b"\x89PNG"), ("pdf", b"%PDF-"), ("dot", b"digraph")):
        result = cli("draw", spec, "-o", tmp_path / f"l.{ext}")
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"l.{ext}").read_bytes().startswith(magic)
        assert f"wrote {tmp_path / f'l.{ext}'}" in result.output
    result = cli("draw", spec, "-o", tmp_path / "diagram.out", "--format", "svg")
    assert result.exit_code == 0 and (tmp_path / "diagram.out").read_bytes().startswith(b"<?xml")


@needs_dot
def test_cli_svg_twice_is_identical_and_defaults_to_spec_name(tmp_path):
    first = run_netdsl("draw", ROOT / "specs/googlenet.net", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    data = (tmp_path / "googlenet.svg").read_bytes()
    again = run_netdsl("draw", ROOT / "specs/googlenet.net", "-o", tmp_path / "again.svg", "--expand",
                       "--rankdir", "LR", "--no-shapes", "--no-counts")
    assert again.returncode == 0, again.stderr
    assert run_netdsl("draw", ROOT / "specs/googlenet.net", cwd=tmp_path).returncode == 0
    assert (tmp_path / "googlenet.svg").read_bytes() == data


def test_cli_rejects_unknown_formats(tmp_path, cli):
    result = cli("draw", ROOT / "specs/lenet.net", "-o", tmp_path / "net.jpg")
    assert result.exit_code == 2 and "unknown format 'jpg'" in result.output
    result = cli("draw", ROOT / "specs/lenet.net", "-o", tmp_path / "net")
    assert result.exit_code == 2 and "--format" in result.output


def test_cli_dot_to_stdout(cli):
    result = cli("draw", ROOT / "specs/lenet.net", "-o", "-")
    assert result.exit_code == 0 and result.output.startswith("digraph lenet {")


def test_bad_spec_gives_the_same_diagnostics_as_check(tmp_path, cli):
    spec = tmp_path / "bad.net"
    spec.write_text("input data: 3x8x8\nc: conv(4, 11)\nf: fc(10, outt=3)\n")
    checked, drawn = cli("check", spec), cli("draw", spec, "-o", tmp_path / "bad.svg")
    assert checked.exit_code == drawn.exit_code == 1
    assert drawn.stderr == checked.stderr and "does not fit" in drawn.stderr
    assert "Traceback" not in drawn.output and not (tmp_path / "bad.svg").exists()


# ------------------------------------------------------------------ without dot, without torch

def test_missing_dot_is_explained_and_dot_output_still_works(tmp_path):
    no_dot = {"PATH": str(tmp_path)}  # an empty folder: no `dot` anywhere on PATH
    result = run_netdsl("draw", ROOT / "specs/alexnet.net", "-o", tmp_path / "a.png", env=no_dot)
    assert result.returncode == 1
    for hint in ("apt-get install graphviz", "brew install graphviz", "conda install", "-o net.dot"):
        assert hint in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "a.png").exists()
    result = run_netdsl("draw", ROOT / "specs/alexnet.net", "-o", tmp_path / "a.dot", env=no_dot)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "a.dot").read_text().startswith("digraph alexnet {")
    code = "import netdsl; print(netdsl.load('specs/lenet.net')._repr_svg_())"
    shown = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, **no_dot})
    assert shown.stdout.strip() == "None" and not shown.stderr


@needs_dot
def test_drawing_never_imports_torch(tmp_path):
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from netdsl.cli import main\n"
        f"r = CliRunner().invoke(main, ['draw', 'specs/alexnet.net', '-o', {str(tmp_path / 'a.svg')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "import netdsl\n"
        "assert netdsl.load('specs/googlenet.net')._repr_svg_().startswith('<?xml')\n"
        "print('torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------ notebooks

@needs_dot
def test_notebooks_display_a_net_as_its_diagram():
    svg = netdsl.load(ROOT / "specs/vgg16.net")._repr_svg_()
    assert "conv1" in Svg(svg).nodes
    assert netdsl.load("input x: 3x8x8\nc: conv(4, 11)\n")._repr_svg_() is None


def test_the_benchmark_spec_is_valid_with_the_layers_asked_for():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from draw_bench import generate
    finally:
        sys.path.pop(0)
    net = netdsl.load(generate(300))
    assert net.ok, net.render_diagnostics()
    assert len(net.graph) == 301  # 300 layers and the input


def test_expanding_hundreds_of_blocks_skips_their_clusters():
    many = ("block unit(c) {\n conv: conv(c, 3, pad=1)\n relu: relu\n}\ninput data: 3x8x8\n"
            f"repeat {draw.MAX_BLOCK_CLUSTERS + 1} {{\n u: unit(4)\n}}\n")
    graph = netdsl.load(many).graph
    expanded = draw.to_dot(graph, fold=False).source
    assert "subgraph cluster_" not in expanded and "too many to box" in expanded
    assert "u_1.conv" in expanded and f"u_{draw.MAX_BLOCK_CLUSTERS + 1}.relu" in expanded
    folded = draw.render(netdsl.load(many), None, "dot").decode()
    assert f"unit(4) ×{draw.MAX_BLOCK_CLUSTERS + 1}" in folded and "too many" not in folded
    few = draw.to_dot(netdsl.load(many.replace(str(draw.MAX_BLOCK_CLUSTERS + 1), "3")).graph, fold=False).source
    assert few.count("subgraph cluster_u_") == 3 and "cluster_u_1 {" in few


@needs_dot
def test_a_thousand_layers_draw_in_under_five_seconds():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from draw_bench import generate, time_in_process
    finally:
        sys.path.pop(0)
    time_in_process(generate(50), True)  # imports and grammar, paid once per process
    _, seconds, size = time_in_process(generate(1000), fold=False)
    assert size > 1_000_000 and seconds < 5.0
