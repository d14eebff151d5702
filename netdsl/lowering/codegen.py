"""Code generation: a checked IR Graph -> a torch.fx Graph, i.e. the lowered module's `forward` as
straight-line PyTorch code with the spec's layer names (`print(model.code)`).

Like torch.fx's own passes, this only reads what the checker decided (shapes, tower placement,
`node.meta`) and emits nodes; the modules themselves come from builders.py. fx's code generator
frees every value after its last use (`conv1 = None`), so peak memory is what the graph needs.

One device: one `call_module` per layer; an fc reading a map flattens it first (`torch.flatten(x, 1)`,
as torchvision writes it). Towers are inside the modules (grouped ops, tower-local LRN).

N devices (one per tower): tower t of a split layer is the submodule `<layer>.towers.<t>` on
devices[t]; what it reads is emitted explicitly (towers.py decides the input ranges):

    own         its own slice of a partitioned tensor, or its own copy of a replicated one
    gather      all slices, copied to its device and concatenated (a `cross` layer)
    copy        a tensor from outside the split, copied to its device
    slice       its channel range of a replicated tensor (a layer meeting a partitioned one: add)
    copy_slice  the same, for a tensor from outside the split

Every copy is a `.to(device)` emitted once per tensor and device, and only where the devices differ.

Mixed precision is part of the generated code: the body runs under `with torch.autocast(...)`, which
torch.compile traces without a graph break and a reader sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import fx

from .. import layers
from ..ir import Graph, Node
from .towers import own_slice

Value = Any  # fx.Node on one device; list[fx.Node], one per tower, for a split layer on N devices


def expect_shape(x: torch.Tensor, shape: tuple[int, ...], name: str) -> torch.Tensor:
    """The static checks hold for the declared input shape only: refuse any other (batch aside)."""
    if not isinstance(x, torch.Tensor) or x.dim() != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        got = "x".join(map(str, x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
        want = "x".join(map(str, shape))  # (the ejected file has a copy of this function: torch only)
        raise ValueError(f"input '{name}' is declared {want} (so Nx{want} with the batch), got {got}")
    return x


@dataclass(frozen=True)
class Autocast:
    """fx body transformer: run the generated body under torch.autocast (one context per device type).

    `device_types` empty: the module was built without devices, so the first input's device decides.
    A plain dataclass, so the fx Graph that holds it deep-copies and pickles.
    """

    device_types: tuple[str, ...]
    dtype: str  # "bfloat16" | "float16"
    first_input: str

    def __call__(self, body: list[str]) -> list[str]:
        types = [repr(t) for t in self.device_types] or [f"{self.first_input}.device.type"]
        contexts = ", ".join(f"torch.autocast({t}, dtype=torch.{self.dtype})" for t in types)
        lines = "".join(body).splitlines(keepends=True)
        return [f"with {contexts}:\n"] + ["    " + line for line in lines]


def generate(ir: Graph, devices: Sequence[torch.device], *, skip: Sequence[str] = (),
             amp: torch.dtype | None = None, channels_last: bool = False,
             spans: dict[str, Sequence[tuple[int, int] | None]] | None = None) -> fx.Graph:
    """The forward of the lowered module: inputs checked, placed and laid out; one call per layer;
    the outputs (a layer in `skip`, a trailing softmax for logits, returns its input instead).
    `spans`, N devices: per split layer, the input range each tower reads (None: all of it)."""
    emitter = _Emitter(ir, list(devices), channels_last, spans or {})
    for node in ir:
        if node.kind == "input":
            emitter.input(node)
        elif node.name not in skip:
            emitter.layer(node)
    outs = [emitter.output(ir.node(n.name).inputs[0] if n.name in skip else n.name) for n in ir.outputs()]
    emitter.g.output(outs[0] if len(outs) == 1 else tuple(outs))
    if amp is not None:
        first = next(n for n in emitter.g.nodes if n.op == "placeholder").name
        types = tuple(sorted({d.type for d in devices}))
        emitter.g.on_generate_code(lambda _: Autocast(types, str(amp).removeprefix("torch."), first))
    emitter.g.lint()
    return emitter.g


class _Emitter:
    def __init__(self, ir: Graph, devices: list[torch.device], channels_last: bool,
                 spans: dict[str, Sequence[tuple[int, int] | None]]) -> None:
        self.ir, self.devices, self.channels_last, self.spans = ir, devices, channels_last, spans
        self.multi = len(devices) > 1
        self.g = fx.Graph()
        self.values: dict[str, Value] = {}
        self.device_of: dict[fx.Node, torch.device] = {}
        self.copies: dict[tuple[fx.Node, torch.device], fx.Node] = {}
        self.gathers: dict[tuple[str, torch.device], fx.Node] = {}
        self.flat: dict[fx.Node, fx.Node] = {}

    # -- inputs and outputs

    def input(self, node: Node) -> None:
        x = self.g.placeholder(node.name)
        x = self._function(expect_shape, (x, tuple(node.params["shape"]), node.name), name=node.name)
        if self.devices:
            x = self._method("to", (x, self.devices[0]), {"non_blocking": True}, name=node.name)
        if self.channels_last and len(node.params["shape"]) == 3:
            x = self._method("contiguous", (x,), {"memory_format": torch.channels_last}, name=node.name)
        self.values[node.name] = self._on(x, self.devices[0] if self.devices else None)

    def output(self, name: str) -> fx.Node:
        return self._whole(name, self.devices[0] if self.devices else None)

    # -- layers

    def layer(self, node: Node) -> None:
        target = ".".join(node.path)
        flatten = layers.lookup(node.kind).flattens and len(self.ir.node(node.inputs[0]).shape) > 1
        if not (self.multi and node.towers):
            device = self.devices[0] if self.devices else None
            args = [self._whole(i, device) for i in node.inputs]
            if flatten:
                args[0] = self._flatten(args[0])
            out = self.g.call_module(target, tuple(args))
            self.values[node.name] = self._on(out, device)
            return
        outs = []
        spans = self.spans.get(node.name) or [None] * len(self.devices)
        for t, device in enumerate(self.devices):
            args = [self._tower_arg(node, self.ir.node(i), t, device) for i in node.inputs]
            if flatten:
                args[0] = self._flatten(args[0])
            if spans[t] is not None:
                lo, hi = spans[t]
                args[0] = self._function(torch.narrow, (args[0], 1, lo, hi - lo), name=f"{node.name}_in")
            outs.append(self._on(self.g.call_module(f"{target}.towers.{t}", tuple(args)), device))
        self.values[node.name] = outs

    # -- values

    def _function(self, fn: Any, args: tuple, kwargs: dict | None = None, name: str | None = None) -> fx.Node:
        return self.g.create_node("call_function", fn, args, kwargs, name=name)

    def _method(self, method: str, args: tuple, kwargs: dict | None = None, name: str | None = None) -> fx.Node:
        return self.g.create_node("call_method", method, args, kwargs, name=name)

    def _flatten(self, x: fx.Node) -> fx.Node:
        """torch.flatten(x, 1), once per tensor (the towers of an fc share it)."""
        if x not in self.flat:
            self.flat[x] = self._on(self._function(torch.flatten, (x, 1)), self.device_of.get(x))
        return self.flat[x]

    def _on(self, x: fx.Node, device: torch.device | None) -> fx.Node:
        if device is not None:
            self.device_of[x] = device
        return x

    def _to(self, x: fx.Node, device: torch.device | None) -> fx.Node:
        """x on `device`: itself, or one copy made the first time it is needed there."""
        if device is None or self.device_of.get(x, device) == device:
            return x
        if (x, device) not in self.copies:
            name = f"{x.name}_to_{device.type}_{device.index or 0}"
            self.copies[x, device] = self._on(self._method("to", (x, device), name=name), device)
        return self.copies[x, device]

    def _whole(self, name: str, device: torch.device | None) -> fx.Node:
        """A layer's whole output on `device`: gathered from its towers if they hold slices of it."""
        value = self.values[name]
        if not isinstance(value, list):
            return self._to(value, device)
        if not self.ir.node(name).partitioned:
            return self._to(value[0], device)  # replicated: every tower holds the same tensor
        if (name, device) not in self.gathers:
            parts = [self._to(v, device) for v in value]
            self.gathers[name, device] = self._on(self._function(torch.cat, (parts, 1), name=name), device)
        return self.gathers[name, device]

    def _tower_arg(self, node: Node, src: Node, t: int, device: torch.device) -> fx.Node:
        value = self.values[src.name]
        mode = tower_mode(node, src)
        if mode == "own":
            return value[t]
        if mode == "gather":
            return self._whole(src.name, device)
        full = self._to(value, device) if mode in ("copy", "copy_slice") else value[t]
        if mode == "copy":
            return full
        # a replicated tensor meeting a partitioned one (e.g. add): keep this tower's channels
        c = src.shape[0] // len(self.devices)
        return self._function(torch.narrow, (full, 1, t * c, c), name=f"{src.name}_{t}")


def tower_mode(node: Node, src: Node) -> str:
    """How tower t gets one argument of a split layer on N devices (see the module docstring)."""
    mixing = node.partitioned and not layers.lookup(node.kind).splits_channels
    if not src.towers:  # from outside the split: replicated onto every tower's device
        return "copy_slice" if mixing else "copy"
    if src.partitioned:
        kind = layers.lookup(node.kind)
        return "gather" if kind.splits_channels and not own_slice(node) else "own"
    return "slice" if mixing else "own"
