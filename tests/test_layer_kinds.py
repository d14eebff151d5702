"""The layer kinds torchvision's modern convnets need (MobileNet, EfficientNet, ShuffleNet, ConvNeXt,
decoders): each lowered layer computes what torch (or torchvision) computes, the checker's shapes and
parameter counts are the module's, the errors carry the arithmetic, and the modules survive
torch.compile, torch.export, eject and the Caffe exporter."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import netdsl


def lowered(text: str, seed: int = 0) -> tuple[netdsl.Net, torch.nn.Module]:
    net = netdsl.loads(text)
    assert net.ok, net.render_diagnostics()
    return net, net.to_torch(seed=seed).eval()


def only_error(text: str, code: str):
    net = netdsl.loads(text)
    assert [e.code for e in net.errors] == [code], net.render_diagnostics()
    return net.errors[0]


def params_match(net: netdsl.Net, model: torch.nn.Module) -> None:
    """The checker's count, per layer and in all, is the lowered module's."""
    for node in net.graph:
        if node.kind != "input":
            have = sum(p.numel() for p in model.layer(node.name).parameters())
            assert node.meta["param_count"] == have, node.name
    assert net.report.total_params == sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------ activations

ACTIVATIONS = [
    ("relu6", F.relu6), ("hardswish", F.hardswish), ("hardsigmoid", F.hardsigmoid), ("silu", F.silu),
    ("swish", F.silu), ("mish", F.mish), ("elu", F.elu), ("elu(alpha=0.3)", lambda x: F.elu(x, 0.3)),
]


@pytest.mark.parametrize("use, reference", ACTIVATIONS, ids=[u for u, _ in ACTIVATIONS])
@pytest.mark.parametrize("shape", [(4, 6, 6), (10,)], ids=["map", "vector"])
def test_activations_compute_torchs_function(use, reference, shape):
    net, model = lowered(f"input data: {'x'.join(map(str, shape))}\nx: {use}\n")
    x = torch.randn(3, *shape) * 5
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)
    assert net.graph.node("x").shape == shape and net.report.total_params == 0


def test_prelu_learns_a_slope_per_channel_or_one():
    net, model = lowered("input data: 6x5x5\nx: prelu\ny: prelu(shared=true, init=0.1) <- data\n")
    x, y = model.layer("x"), model.layer("y")
    assert isinstance(x, nn.PReLU) and x.weight.shape == (6,) and torch.all(x.weight == 0.25)
    assert y.weight.shape == (1,) and torch.allclose(y.weight, torch.tensor(0.1))
    params_match(net, model)
    with torch.no_grad():
        x.weight.copy_(torch.linspace(-1, 1, 6))
    data = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(x(data), F.prelu(data, x.weight))
    expected = torch.where(data >= 0, data, data * torch.linspace(-1, 1, 6).view(1, 6, 1, 1))
    torch.testing.assert_close(x(data), expected)
    net, model = lowered("input data: 7\nx: prelu\n")  # a vector: a slope per feature
    assert model.layer("x").weight.shape == (7,) and net.report.total_params == 7
    assert net.graph.node("x").params == {"shared": False, "init": 0.25}


# ------------------------------------------------------------------ normalisation

def test_layernorm_is_convnexts_layernorm2d_and_loads_its_weights():
    convnext = pytest.importorskip("torchvision.models.convnext")
    net, model = lowered("input data: 16x5x7\nx: layernorm\n")
    ours = model.layer("x")
    ref = convnext.LayerNorm2d(16, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())  # the same keys and shapes: weight [C], bias [C]
    x = torch.randn(3, 16, 5, 7) * 3 + 1
    torch.testing.assert_close(model(x), ref(x))
    assert ours.eps == 1e-6 and net.graph.node("x").shape == (16, 5, 7)
    params_match(net, model)
    # channels_last input: the same numbers
    torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref(x))


def test_layernorm_of_a_vector_is_nn_layernorm_and_affine_can_be_off():
    net, model = lowered("input data: 12\nx: layernorm(eps=1e-5)\ny: layernorm(affine=false)\n")
    assert type(model.layer("x")) is nn.LayerNorm and model.layer("x").normalized_shape == (12,)
    x = torch.randn(4, 12)
    torch.testing.assert_close(model.layer("x")(x), F.layer_norm(x, (12,), eps=1e-5))
    assert net.graph.node("y").meta["param_count"] == 0 and not list(model.layer("y").parameters())
    params_match(net, model)


def test_groupnorm_is_nn_groupnorm():
    net, model = lowered("input data: 12x4x4\nx: groupnorm(3)\ny: groupnorm(4, eps=1e-3, affine=false)\n")
    gn = model.layer("x")
    assert isinstance(gn, nn.GroupNorm) and (gn.num_groups, gn.num_channels, gn.eps) == (3, 12, 1e-5)
    with torch.no_grad():
        gn.weight.normal_()
        gn.bias.normal_()
    x = torch.randn(2, 12, 4, 4)
    want = F.group_norm(F.group_norm(x, 3, gn.weight, gn.bias, 1e-5), 4, eps=1e-3)
    torch.testing.assert_close(model(x), want)
    assert net.graph.node("x").meta["param_count"] == 24
    params_match(net, model)


def test_groupnorm_needs_channels_that_divide_into_groups():
    e = only_error("input data: 16x4x4\nx: groupnorm(3)\n", "groups")
    assert e.message == "16 channels do not divide into 3 groups"
    assert "16 / 3 = 5.333; channels must be a multiple of 3" in e.notes[0]


def test_layer_scale_is_a_learned_factor_per_channel_shaped_as_torchvision_stores_it():
    convnext = pytest.importorskip("torchvision.models.convnext")
    net, model = lowered("input data: 8x3x3\nx: layer_scale\nv: flatten\ny: layer_scale(0.5)\n")
    scale = model.layer("x")
    assert scale.weight.shape == (8, 1, 1) and torch.all(scale.weight == 1e-6)
    block = convnext.CNBlock(8, layer_scale=0.3, stochastic_depth_prob=0.0)
    scale.load_state_dict({"weight": block.state_dict()["layer_scale"]})  # torchvision's tensor, renamed
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(scale(x), x * block.layer_scale)
    assert model.layer("y").weight.shape == (72,) and torch.all(model.layer("y").weight == 0.5)
    assert net.graph.node("x").meta["param_count"] == 8
    params_match(net, model)


def test_a_convnext_block_computes_torchvisions_cnblock():
    convnext = pytest.importorskip("torchvision.models.convnext")
    net, model = lowered("""input data: 16x7x7
