"""Hostile and careless specs found by fuzzing (issue 12): every one gets located errors, root causes
only, checked before the work is done; never a traceback, a hang or a value that breaks later."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import netdsl
from netdsl.training.config import ConfigError, resolve
from conftest import ROOT


def errors(text: str) -> list:
    net = netdsl.loads(text, "t.net")
    assert not net.ok
    return net.errors


@pytest.mark.parametrize("text, message", [
    ("input x: 3x8x8\nc: conv((10**64)**64 * (10**64)**64, 3)\n", "'**' would give a number of about 77 digits"),
    ("input x: 3x8x8\nc: conv(1" + "0" * 5000 + ", 3)\n", "a 5001-digit number is far too large"),
    ("input x: 3x8x8\nconst a1 = 3\n" + "".join(f"const a{i} = a{i - 1} * a{i - 1}\n" for i in range(2, 31))
     + "c: conv(a30, 3)\n", "'*' would give a number of about 61 digits"),
    ("input x: 3x8x8\ntrain { lr = (-1) ** 0.5 }\n", "the result is not a real number"),
    ("input x: 3x8x8\nc: conv(8, 3, bias_init=1e999)\n", "1e999 is not a finite number"),
    ("input x: 3x8x8\nd: dropout(1e999 - 1e999)\n", "1e999 is not a finite number"),
    ("input x: 3x8x8\nc: conv(8, 3, weight_init=normal(0, 1e300 * 1e300))\n", "the result is not a finite number (inf)"),
])
def test_numbers_that_no_net_can_use_are_located_errors(text, message):
    found = errors(text)
    assert len(found) == 1 and message in found[0].message, [e.message for e in found]
    assert found[0].span is not None


def _doubling_blocks(with_repeat: bool) -> str:
    lines = ["input x: 3x8x8", "block b0() { r: relu }"]
    for i in range(1, 31):
        body = f"repeat 2 {{ x: b{i - 1}() }}" if with_repeat else f"x: b{i - 1}(); y: b{i - 1}()"
        lines.append(f"block b{i}() {{ {body} }}")
    return "\n".join(lines + ["top: b30()"]) + "\n"


EXPANSIONS = {
    "nested repeats": "input x: 3x8x8\nrepeat 100000 { repeat 100000 { r: relu } }\n",
    "recursive block with a repeat": "block a() { repeat 2 { x: a() } }\ninput x: 3x8x8\nz: a()\n",
    "mutually recursive blocks": "block a() { x: b() }\nblock b() { repeat 3 { y: a() } }\ninput x: 3x8x8\nz: a()\n",
    "doubling blocks": _doubling_blocks(False),
    "doubling blocks with repeats": _doubling_blocks(True),
    "just over the limit": "input x: 3x8x8\nrepeat 300 { repeat 300 { r: relu } }\n",
    "long names": "input x: 3x8x8\n" + "".join(f"{'n' * 100_000}{i}: relu\n" for i in range(10)),
    "too large a file": "input x: 3x8x8\n" + "r: relu\n" * 200_000,
}


def test_expansion_limits_are_checked_before_the_work():
    # One fresh process for all of them, so a hang fails the test instead of stalling the suite.
    code = ("import json, sys, netdsl\nspecs = json.loads(sys.stdin.read())\nout = {}\n"
            "for name, text in specs.items():\n    net = netdsl.loads(text, 't.net')\n"
            "    out[name] = [(d.code, d.message, d.span.line if d.span else None) for d in net.errors]\n"
            "print(json.dumps(out))")
    result = subprocess.run([sys.executable, "-c", code], input=json.dumps(EXPANSIONS), capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert [m for _, m, _ in found["nested repeats"]] == [
        "repeat 100,000 of 100,000 layer(s) would make more than 20,000 layers (the limit)"]
    assert found["recursive block with a repeat"] == [
        ["recursion", "block a calls itself (a -> a): it would nest more than 32 deep, without end", 1]]
    assert [c for c, _, _ in found["mutually recursive blocks"]] == ["recursion"]
    assert "b1 -> b0" not in found["mutually recursive blocks"][0][1]
    for name in ("doubling blocks", "doubling blocks with repeats"):
        assert [(c, line) for c, _, line in found[name]] == [("too-large", 33)], found[name]
    assert found["just over the limit"][0][1] == \
        "repeat 300 of 300 layer(s) would make 90,001 layers; a spec may have at most 20,000"
    assert len(found["long names"]) == 10
    assert found["too large a file"] == [["unreadable", "file is 1,600,015 bytes; specs are limited to 1,048,576 bytes",
                                          None]]
    assert all(m == "a name of 100,001 characters; names are limited to 200" or "100,00" in m
               for _, m, _ in found["long names"])


def test_errors_name_root_causes_only():
    found = errors("input x: 3x8x8\nconst n = 8 / 0\nc: conv(n, 3)\nd: conv(n * 2, 3) <- x\n")
    assert [e.message for e in found] == ["division by zero"]
    found = errors("input x: 0x8x8\nc: conv(4, 3)\n")
    assert [e.message for e in found] == ["shape: must be at least 1, got 0"]


def test_the_train_block_is_checked_where_it_is_written():
    found = errors('input x: 3x8x8\ntrain { epoch = 3; epochs = "many"; lr = -1; amp = bf17; lr_gamma = 0.5 }\n')
    assert [(e.span.column, e.message, e.notes) for e in found] == [
        (9, "train: unknown training setting 'epoch'", ["did you mean 'epochs'?"]),
        (29, "train: epochs = 'many': expected a whole number", []),
        (43, "train: lr = -1.0: must be positive", []),
        (52, "train: amp = 'bf17': expected one of none, bf16, fp16; did you mean 'bf16'?", [])]
    assert netdsl.loads("input x: 3x8x8\ntrain { epochs = 3; amp = bf16 }\n").graph.training == \
        {"epochs": 3, "amp": "bf16"}


@pytest.mark.parametrize("value", ["1e999", "nan", "-inf"])
def test_settings_that_are_not_finite_are_refused(value):
    with pytest.raises(ConfigError, match="epochs = .*: expected a whole number"):
        resolve(None, None, {"epochs": value})
    with pytest.raises(ConfigError, match="lr = .*: expected a number"):
        resolve(None, None, {"lr": float(value)})


def test_check_json_prints_json_with_the_diagnostics_when_the_spec_has_errors(cli, tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("input x: 3x32x32\np: maxpool(40)\n")
    result = cli("check", "--json", bad)
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["name"] == "bad"
    [d] = data["diagnostics"]
    assert d["layer"] == "p" and d["span"]["line"] == 2
    assert d["notes"][0] == "p: (32 + 0 + 0 - 40) / 40 + 1 = 0.8: the 40-wide window is wider than the padded 32"
    ok = json.loads(cli("check", "--json", ROOT / "specs/lenet.net").stdout)
    assert ok["ok"] is True and ok["total_params"] == 431_080


def test_emit_ir_refuses_an_extension_it_would_not_honour(cli, tmp_path):
    result = cli("check", ROOT / "specs/lenet.net", "--emit-ir", tmp_path / "ir.txt")
    assert result.exit_code == 2 and "written as .json, .yaml or .yml" in result.output
    assert not (tmp_path / "ir.txt").exists()


@pytest.mark.parametrize("text, where, notes", [
    ("input data: 3x32x32\nc1: conv(8, 3\nr1: relu\nc2: conv(8, 3)\n", (2, 14), ["is a ')' missing?"]),
    ("input data: 3X32X32\nc1: conv(8, 3)\n", (1, 20), ["shapes use a lowercase x: 3x224x224"]),
])
def test_a_line_that_ends_mid_statement_is_one_error_where_it_ends(text, where, notes):
    found = netdsl.loads(text).errors
    assert len(found) == 1, [e.message for e in found]
    assert (found[0].span.line, found[0].span.column) == where and "ends before its statement" in found[0].message
    assert found[0].notes[:len(notes)] == notes


def test_small_messages_say_what_is_true():
    net = netdsl.loads("input x: 3x56x56\nc: conv(8, 1, stride=2)\n")  # ResNet's 1x1/2 skips rows by design
    assert net.ok and not net.warnings
    net = netdsl.loads("input x: 8x8x8\nn: lrn(3, region=within)\nm: lrn(3)\n")
    assert "α=0.0001/n² " in net.summary() and "α=0.0001/n β" in net.summary()
    assert netdsl.loads("input x: 3x8x8\nr: relu\n", "specs/my-net.net").graph.name == "my_net"
    assert netdsl.loads("input x: 3x8x8\nr: relu\n").graph.name == "net"
