"""Blocks that compute: layer facts (`in.channels`), comparisons and `and`/`or`/`not`, `if`/`else`, second
names (`shortcut = in`), and diagnostics that name the block instance they come from."""
from __future__ import annotations

import pytest

import netdsl

BOTTLENECK = """
block bottleneck(width, out, stride=1) {
    conv1: conv(width, 1, bias=false) <- in
    bn1: batchnorm
    conv2: conv(width, 3, stride=stride, pad=1, bias=false)
    bn2: batchnorm
    conv3: conv(out, 1, bias=false)
    bn3: batchnorm
    shortcut = in
    if stride != 1 or in.channels != out {
        down: conv(out, 1, stride=stride, bias=false) <- in
        down_bn: batchnorm
        shortcut = down_bn
    }
    sum: add <- bn3, shortcut
    relu: relu
}
input data: 64x56x56
b1: bottleneck(64, 256)
b2: bottleneck(64, 256)
b3: bottleneck(128, 512, stride=2) expect 512x28x28
"""


def load(text: str) -> netdsl.Net:
    return netdsl.loads(text)


def errors(net: netdsl.Net) -> list[str]:
    return [d.message for d in net.errors]


def test_one_block_covers_the_downsampling_and_the_plain_bottleneck():
    net = load(BOTTLENECK)
    assert net.ok, net.render_diagnostics()
    names = [n.name for n in net.graph]
    assert "b1.down" in names and "b3.down" in names and "b2.down" not in names  # b2: 256 in, 256 out, stride 1
    assert net.graph.node("b2.sum").inputs == ["b2.bn3", "b1.relu"]  # the shortcut is the block's input
    assert net.graph.node("b3.sum").inputs == ["b3.bn3", "b3.down_bn"]
    assert net.graph.node("b3.relu").shape == (512, 28, 28)
    # counted by hand: conv weights + batchnorm scale and shift
    b1 = 64 * 64 + 64 * 64 * 9 + 64 * 256 + 64 * 256 + 2 * (64 + 64 + 256 + 256)
    b2 = 256 * 64 + 64 * 64 * 9 + 64 * 256 + 2 * (64 + 64 + 256)
    b3 = 256 * 128 + 128 * 128 * 9 + 128 * 512 + 256 * 512 + 2 * (128 + 128 + 512 + 512)
    assert net.report.total_params == b1 + b2 + b3


def test_it_lowers_and_runs():
    torch = pytest.importorskip("torch")
    model = load(BOTTLENECK).to_torch(seed=0).eval()
    assert tuple(model(torch.randn(2, 64, 56, 56)).shape) == (2, 512, 28, 28)
    assert "b3.down.weight" in model.state_dict() and "b2.down.weight" not in model.state_dict()


@pytest.mark.parametrize("c, taken", [(1, "one"), (2, "two"), (5, "many")])
def test_else_if_chains_take_the_first_branch_that_holds(c, taken):
    net = load(f"""
input data: {c}x8x8
if data.channels == 1 {{ one: relu }} else if in_range {{ x: relu }} else {{ many: relu }}
""".replace("in_range", "data.channels >= 2 and data.channels < 3").replace("x: relu", "two: relu"))
    assert net.ok, net.render_diagnostics()
    assert [n.name for n in net.graph][1:] == [taken]


def test_layer_facts():
    net = load("""
block probe() {
    const c = in.channels
    a: conv(c * 2, 1) <- in
    b: conv(in.height + in.width, 1)
    if in.shape == [3, 8, 6] { c3: relu }
}
input data: 3x8x6
p: probe()
f: fc(10)
g: fc(f.channels + 1)
""")
    assert net.ok, net.render_diagnostics()
    assert net.graph.node("p.a").shape == (6, 8, 6)
    assert net.graph.node("p.b").shape == (14, 8, 6)
    assert "p.c3" in net.graph
    assert net.graph.node("g").shape == (11,)


def test_facts_of_a_vector_and_unknown_facts_are_errors():
    net = load("input data: 3x8x8\nf: fc(10)\ng: fc(f.height)\nh: fc(f.chanels)\n")
    msgs = errors(net)
    assert any("'f' is a vector of 10, with no height" in m for m in msgs)
    assert any("a layer has no 'chanels'" in m for m in msgs)
    assert any("did you mean 'channels'" in n for d in net.errors for n in d.notes)


def test_top_level_constants_cannot_read_layers():
    net = load("input data: 3x8x8\nconst c = data.channels\nx: conv(c, 1)\n")
    assert any("known before any layer is made" in m for m in errors(net))


def test_words_compare_with_words_and_logic_needs_true_or_false():
    net = load("""
block act(kind) {
    if kind == relu { r: relu <- in } else if kind == "tanh" { t: tanh <- in } else { s: sigmoid <- in }
}
input data: 3x8x8
a: act(relu)
b: act(tanh)
c: act(other)
""")
    assert net.ok, net.render_diagnostics()
    assert [n.kind for n in net.graph][1:] == ["relu", "tanh", "sigmoid"]
    bad = load("input data: 3x8x8\nif 1 and true { x: relu }\n")
    assert errors(bad) == ["'and' needs true or false, got 1"]
    bad = load("input data: 3x8x8\nif data.channels { x: relu }\n")
    assert errors(bad) == ["an `if` needs true or false, got 3"]