dw: conv(16, 7, pad=3, groups=16)
ln: layernorm
pw1: conv(64, 1)
act: gelu
pw2: conv(16, 1)
gamma: layer_scale(1e-6)
dp: drop_path(0.1)
out: add <- dp, data
""")
    ref = convnext.CNBlock(16, layer_scale=1e-6, stochastic_depth_prob=0.1).eval()
    with torch.no_grad():
        ref.layer_scale.normal_()
    state = ref.state_dict()
    linear = lambda w: w[:, :, None, None]  # noqa: E731  (nn.Linear over channels = a 1x1 conv)
    model.load_state_dict({
        "dw.weight": state["block.0.weight"], "dw.bias": state["block.0.bias"],
        "ln.weight": state["block.2.weight"], "ln.bias": state["block.2.bias"],
        "pw1.weight": linear(state["block.3.weight"]), "pw1.bias": state["block.3.bias"],
        "pw2.weight": linear(state["block.5.weight"]), "pw2.bias": state["block.5.bias"],
        "gamma.weight": state["layer_scale"]})
    x = torch.randn(2, 16, 7, 7)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)
    assert net.report.total_params == sum(p.numel() for p in ref.parameters())


def test_normalisation_inside_towers_is_refused():
    for use in ("layernorm", "groupnorm(2)", "channel_shuffle(2)", "drop_path(0.1)"):
        e = only_error(f"input data: 4x8x8\ntowers 2 {{\n  a: conv(8, 3)\n  x: {use}\n}}\n", "towers")
        assert "inside towers is not supported" in e.message, use


# ------------------------------------------------------------------ broadcasting

def test_squeeze_and_excitation_multiplies_by_a_broadcast_gate():
    ops = pytest.importorskip("torchvision.ops")
    net, model = lowered("""input data: 16x32x32
