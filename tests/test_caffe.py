"""Caffe interop: prototxt import (shapes and parameter counts computed here, independently, from the
prototxt with Caffe's own rules), lowering and a forward pass, prototxt export round trips, and
.caffemodel weights."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import netdsl
from conftest import ROOT, SPECS, run_netdsl

FIXTURES = ROOT / "tests" / "fixtures" / "caffe"
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


def caffe_reference(path: Path, phase: str = "TEST") -> tuple[dict[str, tuple], int]:
    """Every kept layer's top shape (per sample) and the net's learnable parameter count."""
    net = read_prototxt(path.read_text())
    blobs: dict[str, tuple] = {}
    tops: dict[str, tuple] = {}
    params = 0
    for layer in net["layer"]:
        rules = layer.get("include", [])
        if rules and not any(one(r, "phase", phase) == phase for r in rules):
            continue
        kind, name = one(layer, "type"), one(layer, "name")
        if kind.endswith("Loss") or kind == "Accuracy":
            continue
        ins = [blobs[b] for b in layer.get("bottom", [])]
        if kind == "Input":
            shape = tuple(one(layer, "input_param")["shape"][0]["dim"][1:])
        elif kind in ("Data", "ImageData"):
            crop = one(one(layer, "transform_param", {}), "crop_size", 0)
            shape = (3, crop, crop) if crop else (1, 28, 28)  # the MNIST example's database holds 28x28
        elif kind == "Convolution":
            p = one(layer, "convolution_param")
            (kh, kw), (sh, sw), (ph, pw) = pair(p, "kernel_size", None), pair(p, "stride", 1), pair(p, "pad", 0)
            c, h, w = ins[0]
            out = one(p, "num_output")
            shape = (out, (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
            params += out * (c // one(p, "group", 1)) * kh * kw + (out if one(p, "bias_term", "true") == "true" else 0)
        elif kind == "Pooling":
            p = one(layer, "pooling_param")
            (k, _), (s, _), (pad, _) = pair(p, "kernel_size", None), pair(p, "stride", 1), pair(p, "pad", 0)
            c, h, w = ins[0]
            size = []
            for n in (h, w):
                out = math.ceil((n + 2 * pad - k) / s) + 1
                if pad and (out - 1) * s >= n + pad:
                    out -= 1
                size.append(out)
            shape = (c, *size)
        elif kind == "InnerProduct":
            out = one(one(layer, "inner_product_param"), "num_output")
            params += out * math.prod(ins[0]) + out
            shape = (out,)
        elif kind == "Concat":
            shape = (sum(s[0] for s in ins), *ins[0][1:])
        elif kind in ("ReLU", "LRN", "Dropout", "Softmax", "Sigmoid", "TanH", "Eltwise", "BatchNorm"):
            shape = ins[0]
        elif kind == "Scale":
            params += ins[0][0] * (2 if one(one(layer, "scale_param", {}), "bias_term") == "true" else 1)
            shape = ins[0]
        else:
            raise AssertionError(f"the reference does not know {kind}")
        for top in layer.get("top", []):
            blobs[top] = shape
        if layer.get("top") and kind not in ("Data", "ImageData", "Input"):
            tops[name] = shape
    return tops, params


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
        assert sorted(p.name for p in shared.iterdir()) == sorted(p.name for p in FIXTURES.iterdir())
        for p in shared.iterdir():
            assert (FIXTURES / p.name).read_bytes() == p.read_bytes(), p.name


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
