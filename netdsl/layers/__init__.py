"""The layer registry: one entry per layer kind, Keras-style, as data.

Each LayerKind holds, in one place, its parameter schema, its shape rule, its cost, its
receptive-field window and its drawing label. Back ends keep their own tables keyed by kind
(lowering/builders.py for PyTorch, caffe/exporter.py for Caffe), so nothing here imports torch
and `check` and `draw` never do.

Adding a kind: register it in one of the modules below (or a new one listed in `_load`), then give
it a PyTorch builder in lowering/builders.py and a Caffe exporter in caffe/exporter.py, or a
documented reason for none (tests/test_registry.py checks that every kind has all three).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import SpecError
from ..ir import Node, Shape, fmt_shape, numel
from .schema import Param, Schema
from .window import Windows

# Per spatial axis: (kernel, stride, dilation, pad_before); "global" when every input position is seen.
RFWindow = list[tuple[int, int, int, int]] | str | None


@dataclass
class Cost:
    params: int = 0
    macs: int = 0


@dataclass
class Inferred:
    """What a shape rule found: the output shape, and for a sliding-window layer its Window per axis
    (the shape pass stores them in `node.meta["windows"]` and reports the coverage they leave)."""

    shape: Shape
    windows: Windows | None = None


@dataclass
class LayerKind:
    name: str
    doc: str
    schema: Schema
    infer: Callable[[Node, list[Shape]], "Shape | Inferred"]
    cost: Callable[[Node, list[Shape], Shape], Cost] = lambda node, ins, out: Cost()
    receptive_field: Callable[[Node], RFWindow] = lambda node: None
    label: Callable[[Node], str] = lambda node: ""
    explain: Callable[[Node, list[Shape], Shape], list[str]] | None = None  # fixes for an expect
    arity: tuple[int, int | None] = (1, 1)  # min, max inputs
    splits_channels: bool = False  # has weights producing output channels, so may be `cross`
    mixes_channels: bool = False  # no weights, but mixes channels: in towers each sees its own (LRN)
    flattens: bool = False  # reads its input as one flat vector per sample (fc)
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


_LOADED = False


def _load() -> None:
    """Import every kind's module once. (A flag, not `if not REGISTRY`: a back end importing one kind's
    module first would otherwise leave the registry holding that module's kinds only.)"""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from . import activation, caffe_extra, conv, dense, io, merge, norm, pool, resample  # noqa: F401  (they register)


# ------------------------------------------------------------------ shared helpers

def require_chw(node: Node, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise SpecError(f"{node.kind} needs a CxHxW input, got {fmt_shape(shape)}"
                        + (" (a flat vector; did an fc or flatten come before it?)" if len(shape) == 1 else ""))
    return shape  # type: ignore[return-value]


def groups(node: Node) -> int:
    """The groups an op really has: the spec's groups times the towers it is local to."""
    return node.params.get("groups", 1) * node.meta.get("tower_groups", 1)


def explain_groups(node: Node) -> str:
    g, towers = node.params.get("groups", 1), node.meta.get("tower_groups", 1)
    if towers > 1:
        return f"{towers} towers" + (f" x {g} groups" if g > 1 else "")
    return f"{g} groups"


__all__ = ["LayerKind", "Cost", "Inferred", "register", "lookup", "kinds", "Param", "Schema", "REGISTRY",
           "fmt_shape", "numel", "groups", "require_chw"]
