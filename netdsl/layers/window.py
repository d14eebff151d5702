"""Sliding-window arithmetic shared by convolution and pooling, with its explanation.

`Window` is the one arithmetic kernel: the checker's sizes, its error messages, the coverage
warnings, the fixes it suggests, PyTorch's padding and the Caffe exporter all come from it.

out = (in + pad_before + pad_after - dilation*(k-1) - 1) / stride + 1, rounded floor or ceil.
Caffe's pooling clip: with padding, a last window starting at or past in + pad_before is dropped.
A ceil-rounded window that would start past the padded input (stride > kernel) is never counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import SpecError
from .schema import ChoiceType, PaddingType, PairType, Param

if TYPE_CHECKING:
    from ..ir import Node, Shape

Windows = tuple["Window", "Window"]  # (height, width)


@dataclass(frozen=True)
class Window:
    size: int  # input extent along the axis
    kernel: int
    stride: int
    before: int
    after: int
    dilation: int = 1
    rounding: str = "floor"
    clip: bool = False  # Caffe's pooling rule

    @property
    def span(self) -> int:
        return self.dilation * (self.kernel - 1) + 1

    @property
    def padded(self) -> int:
        return self.size + self.before + self.after

    def exact(self) -> float:
        return (self.padded - self.span) / self.stride + 1

    def out(self) -> int:
        steps = (self.padded - self.span) / self.stride
        n = (math.ceil(steps) if self.rounding == "ceil" else math.floor(steps)) + 1
        if n > 1 and (n - 1) * self.stride >= self.padded:  # ceil with stride > kernel: it would read only padding
            n -= 1
        if self.clip and (self.before or self.after) and n > 1 and (n - 1) * self.stride >= self.size + self.before:
            n -= 1
        return n

    def clipped(self) -> bool:
        return self.clip and self.out() != Window(**{**self.__dict__, "clip": False}).out()

    def formula(self) -> str:
        k = f"{self.dilation}*({self.kernel} - 1) - 1" if self.dilation > 1 else f"{self.kernel}"
        expr = f"({self.size} + {self.before} + {self.after} - {k}) / {self.stride} + 1"
        return f"{expr} = {_num(self.exact())}"

    def uncovered(self) -> int:
        """Input rows at the end that no window reads (floor rounding drops them)."""
        if self.rounding == "ceil":
            return 0
        last_end = (self.out() - 1) * self.stride + self.span  # in padded coordinates
        return max(0, self.size + self.before - last_end)

    def overhang(self) -> int:
        """How far the last window reaches past the padded input (ceil rounding)."""
        last_end = (self.out() - 1) * self.stride + self.span
        return max(0, last_end - self.padded)

    def fixes(self, target: int) -> list[str]:
        """Ways to get `target` outputs with the input covered exactly."""
        out = []
        need = (target - 1) * self.stride + self.span  # padded extent that fits exactly
        extra = need - self.size
        if extra > 0:
            p = math.ceil(extra / 2)
            if Window(self.size, self.kernel, self.stride, p, p, self.dilation, "floor").out() == target:
                out.append(f"pad {p}")
        base = need - self.before - self.after
        if base >= 1 and base != self.size:
            out.append(f"input {base}")
        other = "ceil" if self.rounding == "floor" else "floor"
        if Window(**{**self.__dict__, "rounding": other}).out() == target:
            out.append(f"round={other}")
        return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


# ------------------------------------------------------------- windowed layers


def node_windows(node: "Node", h: int, w: int, clip: bool = False) -> Windows:
    p = node.params
    kernel, stride = p["kernel"], p.get("stride") or p["kernel"]
    dilation = p.get("dilation", [1, 1])
    pad = p.get("pad", [[0, 0], [0, 0]])
    rounding = p.get("round", "floor")
    return tuple(Window(size, kernel[a], stride[a], pad[a][0], pad[a][1], dilation[a], rounding, clip)
                 for a, size in enumerate((h, w)))


def _axis_names(windows: Windows) -> list[tuple[str, "Window"]]:
    if windows[0] == windows[1]:
        return [("height and width", windows[0])]
    return [("height", windows[0]), ("width", windows[1])]


def infer_windows(node: "Node", h: int, w: int, clip: bool = False) -> Windows:
    """The windows of a windowed op over an h x w input; an error with the arithmetic when one does
    not fit. The shape pass stores them in `node.meta["windows"]` and reports `coverage_warnings`."""
    windows = node_windows(node, h, w, clip)
    for axis, win in _axis_names(windows):
        if win.out() < 1 or win.padded < win.span:
            why = f"{win.formula()}, which gives {win.out()} < 1" if win.padded >= win.span else \
                f"{win.formula()}: the {win.span}-wide window is wider than the padded {win.padded}"
            raise SpecError(
                f"the {win.span}-wide window does not fit the {axis} {win.size} "
                f"(padded {win.padded}): no output",
                notes=[f"{node.name}: {why}", "use a smaller kernel, more padding or a larger input"], code="shape")
    return windows


def coverage_warnings(node: "Node", windows: Windows) -> list[tuple[str, list[str]]]:
    """(message, notes) for each axis whose last rows or columns no window reads (floor rounding)."""
    out = []
    for axis, win in _axis_names(windows):
        lost = win.uncovered()
        if lost and win.stride <= win.span:  # a stride past the window skips rows by design (1x1/2)
            target = win.out() + 1
            fixes = win.fixes(target)
            out.append((
                f"the windows do not cover the input: the last {lost} "
                f"{'rows/columns' if axis == 'height and width' else ('rows' if axis == 'height' else 'columns')}"
                f" are never read",
                [f"{node.name}: {win.formula()}; floor gives {win.out()}"
                 + (f"; for {target} and full coverage: " + ", ".join(fixes) if fixes else "")]))
    return out


def explain_windows(node: "Node", ins: "list[Shape]", target: "Shape") -> list[str]:
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


def window_label(node: "Node") -> str:
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


def rf_window(node: "Node"):
    p = node.params
    stride = p.get("stride") or p["kernel"]
    dil = p.get("dilation", [1, 1])
    return [(p["kernel"][a], stride[a], dil[a], p.get("pad", [[0, 0], [0, 0]])[a][0]) for a in (0, 1)]


def window_params(default_round: str, default_stride) -> list[Param]:
    return [
        Param("stride", PairType(), default_stride, "step between windows"
              + ("" if default_stride else " (default: the kernel)")),
        Param("pad", PaddingType(), [[0, 0], [0, 0]], "p, (before, after) or [h, w]"),
        Param("round", ChoiceType(("floor", "ceil")), default_round, "rounding of the output size"),
    ]
