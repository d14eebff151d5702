"""Darknet cfg files (netdsl/imports/darknet.py) on pjreddie/darknet's own cfgs (tests/fixtures/darknet):
the shapes darknet prints when it loads alexnet.cfg and darknet19.cfg, every importable cfg against a
reference written here from darknet's C formulas without any of netdsl's code, the CLI, errors, and the
forward pass against darknet's loops re-implemented in numpy."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

import netdsl
from conftest import ROOT, run_netdsl
from netdsl.imports import detect, import_file
from netdsl.imports.darknet import DarknetImportError, import_text

FIXTURES = ROOT / "tests" / "fixtures" / "darknet"
CFGS = sorted(FIXTURES.glob("*.cfg"))


def git_blob_hash(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_fixtures_are_darknets_files():
    rows = re.findall(r"^\| (\S+) \| (\S+) \| `([0-9a-f]{40})` \|", (FIXTURES / "README.md").read_text(), re.M)
    assert {here for here, _, _ in rows} == {p.name for p in CFGS}
    for here, _, blob in rows:
        assert git_blob_hash(FIXTURES / here) == blob, here
    assert "Darknet is public domain" in (FIXTURES / "LICENSE").read_text()


@pytest.mark.parametrize("path", CFGS, ids=lambda p: p.name)
def test_detected_as_darknet(path):
    assert detect(path) == "darknet"


# ------------------------------------------------------------------ what darknet prints
# parse_network_cfg prints one line per layer (w x h x c); these are those lines for the two cfgs,
# worked out by hand from convolutional_layer.c, maxpool_layer.c, connected_layer.c, avgpool_layer.c.

ALEXNET = [  # 227x227 input
    (0, "conv", "227x227x3", "55x55x96"), (1, "max", "55x55x96", "27x27x96"),
    (2, "conv", "27x27x96", "27x27x256"), (3, "max", "27x27x256", "13x13x256"),
    (4, "conv", "13x13x256", "13x13x384"), (5, "conv", "13x13x384", "13x13x384"),
    (6, "conv", "13x13x384", "13x13x256"), (7, "max", "13x13x256", "6x6x256"),
    (8, "connected", "9216", "4096"), (9, "dropout", "4096", "4096"), (10, "connected", "4096", "4096"),
    (11, "dropout", "4096", "4096"), (12, "connected", "4096", "1000"), (13, "softmax", "1000", "1000"),
]
DARKNET19 = [  # 256x256 input
    (0, "conv", "256x256x3", "256x256x32"), (1, "max", "256x256x32", "128x128x32"),
    (2, "conv", "128x128x32", "128x128x64"), (3, "max", "128x128x64", "64x64x64"),
    (4, "conv", "64x64x64", "64x64x128"), (5, "conv", "64x64x128", "64x64x64"),
    (6, "conv", "64x64x64", "64x64x128"), (7, "max", "64x64x128", "32x32x128"),
    (8, "conv", "32x32x128", "32x32x256"), (9, "conv", "32x32x256", "32x32x128"),
    (10, "conv", "32x32x128", "32x32x256"), (11, "max", "32x32x256", "16x16x256"),
    (12, "conv", "16x16x256", "16x16x512"), (13, "conv", "16x16x512", "16x16x256"),
    (14, "conv", "16x16x256", "16x16x512"), (15, "conv", "16x16x512", "16x16x256"),
    (16, "conv", "16x16x256", "16x16x512"), (17, "max", "16x16x512", "8x8x512"),
    (18, "conv", "8x8x512", "8x8x1024"), (19, "conv", "8x8x1024", "8x8x512"),
    (20, "conv", "8x8x512", "8x8x1024"), (21, "conv", "8x8x1024", "8x8x512"),
    (22, "conv", "8x8x512", "8x8x1024"), (23, "conv", "8x8x1024", "8x8x1000"),
    (24, "avg", "8x8x1000", "1000"), (25, "softmax", "1000", "1000"),
]


def printed(shape) -> str:
    """darknet's w x h x c, or a count."""
    shape = tuple(shape)
    if len(shape) == 3 and shape[1:] != (1, 1):
        c, h, w = shape
        return f"{w}x{h}x{c}"
    return str(math.prod(shape))


@pytest.mark.parametrize("name, chain, params", [("alexnet.cfg", ALEXNET, 62_378_344),
                                                 ("darknet19.cfg", DARKNET19, 20_842_376)])
