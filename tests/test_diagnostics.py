"""One test per diagnostic kind: file:line:col, the layer, the arithmetic, a 'did you mean'."""
from __future__ import annotations

import re

import pytest

import netdsl


def check(cli, tmp_path, text: str, name: str = "bad.net"):
    spec = tmp_path / name
    spec.write_text(text)
    return cli("check", spec)


def errors(text: str) -> list:
    return netdsl.load(text).errors


def only(text: str, code: str):
    errs = errors(text)
    assert [e.code for e in errs] == [code], [e.render(None) for e in errs]
    return errs[0]


def test_error_format_has_position_source_line_and_caret(cli, tmp_path):
    result = check(cli, tmp_path, "input data: 3x224x224\nconv1: conv(96, 11, strid=4)\n")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert re.match(r".*bad\.net:2:21: error: conv1: conv has no parameter 'strid'$", lines[0])
    assert lines[1].endswith("conv1: conv(96, 11, strid=4)")
    assert lines[2].endswith(" " * 20 + "^^^^^")
    assert "did you mean 'stride'?" in lines[3]
    assert "1 error" in result.output


def test_the_224_puzzle_is_explained(cli, tmp_path):
    result = check(cli, tmp_path, "input data: 3x224x224\nconv1: conv(96, 11, stride=4) expect 96x55x55\n")
    assert result.exit_code == 1
    assert "error: conv1: expected 96x55x55, inferred 96x54x54" in result.output
    assert ("conv1: (224 + 0 + 0 - 11) / 4 + 1 = 54.25; floor gives 54, the expected 55 needs "
            "pad 2, input 227 or round=ceil") in result.output
    # the uncovered column is also a warning, with the same fixes
    assert "warning: conv1: the windows do not cover the input: the last 1" in result.output


def test_all_errors_of_a_file_in_one_run(cli, tmp_path):
    result = check(cli, tmp_path, """input data: 3x32x32
a: conv(8, 3, strid=1)
b: rleu
c: conv(9, 3, groups=2)
d: fc(10) <- cc
e: dropout(p=2)
""")
    assert result.exit_code == 1
    found = re.findall(r"bad\.net:(\d+):\d+: error", result.output)
    assert found == ["2", "3", "4", "5", "6"]
    assert "5 errors" in result.output


def test_unknown_kind_did_you_mean():
    e = only("input x: 3x8x8\na: maxpol(2)", "unknown-kind")
    assert e.message == "unknown layer kind 'maxpol'" and e.notes[0].startswith("did you mean 'maxpool'")
    assert (e.span.line, e.span.column) == (2, 4) and e.layer == "a"


def test_unknown_layer_did_you_mean():
    e = only("input x: 3x8x8\nconv1: conv(4, 3)\nb: relu <- conv_1", "unknown-layer")
    assert "did you mean 'conv1'?" in e.notes[0]


def test_forward_reference_is_unknown():
    e = only("input x: 3x8x8\na: relu <- b\nb: relu", "unknown-layer")
    assert "defined before" in e.notes[0] or "did you mean" in e.notes[0]


def test_unknown_key_lists_choices_when_nothing_is_close():
    e = only("input x: 3x8x8\na: conv(4, 3, zzz=1)", "unknown-key")
    assert "conv takes: out, kernel, stride" in e.notes[0]


def test_unknown_default_key():
    e = only("defaults { conv.rond = ceil }\ninput x: 3x8x8\na: relu", "unknown-key")
    assert "did you mean 'round'?" in e.notes[0] and e.span.line == 1


def test_bad_value_names_the_parameter():
    e = only("input x: 3x8x8\na: conv(4, 3, round=up)", "bad-value")
    assert e.message == "parameter 'round': expected one of floor, ceil, got the word 'up'"
    e = only("input x: 3x8x8\na: conv(4.5, 3)", "bad-value")
    assert "expected a whole number, got 4.5" in e.message


def test_missing_required_parameter():
    e = only("input x: 3x8x8\na: conv(4)", "missing")
    assert e.message == "conv needs 'kernel' (positional argument 2)"


def test_duplicate_layer_name():
    e = only("input x: 3x8x8\na: relu\na: relu", "duplicate")
    assert "(line 2)" in e.message and e.span.line == 3


def test_layer_named_like_an_earlier_block_instance():
    e = only("block b(c) { x: conv(c, 3) }\ninput x: 3x8x8\ny: b(4)\ny: relu", "duplicate")
    assert e.span.line == 4


def test_arity():
    e = only("input x: 3x8x8\nc: concat", "arity")
    assert "concat needs at least 2 inputs" in e.message
    e = only("input x: 3x8x8\nc: conv(4, 3, 5, 6)", "arity")
    assert "2 positional argument(s)" in e.message


def test_window_larger_than_input():
    e = only("input x: 3x8x8\nc: conv(4, 11)", "shape")
    assert "(8 + 0 + 0 - 11) / 1 + 1 = -2" in e.notes[0]


