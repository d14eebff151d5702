"""The IR carries what back ends need (block instances, repeat indices, placement, windows), checks its
own invariants (Graph.lint), and prints readably (str(graph)), as torch.fx's Graph does."""
from __future__ import annotations

import pytest

import netdsl
from netdsl import draw
from netdsl.errors import IRError
from netdsl.ir import Graph, Node
from conftest import ROOT, SPECS


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_spec_passes_lint_and_round_trips_through_its_ir_file(spec):
    graph = netdsl.load(spec).graph
    graph.lint(shapes=True)
    back = Graph.from_dict(graph.to_dict())
    assert [n.to_dict() for n in back] == [n.to_dict() for n in graph]
    assert back.instances == graph.instances and back.blocks == graph.blocks


def _graph(*nodes: Node) -> Graph:
    return Graph("g", list(nodes))


def test_lint_names_every_broken_invariant():
    good = [Node("data", "input", {"shape": [3, 8, 8]}, []), Node("a", "relu", {}, ["data"])]
    _graph(*good).lint()
    with pytest.raises(IRError) as err:
        _graph(*good, Node("a", "relu", {}, ["data"]), Node("b", "relu", {}, ["nowhere"]),
               Node("c", "add", {}, ["a", "d"]), Node("d", "relu", {}, ["a"], towers="towers"),
               Node("e", "relu", {}, ["a"], scope=("blk",))).lint()
    text = str(err.value)
    for problem in ("'a' is defined twice", "'b' reads 'nowhere', which is not defined",
                    "'c' reads 'd', which comes after it", "'d' lies in an undeclared split 'towers'",
                    "'e' lies in an unknown block instance 'blk'"):
        assert problem in text, text
    with pytest.raises(IRError, match="'data' has no shape after the shape pass"):
        _graph(*good).lint(shapes=True)


def test_a_broken_ir_file_is_refused():
    data = netdsl.load(ROOT / "specs/lenet.net").graph.to_dict()
    data["nodes"][2]["inputs"] = ["conv9"]
    with pytest.raises(IRError, match="reads 'conv9', which is not defined"):
        Graph.from_dict(data)
    with pytest.raises(IRError, match="not a netdsl IR"):
        Graph.from_dict({"name": "x", "nodes": [{"name": "a"}]})


def test_version_1_ir_files_still_load():
    data = netdsl.load(ROOT / "specs/vgg16.net").graph.to_dict()
    data["netdsl_ir"] = 1
    data["blocks"] = {k: v["block"] for k, v in data["blocks"].items()}
    graph = Graph.from_dict(data)
    assert graph.blocks == {f"conv{i}": "stage" for i in range(1, 6)}
    assert graph.instances["conv3"].call is None and graph.instances["conv3"].span is None


def test_str_prints_one_line_per_layer_with_shape_params_and_placement():
    text = str(netdsl.load(ROOT / "specs/alexnet.net").graph)
    lines = text.splitlines()
    assert lines[0] == "graph alexnet, towers x2:"
    conv1 = next(line for line in lines if line.strip().startswith("%conv1 "))
    assert conv1.strip().startswith("%conv1 : 96x55x55 = conv[out=96, kernel=11, stride=4, pad=0, round=ceil,")
    assert "bias=true, weight_init=normal(0, 0.01)" in conv1
    assert conv1.endswith("(%data)  # towers cross partitioned, line 25"), conv1
    assert any(line.strip().startswith("%fc8 : 1000 = fc[out=1000") for line in lines)


def test_block_instances_carry_their_call_span_and_definition():
    graph = netdsl.load(ROOT / "specs/googlenet.net").graph
    inst = graph.instances["inception_3a"]
    assert (inst.block, inst.call) == ("inception", "inception(64, 96, 128, 16, 32, 32)")
    assert inst.span.line > 0
    node = graph.node("inception_3a.b3.conv")
    assert node.scope == ("inception_3a", "inception_3a.b3") and node.path == ("inception_3a", "b3", "conv")
    assert graph.instances["inception_3a.b3"].block == "conv_relu"


def test_repeat_iterations_are_numbers_on_the_node_not_only_a_suffix():
    graph = netdsl.loads("input data: 4x8x8\nrepeat 2 as i { repeat 3 { c: conv(4, 1) } }\n"
                         "block b() { repeat 2 { r: relu() } }\nx: b()\n").graph
    c = graph.node("c_2_3")
    assert (c.repeat, c.stem, c.path) == ((2, 3), "c", ("c_2_3",))
    r = graph.node("x.r_2")
    assert (r.repeat, r.stem, r.path) == ((2,), "r", ("x", "r_2"))


def test_layers_named_like_repeat_iterations_are_not_drawn_as_a_repeat():
    # Before the IR carried repeat indices, draw guessed them from `_1`-style name endings.
    graph = netdsl.loads("input data: 4x8x8\nconv_1: conv(4, 1)\nconv_2: conv(4, 1)\nconv_3: conv(4, 1)\n").graph
    dot = draw.to_dot(graph).source
    assert "repeat" not in dot and all(f"conv_{i} [" in dot for i in (1, 2, 3))
    repeated = netdsl.loads("input data: 4x8x8\nrepeat 3 { conv: conv(4, 1) }\n").graph
    assert "repeat ×3" in draw.to_dot(repeated).source


def test_passes_store_placement_windows_and_counts_under_their_own_names():
    graph = netdsl.load(ROOT / "specs/alexnet.net").graph
    conv1, conv2, prob = graph.node("conv1"), graph.node("conv2"), graph.node("prob")
    assert conv1.partitioned and conv2.partitioned and not prob.partitioned and not conv1.replicated
    assert graph.tower_count(conv2) == 2 and graph.tower_count(prob) == 1
    assert [w.out() for w in conv1.meta["windows"]] == [55, 55]
    assert conv1.meta["param_count"] == 34_944 and conv1.params["out"] == 96
    assert all("warnings" not in n.meta and "params" not in n.meta for n in graph)


def test_coverage_warnings_come_from_the_shape_pass():
    net = netdsl.loads("input data: 3x10x10\nc: conv(4, 3, stride=2)\n")
    assert [d.code for d in net.warnings] == ["coverage"]
    assert "the last 1 rows/columns are never read" in net.warnings[0].message
    assert "warnings" not in net.graph.node("c").meta
