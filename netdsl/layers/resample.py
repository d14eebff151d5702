"""Resampling and rearranging: `upsample` (nn.Upsample) and `channel_shuffle` (ShuffleNet)."""
from __future__ import annotations

import math

from ..errors import SpecError
from ..lang.values import describe
from .schema import (MAX_INT, BoolType, ChoiceType, FloatType, IntType, PairType, Param, ParamType, REQUIRED,
                     Schema)
from . import LayerKind, fmt_shape, register, require_chw


class ScaleType(ParamType):
    """A positive factor for both spatial axes, or [h, w]. Normalised to [h, w] floats."""

    name = "a scale factor"

    def convert(self, value):
        items = value if isinstance(value, (list, tuple)) else [value, value]
        if len(items) != 2:
            raise SpecError(f"expected a number or [height, width], got {describe(value)}")
        factors = [FloatType().convert(v) for v in items]
        if any(not f > 0 or math.isinf(f) for f in factors):
            raise SpecError(f"a scale factor must be a positive number, got {describe(value)}")
        return factors


def _upsample_infer(node, ins):
    c, h, w = require_chw(node, ins[0])
    p = node.params
    scale, size = p.get("scale"), p.get("size")
    if (scale is None) == (size is None):
        raise SpecError("upsample needs a scale or a size" if scale is None else
                        "upsample takes a scale or a size, not both",
                        notes=[f"for example `{node.name}: upsample(2)` or `{node.name}: upsample(size=[28, 28])`"],
                        code="upsample")
    if p["align_corners"] and p["mode"] == "nearest":
        raise SpecError("align_corners applies to mode=bilinear only", code="upsample")
    if size is not None:
        return (c, *size)
    out = []
    for axis, n, f in zip(("height", "width"), (h, w), scale):
        exact = n * f  # as PyTorch: floor(in * scale), in doubles
        if not exact < MAX_INT + 1:
            raise SpecError(f"upsampling makes the {axis} larger than {MAX_INT:,}",
                            notes=[f"{node.name}: {n} * {f:g} = {exact:g}"], code="shape")
        if exact < 1:
            raise SpecError(f"upsampling leaves no output along the {axis}",
                            notes=[f"{node.name}: floor({n} * {f:g}) = {math.floor(exact)}"], code="shape")
        out.append(math.floor(exact))
    return (c, *out)


def _upsample_label(node):
    p = node.params
    if p.get("size") is not None:
        text = "to {}x{}".format(*p["size"])
    else:
        sh, sw = p["scale"]
        text = f"x{sh:g}" if sh == sw else f"x{sh:g}x{sw:g}"
    return text + f" {p['mode']}" + (", align_corners" if p["align_corners"] else "")


register(LayerKind(
    name="upsample",
    doc="Resizes each channel by `scale` (out = floor(in * scale), as PyTorch) or to `size`; give one. "
        "nearest or bilinear interpolation (nn.Upsample).",
    schema=Schema([
        Param("scale", ScaleType(), None, "factor, or [h, w] factors"),
        Param("size", PairType(), None, "output height and width"),
        Param("mode", ChoiceType(("nearest", "bilinear")), "nearest"),
        Param("align_corners", BoolType(), False, "bilinear: corner pixels' centres line up"),
    ], positional=("scale",)),
    infer=_upsample_infer, label=_upsample_label,
    # nearest reads one input position, bilinear two; the jump is kept (later fields are upper bounds)
    receptive_field=lambda node: [(2, 1, 1, 0)] * 2 if node.params["mode"] == "bilinear" else None,
))


def _shuffle_infer(node, ins):
    c, g = ins[0][0], node.params["groups"]
    if c % g:
        raise SpecError(f"{c} channels do not divide into {g} groups",
                        notes=[f"{node.name}: {fmt_shape(ins[0])}: {c} / {g} = {c / g:.4g}; channels must be a "
                               f"multiple of {g}"], code="groups")
    if node.partitioned:
        raise SpecError("channel_shuffle inside towers is not supported: it moves channels between the towers",
                        notes=["shuffle before or after the towers block"], code="towers")
    return tuple(ins[0])


register(LayerKind(
    name="channel_shuffle",
    doc="ShuffleNet's channel shuffle: the channels viewed as groups x C/groups and transposed, so the "
        "next grouped convolution's groups each see every group's channels (nn.ChannelShuffle).",
    schema=Schema([Param("groups", IntType(), REQUIRED, "groups of channels to interleave")], positional=("groups",)),
    infer=_shuffle_infer, label=lambda node: f"{node.params['groups']} groups",
))
