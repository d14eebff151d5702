"""pad=same / pad=valid (TensorFlow's rules) for conv and pooling, the rounding warning, an honest
coverage warning, and `quiet` (issue 13, part 3)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdsl
from netdsl.caffe.exporter import to_prototxt
from netdsl.errors import CaffeExportError
from netdsl.layers.window import Window


def tf_out(word: str, size: int, k: int, s: int, d: int = 1) -> int:
    """TensorFlow's output size, written from its documentation (not from netdsl's code)."""
    span = d * (k - 1) + 1
    return (size - span) // s + 1 if word == "valid" else math.ceil(size / s)


def tf_pads(word: str, size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    if word == "valid":
        return 0, 0
    total = max((tf_out(word, size, k, s, d) - 1) * s + d * (k - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def one_layer(layer: str, size: int | tuple[int, int], channels: int = 2) -> netdsl.Net:
    h, w = (size, size) if isinstance(size, int) else size
    return netdsl.loads(f"input data: {channels}x{h}x{w}\nl: {layer}\n")


def codes(net: netdsl.Net) -> list[str]:
    return [d.code for d in net.warnings]


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("word", ["same", "valid"])
@pytest.mark.parametrize("kind", ["conv(3, {k}, stride={s}, dilation={d}, pad={w})", "maxpool({k}, stride={s}, pad={w})",
                                  "avgpool({k}, stride={s}, pad={w})"])
def test_shapes_follow_tensorflow(word, kind):
    for size in range(1, 24):
        for k in range(1, 6):
            for s in range(1, 4):
                for d in ((1, 2) if kind.startswith("conv") else (1,)):
                    if word == "valid" and d * (k - 1) + 1 > size:
                        continue
                    net = one_layer(kind.format(k=k, s=s, d=d, w=word), size)
                    assert net.ok, net.render_diagnostics()
                    want = tf_out(word, size, k, s, d)
                    assert net.graph.node("l").shape[1:] == (want, want), (size, k, s, d)
                    assert [(w.before, w.after) for w in net.graph.node("l").meta["windows"]] == \
                        [tf_pads(word, size, k, s, d)] * 2


def test_same_ignores_the_pooling_round_default():
    # maxpool rounds up by default; with pad=valid the size is TensorFlow's floor all the same
    net = one_layer("maxpool(3, stride=2, pad=valid)", 8)
    assert net.graph.node("l").shape == (2, 3, 3)
    assert one_layer("maxpool(3, stride=2)", 8).graph.node("l").shape == (2, 4, 4)  # (ceil, Caffe)


def test_same_pads_asymmetrically_and_says_so():
    net = one_layer("conv(8, 3, stride=2, pad=same)", 224)
    node = net.graph.node("l")
    assert node.shape == (8, 112, 112)
    assert [(w.before, w.after) for w in node.meta["windows"]] == [(0, 1), (0, 1)]
    assert "3x3/2 pad same (0,1), 8" in net.summary()
    assert "pad same 1" in one_layer("maxpool(3, stride=1, pad=same)", 10).summary()
    assert "pad same [(0,1), 1]" in one_layer("maxpool(3, stride=[2, 1], pad=same)", (10, 10)).summary()
    assert "2x2/2 pad valid" in one_layer("maxpool(2, stride=2, pad=valid)", 10).summary()
    assert net.graph.node("l").params["pad"] == "same"  # the word stays: it depends on the input


def test_same_never_pads_a_pooling_window_more_than_half_the_kernel():
    for size in range(1, 30):
        for k in range(1, 7):
            for s in range(1, 5):
                net = one_layer(f"maxpool({k}, stride={s}, pad=same)", size)
                assert net.ok, net.render_diagnostics()
                assert all(max(w.before, w.after) <= k // 2 for w in net.graph.node("l").meta["windows"])


def test_padding_words_are_checked():
    net = one_layer("conv(4, 3, pad=sme)", 8)
    assert not net.ok and "did you mean 'same'?" in net.render_diagnostics()
    net = one_layer("conv(4, 3, pad=[same, 1])", 8)
    assert not net.ok and "apply to both" in net.render_diagnostics()
    net = netdsl.loads("input data: 2x8x8\ndefaults { conv.pad = same }\nl: conv(4, 3, stride=2)\n")
    assert net.ok and net.graph.node("l").shape == (4, 4, 4)


def test_round_with_a_padding_word_is_an_error_that_says_why():
    for layer in ("conv(4, 3, stride=2, pad=same, round=ceil)", "maxpool(3, stride=2, pad=same, round=ceil)",
                  "maxpool(3, stride=2, pad=valid, round=floor)"):
        net = one_layer(layer, 9)
        assert not net.ok
        text = net.render_diagnostics()
        assert "does not apply with pad=" in text and "TensorFlow's rule" in text and "remove round=" in text
    # a net-wide rounding (googlenet.net's `maxpool.round = ceil`) does not clash with one layer's pad=same
    net = netdsl.loads("input data: 2x9x9\ndefaults { maxpool.round = ceil }\nl: maxpool(3, stride=2, pad=same)\n")
    assert net.ok and net.graph.node("l").shape == (2, 5, 5)


def test_an_expectation_on_same_is_explained_without_rounding():
    net = one_layer("conv(4, 3, stride=2, pad=same) expect 4x56x56", 224)
    text = net.render_diagnostics()
    assert "pad=same gives 112" in text and "input 112" in text and "round=" not in text


# ------------------------------------------------------------------ lowering


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("d", [1, 2])
def test_stride_1_same_conv_is_pytorchs(k, d):
    size = 11
    net = one_layer(f"conv(5, {k}, dilation={d}, pad=same)", size, channels=3)
    assert net.ok, net.render_diagnostics()
    torch.manual_seed(0)
    model = net.to_torch(seed=0).eval()
    ref = nn.Conv2d(3, 5, k, padding="same", dilation=d)
    with torch.no_grad():
        ref.weight.copy_(model.l.weight)
        ref.bias.copy_(model.l.bias)
        x = torch.randn(2, 3, size, size)
        got, want = model(x), ref(x)
    assert got.shape[1:] == want.shape[1:] == net.graph.node("l").shape
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("word", ["same", "valid"])
@pytest.mark.parametrize("size, k, s, d", [(224, 3, 2, 1), (9, 4, 2, 1), (10, 3, 3, 1), (13, 3, 2, 2), (7, 1, 2, 1),
                                           (15, 5, 2, 1), (8, 2, 3, 1)])
def test_strided_conv_runs_tensorflows_arithmetic(word, size, k, s, d):
    net = one_layer(f"conv(4, {k}, stride={s}, dilation={d}, pad={word})", size, channels=3)
    assert net.ok, net.render_diagnostics()
    model = net.to_torch(seed=0).eval()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    before, after = tf_pads(word, size, k, s, d)
    with torch.no_grad():
        got = model(x)
        want = F.conv2d(F.pad(x, (before, after, before, after)), model.l.weight, model.l.bias, s, dilation=d)
    out = tf_out(word, size, k, s, d)
    assert tuple(got.shape[1:]) == net.graph.node("l").shape == (4, out, out)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("size, k, s", [(224, 3, 2), (9, 3, 2), (10, 2, 2), (7, 3, 1), (11, 4, 3), (6, 1, 2), (5, 5, 2)])
def test_same_pooling_is_tensorflows(size, k, s):
    x = torch.randn(1, 2, size, size, generator=torch.Generator().manual_seed(2))
    before, after = tf_pads("same", size, k, s)
    pads = (before, after, before, after)
    # max: padding never wins; average: divided by the real positions in the window only
    want_max = F.max_pool2d(F.pad(x, pads, value=-math.inf), k, s)
    ones = F.pad(torch.ones(1, 1, size, size), pads)
    want_avg = F.avg_pool2d(F.pad(x, pads), k, s) / F.avg_pool2d(ones, k, s)
    for kind, want in (("maxpool", want_max), ("avgpool", want_avg)):
        net = one_layer(f"{kind}({k}, stride={s}, pad=same)", size)
        assert net.ok, net.render_diagnostics()
        with torch.no_grad():
            got = net.to_torch().eval()(x)
        out = tf_out("same", size, k, s)
        assert tuple(got.shape[1:]) == net.graph.node("l").shape == (2, out, out)
        torch.testing.assert_close(got, want)


def test_same_average_counts_the_padding_when_asked():
    x = torch.randn(1, 2, 9, 9, generator=torch.Generator().manual_seed(3))
    net = one_layer("avgpool(3, stride=2, pad=same, include_pad=true)", 9)  # pads (1, 1)
    with torch.no_grad():
        got = net.to_torch().eval()(x)
    torch.testing.assert_close(got, F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=True))


def test_valid_pooling_floors_like_tensorflow():
    x = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(4))
    for kind, fn in (("maxpool", F.max_pool2d), ("avgpool", F.avg_pool2d)):
        with torch.no_grad():
            got = one_layer(f"{kind}(3, stride=2, pad=valid)", 8).to_torch().eval()(x)
        torch.testing.assert_close(got, fn(x, 3, 2))


# ------------------------------------------------------------------ Caffe export


def test_caffe_export_takes_symmetric_same_and_refuses_asymmetric():
    text = to_prototxt(one_layer("conv(4, 3, pad=same)", 10))
    assert "pad: 1" in text
    with pytest.raises(CaffeExportError) as err:
        to_prototxt(one_layer("conv(4, 3, stride=2, pad=same)", 224))
    assert "Caffe pads both sides alike; pad=same pads this layer's 224x224 input [[0, 1], [0, 1]]" in str(err.value)


def test_caffe_export_of_same_average_pooling():
    with pytest.raises(CaffeExportError, match="counts the padding"):
        to_prototxt(one_layer("avgpool(3, stride=1, pad=same)", 10))
    assert "pad: 1" in to_prototxt(one_layer("avgpool(3, stride=1, pad=same, include_pad=true)", 10))
    # pad=valid rounds down, which Caffe's pooling says with round_mode
    assert "round_mode: FLOOR" in to_prototxt(one_layer("maxpool(3, stride=2, pad=valid)", 8))


# ------------------------------------------------------------------ the rounding warning

STEM = "input data: 64x112x112\n{defaults}pool: maxpool(3, stride=2, pad=1{extra})\n"


def test_the_torchvision_stem_on_the_ceil_default_warns():
    net = netdsl.loads(STEM.format(defaults="", extra=""))
    assert net.ok and codes(net) == ["rounding"]
    assert net.graph.node("pool").shape == (64, 57, 57)
    text = net.render_diagnostics()
    assert "ceil gives 57; PyTorch's floor gives 56" in text
    assert "(112 + 1 + 1 - 3) / 2 + 1 = 56.5" in text
    assert "round=floor to match PyTorch, or round=ceil to keep Caffe's" in text
    assert "nn.MaxPool2d" in net.warnings[0].message


@pytest.mark.parametrize("defaults, extra", [("", ", round=floor"), ("", ", round=ceil"),
                                             ("defaults { maxpool.round = ceil }\n", ""),
                                             ("defaults { round = floor }\n", "")])
def test_a_chosen_rounding_does_not_warn(defaults, extra):
    net = netdsl.loads(STEM.format(defaults=defaults, extra=extra))
    assert net.ok and net.warnings == [], net.render_diagnostics()


def test_no_rounding_warning_where_the_sizes_agree():
    assert codes(one_layer("maxpool(3, stride=2, pad=1)", 113)) == []  # 57 either way
    assert codes(one_layer("maxpool(2, stride=2)", 224)) == []
    assert codes(one_layer("conv(4, 3, stride=2)", 9)) == []  # conv's default is PyTorch's floor


# ------------------------------------------------------------------ the coverage warning


def brute_unread_tail(win: Window) -> int:
    """Rows at the end that no window reads but that the windows' pattern, continued, would read."""
    read = {i * win.stride + j * win.dilation for i in range(win.out()) for j in range(win.kernel)}
    further = {i * win.stride + j * win.dilation for i in range(win.out(), win.out() + win.span + 2)
               for j in range(win.kernel)}
    end = win.size + win.before
    last_read = max(read)
    tail = [r for r in range(last_read + 1, end) if r in further]
    return end - tail[0] if tail else 0


