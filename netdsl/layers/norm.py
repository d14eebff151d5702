"""Normalisation: local response normalisation (AlexNet), batch, layer and group normalisation, and
ConvNeXt's layer scale."""
from __future__ import annotations

from ..errors import SpecError
from .schema import BoolType, ChoiceType, FloatType, IntType, Param, REQUIRED, Schema
from . import Cost, LayerKind, register, require_chw


def _lrn_label(node):
    p = node.params
    # the mean over the window: n channels across, n x n positions within (Caffe's WITHIN_CHANNEL)
    alpha = f"{p['alpha']:g}" + (("/n²" if p["region"] == "within" else "/n") if p["scale"] == "mean" else "")
    text = f"n={p['size']} α={alpha} β={p['beta']:g} k={p['k']:g}"
    return text + (" within-channel" if p["region"] == "within" else "")


def _lrn_infer(node, ins):
    return tuple(require_chw(node, ins[0]))


register(LayerKind(
    name="lrn",
    doc="Local response normalisation: b = a / (k + alpha/n * sum of a^2 over n channels)^beta "
        "(scale=mean, as cuda-convnet2, Caffe and PyTorch compute it); scale=sum is the paper's printed "
        "formula without /n. In towers, each tower normalises over its own channels.",
    schema=Schema([
        Param("size", IntType(), 5, "n: channels summed over"),
        Param("alpha", FloatType(minimum=0.0), 1e-4),
        Param("beta", FloatType(), 0.75),
        Param("k", FloatType(), 1.0, "Caffe's default 1; the paper uses 2"),
        Param("scale", ChoiceType(("mean", "sum")), "mean", "mean: alpha is divided by n"),
        Param("region", ChoiceType(("across", "within")), "across", "across channels, or within one (Caffe)"),
    ], positional=("size",)),
    infer=_lrn_infer, label=_lrn_label, mixes_channels=True,
    aliases=("norm",),
))


def _bn_cost(node, ins, out):
    return Cost(2 * ins[0][0] if node.params["affine"] else 0, 0)


register(LayerKind(
    name="batchnorm",
    doc="Batch normalisation over channels (running statistics are buffers, not parameters).",
    schema=Schema([
        Param("eps", FloatType(minimum=0.0), 1e-5),
        Param("momentum", FloatType(minimum=0.0, maximum=1.0), 0.1),
        Param("affine", BoolType(), True),
    ]),
    infer=lambda node, ins: tuple(ins[0]), cost=_bn_cost,
    label=lambda node: "" if node.params["affine"] else "no affine",
    aliases=("bn",),
))


# ---------------------------------------------------------------- modern convnets (torchvision)

def _not_in_towers(node, what: str) -> None:
    if node.partitioned:
        raise SpecError(f"{node.kind} inside towers is not supported: {what}",
                        notes=["put it outside the towers block"], code="towers")


def _affine_cost(node, ins, out):
    return Cost(2 * ins[0][0] if node.params["affine"] else 0, 0)


def _layernorm_infer(node, ins):
    _not_in_towers(node, "it normalises over all channels, which the towers split")
    return tuple(ins[0])


register(LayerKind(
    name="layernorm",
    doc="Layer normalisation over the channels at every position (ConvNeXt's LayerNorm2d: the C axis of "
        "a CxHxW map); of a flat vector, over its N features (nn.LayerNorm). A learned scale and bias per "
        "channel with affine=true.",
    schema=Schema([
        Param("eps", FloatType(minimum=0.0), 1e-6, "ConvNeXt's; nn.LayerNorm's default is 1e-5"),
        Param("affine", BoolType(), True, "a learned scale and bias per channel"),
    ]),
    infer=_layernorm_infer, cost=_affine_cost,
    label=lambda node: "" if node.params["affine"] else "no affine",
))


def _groupnorm_infer(node, ins):
    c, g = ins[0][0], node.params["groups"]
    if c % g:
        raise SpecError(f"{c} channels do not divide into {g} groups",
                        notes=[f"{node.name}: {c} / {g} = {c / g:.4g}; channels must be a multiple of {g}"],
                        code="groups")
    _not_in_towers(node, "a tower's share of the channels need not hold whole groups")
    return tuple(ins[0])


register(LayerKind(
    name="groupnorm",
    doc="Group normalisation: the channels in `groups` equal groups, each normalised over its channels "
        "and positions (nn.GroupNorm); a learned scale and bias per channel with affine=true.",
    schema=Schema([
        Param("groups", IntType(), REQUIRED, "groups of channels, each normalised on its own"),
        Param("eps", FloatType(minimum=0.0), 1e-5),
        Param("affine", BoolType(), True, "a learned scale and bias per channel"),
    ], positional=("groups",)),
    infer=_groupnorm_infer, cost=_affine_cost,
    label=lambda node: f"{node.params['groups']} groups" + ("" if node.params["affine"] else ", no affine"),
))

register(LayerKind(
    name="layer_scale",
    doc="A learned factor per channel, starting at `init` (ConvNeXt's layer scale; the parameter is "
        "[C, 1, 1], as torchvision stores it, or [N] for a vector).",
    schema=Schema([Param("init", FloatType(), 1e-6, "every factor's initial value")], positional=("init",)),
    infer=lambda node, ins: tuple(ins[0]), cost=lambda node, ins, out: Cost(ins[0][0], 0),
    label=lambda node: f"init {node.params['init']:g}",
))
