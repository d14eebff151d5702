"""Sliding-window arithmetic shared by convolution and pooling, with its explanation.

`Window` is the one arithmetic kernel: the checker's sizes, its error messages, the coverage
warnings, the fixes it suggests, PyTorch's padding and the Caffe exporter all come from it.

out = (in + pad_before + pad_after - dilation*(k-1) - 1) / stride + 1, rounded floor or ceil.
Caffe's pooling clip: with padding, a last window starting at or past in + pad_before is dropped.
A ceil-rounded window that would start past the padded input (stride > kernel) is never counted.
`pad=same` / `pad=valid` are TensorFlow's rules, resolved here per input size (node_windows): valid pads
nothing and rounds down; same gives ceil(in / stride) outputs with total padding
max((out - 1)*stride + span - in, 0), total // 2 before and the rest after.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..errors import SpecError
from .schema import ChoiceListType, ChoiceType, PaddingType, PairType, Param

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
    padding: str | None = None  # "same" or "valid" when the spec named the padding by its word

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
        return max(0, self.size + self.before - self.extent())  # the extent is in padded coordinates

    def lost(self) -> int:
        """Input rows at the end that no window reads but a further window would (the coverage warning),
        counted from the first such row. Rows that a kernel smaller than the stride steps over (1x1/2)
        or that fall between dilated taps are skipped by the windows' own pattern: not lost."""
        end = self.size + self.before  # padded coordinates
        n = self.out()
        last_end = (n - 1) * self.stride + self.span
        if end <= last_end:
            return 0
        if self.dilation == 1:  # window n reads last_end on (kernel >= stride) or starts past it
            return max(0, end - max(last_end, n * self.stride))
        # window i >= n reads rows i*stride + j*dilation. From tap j0 on, window n itself reaches past
        # last_end (the first of those taps is the nearest); before it only tap offsets modulo the stride
        # matter, and they repeat every stride / gcd(stride, dilation) taps.
        j0 = max(0, -(-(last_end - n * self.stride) // self.dilation))
        period = self.stride // math.gcd(self.stride, self.dilation)
        first = end
        for j in [*range(min(self.kernel, j0, period)), *([j0] if j0 < self.kernel else [])]:
            tap = j * self.dilation
            i = max(n, -(-(last_end - tap) // self.stride))
            first = min(first, i * self.stride + tap)
        return end - first

    def extent(self) -> int:
        """The padded length the windows read: (out - 1) * stride + span."""
        return (self.out() - 1) * self.stride + self.span

    def overhang(self) -> int:
        """How far the last window reaches past the padded input (ceil rounding)."""
        return max(0, self.extent() - self.padded)

    def floor_pads(self) -> tuple[int, int]:
        """(before, after) padding with which floor rounding yields out() windows: the lowering's
        explicit padding of a conv (asymmetric, or a ceil window's overhang)."""
        return self.before, self.after + self.overhang()

    def fixes(self, target: int) -> list[str]:
        """Ways to get `target` outputs with the input covered exactly."""
        out = []
        need = (target - 1) * self.stride + self.span  # padded extent that fits exactly
        extra = need - self.size
        if extra > 0:
            p = math.ceil(extra / 2)
            if Window(self.size, self.kernel, self.stride, p, p, self.dilation, "floor").out() == target:
                out.append(f"pad {p}")
        if self.padding == "same":  # ceil(in / stride) outputs, whatever the padding it takes
            if target * self.stride != self.size:
                out.append(f"input {target * self.stride}")
        else:
            base = need - self.before - self.after
            if base >= 1 and base != self.size:
                out.append(f"input {base}")
        if self.padding:  # pad=same/valid fix the rounding (round= with them is an error)
            return out
        other = "ceil" if self.rounding == "floor" else "floor"
        if Window(**{**self.__dict__, "rounding": other}).out() == target:
            out.append(f"round={other}")
        return out


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


# ------------------------------------------------------------- windowed layers


def word_padding(word: str, size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of TensorFlow's `valid` (none) or `same` (ceil(size / stride) outputs;
    the odd row, if any, after)."""
    if word == "valid":
        return 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def node_windows(node: "Node", h: int, w: int, clip: bool = False) -> Windows:
    """The layer's windows over an h x w input; pad=same/valid resolved for this size (floor rounding,
    which with them gives exactly TensorFlow's size, and no Caffe clip)."""
    p = node.params
    kernel, stride = p["kernel"], p.get("stride") or p["kernel"]
    dilation = p.get("dilation", [1, 1])
    pad = p.get("pad", [[0, 0], [0, 0]])
    if isinstance(pad, str):
        return tuple(Window(size, kernel[a], stride[a], *word_padding(pad, size, kernel[a], stride[a], dilation[a]),
                            dilation[a], "floor", False, pad) for a, size in enumerate((h, w)))
    rounding = p.get("round", "floor")
    return tuple(Window(size, kernel[a], stride[a], pad[a][0], pad[a][1], dilation[a], rounding, clip)
                 for a, size in enumerate((h, w)))


def counts_padding(node: "Node") -> bool:
    """Whether an average pool's divisor counts padded positions: include_pad when the spec set it,
    else yes (Caffe) for numeric padding and no (TensorFlow) for pad=same. (Here, not in pool.py: the
    back ends import it, and importing a kind's module registers it.)"""
    p = node.params
    if "include_pad" in node.meta.get("explicit", ()) or p.get("pad") != "same":
        return p.get("include_pad", True)
    return False


def axis_names(windows) -> list[tuple[str, "Window"]]:
    """[(axis words, window)]: one entry when height and width are alike (messages say it once)."""
    if windows[0] == windows[1]:
        return [("height and width", windows[0])]
    return [("height", windows[0]), ("width", windows[1])]


def infer_windows(node: "Node", h: int, w: int, clip: bool = False) -> Windows:
    """The windows of a windowed op over an h x w input; an error with the arithmetic when one does
    not fit. The shape pass stores them in `node.meta["windows"]` and reports WINDOW_WARNINGS."""
    pad = node.params.get("pad")
    if isinstance(pad, str) and "round" in node.meta.get("given", ()):
        rule = "ceil(in / stride) outputs" if pad == "same" else "floor((in - span) / stride) + 1 outputs"
        raise SpecError(f"round={node.params['round']} does not apply with pad={pad}",
                        notes=[f"{node.name}: pad={pad} is TensorFlow's rule: {rule}"
                               + (", padded as much as they need" if pad == "same" else ", no padding")
                               + "; the rounding is part of the rule, not a choice",
                               "remove round= from the layer, or give the padding as numbers"],
                        code="bad-value")
    windows = node_windows(node, h, w, clip)
    for axis, win in axis_names(windows):
        if win.out() < 1 or win.padded < win.span:
            why = f"{win.formula()}, which gives {win.out()} < 1" if win.padded >= win.span else \
                f"{win.formula()}: the {win.span}-wide window is wider than the padded {win.padded}"
            raise SpecError(
                f"the {win.span}-wide window does not fit the {axis} {win.size} "
                f"(padded {win.padded}): no output",
                notes=[f"{node.name}: {why}", "use a smaller kernel, more padding or a larger input"], code="shape")
    return windows


def coverage_warnings(node: "Node", windows: Windows) -> list[tuple[str, list[str]]]:
    """(message, notes) for each axis whose last rows or columns no window reads though a further window
    would (Window.lost: rows a stride past a 1x1 kernel, or between dilated taps, are skipped by design)."""
    out = []
    for axis, win in axis_names(windows):
        lost = win.lost()
        if lost:
            target = win.out() + 1
            fixes = win.fixes(target)
            out.append((
                f"the windows do not cover the input: the last {lost} "
                f"{'rows/columns' if axis == 'height and width' else ('rows' if axis == 'height' else 'columns')}"
                f" are never read",
                [f"{node.name}: {win.formula()}; {win.rounding} gives {win.out()}"
                 + (f"; for {target} and full coverage: " + ", ".join(fixes) if fixes else "")]))
    return out


TORCH_MODULES = {"conv": "nn.Conv2d", "maxpool": "nn.MaxPool2d", "avgpool": "nn.AvgPool2d"}


def rounding_warnings(node: "Node", windows: Windows) -> list[tuple[str, list[str]]]:
    """(message, notes) when the kind's default rounding, which the spec did not choose (meta["explicit"]
    holds what it set, on the layer or in `defaults`), gives another size than PyTorch's default for the
    same layer: floor (ceil_mode=False). Caffe's ceil pooling on odd sizes, typically."""
    explicit = node.meta.get("explicit")
    if explicit is None or "round" in explicit or any(w.padding for w in windows):
        return []  # (an IR read back from a file does not say what was chosen)
    floors = [replace(w, rounding="floor", clip=False) for w in windows]
    if all(f.out() == w.out() for f, w in zip(floors, windows)):
        return []
    rounding = windows[0].rounding
    caffe = " (Caffe's)" if rounding == "ceil" else ""
    module = TORCH_MODULES.get(node.kind, "PyTorch's layer")
    notes = []
    for (axis, win), f in zip(axis_names(windows), floors):  # (one axis when both are alike)
        if f.out() != win.out():
            notes.append(f"{node.name}: {win.formula()}; {rounding} gives {win.out()}"
                         + (" (after Caffe's clip of a window starting in the padding)" if win.clipped() else "")
                         + f"; PyTorch's floor gives {f.out()}")
    notes.append(f"round=floor to match PyTorch, or round={rounding} to keep "
                 + ("Caffe's" if caffe else "this size") + " and silence this")
    return [(f"the default round={rounding}{caffe} gives {windows[0].out()}x{windows[1].out()}; "
             f"PyTorch's {module} (floor) gives {floors[0].out()}x{floors[1].out()}", notes)]


# Warnings about a layer's windows, by code (the Diagnostic's code; a layer's `quiet` names them).
WINDOW_WARNINGS = {"coverage": coverage_warnings, "rounding": rounding_warnings}


def explain_windows(node: "Node", ins: "list[Shape]", target: "Shape") -> list[str]:
    """For a failed `expect`: the arithmetic, and what would give the expected size."""
    windows = node.meta.get("windows")
    if not windows or len(target) != 3:
        return []
    notes = []
    for (axis, win), want in zip(axis_names(windows), (target[1], target[2])):
        if win.out() == want:
            continue
        how = f"pad={win.padding}" if win.padding else win.rounding
        line = f"{node.name}: {win.formula()}; {how} gives {win.out()}"
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
    if isinstance(pad, str):
        text += f" pad {pad}" + _resolved_pads(node)
    elif pad and any(any(a) for a in pad):
        flat = {v for a in pad for v in a}
        text += f" pad {flat.pop()}" if len(flat) == 1 else f" pad {pad}"
    if p.get("dilation", [1, 1]) != [1, 1]:
        text += f" dil {p['dilation'][0]}"
    return text


def _resolved_pads(node: "Node") -> str:
    """What pad=same came to for the checked input: ` 1`, ` (0,1)` or ` [(0,1), 1]` (height, width)."""
    windows = node.meta.get("windows")
    if not windows or node.params["pad"] == "valid":
        return ""
    h, w = (f"{win.before}" if win.before == win.after else f"({win.before},{win.after})" for win in windows)
    return f" {h}" if h == w else f" [{h}, {w}]"


def rf_window(node: "Node"):
    windows = node.meta.get("windows")
    if windows:  # the checked windows: padding words resolved
        return [(win.kernel, win.stride, win.dilation, win.before) for win in windows]
    p = node.params
    stride = p.get("stride") or p["kernel"]
    dil = p.get("dilation", [1, 1])
    pad = p.get("pad", [[0, 0], [0, 0]])
    return [(p["kernel"][a], stride[a], dil[a], 0 if isinstance(pad, str) else pad[a][0]) for a in (0, 1)]


def window_params(default_round: str, default_stride) -> list[Param]:
    return [
        Param("stride", PairType(), default_stride, "step between windows"
              + ("" if default_stride else " (default: the kernel)")),
        Param("pad", PaddingType(words=True), [[0, 0], [0, 0]], "p, (before, after), [h, w], same or valid"),
        Param("round", ChoiceType(("floor", "ceil")), default_round, "rounding of the output size"),
        Param("quiet", ChoiceListType(tuple(WINDOW_WARNINGS), "warning names"), None,
              "warnings not to report for this layer: " + ", ".join(WINDOW_WARNINGS)),
    ]


def native_pool(windows: Windows) -> tuple[tuple[int, int], bool] | None:
    """(padding, ceil_mode) for which PyTorch's own pooling gives the checker's window count, if any
    (None: the lowering pads explicitly, with CaffePool2d; the memory pass counts that padded copy).

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
