"""The Python API and the IR: load from paths or text, serialise, never import torch."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

import netdsl
from netdsl.ir import Graph
from conftest import ROOT

MINI = """
input x: 3x32x32
c1: conv(8, 3, pad=1)
r1: relu
p1: maxpool(2)
f: fc(10)
"""


def test_load_text_and_path_agree(tmp_path):
    path = tmp_path / "mini.net"
    path.write_text(MINI)
    a, b, c = netdsl.load(MINI), netdsl.load(path), netdsl.load(str(path))
    assert a.ok and b.ok and c.ok
    assert a.report.total_params == b.report.total_params == c.report.total_params == 8 * 27 + 8 + 8 * 16 * 16 * 10 + 10
    assert b.source.name == str(path)


def test_errors_are_returned_not_raised():
    net = netdsl.load("input x: 3x8x8\nc: conv(4, 11)\n")
    assert not net.ok and len(net.errors) == 1
    with pytest.raises(netdsl.NetdslError, match="does not fit"):
        net.report


def test_missing_file_is_a_usage_error():
    with pytest.raises(netdsl.UsageError):
        netdsl.load("no/such/spec.net")


def test_repr_summarises():
    assert "params" in repr(netdsl.load(MINI))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_emit_ir_round_trips(cli, tmp_path, suffix):
    out = tmp_path / f"ir{suffix}"
    result = cli("check", ROOT / "specs" / "googlenet.net", "--emit-ir", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text()) if suffix == ".json" else yaml.safe_load(out.read_text())
    graph = Graph.from_dict(data)
    original = netdsl.load(ROOT / "specs" / "googlenet.net").graph
    assert [n.name for n in graph] == [n.name for n in original]
    assert [n.params for n in graph] == [n.params for n in original]
    assert [n.inputs for n in graph] == [n.inputs for n in original]
    node = graph.node("inception_3a.b3.conv")
    assert node.span.line > 0 and node.scope == ("inception_3a", "inception_3a.b3")
    assert data["nodes"][1]["shape"] == [64, 112, 112]


def test_check_never_imports_torch(tmp_path):
    code = ("import sys; from netdsl.cli import main; sys.argv=['netdsl','check','specs/alexnet.net'];\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'check imported torch'")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "60,965,224" in result.stdout
