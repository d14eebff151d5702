"""Lowering: a checked IR Graph -> a torch.nn.Module that computes the same network.

Analysis and code generation are kept apart, as in torch.fx: the passes decided every shape, group
and tower placement; this module only reads `node.params` / `node.meta`, builds one module per layer
through the builders table (builders.py), and turns the graph into a plan of steps that
`LoweredNet.forward` runs in order.

Two layouts, same weights:
- one device: a split's tower-local conv/fc are grouped ops (groups x towers), channel-mixing layers
  without weights (LRN, softmax) run on each tower's channel slice and are concatenated;
- N devices (one per tower): every split layer becomes a `TowerSplit` (towers.py) holding one module
  per tower on its device, with explicit copies where a layer reads other towers. State-dict hooks
  present the one-device keys and shapes, so checkpoints move between layouts.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .. import layers
from ..errors import LoweringError
from ..ir import Graph, Node, fmt_shape
from .builders import BUILDERS
from .devices import DeviceLike, amp_dtype, resolve_devices
from .modules import TowerLocal
from .towers import TowerSplit, canonical_keys, own_slice, tower_module

# Producers whose output an in-place ReLU may overwrite: a fresh tensor their backward does not need.
_INPLACE_SAFE = {"conv", "fc", "batchnorm", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool",
                 "global_avgpool", "add", "concat"}
_RESERVED = {"training"}  # nn.Module assigns it after construction


# ---------------------------------------------------------------------------------- entry point

def lower(graph: Graph, devices: Sequence[DeviceLike] | DeviceLike | None = None, *, seed: int | None = None,
          logits: bool = False, channels_last: bool = False, compile: bool = False,
          amp: str | None = None) -> "LoweredNet":
    """Build the module for a checked graph (see docs/lowering.md for the contract)."""
    dtype = amp_dtype(amp)
    placed = resolve_devices(graph, devices)
    consumers = graph.consumers()
    with seeded(seed):
        modules = {n.name: build_node(graph, n, multi=len(placed) > 1, consumers=consumers)
                   for n in graph if n.kind != "input"}
    model = LoweredNet(graph, modules, placed, logits=logits, amp=dtype, channels_last=channels_last)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        model.compile()
    return model


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Draw initial weights from `seed` without disturbing the caller's global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_node(graph: Graph, node: Node, multi: bool, consumers: dict[str, list[Node]] | None = None) -> nn.Module:
    """The one-device module for a layer (built on the CPU, the spec's init applied)."""
    build = BUILDERS.get(node.kind)
    if build is None:
        raise LoweringError(f"{node.name}: no PyTorch lowering for layer kind '{node.kind}'")
    module = build(node)
    if node.kind == "relu" and node.params.get("slope", 0.0) >= 0 and \
            _inplace_ok(graph, node, multi, consumers or graph.consumers()):
        module.inplace = True
    if node.partitioned and layers.lookup(node.kind).mixes_channels:
        module = TowerLocal(module, graph.towers[node.towers].count)
    return module


def _inplace_ok(graph: Graph, node: Node, multi: bool, consumers: dict[str, list[Node]]) -> bool:
    src = graph.node(node.inputs[0])
    if src.kind not in _INPLACE_SAFE or len(consumers[src.name]) != 1:
        return False
    # N devices: a tensor replicated into a split may be the same object in every tower.
    return not (multi and node.replicated)

# ---------------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Step:
    """Run one layer on one device: env[out] = module(*env[args])."""

    module: nn.Module
    args: tuple[int, ...]
    out: int
    gather: tuple[bool, ...]  # N devices: this argument comes from a split and is partitioned: concatenate
    first: tuple[bool, ...]   # N devices: this argument is replicated over towers: take tower 0's copy
    device: torch.device | None
    flatten: bool = False  # an fc reading a CxHxW map: flatten it first (torchvision's torch.flatten(x, 1))

    def __call__(self, env: list) -> None:
        args = [self._arg(env[i], g, f) for i, g, f in zip(self.args, self.gather, self.first)]
        if self.flatten:
            args[0] = args[0].flatten(1)
        env[self.out] = self.module(*args)

    def _arg(self, value: Any, gather: bool, first: bool) -> torch.Tensor:
        if gather:
            return torch.cat([v.to(self.device) for v in value], dim=1)
        return value[0] if first else value


@dataclass(frozen=True)
class TowerStep:
    """Run one split layer on N devices; env[out] becomes a list of N tensors (one per tower)."""

    modules: tuple[nn.Module, ...]
    args: tuple[int, ...]
    out: int
    modes: tuple[str, ...]  # per argument: copy | copy_slice | own | gather | slice
    spans: tuple[tuple | None, ...]  # per tower: the input range a cross layer with groups reads
    flatten: bool  # an fc reading a map: flatten it first (a span is then over flattened features)
    devices: tuple[torch.device, ...]

    def __call__(self, env: list) -> None:
        outs = []
        for t, (module, device) in enumerate(zip(self.modules, self.devices)):
            args = [self._arg(env[i], mode, t, device) for i, mode in zip(self.args, self.modes)]
            span = self.spans[t]
            if self.flatten:
                args[0] = args[0].flatten(1)
            if span is not None:
                args[0] = args[0][:, span[0]:span[1]]
            outs.append(module(*args))
        env[self.out] = outs

    def _arg(self, value: Any, mode: str, t: int, device: torch.device) -> torch.Tensor:
        if mode == "copy":
            return value.to(device)
        if mode == "own":
            return value[t]
        if mode == "gather":
            return torch.cat([v.to(device) for v in value], dim=1)
        # a replicated tensor meeting a partitioned one (e.g. add): keep this tower's channels
        full = value.to(device) if mode == "copy_slice" else value[t]
        c = full.shape[1] // len(self.devices)
        return full[:, t * c:(t + 1) * c]


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step | TowerStep, ...]
    outputs: tuple[int, ...]
    gather_outputs: tuple[bool, ...]
    frees: tuple[tuple[int, ...], ...]  # slots released after each step (their last reader ran)


