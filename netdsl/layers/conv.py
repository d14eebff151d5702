"""Convolution: `conv(out, kernel, stride=1, pad=0, dilation=1, groups=1, bias=true, round=floor)`, and
transposed convolution: `convtranspose(out, kernel, stride=1, pad=0, output_pad=0, dilation=1, groups=1)`."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SpecError
from .schema import BoolType, InitType, IntType, PairType, Param, REQUIRED, Schema
from . import Cost, Inferred, LayerKind, explain_groups, groups, register, require_chw
from .window import axis_names, explain_windows, infer_windows, rf_window, window_label, window_params
from .schema import MAX_INT, PaddingType  # (convtranspose)


def _check_groups(node, channels: int) -> None:
    """Input and output channels must divide into the groups (the spec's, times the towers)."""
    g = groups(node)
    for what, n in (("input channels", channels), ("output channels", node.params["out"])):
        if n % g:
            raise SpecError(f"{n} {what} do not divide into {explain_groups(node)}",
                            notes=[f"{node.name}: {n} / {g} = {n / g:.4g}; "
                                   f"{what} must be a multiple of {g}"], code="groups")


def _infer(node, ins):
    c, h, w = require_chw(node, ins[0])
    _check_groups(node, c)
    windows = infer_windows(node, h, w)
    return Inferred((node.params["out"], windows[0].out(), windows[1].out()), windows)


def _cost(node, ins, out):
    c = ins[0][0]
    kh, kw = node.params["kernel"]
    per_output = (c // groups(node)) * kh * kw
    params = out[0] * per_output + (out[0] if node.params["bias"] else 0)
    return Cost(params, out[0] * out[1] * out[2] * per_output)


def _label(node):
    text = f"{window_label(node)}, {node.params['out']}"
    g = groups(node)
    return text + (f", groups {g}" if g > 1 else "")


# What conv and convtranspose share after their window: the filters' dilation, groups, bias and initialisers.
_FILTER_PARAMS = [
    Param("dilation", PairType(), [1, 1]),
    Param("groups", IntType(), 1),
    Param("bias", BoolType(), True),
    Param("weight_init", InitType(), {"fn": "default"}),
    Param("bias_init", InitType(), {"fn": "default"}),
]

register(LayerKind(
    name="conv",
    doc="2-D convolution. `out` counts channels over all towers; `round=ceil` lets the last window "
        "hang past the edge (lowered as extra zero padding bottom/right).",
    schema=Schema([
        Param("out", IntType(), REQUIRED, "output channels"),
        Param("kernel", PairType(), REQUIRED, "window size"),
        *window_params("floor", [1, 1]),
        *_FILTER_PARAMS,
    ], positional=("out", "kernel")),
    infer=_infer, cost=_cost, receptive_field=rf_window, label=_label,
    explain=explain_windows, splits_channels=True, aliases=("convolution",),
))


# ------------------------------------------------------------------ transposed convolution

@dataclass(frozen=True)
class TransposedWindow:
    """One axis of a transposed convolution, the counterpart of window.Window (whose arithmetic it
    inverts): input positions land `stride` apart, each spreads a dilated kernel over the output, the
    result is cropped by the padding (pad_before at the start, pad_after at the end) and output_pad
    rows are added at the end.

    out = (in - 1)*stride - pad_before - pad_after + dilation*(k-1) + output_pad + 1
    """

    size: int  # input extent along the axis
    kernel: int
    stride: int
    before: int
    after: int
    dilation: int = 1
    extra: int = 0  # output_pad

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    def out(self) -> int:
        return (self.size - 1) * self.stride - self.before - self.after + self.span + self.extra

    def formula(self) -> str:
        k = f"{self.dilation}*({self.kernel} - 1) + 1" if self.dilation > 1 else f"{self.kernel}"
        extra = f" + {self.extra}" if self.extra else ""
        return f"({self.size} - 1) * {self.stride} - {self.before} - {self.after} + {k}{extra} = {self.out()}"

    def reach(self) -> int:
        """How far apart (in input positions) the inputs that one output position reads can lie: only
        the kernel taps j*dilation of one phase modulo the stride meet input positions, every
        stride/g-th tap (g = gcd(stride, dilation)), and consecutive ones are dilation/g inputs apart."""
        g = math.gcd(self.stride, self.dilation)
        return (self.kernel - 1) // (self.stride // g) * (self.dilation // g)

    def fixes(self, target: int) -> list[str]:
        """Ways to get `target` outputs: output_pad, padding or the input size."""
        out, diff = [], target - self.out()
        extra = self.extra + diff
        if 0 <= extra and (extra < self.stride or extra < self.dilation):
            out.append(f"output_pad={extra}")
        pads = self.before + self.after - diff
        if pads >= 0:
            out.append(f"pad {pads // 2}" if pads % 2 == 0 else f"pad ({pads // 2}, {pads - pads // 2})")
        base = target + self.before + self.after - self.span - self.extra
        if base >= 0 and base % self.stride == 0 and base // self.stride + 1 != self.size:
            out.append(f"input {base // self.stride + 1}")
        return out


TransposedWindows = tuple[TransposedWindow, TransposedWindow]  # (height, width)


def transposed_windows(node, h: int, w: int) -> TransposedWindows:
    p = node.params
    return tuple(TransposedWindow(size, p["kernel"][a], p["stride"][a], p["pad"][a][0], p["pad"][a][1],
                                  p["dilation"][a], p["output_pad"][a]) for a, size in enumerate((h, w)))


def _transposed_infer(node, ins):
    c, h, w = require_chw(node, ins[0])
    _check_groups(node, c)
    windows = transposed_windows(node, h, w)
    for axis, win in axis_names(windows):
        if win.extra >= win.stride and win.extra >= win.dilation:
            raise SpecError(f"output_pad {win.extra} must be smaller than the stride {win.stride} or the "
                            f"dilation {win.dilation} ({axis})",
                            notes=[f"{node.name}: output_pad picks one of the {max(win.stride, win.dilation)} "
                                   "output sizes that a convolution with this stride maps back to the input; "
                                   "PyTorch refuses more"], code="shape")
        if win.out() < 1:
            raise SpecError(f"the transposed convolution leaves no output along the {axis}",
                            notes=[f"{node.name}: {win.formula()}, which is < 1", "use less padding"], code="shape")
        if win.out() > MAX_INT:
            raise SpecError(f"the transposed convolution makes the {axis} larger than {MAX_INT:,}",
                            notes=[f"{node.name}: {win.formula()}"], code="shape")
    return (node.params["out"], windows[0].out(), windows[1].out())


def _transposed_cost(node, ins, out):
    c, h, w = ins[0]
    kh, kw = node.params["kernel"]
    per_input = (out[0] // groups(node)) * kh * kw  # each input value is spread over this many outputs
    params = c * per_input + (out[0] if node.params["bias"] else 0)
    return Cost(params, c * h * w * per_input)


def _transposed_rf(node):
    """Input positions one output reads, per axis. Its outputs lie closer than its inputs, but the
    cost pass keeps the jump: receptive fields of later layers are upper bounds."""
    _, h, w = node.meta["in_shapes"][0]
    return [(win.reach() + 1, 1, 1, 0) for win in transposed_windows(node, h, w)]


def _transposed_explain(node, ins, target):
    if len(target) != 3 or len(ins[0]) != 3:
        return []
    notes = []
    for (axis, win), want in zip(axis_names(transposed_windows(node, *ins[0][1:])), target[1:]):
        if win.out() != want:
            fixes = win.fixes(want)
            notes.append(f"{node.name}: {win.formula()}"
                         + (f", the expected {want} needs " + " or ".join(fixes) if fixes else ""))
    return notes


def _transposed_label(node):
    p = node.params
    text = f"{window_label(node)}, {p['out']}"
    if p["output_pad"] != [0, 0]:
        op = p["output_pad"]
        text += f", output_pad {op[0]}" if op[0] == op[1] else f", output_pad {op}"
    g = groups(node)
    return text + (f", groups {g}" if g > 1 else "")


register(LayerKind(
    name="convtranspose",
    doc="2-D transposed convolution (the gradient of a convolution; Caffe's Deconvolution): upsamples by "
        "`stride`. `pad` crops the output's edges, `output_pad` adds rows/columns at the bottom/right "
        "(less than the stride or the dilation). `out` counts channels over all towers.",
    schema=Schema([
        Param("out", IntType(), REQUIRED, "output channels"),
        Param("kernel", PairType(), REQUIRED, "window size"),
        Param("stride", PairType(), [1, 1], "output step between input positions"),
        Param("pad", PaddingType(), [[0, 0], [0, 0]], "p, (before, after) or [h, w]: cropped from the output"),
        Param("output_pad", PairType(minimum=0), [0, 0], "rows/columns added at the bottom/right"),
        *_FILTER_PARAMS,
    ], positional=("out", "kernel")),
    infer=_transposed_infer, cost=_transposed_cost, receptive_field=_transposed_rf, label=_transposed_label,
    explain=_transposed_explain, splits_channels=True, aliases=("deconvolution",),
))
