"""Every layer kind is complete: a shape rule, a label, a PyTorch builder (or a documented reason for
none) and a Caffe exporter (or a documented reason for none); and each builder really computes the
shape the checker inferred."""
from __future__ import annotations

import pytest
import torch

import netdsl
from netdsl import layers
from netdsl.caffe.exporter import EXPORTERS, NO_EXPORTER
from netdsl.lowering.builders import BUILDERS, NO_BUILDER
from conftest import ROOT

KINDS = sorted(layers.kinds())

# One small spec per kind, on a 4x8x8 input; `x` is the layer of that kind.
USES = {
    "input": "x: relu()",
    "conv": "x: conv(6, 3, pad=1)", "fc": "x: fc(5)", "flatten": "x: flatten()",
    "maxpool": "x: maxpool(3, stride=2)", "avgpool": "x: avgpool(2, pad=1)",
    "adaptive_avgpool": "x: adaptive_avgpool(3)", "adaptive_maxpool": "x: adaptive_maxpool(3)",
    "global_avgpool": "x: global_avgpool()", "global_maxpool": "x: global_maxpool()",
    "lrn": "x: lrn(3, k=2)", "batchnorm": "x: batchnorm()",
    "relu": "x: relu(slope=0.1)", "tanh": "x: tanh()", "sigmoid": "x: sigmoid()", "gelu": "x: gelu()",
    "softmax": "x: softmax()", "dropout": "x: dropout(0.3)",
    "concat": "a: relu() <- data\nb: tanh() <- data\nx: concat() <- a, b",
    "add": "a: relu() <- data\nb: tanh() <- data\nx: add() <- a, b",
    "multiply": "a: relu() <- data\nb: tanh() <- data\nx: multiply() <- a, b",
    "maximum": "a: relu() <- data\nb: tanh() <- data\nx: maximum() <- a, b",
    "weighted_sum": "a: relu() <- data\nb: tanh() <- data\nx: weighted_sum([1, 0.5]) <- a, b",
    "slice": "x: slice(1, 3)", "scale": "x: scale(bias=true)", "power": "x: power(2, scale=0.5)",
    # modern convnets (torchvision): tests/test_layer_kinds.py checks each against torch's own computation
    "relu6": "x: relu6()", "hardswish": "x: hardswish()", "hardsigmoid": "x: hardsigmoid()", "silu": "x: swish()",
    "mish": "x: mish()", "elu": "x: elu(alpha=0.5)", "prelu": "x: prelu(init=0.1)",
    "layernorm": "x: layernorm()", "groupnorm": "x: groupnorm(2)", "layer_scale": "x: layer_scale(0.5)",
    "channel_shuffle": "x: channel_shuffle(2)", "drop_path": "x: drop_path(0.2)",
    "convtranspose": "x: convtranspose(6, 3, stride=2, pad=(1, 0), output_pad=1)",
    "upsample": "x: upsample(1.5, mode=bilinear)",
}


def test_every_kind_has_a_builder_and_an_exporter_or_a_reason():
    for name in KINDS:
        kind = layers.lookup(name)
        assert kind.doc and callable(kind.infer) and callable(kind.label), name
        assert (name in BUILDERS) != bool(NO_BUILDER.get(name)), f"{name}: a builder, or a reason for none"
        assert (name in EXPORTERS) != bool(NO_EXPORTER.get(name)), f"{name}: an exporter, or a reason for none"
    assert set(BUILDERS) | set(NO_BUILDER) <= set(KINDS) and set(EXPORTERS) | set(NO_EXPORTER) <= set(KINDS)
    assert set(USES) == set(KINDS), "give each new kind a use in USES"


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_lowers_to_the_shape_the_checker_inferred(kind):
    net = netdsl.loads(f"input data: 4x8x8\n{USES[kind]}\n")
    assert net.ok, net.render_diagnostics()
    x = net.graph.node("x")
    assert isinstance(layers.lookup(x.kind).label(x), str)
    model = net.to_torch(seed=0).eval()
    out = model(torch.randn(2, 4, 8, 8))
    assert tuple(out.shape) == (2, *x.shape), kind
    assert torch.isfinite(out).all()


def test_stock_modules_where_they_compute_the_same():
    # Tools that count FLOPs by exact module type (ptflops' default back end) miss subclasses.
    model = netdsl.load(ROOT / "specs/alexnet-torchvision.net").to_torch()
    assert [type(model.layer(n)) for n in ("conv1", "fc6", "fc8")] == [torch.nn.Conv2d, torch.nn.Linear, torch.nn.Linear]
