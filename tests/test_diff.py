"""`netdsl diff A B` and `netdsl draw A --diff B`: layers matched by name and position, what changed,
the totals with their deltas, exit 0 / 1 / 2 like diff(1)."""
from __future__ import annotations

import json
import shutil

import pytest

import netdsl
from netdsl.diff import diff, merged
from conftest import ROOT

SPECS = ROOT / "specs"
CAFFE = ROOT / "tests" / "fixtures" / "caffe"


def graph(name: str):
    return netdsl.load(SPECS / name).graph


def test_alexnet_against_caffenet_shows_the_input_the_order_and_the_rounding(cli):
    result = cli("diff", SPECS / "alexnet.net", SPECS / "caffenet.net")
    assert result.exit_code == 1, result.output
    out = result.output
    assert "shape: 3x224x224 -> 3x227x227" in out
    assert "reads: norm1 -> relu1" in out and "reads: relu1 -> pool1" in out  # pool before norm in CaffeNet
    assert "round: ceil -> floor" in out
    assert "k: 2 -> 1" in out
    data = json.loads(cli("diff", "--json", SPECS / "alexnet.net", SPECS / "caffenet.net").output)
    assert data["equal"] is False
    assert data["totals"]["parameters"] == {"a": 60_965_224, "b": 60_965_224, "delta": 0}
    assert data["totals"]["input"] == {"a": "data 3x224x224", "b": "data 3x227x227"}
    pool1 = next(c for c in data["layers"] if c["a"] == "pool1")
    assert {"what": "reads", "a": "norm1", "b": "relu1"} in pool1["changes"]


def test_alexnet_against_torchvision_shows_channels_and_lrn():
    d = diff(graph("alexnet.net"), graph("alexnet-torchvision.net"))
    by = {(c.a.name if c.a else None, c.b.name if c.b else None): c for c in d.changes}
    assert by[("norm1", None)].status == "removed" and by[("norm2", None)].status == "removed"
    assert by[(None, "avgpool")].status == "added"
    assert ("out", "96", "64") in by[("conv1", "conv1")].fields
    totals = {w: (x, y) for w, x, y in d.totals}
    assert totals["parameters"] == (60_965_224, 61_100_840)
    assert totals["MACs"] == (724_406_816, 714_188_480)
    text = d.to_text()
    assert "+135,616 (+0.2%)" in text and "1 added, 3 removed" in text


def test_the_same_net_is_equal_and_exits_0(cli):
    result = cli("diff", SPECS / "alexnet.net", SPECS / "alexnet.net")
    assert result.exit_code == 0 and "the same network" in result.output


def test_renamed_layers_are_matched_by_position():
    a = netdsl.loads("input data: 3x8x8\nc1: conv(4, 3)\nr1: relu\nf: fc(2)\n").graph
    b = netdsl.loads("input data: 3x8x8\nconv_a: conv(4, 3)\nr1: relu\nf: fc(2)\n").graph
    d = diff(a, b)
    assert [(c.status, c.name) for c in d.changes] == []  # renamed, nothing else changed
    b2 = netdsl.loads("input data: 3x8x8\nconv_a: conv(8, 3)\nr1: relu\nf: fc(2)\n").graph
    [change] = [c for c in diff(a, b2).changes if c.a and c.a.name == "c1"]
    assert change.name == "c1 -> conv_a" and ("out", "4", "8") in change.fields


def test_a_prototxt_is_imported_on_the_fly(cli):
    result = cli("diff", SPECS / "caffenet.net", CAFFE / "models__bvlc_reference_caffenet__deploy.prototxt")
    assert result.exit_code in (0, 1), result.output
    assert "parameters       60,965,224      60,965,224  =" in result.output


def test_a_spec_with_errors_exits_2(cli, tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("input data: 3x8x8\nc: conv(4, 30)\n")
    result = cli("diff", bad, SPECS / "alexnet.net")
    assert result.exit_code == 2
    assert "bad.net:2:" in result.output


def test_merged_graph_puts_removed_layers_back():
    g, marks = merged(graph("alexnet.net"), graph("alexnet-torchvision.net"))
    names = [n.name for n in g]
    assert names.index("norm1") == names.index("relu1") + 1
    assert g.node("norm1").inputs == ["relu1"]
    assert marks["norm1"] == "removed" and marks["avgpool"] == "added" and marks["conv1"] == "changed"
    assert "relu3" not in marks


def test_draw_diff_colours_the_marks(cli, tmp_path):
    out = tmp_path / "d.dot"
    result = cli("draw", SPECS / "alexnet-torchvision.net", "--diff", SPECS / "alexnet.net", "-o", out)
    assert result.exit_code == 0, result.output
    dot = out.read_text()
    assert "1 added, 16 changed, 3 removed" in dot
    norm1 = next(line for line in dot.splitlines() if line.strip().startswith("norm1 "))
    assert "dashed" in norm1 and "#c0392b" in norm1
    avgpool = next(line for line in dot.splitlines() if line.strip().startswith("avgpool "))
    assert "#2e8b3a" in avgpool


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz's dot")
def test_draw_diff_renders(cli, tmp_path):
    out = tmp_path / "d.svg"
    result = cli("draw", SPECS / "googlenet.net", "--diff", SPECS / "alexnet.net", "-o", out)
    assert result.exit_code == 0, result.output
    assert out.read_text().lstrip().startswith("<?xml")
