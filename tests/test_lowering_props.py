"""Property tests (hypothesis): the checker and PyTorch agree on every random conv/pool/lrn/fc layer.

For each random configuration either the checker rejects it with a diagnostic naming the layer, or
the lowered module runs and every layer's runtime shape is the inferred one. Every configuration that
PyTorch itself rejects (built natively, without netdsl) must be rejected by the checker first. Pooling
values are compared with a direct transcription of Caffe's pooling loops.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import netdsl

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------ strategies

@st.composite
def padding(draw, most: int) -> tuple[str, list[list[int]]]:
    """Spec text for a padding and its normalised [[top, bottom], [left, right]]."""
    form = draw(st.sampled_from(["one", "pair", "axes"]))
    if form == "one":
        p = draw(st.integers(0, most))
        return str(p), [[p, p], [p, p]]
    if form == "pair":
        a, b = draw(st.integers(0, most)), draw(st.integers(0, most))
        return f"({a}, {b})", [[a, b], [a, b]]
    h, w = draw(st.integers(0, most)), draw(st.tuples(st.integers(0, most), st.integers(0, most)))
    return f"[{h}, ({w[0]}, {w[1]})]", [[h, h], list(w)]


@st.composite
def conv_layer(draw) -> dict:
    pad_text, pad = draw(padding(4))
    cfg = dict(kind="conv", out=draw(st.integers(1, 8)), kernel=draw(st.integers(1, 7)),
               stride=draw(st.integers(1, 4)), dilation=draw(st.integers(1, 3)), groups=draw(st.integers(1, 4)),
               round=draw(st.sampled_from(["floor", "ceil"])), pad=pad)
    cfg["text"] = (f"conv({cfg['out']}, {cfg['kernel']}, stride={cfg['stride']}, pad={pad_text}, "
                   f"dilation={cfg['dilation']}, groups={cfg['groups']}, round={cfg['round']})")
    return cfg


@st.composite
def pool_layer(draw) -> dict:
    pad_text, pad = draw(padding(3))
    kind = draw(st.sampled_from(["maxpool", "avgpool"]))
    cfg = dict(kind=kind, kernel=draw(st.integers(1, 5)), stride=draw(st.integers(1, 4)),
               round=draw(st.sampled_from(["floor", "ceil"])), pad=pad, include_pad=draw(st.booleans()))
    cfg["text"] = f"{kind}({cfg['kernel']}, stride={cfg['stride']}, pad={pad_text}, round={cfg['round']}"
    cfg["text"] += f", include_pad={str(cfg['include_pad']).lower()})" if kind == "avgpool" else ")"
    return cfg


@st.composite
def lrn_layer(draw) -> dict:
    cfg = dict(kind="lrn", size=draw(st.integers(1, 7)), region=draw(st.sampled_from(["across", "within"])),
               scale=draw(st.sampled_from(["mean", "sum"])))
    cfg["text"] = f"lrn({cfg['size']}, alpha=0.01, beta=0.75, k=2, scale={cfg['scale']}, region={cfg['region']})"
    return cfg


@st.composite
def fc_layer(draw) -> dict:
    cfg = dict(kind="fc", out=draw(st.integers(1, 10)), groups=draw(st.integers(1, 3)))
    cfg["text"] = f"fc({cfg['out']}, groups={cfg['groups']})"
    return cfg


inputs = st.tuples(st.integers(1, 8), st.integers(1, 20), st.integers(1, 20))
any_layer = st.one_of(conv_layer(), pool_layer(), lrn_layer(), fc_layer())


def spec_text(shape: tuple[int, int, int], layers: list[dict]) -> str:
    lines = ["net prop", f"input data: {shape[0]}x{shape[1]}x{shape[2]}"]
    lines += [f"l{i}: {cfg['text']}" for i, cfg in enumerate(layers)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ the checker vs the lowering

def runtime_shapes(model, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    seen: dict[str, tuple[int, ...]] = {}
    for node in model.ir:
        if node.kind != "input":
            model.layer(node.name).register_forward_hook(
                lambda m, a, out, name=node.name: seen.__setitem__(name, tuple(out.shape[1:])))
    with torch.no_grad():
        model(x)
    return seen


def assert_agree(shape: tuple[int, int, int], layers: list[dict]) -> netdsl.Net:
    net = netdsl.loads(spec_text(shape, layers))
    assert net.graph is not None
    if not net.ok:
        for err in net.errors:
            assert err.layer and err.layer.startswith("l"), err.render(net.source)
        return net
    model = net.to_torch(seed=0).eval()
    seen = runtime_shapes(model, torch.randn(2, *shape))
    for node in net.graph:
        if node.kind != "input":
            assert seen[node.name] == node.shape, (node.name, node.params, seen[node.name], node.shape)
    return net


@SETTINGS
@given(inputs, st.lists(any_layer, min_size=1, max_size=3))
def test_checker_shape_equals_runtime_shape(shape, layers):
    assert_agree(shape, layers)


# ------------------------------------------------------------------ what PyTorch itself rejects

def native(cfg: dict, channels: int) -> nn.Module | None:
    """The layer built directly in PyTorch, where PyTorch has the same semantics (None otherwise)."""
    pad = cfg.get("pad")
    symmetric = pad is not None and pad[0][0] == pad[0][1] and pad[1][0] == pad[1][1]
    if cfg["kind"] == "conv" and symmetric and cfg["round"] == "floor":
        return nn.Conv2d(channels, cfg["out"], cfg["kernel"], cfg["stride"], (pad[0][0], pad[1][0]),
                         cfg["dilation"], cfg["groups"])
    if cfg["kind"] in ("maxpool", "avgpool") and symmetric:
        p = (pad[0][0], pad[1][0])
        if cfg["kind"] == "maxpool":
            return nn.MaxPool2d(cfg["kernel"], cfg["stride"], p, ceil_mode=cfg["round"] == "ceil")
        return nn.AvgPool2d(cfg["kernel"], cfg["stride"], p, ceil_mode=cfg["round"] == "ceil",
                            count_include_pad=cfg["include_pad"])
    return None


def caffe_extent(size: int, k: int, s: int, before: int, after: int, ceil: bool, dil: int = 1) -> int:
    """Caffe's pooled size (pooling_layer.cpp), written independently of netdsl/windows.py, with
    netdsl's one deliberate change: a ceil window that would start past the padded input (stride >
    kernel, no padding) is not counted (Caffe keeps it and outputs -FLT_MAX there)."""
    span = dil * (k - 1) + 1
    n = (math.ceil if ceil else math.floor)((size + before + after - span) / s) + 1
    if n > 1 and (n - 1) * s >= size + before + after:
        n -= 1
    if (before or after) and n > 1 and (n - 1) * s >= size + before:
        n -= 1
    return n


@SETTINGS
@given(inputs, st.one_of(conv_layer(), pool_layer()))
def test_whatever_pytorch_rejects_the_checker_rejects_first(shape, cfg):
    net = assert_agree(shape, [cfg])
    try:
        module = native(cfg, shape[0])  # the constructor rejects bad groups (ValueError)
        if module is None:
            return
        with torch.no_grad():
            out = tuple(module(torch.randn(1, *shape)).shape[1:])
    except (RuntimeError, ValueError):
        assert not net.ok, f"PyTorch rejects {cfg['text']} on {shape}; the checker accepted it"
        return
    if not net.ok:
        return  # stricter than PyTorch is allowed
    assert net.graph.node("l0").shape == out  # same semantics, same shape


# ------------------------------------------------------------------ pooling values, Caffe's loops

def caffe_pool(x: np.ndarray, mode: str, k: int, s: int, pads: list[list[int]], ceil: bool,
               include_pad: bool) -> np.ndarray:
    """Caffe's PoolingLayer::Forward_cpu (MAX and AVE), generalised to (before, after) padding."""
    (pt, pb), (pl, pr) = pads
    c, h, w = x.shape
    oh = caffe_extent(h, k, s, pt, pb, ceil)
    ow = caffe_extent(w, k, s, pl, pr, ceil)
    out = np.zeros((c, oh, ow), dtype=np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - pt, j * s - pl
            he, we = min(hs + k, h + pb), min(ws + k, w + pr)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, hs:he, ws:we]
            if mode == "max":
                out[:, i, j] = window.max(axis=(1, 2)) if window.size else np.finfo(np.float32).min
            else:
                count = size if include_pad else (he - hs) * (we - ws)
                out[:, i, j] = window.sum(axis=(1, 2)) / count if count > 0 else 0.0
    return out