def test_shapes_are_what_darknet_prints(name, chain, params):
    imported = import_file(FIXTURES / name)
    net = netdsl.loads(imported.spec, name)
    assert net.ok and not net.diagnostics, net.render_diagnostics()
    assert len(chain) == len(imported.layers)
    for index, kind, given, made in chain:
        node = net.graph.node(imported.layers[str(index)])
        seen = node.meta["in_shapes"][0]
        seen = str(math.prod(seen)) if kind == "connected" else printed(seen)  # it prints its inputs' count
        assert (seen, printed(node.shape)) == (given, made), (index, kind)
        assert f"# {index} {kind} " in imported.spec  # the comment shows darknet's line
    assert net.report.total_params == params


def test_alexnet_layers_and_leaky_slope():
    spec = import_file(FIXTURES / "alexnet.cfg").spec
    assert "conv2: conv(256, 5, pad=2)" in spec  # pad=1 means size/2
    assert "max1: maxpool(3, stride=2)" in spec  # padding=0 given
    assert "input data: 3x227x227" in spec
    spec = import_file(FIXTURES / "darknet19.cfg").spec
    assert "conv0_leaky: relu(slope=0.1)" in spec  # leaky_activate: .1*x
    assert "max1: maxpool(2, stride=2, pad=(0, 1))" in spec  # padding defaults to size - 1, pad/2 before
    assert "conv5: conv(64, 1, bias=false)" in spec  # size 1, pad=1: padding 1/2 = 0
    assert "conv0_bn: batchnorm" in spec and "batchnorm.momentum = 0.01" in spec


# ------------------------------------------------------------------ an independent reference