def test_lost_rows_match_a_brute_force_count():
    for size in range(1, 20):
        for k in range(1, 6):
            for s in range(1, 5):
                for d in (1, 2, 3):
                    for before, after in ((0, 0), (1, 0), (1, 1), (0, 2)):
                        for rounding in ("floor", "ceil"):
                            win = Window(size, k, s, before, after, d, rounding)
                            if win.padded < win.span:
                                continue
                            assert win.lost() == brute_unread_tail(win), win


def test_a_resnet_shortcut_is_not_a_coverage_problem():
    net = one_layer("conv(64, 1, stride=2)", 56)
    assert net.ok and net.warnings == [] and net.graph.node("l").shape == (64, 28, 28)
    assert codes(one_layer("conv(4, 2, stride=3)", 8)) == []  # 2x2/3 on 8: windows 0-1, 3-4, 6-7
    # dilation 2, stride 2: only even rows are ever read, so the odd last row is not lost
    assert codes(one_layer("conv(4, 3, stride=2, dilation=2)", 8)) == []


def test_a_3x3_stride_2_conv_on_8_loses_its_last_row():
    net = one_layer("conv(8, 3, stride=2)", 8)
    # windows read rows 0-2, 2-4, 4-6; row 7 is what a fourth window (6-8) would start on
    win = net.graph.node("l").meta["windows"][0]
    assert {r for i in range(win.out()) for r in range(2 * i, 2 * i + 3)} == set(range(7))
    assert codes(net) == ["coverage"]
    text = net.render_diagnostics()
    assert "the last 1 rows/columns are never read" in text
    assert "(8 + 0 + 0 - 3) / 2 + 1 = 3.5; floor gives 3; for 4 and full coverage: pad 1, input 9, round=ceil" in text
    assert codes(one_layer("conv(4, 2, stride=3)", 10)) == ["coverage"]  # row 9 starts a window that does not fit


