"""Sliding-window arithmetic shared by convolution and pooling, with its explanation.

out = (in + pad_before + pad_after - dilation*(k-1) - 1) / stride + 1, rounded floor or ceil.
Caffe's pooling clip: with padding, a last window starting at or past in + pad_before is dropped.
A ceil-rounded window that would start past the padded input (stride > kernel) is never counted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


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
