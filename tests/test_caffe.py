"""Caffe interop: prototxt import (shapes and parameter counts computed here, independently, from the
prototxt with Caffe's own rules), lowering and a forward pass, prototxt export round trips, and
.caffemodel weights."""
from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import pytest

import netdsl
from conftest import ROOT, SPECS, run_netdsl

FIXTURES = ROOT / "tests" / "fixtures" / "caffe"
SHIPPED_PROTO = ROOT / "netdsl" / "caffe" / "caffe.proto"
PROTO_NAME = "src__caffe__proto__caffe.proto"
# git's blob hash of BVLC/caffe's src/caffe/proto/caffe.proto at the snapshot in fixtures/caffe/README.md
CAFFE_PROTO_BLOB = "3dcad697f6dc6cad278c8f4e4b9dc0db47861045"


def git_blob_hash(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
NETS = sorted(p for p in FIXTURES.glob("*.prototxt") if "solver" not in p.name)
SOLVERS = sorted(FIXTURES.glob("*solver.prototxt"))


# ------------------------------------------------------------------ an independent reference
# A tiny reader of protobuf text format and Caffe's shape rules (conv_layer.cpp, pooling_layer.cpp,
# inner_product_layer.cpp, ...), written without any of netdsl's code.

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|#[^\n]*|[{}:]|[^\s{}:"#]+')


def read_prototxt(text: str) -> dict:
    tokens = [t for t in _TOKEN.findall(text) if not t.startswith("#")]

    def block(i: int) -> tuple[dict, int]:
        out: dict = {}
        while i < len(tokens) and tokens[i] != "}":
            key = tokens[i]
            i += 1
            if tokens[i] == ":":
                i += 1
            if tokens[i] == "{":
                value, i = block(i + 1)
                i += 1
            else:
                value, i = _scalar(tokens[i]), i + 1
            out.setdefault(key, []).append(value)
        return out, i
    return block(0)[0]


def _scalar(token: str):
    if token.startswith('"'):
        return token[1:-1]
    for cast in (int, float):
        try:
            return cast(token)
        except ValueError:
            pass
    return token


def one(d: dict, key: str, default=None):
    return d.get(key, [default])[-1]


def pair(p: dict, key: str, default: int | None) -> tuple[int, int]:
    """Caffe's kernel_size / kernel_h + kernel_w convention (same for stride, pad)."""
    stem = key.replace("_size", "")
    if f"{stem}_h" in p:
        return one(p, f"{stem}_h"), one(p, f"{stem}_w")
    values = p.get(key, [default])
    return values[0], values[-1]


def input_shapes(net: dict) -> dict[str, tuple]:
    """Net-level `input` with `input_shape` or `input_dim` (per sample)."""
    out = {}
    for i, name in enumerate(net.get("input", [])):
        dims = net["input_shape"][i]["dim"] if "input_shape" in net else net["input_dim"][4 * i:4 * i + 4]
        out[name] = tuple(dims[1:])
    return out


def pool_windows(n: int, k: int, s: int, pad: int) -> list[tuple[int, int, int]]:
    """Caffe's pooling windows along one axis: (start, end, divisor extent), ceil rounding + clip."""
    out = math.ceil((n + 2 * pad - k) / s) + 1
    if pad and (out - 1) * s >= n + pad:
        out -= 1
    windows = []
    for i in range(out):
        start = i * s - pad
        end = min(start + k, n + pad)
        windows.append((max(start, 0), min(end, n), end - start))
    return windows


class CaffeRef:
    """Walks a net as Caffe does in one phase: top shapes per layer, learnable parameter count and,
    when given inputs and blobs, every blob's values (torch tensors, batch first)."""

    def __init__(self, net: dict, phase: str = "TEST", inputs: dict | None = None, weights: dict | None = None):
        self.net, self.phase, self.weights = net, phase, weights or {}
        self.shapes: dict[str, tuple] = input_shapes(net)
        self.values: dict = dict(inputs or {})
        self.tops: dict[str, tuple] = {}
        self.blob_shapes: dict[str, list[tuple]] = {}
        self.params = 0
        for layer in net.get("layer", []):
            rules = layer.get("include", [])
            if rules and not any(one(r, "phase", phase) == phase for r in rules):
                continue
            kind = one(layer, "type")
            if kind.endswith("Loss") or kind in ("Accuracy", "Silence"):
                continue
            self.layer(layer, kind)

    def layer(self, layer: dict, kind: str) -> None:
        name, bottoms, tops = one(layer, "name"), layer.get("bottom", []), layer.get("top", [])
        ins = [self.shapes[b] for b in bottoms]
        xs = [self.values[b] for b in bottoms] if self.values and all(b in self.values for b in bottoms) else None
        shapes, values = getattr(self, kind)(layer, name, ins, xs)
        for i, top in enumerate(tops):
            self.shapes[top] = shapes[i] if isinstance(shapes, list) else shapes
            if values is not None:
                self.values[top] = values[i] if isinstance(values, list) else values
        if tops and kind not in ("Data", "ImageData", "Input"):
            self.tops[name] = self.shapes[tops[0]] if not isinstance(shapes, list) else shapes

    def learn(self, name: str, *shapes: tuple) -> list:
        self.blob_shapes[name] = list(shapes)
        return self.weights.get(name, [None] * len(shapes))

    # --------------------------------------------------------------------- data
    def Input(self, layer, name, ins, xs):
        return [tuple(s["dim"][1:]) for s in one(layer, "input_param")["shape"]], None

    def Data(self, layer, name, ins, xs):
        crop = one(one(layer, "transform_param", {}), "crop_size", 0)
        return [(3, crop, crop) if crop else (1, 28, 28), ()], None  # MNIST's database holds 28x28

    ImageData = Data

    # --------------------------------------------------------------- with weights
    def Convolution(self, layer, name, ins, xs):
        import torch.nn.functional as F
        p = one(layer, "convolution_param")
        (kh, kw), (sh, sw), (ph, pw) = pair(p, "kernel_size", None), pair(p, "stride", 1), pair(p, "pad", 0)
        d, g, out = one(p, "dilation", 1), one(p, "group", 1), one(p, "num_output")
        c, h, w = ins[0]
        bias = one(p, "bias_term", "true") == "true"
        shape = (out, (h + 2 * ph - d * (kh - 1) - 1) // sh + 1, (w + 2 * pw - d * (kw - 1) - 1) // sw + 1)
        blobs = self.learn(name, (out, c // g, kh, kw), *([(out,)] if bias else []))
        self.params += out * (c // g) * kh * kw + (out if bias else 0)
        if xs is None:
            return shape, None
        return shape, F.conv2d(xs[0], blobs[0], blobs[1] if bias else None, (sh, sw), (ph, pw), d, g)

    def InnerProduct(self, layer, name, ins, xs):
        out = one(one(layer, "inner_product_param"), "num_output")
        n = math.prod(ins[0])
        blobs = self.learn(name, (out, n), (out,))
        self.params += out * n + out
        return (out,), None if xs is None else xs[0].flatten(1) @ blobs[0].T + blobs[1]

    def BatchNorm(self, layer, name, ins, xs):
        eps = one(one(layer, "batch_norm_param", {}), "eps", 1e-5)
        c = ins[0][0]
        blobs = self.learn(name, (c,), (c,), (1,))
        if xs is None:
            return ins[0], None
        factor = 0 if blobs[2].item() == 0 else 1 / blobs[2].item()
        mean, var = (b.view(1, -1, 1, 1) * factor for b in blobs[:2])
        return ins[0], (xs[0] - mean) / (var + eps).sqrt()

    def Scale(self, layer, name, ins, xs):
        c = ins[0][0]
        bias = one(one(layer, "scale_param", {}), "bias_term") == "true"
        blobs = self.learn(name, (c,), *([(c,)] if bias else []))
        self.params += c * (2 if bias else 1)
        if xs is None:
            return ins[0], None
        out = xs[0] * blobs[0].view(1, -1, 1, 1)
        return ins[0], out + blobs[1].view(1, -1, 1, 1) if bias else out

    # ---------------------------------------------------------------- windows
    def Pooling(self, layer, name, ins, xs):
        import torch
        p = one(layer, "pooling_param")
        c, h, w = ins[0]
        if one(p, "global_pooling") == "true":
            rows, cols = [(0, h, h)], [(0, w, w)]
        else:
            (k, _), (s, _), (pad, _) = pair(p, "kernel_size", None), pair(p, "stride", 1), pair(p, "pad", 0)
            rows, cols = pool_windows(h, k, s, pad), pool_windows(w, k, s, pad)
        shape = (c, len(rows), len(cols))
        if xs is None:
            return shape, None
        x, out = xs[0], torch.empty(xs[0].shape[0], *shape)
        for i, (r0, r1, rn) in enumerate(rows):
            for j, (c0, c1, cn) in enumerate(cols):
                window = x[:, :, r0:r1, c0:c1]
                if one(p, "pool", "MAX") == "MAX":
                    out[:, :, i, j] = window.amax(dim=(2, 3))
                else:  # Caffe divides by the window clipped to the padded input, padding included
                    out[:, :, i, j] = window.sum(dim=(2, 3)) / (rn * cn)
        return shape, out

    def LRN(self, layer, name, ins, xs):
        import torch.nn.functional as F
        p = one(layer, "lrn_param")
        size, alpha, beta = one(p, "local_size", 5), one(p, "alpha", 1.0), one(p, "beta", 0.75)
        if xs is None:
            return ins[0], None
        x, half = xs[0], (size - 1) // 2
        if one(p, "norm_region", "ACROSS_CHANNELS") == "WITHIN_CHANNEL":
            squares = F.pad(x * x, (half, half, half, half))
            total = sum(squares[:, :, i:i + x.shape[2], j:j + x.shape[3]] for i in range(size) for j in range(size))
            return ins[0], x * (1 + alpha / size ** 2 * total) ** -beta
        squares = F.pad(x * x, (0, 0, 0, 0, half, half))
        total = sum(squares[:, i:i + x.shape[1]] for i in range(size))
        return ins[0], x * (one(p, "k", 1.0) + alpha / size * total) ** -beta

    # ------------------------------------------------------------ element-wise
    def ReLU(self, layer, name, ins, xs):
        slope = one(one(layer, "relu_param", {}), "negative_slope", 0.0)
        return ins[0], None if xs is None else xs[0].clamp_min(0) + slope * xs[0].clamp_max(0)

    def Sigmoid(self, layer, name, ins, xs):
        return ins[0], None if xs is None else xs[0].sigmoid()

    def TanH(self, layer, name, ins, xs):
        return ins[0], None if xs is None else xs[0].tanh()

    def Dropout(self, layer, name, ins, xs):
        return ins[0], None if xs is None else xs[0]

    def Softmax(self, layer, name, ins, xs):
        return ins[0], None if xs is None else xs[0].softmax(1)

    def Power(self, layer, name, ins, xs):
        p = one(layer, "power_param", {})
        power, scale, shift = one(p, "power", 1.0), one(p, "scale", 1.0), one(p, "shift", 0.0)
        return ins[0], None if xs is None else (shift + scale * xs[0]) ** power

    def Flatten(self, layer, name, ins, xs):
        return (math.prod(ins[0]),), None if xs is None else xs[0].flatten(1)

    def Concat(self, layer, name, ins, xs):
        import torch
        return (sum(s[0] for s in ins), *ins[0][1:]), None if xs is None else torch.cat(xs, 1)

    def Eltwise(self, layer, name, ins, xs):
        import torch
        p = one(layer, "eltwise_param", {})
        if xs is None:
            return ins[0], None
        op, coeff = one(p, "operation", "SUM"), p.get("coeff", [1.0] * len(xs))
        if op == "PROD":
            return ins[0], math.prod(xs[1:], start=xs[0])
        if op == "MAX":
            return ins[0], torch.stack(xs).amax(0)
        return ins[0], sum(c * x for c, x in zip(coeff, xs))

    def Slice(self, layer, name, ins, xs):
        points = [0, *one(layer, "slice_param")["slice_point"], ins[0][0]]
        shapes = [(b - a, *ins[0][1:]) for a, b in zip(points, points[1:])]
        return shapes, None if xs is None else [xs[0][:, a:b] for a, b in zip(points, points[1:])]


def caffe_reference(path: Path, phase: str = "TEST") -> tuple[dict[str, tuple], int]:
    """Every kept layer's top shape (per sample) and the net's learnable parameter count."""
    ref = CaffeRef(read_prototxt(path.read_text()), phase)
    return ref.tops, ref.params


def sanitize(name: str) -> str:
    return re.sub(r"\W", "_", name)


def imported(path: Path, **options) -> tuple[netdsl.Net, object]:
    from netdsl.caffe.importer import ImportOptions, import_file
    result = import_file(path, ImportOptions(**options))
    net = netdsl.loads(result.spec, path.stem + ".net")
    assert net.ok, net.render_diagnostics() + "\n" + result.spec
    return net, result


# ------------------------------------------------------------------------------------ import

def test_fixtures_are_the_peers_files_with_their_license():
    shared = ROOT.parent / "shared" / "peers" / "caffe"
    assert (FIXTURES / "LICENSE").read_text().startswith("COPYRIGHT")
    assert (FIXTURES / "README.md").exists()
    if shared.is_dir():
        # caffe.proto ships once, in netdsl/caffe/ (pinned by its git blob hash below), not as a fixture
        copies = {p.name: FIXTURES / p.name for p in FIXTURES.iterdir()} | {PROTO_NAME: SHIPPED_PROTO}
        assert sorted(p.name for p in shared.iterdir()) == sorted(copies)
        for p in shared.iterdir():
            assert copies[p.name].read_bytes() == p.read_bytes(), p.name


@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_import_matches_caffe_shapes_and_parameter_counts(path):
    net, _ = imported(path)
    expected, params = caffe_reference(path)
    for layer, shape in expected.items():
        node = net.graph.node(sanitize(layer))
        assert node.shape == shape, f"{layer}: netdsl {node.shape}, Caffe {shape}"
    assert net.report.total_params == params


@pytest.mark.parametrize("name, params", [
    ("models__bvlc_alexnet__deploy", 60_965_224), ("models__bvlc_reference_caffenet__deploy", 60_965_224),
    ("models__bvlc_googlenet__deploy", 6_998_552), ("examples__mnist__lenet", 431_080),
    ("examples__cifar10__cifar10_quick", 145_578)])
def test_well_known_parameter_counts(name, params):
    net, _ = imported(FIXTURES / f"{name}.prototxt")
    assert net.report.total_params == params


def test_import_keeps_caffe_semantics():
    net, result = imported(FIXTURES / "models__bvlc_googlenet__deploy.prototxt")
    g = net.graph
    assert g.node("conv1_7x7_s2").shape == (64, 112, 112)  # floor: (224 + 6 - 7) / 2 + 1 = 112.5
    assert g.node("pool1_3x3_s2").shape == (64, 56, 56)  # ceil: (112 - 3) / 2 + 1 = 55.5
    assert g.node("pool1_norm1").params == {**g.node("pool1_norm1").params, "k": 1.0, "scale": "mean",
                                            "size": 5, "alpha": 1e-4}
    assert re.search(r"^conv1_7x7_s2: conv\(64, 7, stride=2, pad=3\) +# conv1/7x7_s2$", result.spec, re.M)
    cifar, _ = imported(FIXTURES / "examples__cifar10__cifar10_full.prototxt")
    assert cifar.graph.node("norm1").params["region"] == "within"
    caffenet, _ = imported(FIXTURES / "models__bvlc_reference_caffenet__deploy.prototxt")
    assert caffenet.graph.node("conv2").params["groups"] == 2
    assert caffenet.graph.node("relu1").inputs == ["conv1"] and caffenet.graph.node("pool1").inputs == ["relu1"]


def test_train_val_phases_and_dropped_layers():
    net, result = imported(FIXTURES / "models__bvlc_reference_caffenet__train_val.prototxt")
    assert [n.name for n in net.graph.inputs()] == ["data"] and net.graph.node("data").shape == (3, 227, 227)
    assert [n.name for n in net.graph.outputs()] == ["fc8"]
    assert {d.split(" ")[0] for d in result.left_out} == {"data", "accuracy", "loss"}
    assert "# Left out of the network" in result.spec and "loss (SoftmaxWithLoss" in result.spec
    mnist, _ = imported(FIXTURES / "examples__mnist__lenet_train_test.prototxt", phase="TRAIN")
    assert mnist.graph.node("data").shape == (1, 28, 28)


def test_solver_imports_its_net():
    net, result = imported(SOLVERS[0])
    assert net.report.total_params == 60_965_224
    assert result.spec.startswith("# Caffe solver") and "base_lr: 0.01" in result.spec


ZOO = """
name: "zoo"
input: "data"
input_shape { dim: 2 dim: 8 dim: 17 dim: 15 }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 12 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2
                      bias_term: false group: 2 } }
layer { name: "bn_a" type: "BatchNorm" bottom: "a" top: "a" batch_norm_param { eps: 0.001 } }
layer { name: "scale_a" type: "Scale" bottom: "a" top: "a" scale_param { bias_term: true } }
layer { name: "relu_a" type: "ReLU" bottom: "a" top: "a" relu_param { negative_slope: 0.1 } }
layer { name: "cut" type: "Slice" bottom: "a" top: "s1" top: "s2" top: "s3"
  slice_param { axis: 1 slice_point: 4 slice_point: 8 } }
layer { name: "prod" type: "Eltwise" bottom: "s1" bottom: "s2" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "s2" bottom: "s3" top: "max" eltwise_param { operation: MAX } }
layer { name: "wsum" type: "Eltwise" bottom: "prod" bottom: "max" top: "wsum"
  eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "cat" type: "Concat" bottom: "wsum" bottom: "s3" top: "cat" }
layer { name: "dil" type: "Convolution" bottom: "cat" top: "dil"
  convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad: 2 } }
layer { name: "scale_b" type: "Scale" bottom: "dil" top: "sb" }
layer { name: "pow" type: "Power" bottom: "sb" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "sig" type: "Sigmoid" bottom: "pow" top: "sig" }
layer { name: "ave" type: "Pooling" bottom: "sig" top: "ave"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "max2" type: "Pooling" bottom: "ave" top: "max2" pooling_param { pool: MAX kernel_size: 2 stride: 3 } }
layer { name: "tanh" type: "TanH" bottom: "ave" top: "ave" }
layer { name: "gmax" type: "Pooling" bottom: "ave" top: "gmax" pooling_param { pool: MAX global_pooling: true } }
layer { name: "gave" type: "Pooling" bottom: "ave" top: "gave" pooling_param { pool: AVE global_pooling: true } }
layer { name: "sum" type: "Eltwise" bottom: "gmax" bottom: "gave" top: "sum" }
layer { name: "flat" type: "Flatten" bottom: "sum" top: "flat" }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "fc_side" type: "InnerProduct" bottom: "max2" top: "fc_side" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" include { phase: TRAIN } }
"""


@pytest.fixture
def zoo(tmp_path) -> Path:
    path = tmp_path / "zoo.prototxt"
    path.write_text(ZOO)
    return path


def test_import_of_every_supported_layer_kind(zoo):
    net, result = imported(zoo)
    ref = CaffeRef(read_prototxt(ZOO))
    g = net.graph
    for layer, shape in ref.tops.items():
        if isinstance(shape, list):  # Slice: one netdsl layer per top
            for top, s in zip(("s1", "s2", "s3"), shape):
                assert g.node(top).shape == s
            continue
        node = result.fused_scales.get(layer) or result.layers[layer]
        if layer not in ("bn_a",):
            assert g.node(node).shape == shape, layer
    assert net.report.total_params == ref.params
    kinds = {n.name: n.kind for n in g}
    assert kinds["bn_a"] == "batchnorm" and g.node("bn_a").params["affine"] is True  # Scale folded in
    assert "scale_a" not in kinds and result.fused_scales == {"scale_a": "bn_a"}
    assert (kinds["prod"], kinds["max"], kinds["wsum"], kinds["scale_b"]) == ("multiply", "maximum", "weighted_sum",
                                                                              "scale")
    assert (kinds["gmax"], kinds["gave"], kinds["sum"], kinds["pow"]) == ("global_maxpool", "global_avgpool", "add",
                                                                          "power")
    assert g.node("conv_a").params["kernel"] == [3, 5] and g.node("conv_a").params["bias"] is False
    assert g.node("data").shape == (8, 17, 15)
    assert [n.name for n in g.outputs()] == ["fc_side", "prob"]


def test_input_dim_v1_layers_and_split():
    text = """
    name: "old"
    input: "data"
    input_dim: 1 input_dim: 3 input_dim: 10 input_dim: 10
    layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
             blobs_lr: 1 convolution_param { num_output: 4 kernel_size: 3 } }
    layers { name: "split" type: SPLIT bottom: "conv" top: "c1" top: "c2" }
    layers { name: "sum" type: ELTWISE bottom: "c1" bottom: "c2" top: "sum" }
    """
    from netdsl.caffe.importer import import_prototxt
    net = netdsl.loads(import_prototxt(text).spec)
    assert net.ok and net.graph.node("sum").inputs == ["conv", "conv"] and net.graph.node("sum").shape == (4, 8, 8)


# --------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("text, message, where", [
    ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
     'layer {\n  name: "up"\n  type: "Normalize"\n  bottom: "data"\n  top: "up"\n}\n',
     "up: Caffe layer type 'Normalize' is not supported by netdsl", ":4:3:"),
    ('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
     'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n  pooling_param { pool: MAX kernal_size: 3 } }\n',
     "p: pooling_param.kernal_size is not supported", ":3:29:"),
    ('layer { name: "c" type: "ReLU" bottom: "nothing" top: "c" }\n',
     "c: bottom 'nothing' is not written by any layer before it", ":1:32:"),
    ('layer { name: "c" type: "ReLU" \n bottom: "x" top: "c" \n', "the file ends too early", ":2:"),
    ('layer { name: "d" type: "Data" top: "data" top: "label" data_param { source: "db" } }\n',
     "d: Data layer reads its images from 'db' and the prototxt does not say their size", ":1:19:"),
    ('layer // comment\n', "unexpected character '/'", ":1:7:"),
    ('input: "x" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
     'layer { name: "n" type: "LRN" bottom: "x" top: "n" lrn_param { local_size: 4 } }\n',
     "n: local_size 4: Caffe's LRN only takes odd sizes", ":2:64:"),
])
def test_import_errors_name_the_layer_and_line(tmp_path, cli, text, message, where):
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    result = cli("import", path, "-o", tmp_path / "out.net")
    assert result.exit_code == 1, result.output
    assert message in result.output and f"{path}{where}" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.net").exists()


def test_every_problem_is_reported_at_once():
    from netdsl.caffe.importer import CaffeImportError, import_prototxt
    text = """input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
    layer { name: "a" type: "Crop" bottom: "data" top: "a" }
    layer { name: "b" type: "Normalize" bottom: "data" top: "b" }"""
    with pytest.raises(CaffeImportError) as err:
        import_prototxt(text)
    assert [d.layer for d in err.value.diagnostics] == ["a", "b"]
    assert [d.span.line for d in err.value.diagnostics] == [2, 3]


# ------------------------------------------------------------------------------ the CLI

def test_cli_import_writes_a_spec_that_checks(tmp_path, cli):
    out = tmp_path / "googlenet.net"
    result = cli("import", FIXTURES / "models__bvlc_googlenet__train_val.prototxt", "-o", out)
    assert result.exit_code == 0, result.output
    assert "13,378,280 parameters" in result.output and "left out" in result.output
    net = netdsl.load(out)
    assert net.ok and net.graph.node("data").shape == (3, 224, 224)
    check = run_netdsl("check", out)
    assert check.returncode == 0 and "loss3_classifier" in check.stdout


def test_cli_import_input_shape_and_phase(tmp_path, cli):
    out = tmp_path / "lenet.net"
    result = cli("import", FIXTURES / "examples__mnist__lenet_train_test.prototxt", "-o", out, "--phase", "train",
                 "--input-shape", "1x32x32")
    assert result.exit_code == 0, result.output
    net = netdsl.load(out)
    assert net.graph.node("data").shape == (1, 32, 32) and net.graph.node("pool2").shape == (50, 5, 5)
    assert "phase TRAIN" in out.read_text()
    assert cli("import", FIXTURES / "examples__mnist__lenet.prototxt", "--input-shape", "3x4").exit_code == 2


# ----------------------------------------------------------------------- lowering, forward

@pytest.mark.parametrize("path", NETS + SOLVERS, ids=lambda p: p.stem)
def test_every_fixture_lowers_and_runs_forward(path):
    import torch
    net, _ = imported(path)
    model = net.to_torch(seed=0).eval()
    inputs = [torch.randn(1, *n.shape) for n in net.graph.inputs()]
    with torch.no_grad():
        out = model(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape[1:]) for o in outs] == [n.shape for n in net.graph.outputs()]
    assert all(torch.isfinite(o).all() for o in outs)


# -------------------------------------------------------------------------------- weights

def write_caffemodel(text: str, path: Path, legacy: set[str] = frozenset()) -> dict[str, list]:
    """A .caffemodel of the prototxt's net with random blobs, written with protobuf's own text parser."""
    import torch
    from google.protobuf import text_format
    from netdsl.caffe.weights import caffe_pb

    shapes = CaffeRef(read_prototxt(text)).blob_shapes
    message = text_format.Parse(text, caffe_pb()())
    gen = torch.Generator().manual_seed(7)
    weights: dict[str, list] = {}
    for layer in message.layer:
        tensors = []
        for i, shape in enumerate(shapes.get(layer.name, [])):
            t = torch.randn(shape, generator=gen) * 0.3
            if layer.type == "BatchNorm":  # Caffe stores mean and variance times a factor (blob 2)
                t = [t, t.abs() + 0.5, torch.tensor([2.0])][i]
            blob = layer.blobs.add()
            if layer.name in legacy:  # the old num x channels x height x width form
                blob.num, blob.channels, blob.height, blob.width = (1,) * (4 - len(shape)) + shape
            else:
                blob.shape.dim.extend(shape)
            blob.data.extend(t.flatten().tolist())
            tensors.append(t)
        if tensors:
            weights[layer.name] = tensors
    path.write_bytes(message.SerializeToString())
    return weights


@pytest.mark.parametrize("name, legacy, logits", [
    ("examples__mnist__lenet", {"ip1", "conv1"}, "ip2"),
    ("examples__cifar10__cifar10_full", set(), "ip1"),
    ("zoo", set(), "fc")])
def test_caffemodel_weights_load_into_the_lowered_module(tmp_path, cli, name, legacy, logits):
    import torch
    pytest.importorskip("google.protobuf")
    text = ZOO if name == "zoo" else (FIXTURES / f"{name}.prototxt").read_text()
    prototxt, caffemodel, spec, state = (tmp_path / f for f in ("net.prototxt", "net.caffemodel", "net.net", "w.pt"))
    prototxt.write_text(text)
    weights = write_caffemodel(text, caffemodel, legacy)
    assert cli("import", prototxt, "-o", spec).exit_code == 0
    result = cli("import-weights", caffemodel, "--spec", spec, "-o", state)
    assert result.exit_code == 0, result.output

    net = netdsl.load(spec)
    model = net.to_torch().eval()
    model.load_state_dict(torch.load(state, weights_only=True))
    loaded = model.state_dict()
    for layer, tensors in weights.items():
        node = {"scale_a": "bn_a"}.get(layer, layer)
        if layer == "bn_a":
            assert torch.equal(loaded["bn_a.running_mean"], tensors[0] / 2)
            continue
        assert torch.equal(loaded[f"{node}.weight"].flatten(), tensors[0].flatten()), layer
        if len(tensors) > 1:
            assert torch.equal(loaded[f"{node}.bias"], tensors[1]), layer

    shape = net.graph.inputs()[0].shape
    x = torch.randn(2, *shape)
    ref = CaffeRef(read_prototxt(text), inputs={"data": x}, weights=weights)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(model.logits(x) if name != "zoo" else out[1].log(), ref.values[logits]
                                   if name != "zoo" else ref.values["prob"].log(), rtol=1e-4, atol=1e-4)
    outs = out if isinstance(out, tuple) else (out,)
    for node, value in zip(net.graph.outputs(), outs):
        torch.testing.assert_close(value, ref.values[node.name], rtol=1e-4, atol=1e-5)


def test_import_weights_takes_the_net_from_the_caffemodel(tmp_path, cli):
    import torch
    pytest.importorskip("google.protobuf")
    text = (FIXTURES / "examples__cifar10__cifar10_quick.prototxt").read_text()
    weights = write_caffemodel(text, tmp_path / "quick.caffemodel")
    result = cli("import-weights", tmp_path / "quick.caffemodel", "--write-spec", tmp_path / "quick.net")
    assert result.exit_code == 0, result.output
    state = torch.load(tmp_path / "quick.pt", weights_only=True)
    assert torch.equal(state["conv2.weight"], weights["conv2"][0])
    net = netdsl.load(tmp_path / "quick.net")
    assert net.ok and net.report.total_params == 145_578


def test_import_weights_reports_every_mismatch(tmp_path, cli):
    pytest.importorskip("google.protobuf")
    write_caffemodel((FIXTURES / "examples__mnist__lenet.prototxt").read_text(), tmp_path / "lenet.caffemodel")
    result = cli("import-weights", tmp_path / "lenet.caffemodel", "--spec", ROOT / "specs" / "caffenet.net",
                 "-o", tmp_path / "w.pt")
    assert result.exit_code == 1 and not (tmp_path / "w.pt").exists()
    assert "ip1 (InnerProduct): the net has no layer of that name" in result.output
    assert "conv1.weight: the caffemodel has 20x1x5x5, the net needs 96x3x11x11" in result.output
    assert "no weights in the caffemodel for conv3, conv4, conv5, fc6, fc7, fc8" in result.output
    (tmp_path / "junk.caffemodel").write_bytes(b"\x00\xff" * 10)
    junk = cli("import-weights", tmp_path / "junk.caffemodel")
    assert junk.exit_code == 1 and "not a Caffe binary NetParameter" in junk.output
    assert "Traceback" not in result.output + junk.output


def test_embedded_descriptor_is_the_shipped_caffe_proto():
    pytest.importorskip("grpc_tools")
    from netdsl.caffe.proto_descriptor import CAFFE_PROTO, FILE_DESCRIPTOR, compile_proto
    assert CAFFE_PROTO == SHIPPED_PROTO and git_blob_hash(CAFFE_PROTO) == CAFFE_PROTO_BLOB
    assert compile_proto(CAFFE_PROTO) == FILE_DESCRIPTOR


# --------------------------------------------------------------------------------- export

def _renamed(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        layer, _, param = key.rpartition(".")
        out[f"{sanitize(layer)}.{param}"] = value
    return out


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_export_round_trip(spec, tmp_path):
    import torch
    from netdsl.caffe.exporter import CaffeExportError, export_prototxt
    net = netdsl.load(spec)
    path = tmp_path / "deploy.prototxt"
    if spec.stem == "alexnet":  # cuda-convnet2's ceil convolutions: 224 -> 55 where Caffe gets 54
        with pytest.raises(CaffeExportError) as err:
            export_prototxt(net, path)
        assert f"{spec}:25:5: error: conv1: round=ceil cannot be expressed in Caffe" in err.value.render()
        assert "(224 + 0 + 0 - 11) / 4 + 1 = 54.25" in err.value.render() and not path.exists()
        return
    export_prototxt(net, path)
    back, _ = imported(path)
    assert (back.report.total_params, back.report.total_macs) == (net.report.total_params, net.report.total_macs)
    assert [n.shape for n in back.graph.outputs()] == [n.shape for n in net.graph.outputs()]
    originals = {sanitize(n.name): n for n in net.graph}
    for node in back.graph:
        if node.name in originals:
            original = originals[node.name]
            kind = original.kind
            if kind == "lrn" and original.meta.get("placement") == "partitioned":
                kind = "concat"  # Caffe has no towers: Slice -> one LRN per tower -> Concat
            kind = {"adaptive_avgpool": "avgpool", "adaptive_maxpool": "maxpool"}.get(kind, kind)
            assert (node.kind, node.shape) == (kind, original.shape), node.name
    # Caffe's own rules on the exported file agree with netdsl's count
    assert caffe_reference(path)[1] == net.report.total_params

    # the same function: the original's weights, under Caffe's names, give the same outputs
    a = net.to_torch(seed=0).eval()
    b = back.to_torch().eval()
    b.load_state_dict(_renamed(a.state_dict()))
    x = torch.randn(2, *net.graph.inputs()[0].shape)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path", NETS, ids=lambda p: p.stem)
def test_import_then_export_keeps_the_caffe_net(path, tmp_path):
    from netdsl.caffe.exporter import export_prototxt
    net, _ = imported(path)
    out = tmp_path / "again.prototxt"
    export_prototxt(net, out)
    tops, params = caffe_reference(out)
    expected_tops, expected_params = caffe_reference(path)
    assert params == expected_params
    assert {sanitize(k): v for k, v in expected_tops.items()} == {sanitize(k): v for k, v in tops.items()}


def test_export_zoo_round_trip(zoo, tmp_path):
    import torch
    from netdsl.caffe.exporter import export_prototxt
    net, _ = imported(zoo)
    out = tmp_path / "zoo2.prototxt"
    export_prototxt(net, out)
    back, _ = imported(out)
    assert back.report.total_params == net.report.total_params
    assert {n.name: (n.kind, n.shape) for n in back.graph} == {n.name: (n.kind, n.shape) for n in net.graph}
    a, b = net.to_torch(seed=0).eval(), back.to_torch().eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 17, 15)
    with torch.no_grad():
        for u, v in zip(a(x), b(x)):
            torch.testing.assert_close(u, v)


def test_export_errors_name_every_layer_caffe_cannot_express():
    from netdsl.caffe.exporter import CaffeExportError, to_prototxt
    net = netdsl.loads("""input x: 3x9x9
a: conv(4, 3, pad=(0, 1))
b: gelu
c: adaptive_avgpool(3)
towers 2 {
  d: fc(10)
  e: fc(10)
}
""", "bad.net")
    with pytest.raises(CaffeExportError) as err:
        to_prototxt(net)
    text = err.value.render()
    assert [d.layer for d in err.value.diagnostics] == ["a", "b", "c", "e"]
    assert "bad.net:2:1: error: a: Caffe pads both sides alike" in text
    assert "bad.net:3:1: error: b: Caffe has no layer for netdsl's 'gelu'" in text
    assert "adaptive pooling from 8x8 to 3x3" in text and "e: Caffe's InnerProduct has no groups" in text


def test_names_netdsl_cannot_spell_are_rewritten():
    from netdsl.caffe.importer import import_prototxt
    text = """input: "input" input_shape { dim: 1 dim: 4 }
    layer { name: "net" type: "InnerProduct" bottom: "input" top: "a" inner_product_param { num_output: 3 } }
    layer { name: "1st/fc" type: "InnerProduct" bottom: "a" top: "b" inner_product_param { num_output: 3 } }
    layer { name: "1st.fc" type: "InnerProduct" bottom: "b" top: "c" inner_product_param { num_output: 2 } }"""
    result = import_prototxt(text)
    net = netdsl.loads(result.spec)
    assert net.ok, net.render_diagnostics()
    assert result.layers == {"net": "net_", "1st/fc": "_1st_fc", "1st.fc": "_1st_fc_2"}
    assert [n.name for n in net.graph] == ["input_", "net_", "_1st_fc", "_1st_fc_2"]
    assert "_1st_fc_2: fc(2)  # 1st.fc" in result.spec


def test_transposed_inner_product_weights(tmp_path):
    import torch
    pytest.importorskip("google.protobuf")
    from google.protobuf import text_format
    from netdsl.caffe.weights import caffe_pb, load_caffemodel, spec_from_caffemodel
    text = """input: "x" input_shape { dim: 1 dim: 4 }
    layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc"
            inner_product_param { num_output: 3 transpose: true } }"""
    message = text_format.Parse(text, caffe_pb()())
    weight = torch.arange(12.0).reshape(4, 3)  # stored [in, out]
    for values, shape in ((weight, (4, 3)), (torch.ones(3), (3,))):
        blob = message.layer[0].blobs.add()
        blob.shape.dim.extend(shape)
        blob.data.extend(values.flatten().tolist())
    (tmp_path / "t.caffemodel").write_bytes(message.SerializeToString())
    imported_net = spec_from_caffemodel(tmp_path / "t.caffemodel")
    assert "Caffe stores this weight transposed" in imported_net.spec
    model = load_caffemodel(netdsl.loads(imported_net.spec), tmp_path / "t.caffemodel")
    x = torch.randn(2, 4)
    torch.testing.assert_close(model(x), x @ weight + 1)


def test_cli_export_prototxt(tmp_path, cli):
    out = tmp_path / "caffenet.prototxt"
    result = cli("export", ROOT / "specs" / "caffenet.net", "--format", "prototxt", "-o", out)
    assert result.exit_code == 0, result.output
    assert caffe_reference(out)[1] == 60_965_224
    back = cli("import", out, "-o", tmp_path / "caffenet.net")
    assert back.exit_code == 0 and "60,965,224 parameters" in back.output
    bad = cli("export", ROOT / "specs" / "alexnet.net", "--format", "prototxt", "-o", tmp_path / "a.prototxt")
    assert bad.exit_code == 1 and "alexnet.net:25:5: error: conv1: round=ceil" in bad.output
    assert "nothing written" in bad.output and not (tmp_path / "a.prototxt").exists()
    weights = cli("export", ROOT / "specs" / "lenet.net", "--format", "prototxt", "-o", out, "--weights", out)
    assert weights.exit_code == 2 and "a prototxt holds no weights" in weights.output


@pytest.mark.parametrize("content, code, message", [
    (b"", 1, "this file defines no layers"),
    (b"a { " * 5000 + b"}" * 5000, 1, "the messages nest too deeply to read"),
    (b"\xd7\x01garbage", 2, "not UTF-8 text"),
])
def test_hostile_prototxt_files(tmp_path, cli, content, code, message):
    path = tmp_path / "hostile.prototxt"
    path.write_bytes(content)
    result = cli("import", path)
    assert result.exit_code == code and message in result.output and "Traceback" not in result.output