def test_same_always_covers():
    for size in range(1, 30):
        for k in range(1, 6):
            for s in range(1, 4):
                assert codes(one_layer(f"conv(2, {k}, stride={s}, pad=same)", size)) == []


# ------------------------------------------------------------------ quiet


def test_quiet_per_layer():
    assert codes(one_layer("conv(8, 3, stride=2, quiet=[coverage])", 8)) == []
    assert codes(one_layer("conv(8, 3, stride=2, quiet=coverage)", 8)) == []
    assert codes(one_layer("conv(8, 3, stride=2, quiet=[rounding])", 8)) == ["coverage"]
    assert codes(one_layer("maxpool(3, stride=2, pad=1, quiet=[rounding, coverage])", 112)) == []


def test_quiet_per_net_and_per_kind():
    spec = "input data: 2x112x112\n{defaults}c: conv(4, 3, stride=2)\np: maxpool(3, stride=2, pad=1) <- data\n"
    assert codes(netdsl.loads(spec.format(defaults=""))) == ["coverage", "rounding"]
    assert codes(netdsl.loads(spec.format(defaults="defaults { quiet = [coverage, rounding] }\n"))) == []
    assert codes(netdsl.loads(spec.format(defaults="defaults { maxpool.quiet = [rounding] }\n"))) == ["coverage"]
    # a layer's own quiet wins over the net's
    net = netdsl.loads(spec.format(defaults="defaults { quiet = [coverage, rounding] }\n")
                       .replace("stride=2)\np", "stride=2, quiet=[rounding])\np"))
    assert codes(net) == ["coverage"]