def test_groups_must_divide_channels():
    e = only("input x: 6x8x8\nc: conv(8, 3, groups=4)", "groups")
    assert e.message == "6 input channels do not divide into 4 groups"
    assert "6 / 4 = 1.5" in e.notes[0]


def test_towers_channels_must_split_evenly():
    e = only("input x: 3x8x8\ntowers 2 { a: conv(5, 3) }", "towers")
    assert "5 channels do not split evenly over 2 towers" in e.message


def test_cross_on_a_tower_local_kind():
    e = only("input x: 3x8x8\ntowers 2 { a: conv(4, 3); n: lrn cross }", "towers")
    assert "'cross' applies to conv and fc" in e.message


def test_cross_outside_towers():
    e = only("input x: 3x8x8\na: conv(4, 3) cross", "towers")
    assert "inside `towers N" in e.message


def test_nested_towers():
    e = only("input x: 3x8x8\ntowers 2 { towers 2 { a: conv(4, 3) } }", "towers")
    assert "cannot nest" in e.message


def test_conv_after_fc_needs_a_map():
    e = only("input x: 3x8x8\nf: fc(10)\nc: conv(4, 3)", "shape")
    assert "conv needs a CxHxW input, got 10" in e.message


def test_concat_and_add_mismatches():
    e = only("input x: 3x8x8\na: conv(4, 3) <- x\nc: concat <- a, x", "concat")
    assert "a: 4x6x6, x: 3x8x8" in e.notes[0]
    e = only("input x: 3x8x8\na: conv(4, 1) <- x\ns: add <- a, x", "add")
    assert "identical shapes" in e.message


def test_pool_padding_over_half_the_kernel():
    e = only("input x: 3x8x8\np: maxpool(3, pad=2)", "pool-pad")
    assert "kernel // 2 = 1" in e.notes[0]


def test_expression_errors():
    e = only("const a = 1 / 0\ninput x: 3", "expression")
    assert e.message == "division by zero" and (e.span.line, e.span.column) == (1, 11)
    e = only("input x: 3x8x8\nc: conv(wide * 2, 3)", "expression")
    assert "'wide' is not a defined constant" in e.notes[0]


def test_block_errors():
    e = only("block b(c) { x: conv(c, 3) }\ninput x: 3x8x8\ny: b()", "missing")
    assert e.message == "block b needs 'c'"
    e = only("block b(c) { x: conv(c, 3) }\ninput x: 3x8x8\ny: b(4, d=1)", "unknown-key")
    assert e.message == "block b has no parameter 'd'"
    e = only("block b(c) { x: b(c) }\ninput x: 3x8x8\ny: b(4)", "recursion")
    assert "nest more than" in e.message


def test_no_input():
    e = only("a: relu", "no-input")
    assert "declare the net's input" in e.notes[0]
    assert only("", "no-input").message == "the spec declares no input"


def test_repeat_bounds():
    assert only("input x: 3\nrepeat 1000000000 { r: relu }", "too-large")
    assert only("input x: 3\nrepeat -1 { r: relu }", "bad-value")


def test_bad_shapes():
    e = only("input x: 3x0x8", "bad-value")
    assert "at least 1" in e.message
    e = only("input x: [3, 4]", "bad-value")
    assert "CxHxW or a vector" in e.message


@pytest.mark.parametrize("text, message, note", [
    ("conv1 conv(96)", "unexpected 'conv'; a layer reads `name: kind(arguments)`", "expected ':'"),
    ("layer { name: \"conv1\" }", "unexpected '{'", "netdsl import"),
    ("input x: 3\nx2: relu // comment", "unexpected '//'", "comments start with '#'"),
    ("input: relu", "unexpected ':'", "'input' is a reserved word"),
    ("towers 2 { a: relu", "the spec ends too early: a '}' is missing", "expected"),
    ("a: relu $", "unexpected character '$'", None),
])
def test_syntax_errors_speak_the_users_language(text, message, note):
    errs = errors(text)
    assert errs[0].code == "syntax" and errs[0].message == message
    if note:
        assert any(note in n for n in errs[0].notes), errs[0].notes
    assert not any("__ANON" in n or "LPAR" in n or "RBRACE" in n for n in errs[0].notes)


def test_several_syntax_errors_in_one_run():
    errs = errors("input x: 3x8x8\na: conv(4 3)\nb: relu\nc relu\nd: relu")
    assert [e.span.line for e in errs] == [2, 4]


def test_warnings_do_not_fail_the_check(cli, tmp_path):
    result = check(cli, tmp_path, "input x: 3x224x224\nc: conv(8, 11, stride=4)\n")
    assert result.exit_code == 0
    assert "warning: c: the windows do not cover the input" in result.output


def test_usage_errors_exit_2(cli, tmp_path):
    assert cli("check", tmp_path / "missing.net").exit_code == 2
    assert cli("check", tmp_path).exit_code == 2
    assert cli("check").exit_code == 2
    assert cli("check", "--no-such-flag", tmp_path).exit_code == 2
    result = cli("check", tmp_path)
    assert "is a directory" in result.output
