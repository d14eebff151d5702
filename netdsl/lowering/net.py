"""Lowering: a checked IR Graph -> a torch.fx GraphModule that computes the same network.

Analysis and code generation are kept apart, as in torch.fx: the passes decided every shape, group
and tower placement; this module only reads `node.params` / `node.meta`, builds one module per layer
through the builders table (builders.py), registers them under the spec's names, and has codegen.py
write `forward` as straight-line code over them (`print(model.code)`).

Two layouts, same weights:
- one device: a split's tower-local conv/fc are grouped ops (groups x towers), channel-mixing layers
  without weights (LRN, softmax) run on each tower's channel slice and are concatenated;
- N devices (one per tower): every split layer becomes a `TowerSplit` (towers.py) holding one module
  per tower on its device, with explicit copies where a layer reads other towers. State-dict hooks
  present the one-device keys and shapes, so checkpoints move between layouts.
"""
from __future__ import annotations

import contextlib
import keyword
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import fx, nn

from .. import layers
from ..errors import LoweringError, UsageError
from ..ir import Graph, Node
from .builders import BUILDERS
from .codegen import generate
from .devices import DeviceLike, amp_dtype, resolve_devices
from .modules import TowerConv2d, TowerLocal, TowerLRN
from .options import fused_lrn_unavailable, tower_choice, tower_ops
from .towers import TowerSplit, canonical_keys, own_slice, tower_module

# Producers whose output an in-place ReLU may overwrite: a fresh tensor their backward does not need.
_INPLACE_SAFE = {"conv", "fc", "batchnorm", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool",
                 "global_avgpool", "add", "concat"}
_RESERVED = {"training"}  # nn.Module assigns it after construction


# ---------------------------------------------------------------------------------- entry point

def lower(graph: Graph, devices: Sequence[DeviceLike] | DeviceLike | None = None, *, seed: int | None = None,
          logits: bool = False, channels_last: bool = False, compile: bool = False,
          amp: str | None = None, towers: dict[str, str] | None = None) -> "LoweredNet":
    """Build the module for a checked graph (see docs/lowering.md for the contract)."""
    placed = tuple(resolve_devices(graph, devices))
    ops = tower_ops(towers, placed[0].type if placed else "cpu", amp)
    if ops["lrn"] == "fused" and (why := fused_lrn_unavailable(placed[0].type if placed else "cpu")):
        raise UsageError(f"tower_ops['lrn'] = 'fused' is {why}; use band, pool or slices here")
    options = Options(placed, logits, amp_dtype(amp), channels_last, ops)
    model = LoweredNet.build(graph, _module_tree(graph, options, seed), options)
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


def build_node(graph: Graph, node: Node, multi: bool, consumers: dict[str, list[Node]] | None = None,
               ops: dict[str, str] | None = None) -> nn.Module:
    """The one-device module for a layer (built on the CPU, the spec's init applied); `ops` says how
    a split's towers run on one device (options.TOWER_OPS; N devices split the module instead)."""
    build = BUILDERS.get(node.kind)
    if build is None:
        raise LoweringError(f"{node.name}: no PyTorch lowering for layer kind '{node.kind}'")
    module = build(node)
    if node.kind == "relu" and node.params.get("slope", 0.0) >= 0 and \
            _inplace_ok(graph, node, multi, consumers or graph.consumers()):
        module.inplace = True
    if not node.partitioned:
        return module
    towers, ops = graph.towers[node.towers].count, ops or tower_ops(None)
    if multi:
        return TowerLocal(module, towers) if layers.lookup(node.kind).mixes_channels else module
    if isinstance(module, nn.LocalResponseNorm) and ops["lrn"] in ("band", "pool", "fused"):
        return TowerLRN(module.size, module.alpha, module.beta, module.k, towers=towers,
                        channels=node.meta["in_shapes"][0][0], method=ops["lrn"])
    if layers.lookup(node.kind).mixes_channels:
        return TowerLocal(module, towers)
    if isinstance(module, nn.Conv2d) and own_slice(node) and tower_choice(ops, "conv", module.kernel_size) == "split":
        return _split_conv(module, towers)
    return module


