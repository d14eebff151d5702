"""The nn.Modules that lowered layers are made of, where torch.nn has no exact equivalent.

Sizes always come from the checker's Window objects (builders.py), so a module's output shape is the
checker's by construction: convolutions that round up get explicit bottom/right zero padding, and
pooling that PyTorch cannot express natively (Caffe's rules, asymmetric padding) pads and crops
explicitly. Several inputs arrive as separate forward arguments.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .options import FUSED_LRN_MAX_CHANNELS

Pads = tuple[int, int, int, int]  # F.pad order: left, right, top, bottom


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d after explicit zero padding: asymmetric padding, or ceil rounding's overhang."""

    def __init__(self, *args: Any, pads: Pads, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pads))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", pads(l,r,t,b)={self.pads}"


class GroupedLinear(nn.Linear):
    """A grouped fully connected layer (block-diagonal weight), stored like a grouped conv:
    weight [out, in / groups]; `in_features` is what it reads (all groups). PyTorch's default init is
    the same as nn.Linear(in / groups, out)."""

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True) -> None:
        super().__init__(in_features // groups, out_features, bias)
        self.groups, self.in_features = groups, in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, n = self.groups, x.shape[0]  # x is flat: the generated code flattens an fc's input
        w = self.weight.view(g, -1, self.in_features // g)       # [g, out/g, in/g]
        y = torch.bmm(x.view(n, g, -1).transpose(0, 1), w.transpose(1, 2))  # [g, n, out/g]
        y = y.transpose(0, 1).reshape(n, -1)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, groups={self.groups}, " \
               f"bias={self.bias is not None}"


class CaffePool2d(nn.Module):
    """Max or average pooling with the checker's window count, for what nn.MaxPool2d/AvgPool2d cannot say.

    The input is padded (or cropped) to exactly the extent the windows span, so floor-mode pooling
    yields the checker's count. Max pads with the dtype's lowest value, so padding never wins (a window
    lying wholly outside the input, which the checker no longer counts, would give Caffe's -FLT_MAX).
    Average divides by the positions counted like Caffe: the declared padding counts (include_pad) but a ceil window's
    overhang past it does not; with include_pad=false only real input positions count.
    """

    def __init__(self, mode: str, kernel: tuple[int, int], stride: tuple[int, int], pads: Pads, declared: Pads,
                 include_pad: bool = True) -> None:
        super().__init__()
        self.mode, self.kernel, self.stride, self.include_pad = mode, tuple(kernel), tuple(stride), include_pad
        self.pads, self.declared = tuple(pads), tuple(declared)  # what is padded (or cropped); what the spec says

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
        self.channels = channels
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


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d whose output is cropped: asymmetric padding (PyTorch's `padding` crops both
    sides alike; it holds the smaller side, `crops` the rest)."""

    def __init__(self, *args: Any, crops: Pads, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.crops = tuple(crops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        left, right, top, bottom = self.crops
        return y[:, :, top:y.shape[2] - bottom, left:y.shape[3] - right]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", crops(l,r,t,b)={self.crops}"


class LayerNorm2d(nn.LayerNorm):
    """Layer norm over the channels at every position of an N x C x H x W map (torchvision's ConvNeXt
    LayerNorm2d: permute, F.layer_norm over C, permute back). weight and bias are [C], so torchvision's
    tensors load as they are."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """A learned factor per channel (ConvNeXt's layer scale): x * weight, weight of `shape` ([C, 1, 1]
    for a map, as torchvision stores it, or [N] for a vector), every entry starting at `init`."""

    def __init__(self, shape: tuple[int, ...], init: float = 1e-6) -> None:
        super().__init__()
        self.shape, self.init = tuple(shape), init
        self.weight = nn.Parameter(torch.full(self.shape, init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"{self.shape}, init={self.init}"


class DropPath(nn.Module):
    """Stochastic depth, as torchvision.ops.StochasticDepth(p, mode="row"): while training, each sample
    is zeroed with probability p and the others scaled by 1 / (1 - p); the identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        noise = noise.bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class TowerConv2d(nn.Conv2d):
    """A tower-local conv as one convolution per tower (concatenated), with the grouped conv's weight
    and state dict: the alternative to cuDNN's grouped kernel that the lowering may pick per layer."""

    def __init__(self, *args: Any, towers: int, pads: Pads = (0, 0, 0, 0), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.towers, self.pads = towers, tuple(pads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        t, g = self.towers, self.groups // self.towers
        bias = self.bias.chunk(t) if self.bias is not None else [None] * t
        return torch.cat([F.conv2d(part, w, b, self.stride, self.padding, self.dilation, g)
                          for part, w, b in zip(x.chunk(t, 1), self.weight.chunk(t), bias)], 1)

    def extra_repr(self) -> str:
        pads = f", pads(l,r,t,b)={self.pads}" if any(self.pads) else ""
        return super().extra_repr() + f", towers={self.towers}" + pads


class TowerLRN(nn.LocalResponseNorm):
    """Across-channel LRN whose channel window stops at tower boundaries, with no slices and no cat.
    Three ways (options.TOWER_OPS["lrn"]):

      pool   PyTorch's own formulation (F.local_response_norm), with the towers as the pooled tensor's
             channel axis: x^2 viewed N x towers x C/towers x H x W, zero padded, avg_pool3d.
      band   the window sums of x^2 as one 1x1 convolution with a constant 0/1 band matrix, block
             diagonal (groups = towers), so cuDNN sums in one pass, in any memory format.
      fused  all of it in one Triton kernel forward and one backward (kernels.lrn; band for fp64 or
             more than options.FUSED_LRN_MAX_CHANNELS channels).

    On an H200 the pool formulation took 9.7 ms forward + backward for the paper's norm1
    (256x96x55x55, bf16, channels_last), 30 times conv1 (bench/RESULTS-gpu.md); band was written
    after that run and awaits its GPU figure. The scale is computed in fp32 (under bf16 autocast,
    k + alpha * sum rounds the sum away) and the result cast back to the input's dtype.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0, towers: int = 1,
                 channels: int = 1, method: str = "band") -> None:
        super().__init__(size, alpha, beta, k)
        self.towers, self.channels, self.method = towers, channels, method
        local = torch.arange(channels // towers)
        offset = local[None, :] - local[:, None]  # input channel - output channel, within a tower
        band = ((offset >= -(size // 2)) & (offset <= (size - 1) // 2)).float()
        self.register_buffer("band", band.repeat(towers, 1)[:, :, None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "fused" and x.dtype != torch.float64 and self.channels <= FUSED_LRN_MAX_CHANNELS:
            from . import kernels  # imports Triton: only where a fused LRN runs
            return kernels.lrn(x, self.size, self.alpha, self.beta, self.k, self.towers)
        sums = self._band_sums(x) if self.method in ("band", "fused") else self._pool_sums(x)
        sums = sums.to(torch.promote_types(sums.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
        scale = (sums * (self.alpha / self.size) + self.k).pow(-self.beta)
        return (x * scale).to(x.dtype)

    def _band_sums(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x * x, self.band.to(x.dtype), groups=self.towers)

    def _pool_sums(self, x: torch.Tensor) -> torch.Tensor:
        n = self.size
        sq = (x * x).unflatten(1, (self.towers, -1))                    # N, towers, C / towers, H, W
        sq = F.pad(sq, (0, 0, 0, 0, n // 2, (n - 1) // 2))              # zeros at each tower's edges
        return F.avg_pool3d(sq, (n, 1, 1), stride=1).flatten(1, 2) * n  # N, C, H, W

    def extra_repr(self) -> str:
        return super().extra_repr() + f", towers={self.towers}, channels={self.channels}, method={self.method!r}"


class TowerLocal(nn.Module):
    """Runs `inner` on each tower's channel slice separately (LRN or softmax inside a split)."""

    def __init__(self, inner: nn.Module, towers: int) -> None:
        super().__init__()
        self.inner, self.towers = inner, towers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Per-slice calls, not one call on a (batch * towers, ...) view: on the CPU that view makes
        # PyTorch's LRN 7-17% slower (fwd + bwd), and slices keep a channels_last layout.
        return torch.cat([self.inner(part) for part in x.chunk(self.towers, dim=1)], dim=1)

    def extra_repr(self) -> str:
        return f"towers={self.towers}"