@SETTINGS
@given(inputs, pool_layer())
def test_pooling_values_follow_caffe(shape, cfg):
    net = netdsl.loads(spec_text(shape, [cfg]))
    if not net.ok:
        return
    x = torch.randn(1, *shape, dtype=torch.float64)
    model = net.to_torch().double().eval()
    with torch.no_grad():
        got = model(x)[0].numpy()
    want = caffe_pool(x[0].numpy(), cfg["kind"][:3], cfg["kernel"], cfg["stride"], cfg["pad"],
                      cfg["round"] == "ceil", cfg["include_pad"])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_ceil_pool_never_counts_a_window_past_the_padded_input():
    """in 6, kernel 2, stride 3, ceil: a third window would start at 6, past the input. Caffe counts it
    (and fills it with -FLT_MAX); netdsl's checker does not, like PyTorch's ceil_mode."""
    net = netdsl.loads("net t\ninput data: 1x6x6\np: maxpool(2, stride=3)\n")
    assert net.graph.node("p").shape == (1, 2, 2)
    y = net.to_torch()(torch.randn(1, 1, 6, 6))
    assert y.shape == nn.MaxPool2d(2, 3, ceil_mode=True)(torch.zeros(1, 1, 6, 6)).shape == (1, 1, 2, 2)