def read_cfg(path: Path) -> list[tuple[str, dict]]:
    sections: list[tuple[str, dict]] = []
    for line in path.read_text().splitlines():
        line = "".join(line.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append((line[1:-1], {}))
        else:
            key, _, value = line.partition("=")
            sections[-1][1].setdefault(key, value)  # option_find returns the first
    return sections


def reference(path: Path) -> tuple[list[tuple[int, ...] | None], int, int]:
    """Each layer's (c, h, w) by darknet's formulas, and the net's parameters and multiply-adds."""
    sections = read_cfg(path)
    net = sections[0][1]
    shape = (int(net["channels"]), int(net["height"]), int(net["width"]))
    shapes: list[tuple[int, ...] | None] = []
    params = macs = 0
    for index, (kind, o) in enumerate(sections[1:]):
        get = lambda k, d: int(o.get(k, d))  # noqa: E731
        c, h, w = shape
        if kind == "crop":
            shape = (c, get("crop_height", 1), get("crop_width", 1))
            shapes.append(None)
            continue
        if kind == "convolutional":
            n, size, stride, groups, bn = get("filters", 1), get("size", 1), get("stride", 1), get("groups", 1), \
                get("batch_normalize", 0)
            padding = size // 2 if get("pad", 0) else get("padding", 0)
            oh, ow = (h + 2 * padding - size) // stride + 1, (w + 2 * padding - size) // stride + 1
            params += n * c // groups * size * size + n + (n if bn else 0)
            macs += n * c // groups * size * size * oh * ow
            shape = (n, oh, ow)
        elif kind == "maxpool":
            stride = get("stride", 1)
            size = get("size", stride)
            padding = get("padding", size - 1)
            shape = (c, (h + padding - size) // stride + 1, (w + padding - size) // stride + 1)
        elif kind == "avgpool":
            shape = (c, 1, 1)
        elif kind == "connected":
            out, bn = get("output", 1), get("batch_normalize", 0)
            params += c * h * w * out + out + (out if bn else 0)
            macs += c * h * w * out
            shape = (out, 1, 1)
        elif kind == "route":
            parts = [shapes[int(i) + index if int(i) < 0 else int(i)] for i in o["layers"].split(",")]
            shape = (sum(p[0] for p in parts), *parts[0][1:])
        elif kind == "upsample":
            s = get("stride", 2)
            shape = (c, h * s, w * s)
        # dropout, softmax, shortcut, yolo, region, detection, cost: the shape they are given
        shapes.append(shape)
    return shapes, params, macs


def flat(shape) -> tuple[int, ...]:
    shape = tuple(shape)
    return (shape[0],) if len(shape) == 3 and shape[1:] == (1, 1) else shape


IMPORTS = ["alexnet.cfg", "cifar.test.cfg", "darknet.cfg", "darknet19.cfg", "darknet53.cfg", "densenet201.cfg",
           "extraction.cfg", "resnet18.cfg", "resnet50.cfg", "tiny.cfg", "vgg-16.cfg", "yolov2-tiny.cfg",
           "yolov3-tiny.cfg", "yolov3.cfg"]
REFUSED = {
    "yolov1.cfg": ("233:1: error: layer 28 [local]: [local] is a locally-connected layer", 3),
    "yolov2.cfg": ("219:1: error: layer 27 [reorg]: [reorg] is space-to-depth reorganisation", 4),
    "strided.cfg": ("31:1: error: layer 1: activation=ramp (x*(x > 0) + .1*x) has no netdsl kind", 3),
    "darknet9000.cfg": ("201:1: error: layer 25: a hierarchical softmax (tree=data/9k.tree) is not supported", 1),
    "gru.cfg": ("15:1: error: layer 0 [gru]: [gru] is a recurrent layer", 2),
}


def test_every_fixture_is_accounted_for():
    assert {p.name for p in CFGS} == set(IMPORTS) | set(REFUSED)


@pytest.mark.parametrize("name", IMPORTS)
def test_real_cfgs_match_the_reference(name):
    imported = import_file(FIXTURES / name)
    net = netdsl.loads(imported.spec, name)
    assert net.ok, net.render_diagnostics()
    assert not net.diagnostics, net.render_diagnostics()
    shapes, params, macs = reference(FIXTURES / name)
    assert net.report.total_params == params
    assert net.report.total_macs == macs
    for index, shape in enumerate(shapes):
        if str(index) in imported.layers:
            assert flat(net.graph.node(imported.layers[str(index)]).shape) == flat(shape), index


def test_detection_heads_are_left_out_and_their_inputs_are_outputs():
    imported = import_file(FIXTURES / "yolov3.cfg")
    net = netdsl.loads(imported.spec)
    outputs = {n.name: n.shape for n in net.graph.outputs()}
    assert outputs == {"conv81": (255, 19, 19), "conv93": (255, 38, 38), "conv105": (255, 76, 76)}
    assert [d.split(" (")[0] for d in imported.left_out] == ["82 [yolo]", "94 [yolo]", "106 [yolo]"]
    assert "route86: concat <- up85, res61" in imported.spec  # layers=-1, 61 (layer 61 is a shortcut)
    assert "res4: add <- conv3_leaky, conv1_leaky" in imported.spec  # from=-3


def test_resnet_shortcut_with_other_shapes_is_darknets_truncation():
    """darknet's resnet50.cfg adds a 64-channel map to the first 64 of 256 channels (shortcut_cpu's
    min(c1, c2)), and reads a map twice as large every other row and column."""
    spec = import_file(FIXTURES / "resnet50.cfg").spec
    assert "res5_low: slice(0, 64)" in spec and "res5_high: slice(64, 256) <- conv4_bn" in spec
    assert "res5: concat <- res5_sum, res5_high" in spec
    spec = import_file(FIXTURES / "resnet18.cfg").spec
    assert "res10_from: maxpool(1, stride=2) <- res7_leaky" in spec  # 64x64 read into 32x32


def test_crop_after_net_is_input_preprocessing():
    imported = import_file(FIXTURES / "vgg-16.cfg")
    assert "input data: 3x224x224" in imported.spec
    assert any("centre crop at test time, then x*2 - 1" in n for n in imported.notes)
    assert netdsl.loads(imported.spec).report.total_params == 138_357_544


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_real_cfgs_netdsl_cannot_express_fail_clearly(name):
    expected, skipped = REFUSED[name]
    with pytest.raises(DarknetImportError) as err:
        import_file(FIXTURES / name)
    text = str(err.value)
    assert f"{FIXTURES / name}:{expected}" in text, text
    assert text.count(": error: ") == 1
    were = "s were" if skipped > 1 else " was"
    assert f"1 error; {skipped} later layer{were} not converted because" in err.value.outcome


def test_the_same_cause_in_many_layers_is_one_error():
    """strided.cfg uses activation=ramp in 22 layers: one error, at the first, naming the others."""
    with pytest.raises(DarknetImportError) as err:
        import_file(FIXTURES / "strided.cfg")
    text = str(err.value)
    assert text.count(": error: ") == 1
    assert "= the same in layer 2 (line 38), layer 3 (line 45)," in text and "layer 24 (line 179)" in text


def test_cli_import_and_exit_codes(tmp_path):
    out = tmp_path / "alexnet.net"
    done = run_netdsl("import", FIXTURES / "alexnet.cfg", "-o", out)
    assert done.returncode == 0, done.stderr
    assert "62,378,344 parameters, 1,135,256,096 MACs; output softmax13 1000" in done.stderr
    assert run_netdsl("check", out).returncode == 0
    done = run_netdsl("import", FIXTURES / "yolov1.cfg")
    assert done.returncode == 1
    assert "yolov1.cfg:233:1: error: layer 28 [local]" in done.stderr and "Traceback" not in done.stderr
    assert "nothing written" in done.stderr


def test_until_stops_before_an_unsupported_layer(cli):
    result = cli("import", FIXTURES / "yolov2.cfg", "--until", "26")
    assert result.exit_code == 0, result.output
    assert "reorg" not in result.output.split("defaults")[1]
    result = cli("import", FIXTURES / "yolov2.cfg", "--until", "999")
    assert result.exit_code == 2 and "layers 0 to 31" in result.output


# ------------------------------------------------------------------ errors

def _fails(text: str) -> DarknetImportError:
    with pytest.raises(DarknetImportError) as err:
        import_text(text, "t.cfg")
    return err.value


NET = "[net]\nwidth=8\nheight=8\nchannels=3\n\n"


def test_unknown_section_names_its_line():
    err = _fails(NET + "[convolutionall]\nfilters=4\n")
    assert "t.cfg:6:1: error: layer 0 [convolutionall]: darknet does not know the section type" in str(err)
    assert "did you mean 'convolutional'" in str(err)


def test_unknown_activation_is_an_error_not_darknets_silent_relu():
    err = _fails(NET + "[convolutional]\nfilters=4\nsize=3\nactivation=leakyy\n")
    assert "t.cfg:9:1: error: layer 0: activation=leakyy is not a darknet activation" in str(err)
    assert "did you mean 'leaky'?" in str(err)


def test_route_must_name_an_earlier_layer():
    err = _fails(NET + "[convolutional]\nfilters=4\n[route]\nlayers=-1,3\n")
    assert "t.cfg:9:1: error: layer 1: layers=-1,3 names layer 3, which is not before it" in str(err)


def test_first_section_must_be_net():
    err = _fails("[convolutional]\nfilters=4\n")
    assert "the first section must be [net] or [network], not [convolutional]" in str(err)


def test_pooling_padding_netdsl_cannot_pad_is_refused():
    """darknet pads padding/2 before a max window; netdsl's pooling pads at most half the window."""
    err = _fails(NET + "[maxpool]\nsize=3\nstride=2\npadding=4\n")
    assert "t.cfg:9:1: error: layer 0: padding=4 pads 2 before and 2 after a 3-wide window" in str(err)
    imported = import_text(NET + "[maxpool]\nsize=3\nstride=2\npadding=2\n", "t.cfg")
    assert netdsl.loads(imported.spec).graph.node("max0").shape == (3, 4, 4)  # (8 + 2 - 3) / 2 + 1


# ------------------------------------------------------------------ the forward pass
# darknet's forward loops (forward_maxpool_layer, shortcut_cpu, upsample_cpu, softmax_cpu,
# forward_batchnorm_layer's GPU path) in numpy, against the lowered module with the same weights.

SYNTH = """[net]
height=12
width=12
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[maxpool]
size=3
stride=2

[convolutional]
filters=16
size=1
stride=1
activation=linear

[shortcut]
from=-2
activation=leaky

[convolutional]
filters=4
size=3
stride=2
pad=1
activation=logistic

[shortcut]
from=-2

[upsample]
stride=2

[route]
layers=-1,-5

[convolutional]
filters=5
size=3
padding=1
activation=relu

[softmax]

[connected]
output=7
activation=tanh

[dropout]
probability=.3

[cost]
"""


def dk_conv(x, w, b, pad, stride):
    c, h, wd = x.shape
    k = w.shape[-1]
    big = np.zeros((c, h + 2 * pad, wd + 2 * pad))
    big[:, pad:pad + h, pad:pad + wd] = x
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((w.shape[0], oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = np.tensordot(w, big[:, i * stride:i * stride + k, j * stride:j * stride + k], 3) + b
    return out


def dk_maxpool(x, size, stride, pad):
    c, h, w = x.shape
    oh, ow = (h + pad - size) // stride + 1, (w + pad - size) // stride + 1
    offset = -(pad // 2)  # int w_offset = -l.pad/2;
    out = np.full((c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for n in range(size):
                for m in range(size):
                    y, xx = offset + i * stride + n, offset + j * stride + m
                    if 0 <= y < h and 0 <= xx < w:
                        out[:, i, j] = np.maximum(out[:, i, j], x[:, y, xx])
    return out


def dk_shortcut(out, add):
    """shortcut_cpu with s1 = s2 = 1."""
    c2, h2, w2 = out.shape
    c1, h1, w1 = add.shape
    stride, sample = max(w1 // w2, 1), max(w2 // w1, 1)
    out = out.copy()
    for k in range(min(c1, c2)):
        for j in range(min(h1, h2)):
            for i in range(min(w1, w2)):
                out[k, j * sample, i * sample] += add[k, j * stride, i * stride]
    return out


def leaky(x):
    return np.where(x > 0, x, 0.1 * x)


def test_forward_matches_darknets_loops():
    import torch
    rng = np.random.default_rng(0)
    imported = import_text(SYNTH, "synth.cfg")
    x = rng.normal(size=(3, 12, 12))
    p = {"w0": rng.normal(size=(8, 3, 3, 3)), "scales": rng.normal(size=8), "biases": rng.normal(size=8),
         "mean": rng.normal(size=8), "var": rng.uniform(0.5, 2, size=8),
         "w3": rng.normal(size=(16, 8, 1, 1)), "b3": rng.normal(size=16),
         "w5": rng.normal(size=(4, 16, 3, 3)), "b5": rng.normal(size=4),
         "w9": rng.normal(size=(5, 20, 3, 3)) * 0.01, "b9": rng.normal(size=5) * 0.1,  # a softmax far from one-hot
         "w11": rng.normal(size=(7, 180)), "b11": rng.normal(size=7)}
    l0 = dk_conv(x, p["w0"], np.zeros(8), 1, 1)
    l0 = (l0 - p["mean"][:, None, None]) / np.sqrt(p["var"][:, None, None] + 1e-5)  # normalize_kernel
    l0 = leaky(l0 * p["scales"][:, None, None] + p["biases"][:, None, None])
    l1 = dk_maxpool(l0, 2, 1, 1)  # padding = size - 1 = 1: nothing before, one after
    l2 = dk_maxpool(l1, 3, 2, 2)  # padding 2: one before, one after
    l3 = dk_conv(l2, p["w3"], p["b3"], 0, 1)
    l4 = leaky(dk_shortcut(l3, l2))  # 8 channels added to the first 8 of 16
    l5 = 1 / (1 + np.exp(-dk_conv(l4, p["w5"], p["b5"], 1, 2)))
    l6 = dk_shortcut(l5, l4)  # 6x6x16 read every other row into 3x3x4
    l7 = l6.repeat(2, 1).repeat(2, 2)
    l8 = np.concatenate([l7, l3])
    l9 = np.maximum(dk_conv(l8, p["w9"], p["b9"], 1, 1), 0)
    e = np.exp(l9.ravel() - l9.max())
    l10 = e / e.sum()
    want = np.tanh(p["w11"] @ l10 + p["b11"])
    net = netdsl.loads(imported.spec)
    assert net.ok, net.render_diagnostics()
    model = net.to_torch().eval().double()
    state = model.state_dict()
    for key, value in {"conv0.weight": p["w0"], "conv0_bn.weight": p["scales"], "conv0_bn.bias": p["biases"],
                       "conv0_bn.running_mean": p["mean"], "conv0_bn.running_var": p["var"],
                       "conv3.weight": p["w3"], "conv3.bias": p["b3"], "conv5.weight": p["w5"],
                       "conv5.bias": p["b5"], "conv9.weight": p["w9"], "conv9.bias": p["b9"],
                       "fc11.weight": p["w11"], "fc11.bias": p["b11"]}.items():
        assert state[key].shape == value.shape, key
        state[key] = torch.tensor(value)
    model.load_state_dict(state)
    seen = trace(model, x)
    for name, value in {"max1": l1, "max2": l2, "res4_leaky": l4, "res6": l6, "route8": l8, "softmax10": l10,
                        "fc11_tanh": want}.items():
        np.testing.assert_allclose(seen[name][0].numpy().reshape(value.shape), value, rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    assert 0.001 < l10.max() < 0.1  # the softmax does not hide what comes before it
    assert imported.left_out[0].startswith("13 [cost]")


def trace(model, x) -> dict:
    """Every layer's output of the lowered module (a torch.fx GraphModule), by name."""
    import torch
    from torch.fx import Interpreter

    seen: dict = {}

    class Recorder(Interpreter):
        def run_node(self, n):
            seen[n.name] = out = super().run_node(n)
            return out

    with torch.no_grad():
        Recorder(model).run(torch.tensor(x[None]))
    return seen