def _frees(steps: Sequence[Step | TowerStep], outputs: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    last: dict[int, int] = {}
    for i, step in enumerate(steps):
        for a in step.args:
            last[a] = i
    out: list[list[int]] = [[] for _ in steps]
    for slot, i in last.items():
        if slot not in outputs:
            out[i].append(slot)
    return tuple(tuple(x) for x in out)


# ---------------------------------------------------------------------------------- the module

class LoweredNet(nn.Module):
    """A spec lowered to PyTorch. Submodules are named after the spec's layers (see docs/lowering.md)."""

    def __init__(self, graph: Graph, modules: dict[str, nn.Module], devices: list[torch.device], *,
                 logits: bool = False, amp: torch.dtype | None = None, channels_last: bool = False) -> None:
        super().__init__()
        # Every plain attribute is set before the layers are registered: a layer may share its name.
        self._graph, self._devices = graph, devices
        self._slots = {n.name: i for i, n in enumerate(graph)}
        self._input_nodes = graph.inputs()
        self._amp = amp
        self._channels_last = channels_last
        self._softmaxes = _trailing_softmaxes(graph)
        multi = len(devices) > 1
        placed = {name: self._place(graph.node(name), module, multi) for name, module in modules.items()}
        for name, module in placed.items():
            self._register(graph.node(name), module)
        self._full_plan = self._make_plan(placed, skip=())
        self._logits_plan = self._make_plan(placed, skip=self._softmaxes)
        self._plan = self._logits_plan if logits else self._full_plan
        if multi:
            self.register_load_state_dict_post_hook(canonical_keys)

    # -- public API

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def devices(self) -> list[torch.device]:
        return list(self._devices)

    @property
    def output_device(self) -> torch.device | None:
        return self._devices[0] if self._devices else None

    @property
    def ends_in_softmax(self) -> bool:
        return bool(self._softmaxes)

    @property
    def output_names(self) -> list[str]:
        """The layers whose outputs forward returns (a trailing softmax's input when logits=True)."""
        return [self._graph.nodes[i].name for i in self._plan.outputs]

    def layer(self, name: str) -> nn.Module:
        """The submodule of a spec layer; a split layer on N devices is its TowerSplit."""
        if name not in self._slots or self._graph.node(name).kind == "input":
            raise KeyError(f"{self._graph.name} has no layer '{name}'")
        module: nn.Module = self
        for part in self._graph.node(name).path:
            module = module._modules[part]  # type: ignore[assignment]
        return module

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self._run(inputs, self._plan)

    def logits(self, *inputs: torch.Tensor) -> Any:
        """The outputs before a trailing softmax (the same as forward when there is none)."""
        return self._run(inputs, self._logits_plan)

    # -- building

    def _place(self, node: Node, module: nn.Module, multi: bool) -> nn.Module:
        if not multi:
            return module.to(self._devices[0]) if self._devices else module
        if not node.towers:
            return module.to(self._devices[0])
        n = len(self._devices)
        with torch.random.fork_rng(devices=[]):  # the shares' throw-away init must not move the caller's RNG
            shares = [tower_module(self._graph, node, module, t, n) for t in range(n)]
        return TowerSplit([m for m, _ in shares], self._devices, [span for _, span in shares])

    def _register(self, node: Node, module: nn.Module) -> None:
        """Register under the layer's module path: a block instance's layers nest in a module of its own."""
        name, parts = node.name, node.path
        if any(p in _RESERVED or not p for p in parts):
            raise LoweringError(f"layer name '{name}' cannot be a PyTorch module name; rename it")
        parent: nn.Module = self
        for part in parts[:-1]:
            scope = parent._modules.get(part)
            if scope is None:
                scope = parent._modules[part] = nn.Module()
            elif type(scope) is not nn.Module:
                raise LoweringError(f"'{name}' lies in a scope named like the layer '{part}'; rename one")
            parent = scope
        if parts[-1] in parent._modules:
            raise LoweringError(f"layer '{name}' clashes with a block scope of the same name; rename one")
        parent._modules[parts[-1]] = module  # not add_module: 'eval' or 'to' are fine layer names

    def _make_plan(self, placed: dict[str, nn.Module], skip: Sequence[str]) -> Plan:
        graph, multi = self._graph, len(self._devices) > 1
        steps = [self._step(graph.node(name), module, multi) for name, module in placed.items()
                 if name not in skip]
        outputs = [self._slots[graph.node(n.name).inputs[0] if n.name in skip else n.name]
                   for n in graph.outputs()]
        gather = tuple(multi and graph.nodes[i].partitioned for i in outputs)
        return Plan(tuple(steps), tuple(outputs), gather, _frees(steps, outputs))

    def _step(self, node: Node, module: nn.Module, multi: bool) -> Step | TowerStep:
        args = tuple(self._slots[i] for i in node.inputs)
        srcs = [self._graph.node(i) for i in node.inputs]
        flatten = layers.lookup(node.kind).flattens and len(srcs[0].shape) > 1
        if not (multi and node.towers):
            return Step(module, args, self._slots[node.name],
                        gather=tuple(multi and s.partitioned for s in srcs),
                        first=tuple(multi and bool(s.towers) and not s.partitioned for s in srcs),
                        device=self._devices[0] if self._devices else None, flatten=flatten)
        assert isinstance(module, TowerSplit)
        return TowerStep(tuple(module.towers), args, self._slots[node.name],
                         modes=tuple(_tower_mode(node, s) for s in srcs), spans=module.spans,
                         flatten=flatten, devices=tuple(self._devices))

    # -- running

    def _run(self, inputs: Sequence[torch.Tensor], plan: Plan) -> Any:
        env: list[Any] = [None] * len(self._slots)
        for node, x in zip(self._input_nodes, self._check_inputs(inputs)):
            env[self._slots[node.name]] = x
        with self._autocast(inputs):
            for step, free in zip(plan.steps, plan.frees):
                step(env)
                for slot in free:
                    env[slot] = None
        outs = tuple(torch.cat([v.to(self._devices[0]) for v in env[i]], dim=1) if g
                     else (env[i][0] if isinstance(env[i], list) else env[i])
                     for i, g in zip(plan.outputs, plan.gather_outputs))
        return outs[0] if len(outs) == 1 else outs

    def _check_inputs(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        names = self._input_nodes
        if len(inputs) != len(names):
            raise TypeError(f"{self._graph.name} takes {len(names)} input(s) "
                            f"({', '.join(n.name for n in names)}), got {len(inputs)}")
        out = []
        for node, x in zip(names, inputs):
            want = tuple(node.params["shape"])
            if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != want or x.dim() != len(want) + 1:
                got = fmt_shape(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{self._graph.name}: input '{node.name}' is declared {fmt_shape(want)} "
                                 f"(so Nx{fmt_shape(want)} with the batch), got {got}")
            if self._devices:
                x = x.to(self._devices[0], non_blocking=True)
            if self._channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(x)
        return out

    def _autocast(self, inputs: Sequence[torch.Tensor]) -> contextlib.AbstractContextManager:
        if self._amp is None:
            return contextlib.nullcontext()
        types = {d.type for d in self._devices} or {inputs[0].device.type}
        stack = contextlib.ExitStack()
        for device_type in sorted(types):
            stack.enter_context(torch.autocast(device_type, dtype=self._amp))
        return stack


def _tower_mode(node: Node, src: Node) -> str:
    """How tower t gets one argument of a split layer on N devices."""
    mixing = node.partitioned and not layers.lookup(node.kind).splits_channels
    if not src.towers:  # from outside the split: replicated onto every tower's device
        return "copy_slice" if mixing else "copy"
    if src.partitioned:
        kind = layers.lookup(node.kind)
        return "gather" if kind.splits_channels and not own_slice(node) else "own"
    return "slice" if mixing else "own"


def _trailing_softmaxes(graph: Graph) -> tuple[str, ...]:
    return tuple(n.name for n in graph.outputs() if n.kind == "softmax")
