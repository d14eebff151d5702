"""Pooling. Windowed pools follow Caffe: ceil rounding by default, and with padding a last
window that would start at or past in + pad_before is dropped. With pad=same / pad=valid they follow
TensorFlow instead: its output size, max never picks padding, and the average counts only real
positions (unless include_pad is set). Adaptive and global pools produce a fixed output size."""
from __future__ import annotations

from ..errors import SpecError
from .schema import BoolType, PairType, Param, REQUIRED, Schema
from . import Inferred, LayerKind, register, require_chw
from .window import explain_windows, infer_windows, node_windows, rf_window, window_label, window_params


def _infer_windowed(node, ins):
    c, h, w = require_chw(node, ins[0])
    for win in node_windows(node, h, w):  # (pad=same never pads more than kernel // 2)
        if max(win.before, win.after) > win.kernel // 2:
            raise SpecError(f"padding {max(win.before, win.after)} is more than half the {win.kernel}-wide window",
                            notes=[f"{node.name}: a pooling pad must be at most kernel // 2 = "
                                   f"{win.kernel // 2} (PyTorch rejects more; a window could see only padding)"],
                            code="pool-pad")
    windows = infer_windows(node, h, w, clip=True)
    return Inferred((c, windows[0].out(), windows[1].out()), windows)


def _windowed(name: str, doc: str, extra: list[Param]) -> None:
    register(LayerKind(
        name=name, doc=doc,
        schema=Schema([Param("kernel", PairType(), REQUIRED, "window size"), *window_params("ceil", None), *extra],
                      positional=("kernel", "stride")),
        infer=_infer_windowed, receptive_field=rf_window, explain=explain_windows,
        label=lambda node: window_label(node),
    ))


_windowed("maxpool", "Max pooling (Caffe semantics: ceil rounding by default, with the padding clip).", [])
_windowed("avgpool", "Average pooling; like Caffe, padded positions count in the divisor (with pad=same, like "
                     "TensorFlow, they do not).",
          [Param("include_pad", BoolType(), True, "count padding in the average (Caffe: yes; pad=same: no)")])


def _infer_adaptive(node, ins):
    c, _, _ = require_chw(node, ins[0])
    oh, ow = node.params["output"]
    return (c, oh, ow)


def _adaptive(name: str, doc: str) -> None:
    register(LayerKind(
        name=name, doc=doc,
        schema=Schema([Param("output", PairType(), REQUIRED, "output height and width")], positional=("output",)),
        infer=_infer_adaptive, receptive_field=lambda node: "global",
        label=lambda node: "to {}x{}".format(*node.params["output"]),
    ))


_adaptive("adaptive_avgpool", "Average pooling to a fixed output size (PyTorch's AdaptiveAvgPool2d).")
_adaptive("adaptive_maxpool", "Max pooling to a fixed output size (PyTorch's AdaptiveMaxPool2d).")


def _infer_global(node, ins):
    c, _, _ = require_chw(node, ins[0])
    return (c, 1, 1)


def _global(name: str, doc: str) -> None:
    register(LayerKind(
        name=name, doc=doc, schema=Schema(), infer=_infer_global, receptive_field=lambda node: "global",
        label=lambda node: "global",
    ))


_global("global_avgpool", "Average over all positions: CxHxW -> Cx1x1.")
_global("global_maxpool", "Maximum over all positions: CxHxW -> Cx1x1 (Caffe's global_pooling MAX).")