def test_or_stops_at_the_side_that_decides():
    # f is a vector: f.height would be an error, but `or` never evaluates it
    net = load("input data: 3x8x8\nf: fc(10)\nif f.channels == 10 or f.height > 1 { x: relu }\n")
    assert net.ok, net.render_diagnostics()
    assert "x" in net.graph


def test_a_name_only_the_branch_not_taken_defines():
    net = load("""
block opt(c) {
    if c > 4 { big: relu <- in }
    y: relu <- big
}
input data: 3x8x8
o1: opt(8)
o2: opt(2)
""")
    [err] = net.errors
    assert err.layer == "o2.y"
    assert "'big' is not made here: only the branch of the `if` at line 3 that did not hold defines it" in err.message
    assert "in o2: opt(2), line 8" in err.notes


def test_an_undecidable_condition_is_one_error_not_a_cascade():
    net = load("""
input data: 3x8x8
if data.height > nope { a: relu } else { a: tanh }
b: relu <- a
c: relu <- b
""")
    assert len(net.errors) == 1 and "'>' needs a number" in net.errors[0].message


def test_second_names():
    net = load("""
input data: 3x8x8
a: relu
b: tanh <- data
x = a
x = b
s: add <- a, x
""")
    assert net.ok, net.render_diagnostics()
    assert net.graph.node("s").inputs == ["a", "b"]
    assert "x" not in net.graph  # a second name makes no layer
    hides = load("input data: 3x8x8\na: relu\na = data\n")
    assert "'a' names a layer" in errors(hides)[0]
    taken = load("input data: 3x8x8\nx = data\nx: relu\n")
    assert "'x' is already a second name" in errors(taken)[0]
    unknown = load("input data: 3x8x8\nx = dta\n")
    assert errors(unknown) == ["unknown layer 'dta'"]


def test_a_block_whose_ifs_choose_nothing_passes_its_input_on():
    net = load("""
block se(ratio) {
    if ratio > 0 {
        squeeze: global_avgpool <- in
        fc1: conv(max(1, in.channels // ratio), 1)
        r: relu
        fc2: conv(in.channels, 1)
        gate: sigmoid
        out: multiply <- in, gate
    }
}
input data: 16x8x8
a: se(0)
b: conv(8, 3, pad=1) <- a
""")
    ok = net.ok or any("identical shapes" in m for m in errors(net))  # broadcasting multiply may come later
    assert ok, net.render_diagnostics()
    assert net.graph.node("b").inputs == ["data"]
    empty = load("block e() {}\ninput data: 3x8x8\nx: e()\n")
    assert errors(empty) == ["block e defines no layers"]


def test_errors_inside_instances_name_the_instance_and_its_line_once():
    net = load("""
block stage(c, k) {
    conv: conv(c, k, pad=1)
    r: relu <- nope
}
input data: 3x32x32
s1: stage(8, 3)
s2: stage(8, 40)
""")
    rendered = net.render_diagnostics()
    unknown = [d for d in net.errors if "nope" in d.message]
    assert len(unknown) == 1, rendered  # the block's mistake, once, with every instance that has it
    assert unknown[0].layer == "s1.r"
    assert "in s1: stage(8, 3), line 7" in unknown[0].notes and "the same in s2" in unknown[0].notes
    [window] = [d for d in net.errors if "does not fit" in d.message]
    assert window.layer == "s2.conv" and "in s2: stage(8, 40), line 8" in window.notes


def test_the_new_words_are_reserved():
    net = load("input data: 3x8x8\nif: relu\n")
    assert not net.ok
    assert any("reserved word" in n for d in net.errors for n in d.notes)


def test_comparisons_do_not_break_arrows():
    # `<-` is still an arrow right after a layer, `<` a comparison inside an expression
    net = load("input data: 3x8x8\na: relu <- data\nif data.channels <-1 { b: relu } else { c: relu }\n")
    assert net.ok, net.render_diagnostics()
    assert "c" in net.graph


def test_inline_choice_in_arguments_and_parentheses():
    net = load("""
block t { r: relu }
const a = (3 if 1 > 2 else 4)
input data: 3x8x8
x: t
repeat 2 as i { q: conv(8 if i == 1 else 4, 1, stride=(2 if i == 1 else 1)) }
const b = 5
if b == 5 { z: relu }
""")
    assert net.ok, net.render_diagnostics()
    assert net.graph.node("q_1").shape == (8, 4, 4) and net.graph.node("q_2").shape == (4, 4, 4)
    assert "z" in net.graph and "x.r" in net.graph  # a block without parameters needs no ()
    # only the side chosen is evaluated: the other may be an error
    assert load("input data: 3x8x8\nc: conv(4 if true else 1 // 0, 1)\n").ok
    bad = load("input data: 3x8x8\nc: conv(4 if 3 else 2, 1)\n")
    assert errors(bad) == ["parameter 'out': 'if' needs true or false, got 3"]
