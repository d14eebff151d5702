"""PyTorch builders for the layer registry: BUILDERS maps each layer kind to a function that takes one
checked Node and returns the nn.Module computing exactly that layer on one device, with the spec's
initialisation applied.

A builder reads `node.params` (normalised by the kind's schema) and what the passes stored in
`node.meta`: 'in_shapes', 'shape' and, for windowed layers, the checker's 'windows'. Towers are
net.py's and towers.py's business: a builder sees the groups the checker decided (spec groups x
tower groups) and nothing else.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from ..ir import Node, numel
from ..layers import groups
from ..layers.window import Window, counts_padding, native_pool
from .modules import (Add, CaffePool2d, ChannelScale, ChannelSlice, Concat, CroppedConvTranspose2d, DropPath, Eltwise,
                      GroupedLinear, LayerNorm2d, LayerScale, PaddedConv2d, Power, WithinChannelLRN)

Builder = Callable[[Node], nn.Module]


def build_conv(node: Node) -> nn.Module:
    p, in_shape = node.params, node.meta["in_shapes"][0]
    windows: tuple[Window, Window] = node.meta["windows"]
    (top, bottom), (left, right) = (w.floor_pads() for w in windows)
    common = dict(in_channels=in_shape[0], out_channels=p["out"], kernel_size=tuple(p["kernel"]),
                  stride=tuple(p["stride"]), dilation=tuple(p["dilation"]), groups=groups(node), bias=p["bias"])
    if top == bottom and left == right:
        module: nn.Conv2d = nn.Conv2d(padding=(top, left), **common)
    else:
        module = PaddedConv2d(padding=0, pads=(left, right, top, bottom), **common)
    init_weights(module, node)
    return module


def build_fc(node: Node) -> nn.Module:
    p, g = node.params, groups(node)
    n_in = numel(node.meta["in_shapes"][0])
    # the stock nn.Linear (so tools that count FLOPs by module type see it); the plan flattens its input
    module: nn.Linear = nn.Linear(n_in, p["out"], p["bias"]) if g == 1 else GroupedLinear(n_in, p["out"], g, p["bias"])
    init_weights(module, node)
    return module


def _windowed_pool(mode: str) -> Builder:
    def build(node: Node) -> nn.Module:
        windows: tuple[Window, Window] = node.meta["windows"]
        include_pad = counts_padding(node)  # pad=same: only real positions, as TensorFlow
        native = native_pool(windows)
        if native is None:
            return _caffe_pool(mode, windows, include_pad)
        padding, ceil_mode = native
        kernel, stride = (windows[0].kernel, windows[1].kernel), (windows[0].stride, windows[1].stride)
        if mode == "max":
            return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
        return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=include_pad)
    return build


def _caffe_pool(mode: str, windows: tuple[Window, Window], include_pad: bool) -> nn.Module:
    """Pad (or crop) to exactly the extent the checker's windows span, so floor pooling gives its count."""
    extent = [w.extent() for w in windows]  # padded length the windows need
    pads = (windows[1].before, extent[1] - windows[1].size - windows[1].before,
            windows[0].before, extent[0] - windows[0].size - windows[0].before)
    declared = (windows[1].before, windows[1].after, windows[0].before, windows[0].after)
    return CaffePool2d(mode, (windows[0].kernel, windows[1].kernel), (windows[0].stride, windows[1].stride),
                       pads, declared, include_pad)


def build_lrn(node: Node) -> nn.Module:
    p = node.params
    if p["region"] == "within":
        alpha = p["alpha"] * (p["size"] ** 2 if p["scale"] == "sum" else 1)  # Caffe: alpha / size^2 * sum
        return WithinChannelLRN(p["size"], alpha, p["beta"], p["k"])
    alpha = p["alpha"] * (p["size"] if p["scale"] == "sum" else 1)  # PyTorch divides alpha by size
    return nn.LocalResponseNorm(p["size"], alpha=alpha, beta=p["beta"], k=p["k"])


def build_batchnorm(node: Node) -> nn.Module:
    p, shape = node.params, node.meta["in_shapes"][0]
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    return cls(shape[0], eps=p["eps"], momentum=p["momentum"], affine=p["affine"])


def build_slice(node: Node) -> nn.Module:
    return ChannelSlice(node.params["begin"], node.params["end"])


def build_scale(node: Node) -> nn.Module:
    return ChannelScale(node.meta["in_shapes"][0][0], node.params["bias"])


def build_power(node: Node) -> nn.Module:
    p = node.params
    return Power(p["power"], p["scale"], p["shift"])


def build_convtranspose(node: Node) -> nn.Module:
    from ..layers.conv import transposed_windows  # (not at the top: importing a kind's module registers it)
    p, (c, h, w) = node.params, node.meta["in_shapes"][0]
    windows = transposed_windows(node, h, w)
    # PyTorch's `padding` crops both sides alike: it takes the smaller side, a crop the rest
    common_pad = [min(win.before, win.after) for win in windows]
    crops = tuple(x for a in (1, 0) for x in (windows[a].before - common_pad[a], windows[a].after - common_pad[a]))
    common = dict(in_channels=c, out_channels=p["out"], kernel_size=tuple(p["kernel"]), stride=tuple(p["stride"]),
                  padding=tuple(common_pad), output_padding=tuple(p["output_pad"]), groups=groups(node),
                  bias=p["bias"], dilation=tuple(p["dilation"]))
    module: nn.ConvTranspose2d = CroppedConvTranspose2d(crops=crops, **common) if any(crops) else \
        nn.ConvTranspose2d(**common)
    init_weights(module, node)
    return module