def test_asymmetric_pool_padding_is_lowered_exactly():
    """PyTorch pools take only symmetric padding: (0, 1) padding with ceil rounding, as the checker says."""
    net = netdsl.loads("net t\ninput data: 2x7x7\np: avgpool(3, stride=2, pad=(0, 1))\n")
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    got = net.to_torch().double()(x)
    want = caffe_pool(x[0].numpy(), "avg", 3, 2, [[0, 1], [0, 1]], True, True)
    assert got.shape[1:] == net.graph.node("p").shape == want.shape
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-12)


# ------------------------------------------------------------------ LRN values

def caffe_lrn_within(x: np.ndarray, size: int, alpha: float, beta: float, k: float) -> np.ndarray:
    """Caffe's WITHIN_CHANNEL LRN: AVE pool of x^2 (pad (size-1)/2, divisor size^2), power, product."""
    p = (size - 1) // 2
    c, h, w = x.shape
    sq = np.pad(x * x, ((0, 0), (p, size - 1 - p), (p, size - 1 - p)))
    mean = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            mean[:, i, j] = sq[:, i:i + size, j:j + size].sum(axis=(1, 2)) / size ** 2
    return x * (k + alpha * mean) ** -beta


@SETTINGS
@given(inputs, st.integers(1, 7), st.sampled_from(["mean", "sum"]))
def test_lrn_within_channel_follows_caffe(shape, size, scale):
    text = f"net t\ninput data: {shape[0]}x{shape[1]}x{shape[2]}\nn: lrn({size}, alpha=0.5, beta=0.75, k=1, " \
           f"scale={scale}, region=within)\n"
    x = torch.rand(1, *shape, dtype=torch.float64) * 3
    got = netdsl.loads(text).to_torch().double()(x)[0].numpy()
    alpha = 0.5 if scale == "mean" else 0.5 * size ** 2
    np.testing.assert_allclose(got, caffe_lrn_within(x[0].numpy(), size, alpha, 0.75, 1.0), rtol=1e-10)


@SETTINGS
@given(inputs, st.integers(1, 7), st.sampled_from(["mean", "sum"]))
def test_lrn_across_channels_follows_the_formula(shape, size, scale):
    """b = a / (k + alpha/n * sum over n neighbouring channels of a^2)^beta (scale=sum: no /n)."""
    text = f"net t\ninput data: {shape[0]}x{shape[1]}x{shape[2]}\nn: lrn({size}, alpha=0.5, beta=0.75, k=2, " \
           f"scale={scale})\n"
    x = torch.rand(1, *shape, dtype=torch.float64) * 3
    got = netdsl.loads(text).to_torch().double()(x)[0]
    a = x[0]
    sq = F.pad(a * a, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    sums = torch.stack([sq[c:c + size].sum(0) for c in range(shape[0])])
    div = 0.5 / size if scale == "mean" else 0.5
    torch.testing.assert_close(got, a / (2 + div * sums) ** 0.75, rtol=1e-10, atol=1e-12)