def test_an_unknown_warning_name_is_an_error_with_did_you_mean():
    net = one_layer("conv(8, 3, stride=2, quiet=[coverge])", 8)
    assert not net.ok
    text = net.render_diagnostics()
    assert "parameter 'quiet'" in text and "did you mean 'coverage'?" in text
    net = netdsl.loads("input data: 2x8x8\ndefaults { quiet = [roundng] }\nl: conv(4, 3)\n")
    assert not net.ok and "did you mean 'rounding'?" in net.render_diagnostics()
    assert not one_layer("relu(quiet=[coverage])", 8).ok  # only the windowed kinds have it


def test_quiet_is_for_the_checker_only(cli, tmp_path):
    text = "input data: 2x8x8\nl: conv(8, 3, stride=2, quiet=[coverage])\np: maxpool(2, quiet=[rounding])\n"
    plain = text.replace(", quiet=[coverage]", "").replace(", quiet=[rounding]", "")
    quiet_net, plain_net = netdsl.loads(text), netdsl.loads(plain)
    assert quiet_net.summary() == plain_net.summary()
    assert to_prototxt(quiet_net) == to_prototxt(plain_net)
    assert str(quiet_net.to_torch(seed=0)) == str(plain_net.to_torch(seed=0))
    assert quiet_net.to_torch(seed=0).state_dict().keys() == plain_net.to_torch(seed=0).state_dict().keys()
    # a spec that does not use it: no trace of it in check --json
    spec = tmp_path / "plain.net"
    spec.write_text(plain)
    result = cli("check", "--json", spec)
    data = json.loads(result.stdout)
    assert '"quiet"' not in result.stdout and data["ok"]
    assert [d["code"] for d in data["diagnostics"]] == ["coverage", "rounding"]
    assert "quiet" not in plain_net.graph.node("l").params