def _split_conv(conv: nn.Conv2d, towers: int) -> nn.Conv2d:
    """The grouped conv as TowerConv2d (one conv per tower), with the same weights (built on the meta
    device, so no initialisation draws from the seeded RNG)."""
    split = TowerConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None, towers=towers,
                        pads=getattr(conv, "pads", (0, 0, 0, 0)), device="meta")
    split.load_state_dict(conv.state_dict(), assign=True)
    return split


def _inplace_ok(graph: Graph, node: Node, multi: bool, consumers: dict[str, list[Node]]) -> bool:
    src = graph.node(node.inputs[0])
    if src.kind not in _INPLACE_SAFE or len(consumers[src.name]) != 1:
        return False
    # N devices: a tensor replicated into a split may be the same object in every tower.
    return not (multi and node.replicated)

# ---------------------------------------------------------------------------------- the module tree

def _place(graph: Graph, node: Node, module: nn.Module, devices: Sequence[torch.device]) -> nn.Module:
    """The module on its device: one device as is; on N devices a split layer becomes a TowerSplit."""
    if len(devices) <= 1 or not node.towers:
        return module.to(devices[0]) if devices else module
    n = len(devices)
    with torch.random.fork_rng(devices=[]):  # the shares' throw-away init must not move the caller's RNG
        shares = [tower_module(graph, node, module, t, n) for t in range(n)]
    return TowerSplit([m for m, _ in shares], devices, [span for _, span in shares])


def _module_tree(graph: Graph, options: "Options", seed: int | None) -> nn.Module:
    """Every layer's module, initialised from `seed`, placed on its device(s), under its path."""
    consumers, multi = graph.consumers(), len(options.devices) > 1
    with seeded(seed):
        modules = {n.name: build_node(graph, n, multi, consumers, options.towers) for n in graph if n.kind != "input"}
    return _layer_tree(graph, {name: _place(graph, graph.node(name), m, options.devices) for name, m in modules.items()})


def _layer_tree(graph: Graph, modules: dict[str, nn.Module]) -> nn.Module:
    """Every layer registered under its module path: a block instance's layers nest in a plain
    nn.Module of their own, so state-dict keys are the dotted layer names (`inception_3a.b1.conv`)."""
    root = nn.Module()
    for name, module in modules.items():
        parts = graph.node(name).path
        if any(p in _RESERVED or not p for p in parts):
            raise LoweringError(f"layer name '{name}' cannot be a PyTorch module name; rename it")
        parent = root
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
    return root


# ---------------------------------------------------------------------------------- the module

@dataclass(frozen=True)
class Options:
    """How a graph was lowered (kept in `model.meta["netdsl"]`, which fx copies with the module)."""

    devices: tuple[torch.device, ...]
    logits: bool
    amp: torch.dtype | None
    channels_last: bool
    towers: dict[str, str]  # how towers run on one device (options.TOWER_OPS)


@dataclass(frozen=True)
class Lowered:
    ir: Graph
    options: Options


