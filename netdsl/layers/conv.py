"""Convolution: `conv(out, kernel, stride=1, pad=0, dilation=1, groups=1, bias=true, round=floor)`."""
from __future__ import annotations

from ..errors import SpecError
from .schema import BoolType, InitType, IntType, PairType, Param, REQUIRED, Schema
from . import Cost, Inferred, LayerKind, explain_groups, groups, register, require_chw
from .window import explain_windows, infer_windows, rf_window, window_label, window_params


def _infer(node, ins):
    c, h, w = require_chw(node, ins[0])
    g, out = groups(node), node.params["out"]
    for what, n in (("input channels", c), ("output channels", out)):
        if n % g:
            raise SpecError(f"{n} {what} do not divide into {explain_groups(node)}",
                            notes=[f"{node.name}: {n} / {g} = {n / g:.4g}; "
                                   f"{what} must be a multiple of {g}"], code="groups")
    windows = infer_windows(node, h, w)
    return Inferred((out, windows[0].out(), windows[1].out()), windows)


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


register(LayerKind(
    name="conv",
    doc="2-D convolution. `out` counts channels over all towers; `round=ceil` lets the last window "
        "hang past the edge (lowered as extra zero padding bottom/right).",
    schema=Schema([
        Param("out", IntType(), REQUIRED, "output channels"),
        Param("kernel", PairType(), REQUIRED, "window size"),
        *window_params("floor", [1, 1]),
        Param("dilation", PairType(), [1, 1]),
        Param("groups", IntType(), 1),
        Param("bias", BoolType(), True),
        Param("weight_init", InitType(), {"fn": "default"}),
        Param("bias_init", InitType(), {"fn": "default"}),
    ], positional=("out", "kernel")),
    infer=_infer, cost=_cost, receptive_field=rf_window, label=_label,
    explain=explain_windows, splits_channels=True, aliases=("convolution",),
))
