"""Normalisation: local response normalisation (AlexNet) and batch normalisation."""
from __future__ import annotations

from .schema import BoolType, ChoiceType, FloatType, IntType, Param, Schema
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
