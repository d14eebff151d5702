"""PyTorch builders for the layer registry (`build=lazy_build("build_conv")`, ...).

Each builder takes one checked Node (normalised params; `meta` with 'in_shapes', 'shape' and, for
windowed layers, the checker's `windows`) and returns an nn.Module that computes exactly that layer
on one device, with the spec's initialisation applied. Towers are lower.py's business: a builder sees
the groups the checker decided (spec groups x tower groups) and nothing else.

Sizes always come from the checker's Window objects, so the module's output shape is the checker's by
construction: convolutions that round up get explicit bottom/right zero padding, and pooling that
PyTorch cannot express natively (Caffe's rules, asymmetric padding) pads and crops explicitly.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .ir import Node
from .layers import groups, numel
from .windows import Window

Pads = tuple[int, int, int, int]  # F.pad order: left, right, top, bottom


# ------------------------------------------------------------------ modules

class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d after explicit zero padding: asymmetric padding, or ceil rounding's overhang."""

    def __init__(self, *args: Any, pads: Pads, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pads(l,r,t,b)={self.pads}"


class Linear(nn.Linear):
    """nn.Linear that flattens everything after the batch axis first, like the spec's fc."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.flatten(1) if x.dim() > 2 else x, self.weight, self.bias)


class GroupedLinear(nn.Linear):
    """A grouped fully connected layer (block-diagonal weight), stored like a grouped conv:
    weight [out, in / groups]. PyTorch's default init is the same as nn.Linear(in / groups, out)."""

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True) -> None:
        super().__init__(in_features // groups, out_features, bias)
        self.groups, self.total_in = groups, in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        g, n = self.groups, x.shape[0]
        w = self.weight.view(g, -1, self.in_features)            # [g, out/g, in/g]
        y = torch.bmm(x.view(n, g, -1).transpose(0, 1), w.transpose(1, 2))  # [g, n, out/g]
        y = y.transpose(0, 1).reshape(n, -1)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.total_in}, out_features={self.out_features}, groups={self.groups}, " \
               f"bias={self.bias is not None}"


class CaffePool2d(nn.Module):
    """Max or average pooling with the checker's window count, for what nn.MaxPool2d/AvgPool2d cannot say.

    The input is padded (or cropped) to exactly the extent the windows span, so floor-mode pooling
    yields the checker's count. Max pads with the dtype's lowest value, so padding never wins (a window
    lying wholly outside the input, which the checker no longer counts, would give Caffe's -FLT_MAX).
    Average divides by the positions counted like Caffe: the declared padding counts (include_pad) but a ceil window's
    overhang past it does not; with include_pad=false only real input positions count.
    """

    def __init__(self, mode: str, windows: tuple[Window, Window], include_pad: bool = True) -> None:
        super().__init__()
        self.mode, self.include_pad = mode, include_pad
        self.kernel = (windows[0].kernel, windows[1].kernel)
        self.stride = (windows[0].stride, windows[1].stride)
        self.declared: Pads = (windows[1].before, windows[1].after, windows[0].before, windows[0].after)
        extent = [(w.out() - 1) * w.stride + w.span for w in windows]  # padded length the windows need
        self.pads: Pads = (windows[1].before, extent[1] - windows[1].size - windows[1].before,
                           windows[0].before, extent[0] - windows[0].size - windows[0].before)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            low = _lowest(x.dtype)
            return F.max_pool2d(F.pad(x, self.pads, value=low), self.kernel, self.stride)
        total = F.avg_pool2d(F.pad(x, self.pads), self.kernel, self.stride)
        return total / self._counted(x).clamp_min(torch.finfo(total.dtype).tiny)

    def _counted(self, x: torch.Tensor) -> torch.Tensor:
        """The share of each window that is counted in the divisor (the mask's average)."""
        mask = x.new_ones((1, 1, *x.shape[-2:]))
        mask = F.pad(mask, self.declared, value=1.0 if self.include_pad else 0.0)
        rest = tuple(p - d for p, d in zip(self.pads, self.declared))
        return F.avg_pool2d(F.pad(mask, rest), self.kernel, self.stride)

    def extra_repr(self) -> str:
        text = f"{self.mode}, kernel={self.kernel}, stride={self.stride}, pads(l,r,t,b)={self.pads}"
        return text + (f", include_pad={self.include_pad}" if self.mode == "avg" else "")


def _lowest(dtype: torch.dtype) -> float:
    """Caffe's -FLT_MAX (for float and double alike), or the dtype's lowest value if that is higher."""
    if not dtype.is_floating_point:
        return torch.iinfo(dtype).min
    return max(torch.finfo(dtype).min, torch.finfo(torch.float32).min)