class LoweredNet(fx.GraphModule):
    """A spec lowered to PyTorch: an fx GraphModule whose submodules are the spec's layers and whose
    `forward` is generated code (`print(model.code)`); see docs/lowering.md for the contract."""

    def __init__(self, root: nn.Module | dict, graph: fx.Graph, class_name: str = "LoweredNet") -> None:
        super().__init__(root, graph, class_name)
        if isinstance(root, nn.Module):
            # fx copies only the modules the code calls, into plain nn.Module shells; keep the tree as
            # built instead (block scopes in spec order, TowerSplits with their state-dict hooks).
            self._modules.clear()
            self._modules.update(root._modules)
            for node in graph.nodes:
                if node.op == "call_module" and node.target in root.__dict__:  # an alias (see _alias)
                    self.__dict__[node.target] = root.__dict__[node.target]

    @classmethod
    def build(cls, ir: Graph, root: nn.Module, options: Options) -> "LoweredNet":
        skip = _trailing_softmaxes(ir) if options.logits else ()
        graph = _code(ir, root, options, skip)
        model = cls(root, graph, class_name=_class_name(ir.name))
        model.meta["netdsl"] = Lowered(ir, options)
        if len(options.devices) > 1:
            model.register_load_state_dict_post_hook(canonical_keys)
        return model

    # -- public API

    @property
    def ir(self) -> Graph:
        """The checked netdsl IR this module was lowered from (`model.graph` is the fx graph)."""
        return self._lowered.ir

    @property
    def devices(self) -> list[torch.device]:
        return list(self._lowered.options.devices)

    @property
    def output_device(self) -> torch.device | None:
        devices = self._lowered.options.devices
        return devices[0] if devices else None

    @property
    def ends_in_softmax(self) -> bool:
        return bool(_trailing_softmaxes(self.ir))

    @property
    def output_names(self) -> list[str]:
        """The layers whose outputs forward returns (a trailing softmax's input when logits=True)."""
        skip = _trailing_softmaxes(self.ir) if self._lowered.options.logits else ()
        return [self.ir.node(n.name).inputs[0] if n.name in skip else n.name for n in self.ir.outputs()]

    def layer(self, name: str) -> nn.Module:
        """The submodule of a spec layer; a split layer on N devices is its TowerSplit."""
        if name not in self.ir or self.ir.node(name).kind == "input":
            raise KeyError(f"{self.ir.name} has no layer '{name}'")
        module: nn.Module = self
        for part in self.ir.node(name).path:
            module = module._modules[part]  # type: ignore[assignment]
        return module

    def logits(self, *inputs: torch.Tensor) -> Any:
        """The outputs before a trailing softmax (the same as forward when there is none)."""
        if not self.ends_in_softmax or self._lowered.options.logits:
            return self(*inputs)
        head = self.__dict__.get("_logits_module")
        if head is None:  # generated on first use; it calls this module's own layers
            graph = _code(self.ir, self, self._lowered.options, _trailing_softmaxes(self.ir))
            head = self.__dict__["_logits_module"] = fx.GraphModule(self, graph, "logits")
        return head(*inputs)

    @property
    def _lowered(self) -> Lowered:
        return self.meta["netdsl"]

    def __reduce__(self) -> tuple:
        """Pickle as (IR, options, weights) and lower again on load: the code is derived, not data."""
        return _unpickle, (self.ir, self._lowered.options, self.state_dict(), self.training)

    def __deepcopy__(self, memo: dict) -> "LoweredNet":
        copied = super().__deepcopy__(memo)
        copied.__dict__.pop("_logits_module", None)  # it would call the original's layers
        return copied


def _unpickle(ir: Graph, options: Options, state: dict, training: bool) -> LoweredNet:
    model = LoweredNet.build(ir, _module_tree(ir, options, seed=0), options)  # (seeded: the global RNG stays)
    if options.channels_last:
        model.to(memory_format=torch.channels_last)
    model.load_state_dict(state)
    return model.train(training)


def _code(ir: Graph, root: nn.Module, options: Options, skip: Sequence[str]) -> fx.Graph:
    spans = {}
    for node in ir:
        if node.kind != "input" and len(options.devices) > 1 and node.towers:
            split = _resolve(root, ".".join(node.path))
            spans[node.name] = split.spans
    graph = generate(ir, options.devices, skip=skip, amp=options.amp, channels_last=options.channels_last,
                     spans=spans)
    _alias(graph, root)
    return graph


def _alias(graph: fx.Graph, root: nn.Module) -> None:
    """A layer named like an attribute of the module (`eval`, `to`, `code`) stays registered under its
    name (its state-dict key is `eval.weight`), but the code calls it through an unregistered alias
    in the instance's __dict__: `self.eval(x)` would call the method."""
    for node in graph.nodes:
        if node.op == "call_module" and any(hasattr(LoweredNet, part) or part in _INSTANCE_ATTRS
                                            for part in node.target.split(".")):
            alias = "layer_" + re.sub(r"\W", "_", node.target)
            root.__dict__[alias] = _resolve(root, node.target)
            node.target = alias


def _resolve(root: nn.Module, target: str) -> nn.Module:
    module = root
    for part in target.split("."):
        module = module._modules[part]  # type: ignore[assignment]
    return module


_INSTANCE_ATTRS = {"meta", "training"}  # set on every GraphModule instance


def _class_name(name: str) -> str:
    text = re.sub(r"\W", "_", name)
    return text if text.isidentifier() and not keyword.iskeyword(text) else f"Net_{text}"


def _trailing_softmaxes(graph: Graph) -> tuple[str, ...]:
    return tuple(n.name for n in graph.outputs() if n.kind == "softmax")