pool: global_avgpool
fc1: conv(4, 1)
relu: relu
fc2: conv(16, 1)
gate: sigmoid
x: multiply <- data, gate
""")
    assert net.graph.node("x").shape == (16, 32, 32)
    ref = ops.SqueezeExcitation(16, 4).eval()
    model.load_state_dict({f"{k}": v for k, v in ref.state_dict().items()})  # fc1.weight, ... as torchvision's
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))


@pytest.mark.parametrize("shapes, out", [
    (["16x32x32", "16x1x1"], (16, 32, 32)), (["16x1x1", "16x32x32"], (16, 32, 32)),
    (["1x32x32", "16x1x1"], (16, 32, 32)), (["16x1x32", "16x32x1", "1x1x1"], (16, 32, 32)),
    (["8", "1"], (8,)), (["3x5x5", "3x5x5"], (3, 5, 5))])
@pytest.mark.parametrize("kind", ["multiply", "add"])
def test_add_and_multiply_broadcast_like_numpy(kind, shapes, out):
    names = [f"i{k}" for k in range(len(shapes))]
    text = "\n".join(f"input {n}: {s}" for n, s in zip(names, shapes)) + f"\nx: {kind} <- {', '.join(names)}\n"
    net, model = lowered(text)
    assert net.graph.node("x").shape == out
    xs = [torch.randn(2, *net.graph.node(n).shape) for n in names]
    want = xs[0]
    for x in xs[1:]:
        want = want * x if kind == "multiply" else want + x
    torch.testing.assert_close(model(*xs), want)
    assert tuple(want.shape[1:]) == out


def test_broadcast_errors_say_which_axis_of_which_input():
    e = only_error("input a: 16x32x32\ninput b: 16x2x1\nx: multiply <- a, b\n", "multiply")
    assert e.message == ("multiply needs identical shapes or shapes that broadcast: 16x32x32 * 16x2x1: "
                         "height 32 vs 2; each axis must be equal or 1")
    assert e.notes == ["a: 16x32x32, b: 16x2x1", "b's height 2 is neither 32 nor 1"]
    e = only_error("input a: 4x8x8\ninput b: 3x8x8\nx: add <- a, b\n", "add")
    assert "identical shapes" in e.message and "channels 4 vs 3" in e.message
    e = only_error("input a: 4x8x8\ninput b: 4\nx: add <- a, b\n", "add")
    assert e.message.endswith("4x8x8 + 4: maps and vectors do not combine")
    e = only_error("input a: 5\ninput b: 7\nx: multiply <- a, b\n", "multiply")
    assert "features 5 vs 7" in e.message


def test_maximum_and_weighted_sum_keep_identical_shapes():
    e = only_error("input a: 16x8x8\ninput b: 16x1x1\nx: maximum <- a, b\n", "maximum")
    assert e.message == "maximum needs identical shapes"
    e = only_error("input a: 16x8x8\ninput b: 16x1x1\nx: weighted_sum([1, 2]) <- a, b\n", "weighted_sum")
    assert e.message == "weighted_sum needs identical shapes"


def test_broadcasting_over_channels_inside_towers_is_refused():
    e = only_error("input data: 4x8x8\ng: conv(1, 3)\ntowers 2 {\n  a: conv(8, 3) <- data\n"
                   "  x: multiply <- a, g\n}\n", "towers")
    assert "broadcasts over channels inside towers" in e.message
    net, model = lowered("input data: 4x8x8\ntowers 2 {\n  a: conv(8, 3)\n  p: global_avgpool\n"
                         "  x: multiply <- a, p\n}\n")  # the same channels: each tower its own
    assert net.graph.node("x").shape == (8, 6, 6)


# ------------------------------------------------------------------ channel shuffle

def test_channel_shuffle_is_shufflenets():
    shufflenet = pytest.importorskip("torchvision.models.shufflenetv2")
    net, model = lowered("input data: 12x3x3\nx: channel_shuffle(3)\n")
    x = torch.randn(2, 12, 3, 3)
    torch.testing.assert_close(model(x), shufflenet.channel_shuffle(x, 3), rtol=0, atol=0)
    reference = x.view(2, 3, 4, 3, 3).transpose(1, 2).reshape(2, 12, 3, 3)
    torch.testing.assert_close(model(x), reference, rtol=0, atol=0)
    e = only_error("input data: 10x3x3\nx: channel_shuffle(4)\n", "groups")
    assert e.message == "10 channels do not divide into 4 groups" and "10 / 4 = 2.5" in e.notes[0]


# ------------------------------------------------------------------ transposed convolution

def _reference_convtranspose(x, module, pads, output_pad):
    """The uncropped transposed convolution (with output_pad rows at the end), cropped by the pads."""
    y = F.conv_transpose2d(x, module.weight, module.bias, module.stride, 0, output_pad, module.groups,
                           module.dilation)
    (top, bottom), (left, right) = pads
    return y[:, :, top:y.shape[2] - bottom, left:y.shape[3] - right]


@pytest.mark.parametrize("args, pads, output_pad", [
    ("8, 3", [[0, 0], [0, 0]], (0, 0)),
    ("8, 4, stride=2, pad=1", [[1, 1], [1, 1]], (0, 0)),
    ("8, 3, stride=2, pad=1, output_pad=1", [[1, 1], [1, 1]], (1, 1)),
    ("8, 3, stride=2, pad=(1, 0), output_pad=1", [[1, 0], [1, 0]], (1, 1)),
    ("6, [3, 2], stride=[2, 3], pad=[(2, 0), 1], output_pad=[1, 2], groups=2, bias=false",
     [[2, 0], [1, 1]], (1, 2)),
    ("8, 3, stride=2, dilation=2, pad=(0, 3), output_pad=1", [[0, 3], [0, 3]], (1, 1)),
    ("4, 5, stride=3, pad=(4, 1)", [[4, 1], [4, 1]], (0, 0)),
])
def test_convtranspose_is_torchs_with_the_inferred_shape(args, pads, output_pad):
    net, model = lowered(f"input data: 4x5x7\nx: convtranspose({args})\n")
    module = model.layer("x")
    x = torch.randn(2, 4, 5, 7)
    out = model(x)
    assert tuple(out.shape[1:]) == net.graph.node("x").shape
    torch.testing.assert_close(out, _reference_convtranspose(x, module, pads, output_pad))
    params_match(net, model)
    k = module.kernel_size
    per_input = module.out_channels // module.groups * k[0] * k[1]
    assert net.graph.node("x").meta["macs"] == 4 * 5 * 7 * per_input


def test_convtranspose_with_symmetric_padding_is_a_stock_module():
    net, model = lowered("input data: 4x5x5\nx: convtranspose(8, 3, stride=2, pad=1, output_pad=1)\n")
    module = model.layer("x")
    assert type(module) is nn.ConvTranspose2d and (module.padding, module.output_padding) == ((1, 1), (1, 1))
    ref = nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1)
    ref.load_state_dict(module.state_dict())
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(model(x), ref(x))
    assert net.graph.node("x").shape == (8, 10, 10) == tuple(ref(x).shape[1:])


def test_convtranspose_macs_are_what_torchs_flop_counter_counts():
    from torch.utils.flop_counter import FlopCounterMode
    net, model = lowered("input data: 16x9x9\nx: convtranspose(8, 3, stride=2, groups=2, pad=1)\n")
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 16, 9, 9))
    assert counter.get_total_flops() == 2 * net.graph.node("x").meta["macs"]


def test_convtranspose_inside_towers_is_grouped():
    net, model = lowered("input data: 4x8x8\ntowers 2 {\n  a: conv(8, 3, pad=1)\n  x: convtranspose(6, 2, stride=2)\n}\n")
    assert model.layer("x").groups == 2 and net.graph.node("x").shape == (6, 16, 16)
    params_match(net, model)


def test_convtranspose_errors_show_the_arithmetic():
    e = only_error("input data: 4x8x8\nx: convtranspose(8, 3, stride=2, output_pad=2)\n", "shape")
    assert e.message == "output_pad 2 must be smaller than the stride 2 or the dilation 1 (height and width)"
    e = only_error("input data: 4x1x8\nx: convtranspose(8, 1, pad=[1, 0])\n", "shape")
    assert e.message == "the transposed convolution leaves no output along the height"
    assert e.notes[0] == "x: (1 - 1) * 1 - 1 - 1 + 1 = -1, which is < 1"
    e = only_error("input data: 4x8x8\nx: convtranspose(8, 3, stride=2, pad=1) expect 8x16x16\n", "expect")
    assert e.message == "expected 8x16x16, inferred 8x15x15"
    assert e.notes == ["x: (8 - 1) * 2 - 1 - 1 + 3 = 15, the expected 16 needs output_pad=1 or pad (0, 1)"]
    e = only_error("input data: 6x8x8\nx: convtranspose(8, 3, groups=4)\n", "groups")
    assert e.message == "6 input channels do not divide into 4 groups"


def test_convtranspose_receptive_field_counts_the_inputs_one_output_reads():
    net = netdsl.loads("input data: 3x32x32\na: conv(8, 3, stride=2, pad=1)\nb: convtranspose(8, 4, stride=2, pad=1)\n"
                       "c: convtranspose(8, 3, stride=2, dilation=2)\nd: convtranspose(8, 3, stride=3)\n")
    rf = {n.name: n.meta["rf"][0] for n in net.graph}
    # b: taps 0 and 2 of its 4 land on inputs, 1 apart in a's grid (jump 2): 3 + 2; c: taps 0, 2, 4 all
    # land, 2 inputs apart end to end; d: one tap per output
    assert (rf["a"], rf["b"], rf["c"], rf["d"]) == (3, 5, 9, 9)


def test_sizes_too_large_for_any_tensor_are_errors_not_hangs():
    e = only_error("input data: 4x8x8\nx: convtranspose(2, 3, stride=2000000000)\n", "shape")
    assert e.message.endswith("larger than 2,147,483,647")
    net = netdsl.loads("input data: 4x1x1\nx: convtranspose(2, 3, stride=2000000000)\n")  # one input: fine
    assert net.ok and net.graph.node("x").shape == (2, 3, 3) and net.graph.node("x").meta["rf"] == [1, 1]
    e = only_error("input data: 4x8x8\nx: upsample(1e300)\n", "shape")
    assert e.message == "upsampling makes the height larger than 2,147,483,647"


# ------------------------------------------------------------------ upsample

@pytest.mark.parametrize("args, size", [
    ("2", (14, 18)), ("1.5", (10, 13)), ("[2, 1.5]", (14, 13)), ("0.5", (3, 4)), ("1.7", (11, 15)),
    ("size=[5, 20]", (5, 20)), ("size=8", (8, 8)), ("2, mode=bilinear", (14, 18)),
    ("1.5, mode=bilinear, align_corners=true", (10, 13)), ("size=[4, 11], mode=bilinear", (4, 11))])
def test_upsample_shapes_and_values_are_pytorchs(args, size):
    net, model = lowered(f"input data: 3x7x9\nx: upsample({args})\n")
    x = torch.randn(2, 3, 7, 9)
    out = model(x)
    assert net.graph.node("x").shape == (3, *size) == tuple(out.shape[1:])
    p = net.graph.node("x").params
    kwargs = {"mode": p["mode"], "align_corners": p["align_corners"] if p["mode"] == "bilinear" else None}
    if p.get("size"):
        want = F.interpolate(x, size=tuple(p["size"]), **kwargs)
    else:
        want = F.interpolate(x, scale_factor=tuple(p["scale"]), **kwargs)
    torch.testing.assert_close(out, want)
    if p.get("scale"):
        assert size == tuple(math.floor(n * s) for n, s in zip((7, 9), p["scale"]))


def test_upsample_errors():
    assert only_error("input data: 3x7x9\nx: upsample\n", "upsample").message == "upsample needs a scale or a size"
    e = only_error("input data: 3x7x9\nx: upsample(2, size=4)\n", "upsample")
    assert e.message == "upsample takes a scale or a size, not both"
    e = only_error("input data: 3x7x9\nx: upsample(2, align_corners=true)\n", "upsample")
    assert e.message == "align_corners applies to mode=bilinear only"
    e = only_error("input data: 3x7x9\nx: upsample(0.1)\n", "shape")
    assert e.notes == ["x: floor(7 * 0.1) = 0"]
    e = only_error("input data: 3x7x9\nx: upsample(-1)\n", "bad-value")
    assert "a scale factor must be a positive number" in e.message
    assert only_error("input data: 12\nx: upsample(2)\n", "shape").message.startswith("upsample needs a CxHxW input")


# ------------------------------------------------------------------ stochastic depth

def test_drop_path_is_torchvisions_stochastic_depth():
    ops = pytest.importorskip("torchvision.ops")
    net, model = lowered("input data: 4x3x3\nx: drop_path(0.4)\n")
    x = torch.randn(64, 4, 3, 3)
    torch.testing.assert_close(model(x), x, rtol=0, atol=0)  # eval: the identity
    model.train()
    torch.manual_seed(7)
    got = model(x)
    torch.manual_seed(7)
    want = ops.stochastic_depth(x, 0.4, "row", training=True)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    kept = (got.flatten(1) != 0).any(1)
    assert 0 < kept.sum() < 64  # whole samples dropped
    torch.testing.assert_close(got[kept], x[kept] / 0.6)
    assert net.graph.node("x").shape == (4, 3, 3)


# ------------------------------------------------------------------ one net with every kind

EVERY_KIND = """net every "every new kind"
input data: 16x12x12
c1: conv(16, 3, pad=1)
r6: relu6
hs: hardswish
se_pool: global_avgpool <- hs
se_fc: conv(16, 1)
se_gate: hardsigmoid
se: multiply <- hs, se_gate
sw: swish
mi: mish
el: elu(alpha=0.5)
pr: prelu
ln: layernorm
gn: groupnorm(4)
ls: layer_scale(0.5)
dp: drop_path(0.2)
res: add <- dp, c1
cs: channel_shuffle(4)
up: upsample(1.5, mode=bilinear)
ct: convtranspose(8, 3, stride=2, pad=(1, 0), output_pad=1)
ct2: convtranspose(8, 3, stride=2, pad=1, output_pad=1, groups=2)
up2: upsample(size=[5, 7])
flat: flatten
fln: layernorm
fpr: prelu(shared=true)
fls: layer_scale
"""


def test_every_kind_in_one_net_counts_its_parameters():
    net, model = lowered(EVERY_KIND)
    out = model(torch.randn(2, 16, 12, 12))
    assert tuple(out.shape) == (2, 280)
    params_match(net, model)


def test_every_kind_compiles_to_one_graph_and_exports():
    net, model = lowered(EVERY_KIND)
    x = torch.randn(3, 16, 12, 12)
    for training in (True, False):
        model.train(training)
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)  # a graph break raises
        y = compiled(x)
        if training:
            y.sum().backward()
        else:
            torch.testing.assert_close(y, model(x))
    model.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x[:1]), model(x[:1]))


EJECT_CHECK = """
import sys, torch
sys.path[:] = [p for p in sys.path if "netdsl" not in p and p not in ("", ".")] + [sys.argv[1]]
import every
assert not any(m == "netdsl" or m.startswith("netdsl.") for m in sys.modules), "the file imported netdsl"
model = every.Every()
model.load_state_dict(torch.load(sys.argv[2], weights_only=True))
model.eval()
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[3], weights_only=True)), sys.argv[4])
"""


def test_every_kind_ejects_to_a_file_that_needs_only_torch(tmp_path):
    from netdsl.lowering.eject import python_source
    net, model = lowered(EVERY_KIND, seed=3)
    (tmp_path / "every.py").write_text(python_source(net.graph, spec="every.net"))
    torch.save(model.state_dict(), tmp_path / "state.pt")
    x = torch.randn(2, 16, 12, 12)
    torch.save(x, tmp_path / "x.pt")
    run = subprocess.run([sys.executable, "-I", "-c", EJECT_CHECK, str(tmp_path), str(tmp_path / "state.pt"),
                          str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), model(x), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------ Caffe export

def test_caffe_export_of_the_kinds_caffe_has():
    from netdsl.caffe.exporter import to_prototxt
    net = netdsl.loads("""input data: 4x8x8
