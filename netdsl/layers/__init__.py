"""The layer registry: one entry per layer kind, Keras-style.

Each LayerKind holds, in one place, its parameter schema, its shape rule, its cost, its
receptive-field window, its drawing label and its PyTorch builder (which imports torch lazily,
so `check` and `draw` never do).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..diagnostics import SpecError
from ..ir import Node, Shape
from ..values import Param, Schema

# Per spatial axis: (kernel, stride, dilation, pad_before); "global" when every input position is seen.
RFWindow = list[tuple[int, int, int, int]] | str | None


@dataclass
class Cost:
    params: int = 0
    macs: int = 0


@dataclass
class LayerKind:
    name: str
    doc: str
    schema: Schema
    infer: Callable[[Node, list[Shape]], Shape]
    cost: Callable[[Node, list[Shape], Shape], Cost] = lambda node, ins, out: Cost()
    window: Callable[[Node], RFWindow] = lambda node: None
    label: Callable[[Node], str] = lambda node: ""
    build: Callable[[Node], Any] | None = None
    explain: Callable[[Node, list[Shape], Shape], list[str]] | None = None  # fixes for an expect
    arity: tuple[int, int | None] = (1, 1)  # min, max inputs
    splits_channels: bool = False  # has weights producing output channels, so may be `cross`
    aliases: tuple[str, ...] = ()


REGISTRY: dict[str, LayerKind] = {}


def register(kind: LayerKind) -> LayerKind:
    REGISTRY[kind.name] = kind
    for alias in kind.aliases:
        REGISTRY[alias] = kind
    return kind


def lookup(name: str) -> LayerKind | None:
    _load()
    return REGISTRY.get(name)


def kinds() -> dict[str, LayerKind]:
    _load()
    return {k: v for k, v in REGISTRY.items() if k == v.name}


def _load() -> None:
    if not REGISTRY:
        from . import activation, conv, dense, io, merge, norm, pool  # noqa: F401  (they register)
        from . import caffe_extra  # noqa: F401


# ------------------------------------------------------------------ shared helpers

def require_chw(node: Node, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise SpecError(f"{node.kind} needs a CxHxW input, got {fmt_shape(shape)}"
                        + (" (a flat vector; did an fc or flatten come before it?)" if len(shape) == 1 else ""))
    return shape  # type: ignore[return-value]


def fmt_shape(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def groups(node: Node) -> int:
    """The groups an op really has: the spec's groups times the towers it is local to."""
    return node.params.get("groups", 1) * node.meta.get("tower_groups", 1)


def explain_groups(node: Node) -> str:
    g, towers = node.params.get("groups", 1), node.meta.get("tower_groups", 1)
    if towers > 1:
        return f"{towers} towers" + (f" x {g} groups" if g > 1 else "")
    return f"{g} groups"


def lazy_build(function: str) -> Callable[[Node], Any]:
    """A builder that imports torch only when a module is really built."""
    def build(node: Node):
        from .. import torch_build
        return getattr(torch_build, function)(node)
    return build


__all__ = ["LayerKind", "Cost", "register", "lookup", "kinds", "Param", "Schema", "REGISTRY"]


# ------------------------------------------------------------- sliding windows

def node_windows(node: Node, h: int, w: int, clip: bool = False):
    from ..windows import Window
    p = node.params
    kernel, stride = p["kernel"], p.get("stride") or p["kernel"]
    dilation = p.get("dilation", [1, 1])
    pad = p.get("pad", [[0, 0], [0, 0]])
    rounding = p.get("round", "floor")
    return tuple(Window(size, kernel[a], stride[a], pad[a][0], pad[a][1], dilation[a], rounding, clip)
                 for a, size in enumerate((h, w)))


def _axis_names(windows) -> list[tuple[str, object]]:
    if windows[0] == windows[1]:
        return [("height and width", windows[0])]
    return [("height", windows[0]), ("width", windows[1])]


def infer_windows(node: Node, h: int, w: int, clip: bool = False) -> tuple[int, int]:
    """Output (h, w) of a windowed op; errors and warnings carry the arithmetic."""
    windows = node_windows(node, h, w, clip)
    node.meta["windows"] = windows
    for axis, win in _axis_names(windows):
        if win.out() < 1 or win.padded < win.span:
            raise SpecError(
                f"the {win.span}-wide window does not fit the {axis} {win.size} "
                f"(padded {win.padded}): no output",
                notes=[f"{node.name}: {win.formula()}, which gives {win.out()} < 1",
                       "use a smaller kernel, more padding or a larger input"], code="shape")
        lost = win.uncovered()
        if lost:
            target = win.out() + 1
            fixes = win.fixes(target)
            node.meta.setdefault("warnings", []).append((
                f"the windows do not cover the input: the last {lost} "
                f"{'rows/columns' if axis == 'height and width' else ('rows' if axis == 'height' else 'columns')}"
                f" are never read",
                [f"{node.name}: {win.formula()}; floor gives {win.out()}"
                 + (f"; for {target} and full coverage: " + ", ".join(fixes) if fixes else "")]))
    return windows[0].out(), windows[1].out()


def explain_windows(node: Node, ins: list[Shape], target: Shape) -> list[str]:
    """For a failed `expect`: the arithmetic, and what would give the expected size."""
    windows = node.meta.get("windows")
    if not windows or len(target) != 3:
        return []
    notes = []
    for (axis, win), want in zip(_axis_names(windows), (target[1], target[2])):
        if win.out() == want:
            continue
        line = f"{node.name}: {win.formula()}; {win.rounding} gives {win.out()}"
        if win.clipped():
            line += " (after Caffe's clip of a window starting in the padding)"
        fixes = win.fixes(want)
        notes.append(line + (f", the expected {want} needs " + _or(fixes) if fixes else ""))
    return notes


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def window_label(node: Node) -> str:
    p = node.params
    kh, kw = p["kernel"]
    stride = p.get("stride") or p["kernel"]
    text = f"{kh}x{kw}" if kh != kw else f"{kh}x{kh}"
    text += f"/{stride[0]}" if stride[0] == stride[1] else f"/{stride[0]}x{stride[1]}"
    pad = p.get("pad")
    if pad and any(any(a) for a in pad):
        flat = {v for a in pad for v in a}
        text += f" pad {flat.pop()}" if len(flat) == 1 else f" pad {pad}"
    if p.get("dilation", [1, 1]) != [1, 1]:
        text += f" dil {p['dilation'][0]}"
    return text


def rf_window(node: Node):
    p = node.params
    stride = p.get("stride") or p["kernel"]
    dil = p.get("dilation", [1, 1])
    return [(p["kernel"][a], stride[a], dil[a], p.get("pad", [[0, 0], [0, 0]])[a][0]) for a in (0, 1)]


def window_params(default_round: str, default_stride) -> list[Param]:
    from ..values import ChoiceType, PaddingType, PairType
    return [
        Param("stride", PairType(), default_stride, "step between windows"
              + ("" if default_stride else " (default: the kernel)")),
        Param("pad", PaddingType(), [[0, 0], [0, 0]], "p, (before, after) or [h, w]"),
        Param("round", ChoiceType(("floor", "ceil")), default_round, "rounding of the output size"),
    ]