class WithinChannelLRN(nn.Module):
    """Caffe's WITHIN_CHANNEL LRN: x * (k + alpha * mean of x^2 over a size x size square)^-beta.

    Caffe builds it from an AVE pool (zero padding counted, so the mean always divides by size^2),
    a power layer (shift 1, scale alpha) and a product; k generalises Caffe's fixed shift of 1.
    An even size pads one more row/column after than before, so the shape is kept.
    """

    def __init__(self, size: int, alpha: float, beta: float, k: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        before, after = (self.size - 1) // 2, self.size // 2
        mean = F.avg_pool2d(F.pad(x * x, (before, after, before, after)), self.size, stride=1)
        return x * (self.k + self.alpha * mean).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Concat(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=1)


class Add(nn.Module):
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


# ------------------------------------------------------------------ builders

def build_conv(node: Node) -> nn.Module:
    p, in_shape = node.params, node.meta["in_shapes"][0]
    windows: tuple[Window, Window] = node.meta["windows"]
    (top, bottom), (left, right) = (_axis_pads(w) for w in windows)
    common = dict(in_channels=in_shape[0], out_channels=p["out"], kernel_size=tuple(p["kernel"]),
                  stride=tuple(p["stride"]), dilation=tuple(p["dilation"]), groups=groups(node), bias=p["bias"])
    if top == bottom and left == right:
        module: nn.Conv2d = nn.Conv2d(padding=(top, left), **common)
    else:
        module = PaddedConv2d(padding=0, pads=(left, right, top, bottom), **common)
    init_weights(module, node)
    return module


def _axis_pads(w: Window) -> tuple[int, int]:
    """(before, after) padding for a floor-rounding op that yields w.out() windows."""
    return w.before, w.after + w.overhang()


def build_fc(node: Node) -> nn.Module:
    p, g = node.params, groups(node)
    n_in = numel(node.meta["in_shapes"][0])
    module: nn.Linear = Linear(n_in, p["out"], p["bias"]) if g == 1 else GroupedLinear(n_in, p["out"], g, p["bias"])
    init_weights(module, node)
    return module


def build_pool(node: Node) -> nn.Module:
    kind = node.kind
    if kind in ("global_avgpool", "global_maxpool"):
        return nn.AdaptiveAvgPool2d(1) if kind == "global_avgpool" else nn.AdaptiveMaxPool2d(1)
    if kind in ("adaptive_avgpool", "adaptive_maxpool"):
        cls = nn.AdaptiveAvgPool2d if kind == "adaptive_avgpool" else nn.AdaptiveMaxPool2d
        return cls(tuple(node.params["output"]))
    windows: tuple[Window, Window] = node.meta["windows"]
    include_pad = node.params.get("include_pad", True)
    native = _native_pool(windows)
    if native is None:
        return CaffePool2d("max" if kind == "maxpool" else "avg", windows, include_pad)
    padding, ceil_mode = native
    kernel, stride = (windows[0].kernel, windows[1].kernel), (windows[0].stride, windows[1].stride)
    if kind == "maxpool":
        return nn.MaxPool2d(kernel, stride, padding, ceil_mode=ceil_mode)
    return nn.AvgPool2d(kernel, stride, padding, ceil_mode=ceil_mode, count_include_pad=include_pad)


def _native_pool(windows: tuple[Window, Window]) -> tuple[tuple[int, int], bool] | None:
    """(padding, ceil_mode) for which PyTorch's own pooling gives the checker's window count, if any.

    PyTorch takes only symmetric padding of at most kernel // 2, and its ceil_mode has its own clip
    rule; the counts are compared here rather than assumed, so what runs is what the checker inferred.
    When the counts agree, the average divisors agree too: both count the padding but not the overhang.
    """
    if any(w.before != w.after or w.before > w.kernel // 2 or w.dilation != 1 for w in windows):
        return None
    for ceil_mode in (False, True):
        if all(torch_pool_out(w.size, w.kernel, w.stride, w.before, ceil_mode) == w.out() for w in windows):
            return (windows[0].before, windows[1].before), ceil_mode
    return None


def torch_pool_out(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape (aten/src/ATen/native/Pool.h) for dilation 1."""
    n = (size + 2 * pad - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (n - 1) * stride >= size + pad:
        n -= 1
    return n


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


def build_elementwise(node: Node) -> nn.Module:
    p = node.params
    match node.kind:
        case "relu":
            return nn.LeakyReLU(p["slope"]) if p["slope"] else nn.ReLU()
        case "tanh":
            return nn.Tanh()
        case "sigmoid":
            return nn.Sigmoid()
        case "gelu":
            return nn.GELU(approximate=p["approximate"])
        case "softmax":
            return nn.Softmax(dim=1)
        case "dropout":
            return nn.Dropout(p["p"])
        case "flatten":
            return nn.Flatten(1)
    raise ValueError(f"{node.name}: no PyTorch lowering for element-wise kind '{node.kind}'")


def build_merge(node: Node) -> nn.Module:
    return Concat() if node.kind == "concat" else Add()


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
