"""Language features: chaining, DAGs, constants, blocks, repeat, defaults, padding, rounding, towers."""
from __future__ import annotations

import netdsl


def shapes(text: str) -> dict[str, tuple]:
    net = netdsl.load(text)
    assert net.ok, net.render_diagnostics()
    return {n.name: n.shape for n in net.graph}


def test_layers_chain_to_the_previous_one():
    net = netdsl.load("input x: 3x8x8\na: conv(4, 3)\nb: relu\nc: fc(2)")
    assert [n.inputs for n in net.graph] == [[], ["x"], ["a"], ["b"]]


def test_explicit_inputs_build_a_dag():
    s = shapes("""
        input x: 8x16x16
        a: conv(4, 1) <- x
        b: conv(6, 3, pad=1) <- x
        cat: concat <- a, b
        sum: add <- cat, cat
    """)
    assert s["cat"] == (10, 16, 16) and s["sum"] == (10, 16, 16)


def test_constants_and_arithmetic():
    s = shapes("""
        const width = 16
        const c = width * 2 + 1
        input x: [3, width * 2, width * 2]
        a: conv(c, 3, stride=width // 8, pad=(2 - 1, 2 ** 1 - 1))
    """)
    assert s["x"] == (3, 32, 32) and s["a"] == (33, 16, 16)


def test_blocks_with_parameters_and_defaults():
    net = netdsl.load("""
        block cbr(out, k=3) { conv: conv(out, k, pad=k // 2); bn: batchnorm; relu: relu }
        input x: 3x8x8
        one: cbr(16)
        two: cbr(32, k=5) expect 32x8x8
        head: fc(10)
    """)
    assert net.ok, net.render_diagnostics()
    names = [n.name for n in net.graph]
    assert names == ["x", "one.conv", "one.bn", "one.relu", "two.conv", "two.bn", "two.relu", "head"]
    assert net.graph.node("two.conv").params["kernel"] == [5, 5]
    assert net.graph.node("two.conv").scope == ("two",)
    assert net.graph.blocks == {"one": "cbr", "two": "cbr"}
    assert net.graph.node("head").inputs == ["two.relu"]


def test_repeat_numbers_its_layers_and_binds_the_index():
    net = netdsl.load("""
        input x: 3x8x8
        repeat 3 as i { c: conv(4 * i, 3, pad=1); r: relu }
    """)
    assert net.ok
    assert [n.name for n in net.graph][1:] == ["c_1", "r_1", "c_2", "r_2", "c_3", "r_3"]
    assert net.graph.node("c_3").shape == (12, 8, 8)
    assert net.graph.node("c_2").inputs == ["r_1"]


def test_block_input_is_named_in():
    s = shapes("""
        block residual(c) { a: conv(c, 3, pad=1); r: relu; b: conv(c, 3, pad=1); sum: add <- in, b }
        input x: 8x8x8
        res1: residual(8)
        res2: residual(8)
    """)
    assert s["res2.sum"] == (8, 8, 8)


def test_defaults_kind_specific_beat_global_and_explicit_beats_both():
    net = netdsl.load("""
        defaults { round = ceil; maxpool.round = floor; weight_init = normal(0, 0.01) }
        input x: 3x10x10
        c: conv(4, 3, stride=2)
        p: maxpool(2) <- c
        q: maxpool(2, round=ceil) <- c
    """)
    g = net.graph
    assert g.node("c").params["round"] == "ceil" and g.node("c").shape == (4, 5, 5)
    assert g.node("p").shape == (4, 2, 2) and g.node("q").shape == (4, 3, 3)
    assert g.node("c").params["weight_init"] == {"fn": "normal", "mean": 0.0, "std": 0.01}