def build_prelu(node: Node) -> nn.Module:
    channels = node.meta["in_shapes"][0][0]
    return nn.PReLU(1 if node.params["shared"] else channels, init=node.params["init"])


def build_layernorm(node: Node) -> nn.Module:
    p, shape = node.params, node.meta["in_shapes"][0]
    cls = LayerNorm2d if len(shape) == 3 else nn.LayerNorm
    return cls(shape[0], eps=p["eps"], elementwise_affine=p["affine"], bias=p["affine"])


def build_groupnorm(node: Node) -> nn.Module:
    p = node.params
    return nn.GroupNorm(p["groups"], node.meta["in_shapes"][0][0], eps=p["eps"], affine=p["affine"])


def build_layer_scale(node: Node) -> nn.Module:
    shape = node.meta["in_shapes"][0]
    return LayerScale((shape[0], 1, 1) if len(shape) == 3 else (shape[0],), node.params["init"])


def build_upsample(node: Node) -> nn.Module:
    p = node.params
    align = p["align_corners"] if p["mode"] == "bilinear" else None
    if p.get("size") is not None:
        return nn.Upsample(size=tuple(p["size"]), mode=p["mode"], align_corners=align)
    sh, sw = p["scale"]
    return nn.Upsample(scale_factor=sh if sh == sw else (sh, sw), mode=p["mode"], align_corners=align)


# ------------------------------------------------------------------ the table

BUILDERS: dict[str, Builder] = {
    "conv": build_conv,
    "fc": build_fc,
    "flatten": lambda node: nn.Flatten(1),
    "maxpool": _windowed_pool("max"),
    "avgpool": _windowed_pool("avg"),
    "adaptive_avgpool": lambda node: nn.AdaptiveAvgPool2d(tuple(node.params["output"])),
    "adaptive_maxpool": lambda node: nn.AdaptiveMaxPool2d(tuple(node.params["output"])),
    "global_avgpool": lambda node: nn.AdaptiveAvgPool2d(1),
    "global_maxpool": lambda node: nn.AdaptiveMaxPool2d(1),
    "lrn": build_lrn,
    "batchnorm": build_batchnorm,
    "relu": lambda node: nn.LeakyReLU(node.params["slope"]) if node.params["slope"] else nn.ReLU(),
    "tanh": lambda node: nn.Tanh(),
    "sigmoid": lambda node: nn.Sigmoid(),
    "gelu": lambda node: nn.GELU(approximate=node.params["approximate"]),
    "softmax": lambda node: nn.Softmax(dim=1),
    "dropout": lambda node: nn.Dropout(node.params["p"]),
    "concat": lambda node: Concat(),
    "add": lambda node: Add(),
    # Caffe's layers (layers/caffe_extra.py)
    "slice": build_slice,
    "multiply": lambda node: Eltwise("prod"),
    "maximum": lambda node: Eltwise("max"),
    "weighted_sum": lambda node: Eltwise("sum", list(node.params["coeff"])),
    "scale": build_scale,
    "power": build_power,
    # modern convnets (torchvision)
    "convtranspose": build_convtranspose,
    "relu6": lambda node: nn.ReLU6(),
    "hardswish": lambda node: nn.Hardswish(),
    "hardsigmoid": lambda node: nn.Hardsigmoid(),
    "silu": lambda node: nn.SiLU(),
    "mish": lambda node: nn.Mish(),
    "elu": lambda node: nn.ELU(node.params["alpha"]),
    "prelu": build_prelu,
    "layernorm": build_layernorm,
    "groupnorm": build_groupnorm,
    "layer_scale": build_layer_scale,
    "channel_shuffle": lambda node: nn.ChannelShuffle(node.params["groups"]),
    "upsample": build_upsample,
    "drop_path": lambda node: DropPath(node.params["p"]),
}
# Kinds that are not a module, and why (tests/test_registry.py holds every kind to one or the other).
NO_BUILDER = {"input": "the net's inputs are the arguments of forward(), not a layer"}


# ------------------------------------------------------------------ initialisation

def init_weights(module: nn.Module, node: Node) -> None:
    """Apply the spec's weight_init / bias_init; 'default' keeps PyTorch's own initialisation."""
    weight: torch.Tensor = module.weight  # type: ignore[assignment]
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    with torch.no_grad():
        _init(weight, node.params.get("weight_init", {"fn": "default"}), fan_in, fan_out)
        if getattr(module, "bias", None) is not None:
            _init(module.bias, node.params.get("bias_init", {"fn": "default"}), fan_in, fan_out)


def _init(t: torch.Tensor, spec: dict, fan_in: int, fan_out: int) -> None:
    """One initialiser; xavier and kaiming use the layer's weight fans (also for a bias, as Caffe does)."""
    match spec["fn"]:
        case "default":
            return
        case "constant":
            t.fill_(spec["value"])
        case "normal":
            t.normal_(spec["mean"], spec["std"])
        case "uniform":
            t.uniform_(spec["low"], spec["high"])
        case "xavier":  # Glorot uniform, as nn.init.xavier_uniform_
            bound = spec.get("gain", 1.0) * math.sqrt(6.0 / (fan_in + fan_out))
            t.uniform_(-bound, bound)
        case "kaiming":  # He normal, fan_in, as nn.init.kaiming_normal_(a, nonlinearity='leaky_relu')
            a = spec.get("a", 0.0)
            t.normal_(0.0, math.sqrt(2.0 / (1 + a * a)) / math.sqrt(fan_in))
        case other:
            raise ValueError(f"unknown initialiser '{other}'")