a: relu6
b: swish
c: elu(alpha=0.5)
d: prelu(shared=true, init=0.1)
e: layer_scale(0.5)
f: convtranspose(6, 4, stride=2, pad=1, bias=false, groups=2)
g: global_avgpool
h: multiply <- f, f
""")
    text = to_prototxt(net)
    for piece in ('type: "Clip"', "clip_param {\n    min: 0\n    max: 6", 'type: "Swish"',
                  "elu_param {\n    alpha: 0.5", "prelu_param {\n    channel_shared: true\n    filler {\n"
                  '      type: "constant"\n      value: 0.1', 'type: "Scale"', "value: 0.5",
                  'type: "Deconvolution"', "num_output: 6\n    bias_term: false\n    pad: 1\n    kernel_size: 4\n"
                  "    stride: 2\n    group: 2", "operation: PROD"):
        assert piece in text, piece


def test_caffe_export_refuses_what_caffe_cannot_say():
    from netdsl.caffe.exporter import CaffeExportError, to_prototxt
    net = netdsl.loads("""input data: 4x8x8
a: convtranspose(4, 3, stride=2, output_pad=1)
p: global_avgpool
m: multiply <- a, p
h: hardswish
l: layernorm
u: upsample(2)
""", "bad.net")
    with pytest.raises(CaffeExportError) as err:
        to_prototxt(net)
    text = err.value.render()
    assert [d.layer for d in err.value.diagnostics] == ["a", "m", "h", "l", "u"]
    assert "a: Caffe's Deconvolution has no output padding" in text
    assert "m: Caffe's Eltwise needs identical shapes; this multiply broadcasts 4x18x18 * 4x1x1" in text
    assert "Caffe has no layer for netdsl's 'hardswish'" in text and "Caffe has no layer norm" in text
