"""PyTorch builders for the Caffe layer kinds in netdsl/layers/caffe_extra.py.

Same contract as netdsl/torch_build.py: each builder takes one checked Node and returns an
nn.Module computing exactly that layer; several inputs arrive as separate forward arguments.
"""
from __future__ import annotations

import torch
from torch import nn

from ..ir import Node


class ChannelSlice(nn.Module):
    def __init__(self, begin: int, end: int) -> None:
        super().__init__()
        self.begin, self.end = begin, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.begin:self.end]

    def extra_repr(self) -> str:
        return f"channels {self.begin}:{self.end}"


class Eltwise(nn.Module):
    """Caffe's Eltwise: PROD, MAX, or SUM with one coefficient per input."""

    def __init__(self, op: str, coeff: list[float] | None = None) -> None:
        super().__init__()
        self.op, self.coeff = op, coeff

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.op == "sum":
            out = xs[0] * self.coeff[0]
            for c, x in zip(self.coeff[1:], xs[1:]):
                out = out + c * x
            return out
        out = xs[0]
        for x in xs[1:]:
            out = out * x if self.op == "prod" else torch.maximum(out, x)
        return out

    def extra_repr(self) -> str:
        return self.op + (f", coeff={self.coeff}" if self.coeff else "")


class ChannelScale(nn.Module):
    """Caffe's Scale over channels: x * weight[c] (+ bias[c]); weight starts at 1, bias at 0."""

    def __init__(self, channels: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        out = x * self.weight.view(shape)
        return out + self.bias.view(shape) if self.bias is not None else out

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, bias={self.bias is not None}"


class Power(nn.Module):
    """Caffe's Power: (shift + scale * x) ** power."""

    def __init__(self, power: float, scale: float, shift: float) -> None:
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shift + self.scale * x
        return y if self.power == 1.0 else y.pow(self.power)

    def extra_repr(self) -> str:
        return f"power={self.power}, scale={self.scale}, shift={self.shift}"


def build_slice(node: Node) -> nn.Module:
    return ChannelSlice(node.params["begin"], node.params["end"])


def build_eltwise(node: Node) -> nn.Module:
    if node.kind == "weighted_sum":
        return Eltwise("sum", list(node.params["coeff"]))
    return Eltwise("prod" if node.kind == "multiply" else "max")


def build_scale(node: Node) -> nn.Module:
    return ChannelScale(node.meta["in_shapes"][0][0], node.params["bias"])


def build_power(node: Node) -> nn.Module:
    p = node.params
    return Power(p["power"], p["scale"], p["shift"])