def test_padding_forms():
    net = netdsl.load("""
        input x: 1x10x10
        a: conv(1, 3, pad=1)
        b: conv(1, 3, pad=(0, 2)) <- x
        c: conv(1, 3, pad=[1, (0, 1)]) <- x
    """)
    g = net.graph
    assert g.node("a").params["pad"] == [[1, 1], [1, 1]]
    assert g.node("b").params["pad"] == [[0, 2], [0, 2]] and g.node("b").shape == (1, 10, 10)
    assert g.node("c").params["pad"] == [[1, 1], [0, 1]] and g.node("c").shape == (1, 10, 9)


def test_rounding_decides_the_224_puzzle():
    floor = shapes("input x: 3x224x224\nc: conv(96, 11, stride=4)")
    ceil = shapes("input x: 3x224x224\nc: conv(96, 11, stride=4, round=ceil)")
    caffe = shapes("input x: 3x227x227\nc: conv(96, 11, stride=4)")
    torchvision = shapes("input x: 3x224x224\nc: conv(64, 11, stride=4, pad=2)")
    assert floor["c"][1:] == (54, 54)  # TF-slim's VALID
    assert ceil["c"][1:] == caffe["c"][1:] == torchvision["c"][1:] == (55, 55)


def test_caffe_pooling_clip():
    # Caffe: ceil((13 + 2 - 3) / 2) + 1 = 7, but the 7th window would start at 12 >= 13 + 1? no: 12 < 14, kept
    assert shapes("input x: 1x13x13\np: maxpool(3, stride=2, pad=1)")["p"] == (1, 7, 7)
    # ceil((6 + 2 - 3) / 3) + 1 = 3; the 3rd window starts at 6 >= 6 + 1? no. 7x7 with stride 3:
    # ceil((7 + 2 - 2) / 3) + 1 = 4; the 4th window starts at 9 >= 7 + 1: clipped to 3
    assert shapes("input x: 1x7x7\np: maxpool(2, stride=3, pad=1)")["p"] == (1, 3, 3)


def test_towers_make_local_layers_grouped():
    net = netdsl.load("""
        input x: 3x16x16
        towers 4 {
            a: conv(8, 3)
            b: conv(8, 3)
            c: conv(8, 3, groups=2)
            d: conv(8, 3) cross
            n: lrn
            f: fc(4)
        }
    """)
    assert net.ok, net.render_diagnostics()
    g = net.graph
    assert [g.node(n).meta["tower_groups"] for n in "abcd"] == [1, 4, 4, 1]
    assert g.node("c").meta["tower_groups"] * g.node("c").params["groups"] == 8
    assert g.node("d").meta["reads_all_towers"] and not g.node("a").meta["reads_all_towers"]
    assert net.report.to_dict()["towers"]["tower 3"]["params"] == net.report.total_params // 4


def test_comments_semicolons_crlf_and_bom():
    text = "\ufeff# a comment\r\ninput x: 3x8x8   # trailing\r\na: relu; b: relu;\r\n"
    net = netdsl.load(text)
    assert net.ok and [n.name for n in net.graph] == ["x", "a", "b"]


def test_train_block_is_kept_as_plain_data():
    net = netdsl.load("train { recipe = paper; epochs = 2 * 45; lr = 1e-2 }\ninput x: 3\nf: fc(2)")
    assert net.graph.training == {"recipe": "paper", "epochs": 90, "lr": 0.01}


def test_vector_input_and_global_pool():
    s = shapes("input v: 784\nf: fc(10)")
    assert s["f"] == (10,)
    s = shapes("input x: 64x7x7\ng: global_avgpool\na: adaptive_avgpool([2, 3]) <- x")
    assert s["g"] == (64, 1, 1) and s["a"] == (64, 2, 3)


def test_receptive_field_of_alexnet_pool5_is_195():
    from conftest import ROOT
    net = netdsl.load(ROOT / "specs" / "alexnet.net")
    assert net.graph.node("conv1").meta["rf"] == [11, 11]
    assert net.graph.node("pool5").meta["rf"] == [195, 195]
    assert net.graph.node("fc6").meta["rf"] is None  # the whole image
