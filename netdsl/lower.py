"""Lowering: a checked IR Graph -> a torch.nn.Module that computes the same network.

Analysis and code generation are kept apart, as in torch.fx: the passes decided every shape, group
and tower placement; this module only reads `node.params` / `node.meta`, builds one module per layer
through the registry (netdsl/torch_build.py), and turns the graph into a plan of steps that
`LoweredNet.forward` runs in order.

Two layouts, same weights:
- one device: a split's tower-local conv/fc are grouped ops (groups x towers), channel-mixing layers
  without weights (LRN, softmax) run on each tower's channel slice and are concatenated;
- N devices (one per tower): every split layer becomes a `TowerSplit` holding one module per tower on
  its device, with explicit copies where a layer reads other towers. State-dict hooks present the
  one-device keys and shapes, so checkpoints move between layouts.
"""
from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from . import layers
from .ir import Graph, Node
from .layers import fmt_shape
from .source import UsageError
from .torch_build import GroupedLinear, Linear, PaddedConv2d

DeviceLike = str | torch.device
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Producers whose output an in-place ReLU may overwrite: a fresh tensor their backward does not need.
_INPLACE_SAFE = {"conv", "fc", "batchnorm", "maxpool", "avgpool", "adaptive_avgpool", "adaptive_maxpool",
                 "global_avgpool", "add", "concat"}
# Layers without weights that mix channels, so in a split each tower must see only its own slice.
_CHANNEL_MIXING = {"lrn", "softmax"}
_RESERVED = {"training"}  # nn.Module assigns it after construction


# torchvision.models.alexnet() module paths -> layer names of specs/alexnet-torchvision.net.
TORCHVISION_ALEXNET = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
                       "features.10": "conv5", "classifier.1": "fc6", "classifier.4": "fc7", "classifier.6": "fc8"}


def rename_state_dict(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """Rename keys by their module path: with TORCHVISION_ALEXNET, `features.0.weight` -> `conv1.weight`."""
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module not in names:
            raise KeyError(f"no layer name for '{key}' in the name map")
        out[f"{names[module]}.{leaf}"] = value
    return out


class DeviceError(UsageError):
    """The devices asked for do not exist or do not fit the spec's towers."""


class LoweringError(UsageError):
    """A checked spec that cannot be lowered as asked (the message names the layer), e.g. a cross layer
    whose groups do not line up with the devices' towers."""


# ---------------------------------------------------------------------------------- entry point

def lower(graph: Graph, devices: Sequence[DeviceLike] | DeviceLike | None = None, *, seed: int | None = None,
          logits: bool = False, channels_last: bool = False, compile: bool = False,
          amp: str | None = None) -> "LoweredNet":
    """Build the module for a checked graph (see docs/lowering.md for the contract)."""
    if amp is not None and amp not in AMP_DTYPES:
        raise UsageError(f"amp must be one of {', '.join(AMP_DTYPES)} or None, got {amp!r}")
    placed = resolve_devices(graph, devices)
    with seeded(seed):
        modules = {n.name: build_node(graph, n, multi=len(placed) > 1) for n in graph if n.kind != "input"}
    model = LoweredNet(graph, modules, placed, logits=logits, amp=amp, channels_last=channels_last)
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


def build_node(graph: Graph, node: Node, multi: bool) -> nn.Module:
    """The one-device module for a layer (built on the CPU, the spec's init applied)."""
    kind = layers.lookup(node.kind)
    if kind is None or kind.build is None:
        raise LoweringError(f"{node.name}: no PyTorch lowering for layer kind '{node.kind}'")
    module = kind.build(node)
    if node.kind == "relu" and node.params.get("slope", 0.0) >= 0 and _inplace_ok(graph, node, multi):
        module.inplace = True
    if node.kind in _CHANNEL_MIXING and node.meta.get("placement") == "partitioned":
        module = TowerLocal(module, graph.towers[node.towers].count)
    return module


def _inplace_ok(graph: Graph, node: Node, multi: bool) -> bool:
    src = graph.node(node.inputs[0])
    if src.kind not in _INPLACE_SAFE or len(graph.consumers()[src.name]) != 1:
        return False
    # N devices: a tensor replicated into a split may be the same object in every tower.
    return not (multi and node.towers and node.meta.get("placement") == "replicated")


# ---------------------------------------------------------------------------------- devices

def resolve_devices(graph: Graph, devices: Sequence[DeviceLike] | DeviceLike | None) -> list[torch.device]:
    """[] for 'build on the CPU, the caller moves it'; one device; or one device per tower."""
    if devices is None:
        return []
    if isinstance(devices, (str, torch.device)):
        devices = [devices]
    placed = [check_device(d) for d in devices]
    if len(placed) <= 1:
        if not placed:
            raise DeviceError("devices is empty: give None, one device, or one device per tower")
        return placed
    counts = sorted({t.count for t in graph.towers.values()})
    if not counts:
        raise DeviceError(f"{graph.name} has no towers, so it runs on one device; got {len(placed)} devices")
    if counts != [len(placed)]:
        want = " or ".join(str(c) for c in counts)
        raise DeviceError(f"{graph.name} has {want} towers: give 1 device or {want}, got {len(placed)}")
    return placed


def check_device(device: DeviceLike) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"'{device}' is not a device name (e.g. 'cpu', 'cuda:0')") from None
    if dev.type in ("cpu", "meta"):
        return torch.device(dev.type)
    backend = getattr(torch, dev.type, None)
    if dev.type == "mps":
        available = torch.backends.mps.is_available()
    else:
        available = bool(backend and getattr(backend, "is_available", lambda: False)())
    count = backend.device_count() if available and hasattr(backend, "device_count") else int(available)
    index = dev.index if dev.index is not None else 0
    if index >= count:
        have = f"{count} {dev.type} device{'s' if count != 1 else ''}" if available else f"no {dev.type} support"
        raise DeviceError(f"device '{device}' does not exist: this machine has {have}")
    return torch.device(dev.type, index)


# ---------------------------------------------------------------------------------- towers on one device

class TowerLocal(nn.Module):
    """Runs `inner` on each tower's channel slice separately (LRN or softmax inside a split)."""

    def __init__(self, inner: nn.Module, towers: int) -> None:
        super().__init__()
        self.inner, self.towers = inner, towers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Per-slice calls, not one call on a (batch * towers, ...) view: on the CPU that view makes
        # PyTorch's LRN 7-17% slower (fwd + bwd), and slices keep a channels_last layout.
        return torch.cat([self.inner(part) for part in x.chunk(self.towers, dim=1)], dim=1)

    def extra_repr(self) -> str:
        return f"towers={self.towers}"


# ---------------------------------------------------------------------------------- towers on N devices

class TowerSplit(nn.Module):
    """One split layer over N devices: `towers[t]` computes tower t's output channels on devices[t].

    Its state dict shows the one-device keys and shapes (`weight`, not `towers.0.weight`): slices are
    concatenated along dim 0 (output channels) on save and split on load.
    """

    def __init__(self, towers: list[nn.Module], devices: Sequence[torch.device],
                 spans: Sequence[tuple[int, int] | None]) -> None:
        super().__init__()
        self.devices, self.spans = tuple(devices), tuple(spans)
        self.towers = nn.ModuleList(m.to(d) for m, d in zip(towers, devices))
        self.register_state_dict_post_hook(_merge_towers)
        self.register_load_state_dict_pre_hook(_split_towers)

    def forward(self, *args: Any) -> Any:
        raise RuntimeError("a TowerSplit runs through its LoweredNet's plan, one tower at a time")

    def extra_repr(self) -> str:
        return f"devices={[str(d) for d in self.devices]}"


def _merge_towers(module: TowerSplit, state: dict, prefix: str, local_metadata: dict) -> None:
    n, head = len(module.towers), f"{prefix}towers.0."
    for name in [k[len(head):] for k in list(state) if k.startswith(head)]:
        parts = [state.pop(f"{prefix}towers.{t}.{name}") for t in range(n)]
        state[prefix + name] = torch.cat([p.to(parts[0].device) for p in parts]) if parts[0].dim() else parts[0]
    meta = getattr(state, "_metadata", None)
    if meta is not None and head[:-1] in meta:
        meta[prefix[:-1]] = dict(meta[head[:-1]])


def _split_towers(module: TowerSplit, state: dict, prefix: str, local_metadata: dict, strict: bool,
                  missing: list[str], unexpected: list[str], error_msgs: list[str]) -> None:
    n = len(module.towers)
    for name, value in module.towers[0].state_dict(keep_vars=True).items():
        key = prefix + name
        if key not in state:
            continue  # the towers report it missing; LoweredNet renames it back
        full = state.pop(key)
        want = (value.shape[0] * n, *value.shape[1:]) if value.dim() else ()
        if not isinstance(full, torch.Tensor) or tuple(full.shape) != want:
            got = tuple(full.shape) if isinstance(full, torch.Tensor) else type(full).__name__
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {got} from checkpoint, "
                              f"the shape in current model is {torch.Size(want)}.")
            chunks = [dict(m.state_dict(keep_vars=True))[name].detach() for m in module.towers]
        else:
            chunks = list(full.chunk(n)) if full.dim() else [full] * n
        for t, chunk in enumerate(chunks):
            state[f"{prefix}towers.{t}.{name}"] = chunk


_TOWER_KEY = re.compile(r"\.towers\.\d+\.")


def _canonical_keys(module: nn.Module, incompatible: Any) -> None:
    for keys in (incompatible.missing_keys, incompatible.unexpected_keys):
        renamed = list(dict.fromkeys(_TOWER_KEY.sub(".", k) for k in keys))
        keys[:] = renamed


def tower_module(graph: Graph, node: Node, module: nn.Module, t: int, n: int) -> tuple[nn.Module, tuple | None]:
    """Tower t's share of a one-device layer module, and the input range it reads (None: all of it)."""
    if isinstance(module, TowerLocal):
        return copy.deepcopy(module.inner), None
    if isinstance(module, nn.Conv2d):
        return _conv_share(node, module, t, n)
    if isinstance(module, nn.Linear):
        return _fc_share(node, module, t, n)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        share = type(module)(module.num_features // n, module.eps, module.momentum, module.affine,
                             module.track_running_stats)
        return _copy_rows(module, share, t, n), None
    if not any(True for _ in module.parameters()) and not any(True for _ in module.buffers()):
        return copy.deepcopy(module), None
    raise LoweringError(f"{node.name}: cannot split a {type(module).__name__} across towers")


def _own_slice(node: Node) -> bool:
    """A tower-local weight layer reading a partitioned tensor: tower t reads only slice t."""
    return node.meta.get("tower_groups", 1) > 1


def _input_range(node: Node, n_in: int, n_out: int, g: int, t: int, n: int) -> tuple[int, int, int]:
    """(lo, hi, groups) of the full input that tower t's output channels read, for a cross or
    replicated-input layer with `g` groups."""
    if g == 1:
        return 0, n_in, 1
    per_group, per_tower = n_out // g, n_out // n
    if per_tower % per_group == 0:
        k = per_tower // per_group
        return t * k * n_in // g, (t + 1) * k * n_in // g, k
    if per_group % per_tower == 0:
        j = t * per_tower // per_group
        return j * n_in // g, (j + 1) * n_in // g, 1
    raise LoweringError(f"{node.name}: its {g} groups of {per_group} outputs do not line up with {n} towers "
                        f"of {per_tower}; use one device, or groups that divide (or are divided by) {n}")


def _conv_share(node: Node, conv: nn.Conv2d, t: int, n: int) -> tuple[nn.Module, tuple | None]:
    if _own_slice(node):
        lo, hi, g = 0, conv.in_channels // n, conv.groups // n
        span = None
    else:
        lo, hi, g = _input_range(node, conv.in_channels, conv.out_channels, conv.groups, t, n)
        span = None if (lo, hi) == (0, conv.in_channels) else (lo, hi)
    common = dict(in_channels=hi - lo, out_channels=conv.out_channels // n, kernel_size=conv.kernel_size,
                  stride=conv.stride, dilation=conv.dilation, groups=g, bias=conv.bias is not None)
    if isinstance(conv, PaddedConv2d):
        share: nn.Conv2d = PaddedConv2d(padding=0, pads=conv.pads, **common)
    else:
        share = nn.Conv2d(padding=conv.padding, **common)
    return _copy_rows(conv, share, t, n), span


def _fc_share(node: Node, fc: nn.Linear, t: int, n: int) -> tuple[nn.Module, tuple | None]:
    g = getattr(fc, "groups", 1)
    total_in = getattr(fc, "total_in", fc.in_features)
    if _own_slice(node):
        lo, hi, g_t, span = 0, total_in // n, g // n, None
    else:
        lo, hi, g_t = _input_range(node, total_in, fc.out_features, g, t, n)
        span = None if (lo, hi) == (0, total_in) else (lo, hi)
    out, bias = fc.out_features // n, fc.bias is not None
    share: nn.Linear = Linear(hi - lo, out, bias) if g_t == 1 else GroupedLinear(hi - lo, out, g_t, bias)
    return _copy_rows(fc, share, t, n), span


def _copy_rows(full: nn.Module, share: nn.Module, t: int, n: int) -> nn.Module:
    """Give `share` tower t's rows (output channels) of every parameter and buffer of `full`."""
    rows = {}
    for name, value in full.state_dict().items():
        if value.dim():
            size = value.shape[0] // n
            rows[name] = value[t * size:(t + 1) * size].clone()
        else:
            rows[name] = value.clone()
    share.load_state_dict(rows)
    return share


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

    def __call__(self, env: list) -> None:
        args = [self._arg(env[i], g, f) for i, g, f in zip(self.args, self.gather, self.first)]
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
    flatten: bool  # fc: the span is over flattened features
    devices: tuple[torch.device, ...]

    def __call__(self, env: list) -> None:
        outs = []
        for t, (module, device) in enumerate(zip(self.modules, self.devices)):
            args = [self._arg(env[i], mode, t, device) for i, mode in zip(self.args, self.modes)]
            span = self.spans[t]
            if span is not None:
                x = args[0].flatten(1) if self.flatten else args[0]
                args[0] = x[:, span[0]:span[1]]
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
                 logits: bool = False, amp: str | None = None, channels_last: bool = False) -> None:
        super().__init__()
        # Every plain attribute is set before the layers are registered: a layer may share its name.
        self._graph, self._devices = graph, devices
        self._slots = {n.name: i for i, n in enumerate(graph)}
        self._input_nodes = graph.inputs()
        self._amp = AMP_DTYPES[amp] if amp else None
        self._channels_last = channels_last
        self._softmaxes = _trailing_softmaxes(graph)
        multi = len(devices) > 1
        placed = {name: self._place(graph.node(name), module, multi) for name, module in modules.items()}
        for name, module in placed.items():
            self._register(name, module)
        self._full_plan = self._make_plan(placed, skip=())
        self._logits_plan = self._make_plan(placed, skip=self._softmaxes)
        self._plan = self._logits_plan if logits else self._full_plan
        if multi:
            self.register_load_state_dict_post_hook(_canonical_keys)

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
        for part in name.split("."):
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

    def _register(self, name: str, module: nn.Module) -> None:
        parts = name.split(".")
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
        gather = tuple(multi and _partitioned(graph.nodes[i]) for i in outputs)
        return Plan(tuple(steps), tuple(outputs), gather, _frees(steps, outputs))

    def _step(self, node: Node, module: nn.Module, multi: bool) -> Step | TowerStep:
        args = tuple(self._slots[i] for i in node.inputs)
        srcs = [self._graph.node(i) for i in node.inputs]
        if not (multi and node.towers):
            return Step(module, args, self._slots[node.name],
                        gather=tuple(multi and _partitioned(s) for s in srcs),
                        first=tuple(multi and bool(s.towers) and not _partitioned(s) for s in srcs),
                        device=self._devices[0] if self._devices else None)
        assert isinstance(module, TowerSplit)
        return TowerStep(tuple(module.towers), args, self._slots[node.name],
                         modes=tuple(_tower_mode(node, s) for s in srcs), spans=module.spans,
                         flatten=node.kind == "fc", devices=tuple(self._devices))

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


def _partitioned(node: Node) -> bool:
    return bool(node.towers) and node.meta.get("placement") == "partitioned"


def _tower_mode(node: Node, src: Node) -> str:
    """How tower t gets one argument of a split layer on N devices."""
    mixing = _partitioned(node) and not layers.lookup(node.kind).splits_channels
    if not src.towers:  # from outside the split: replicated onto every tower's device
        return "copy_slice" if mixing else "copy"
    if _partitioned(src):
        kind = layers.lookup(node.kind)
        return "gather" if kind.splits_channels and not _own_slice(node) else "own"
    return "slice" if mixing else "own"


def _trailing_softmaxes(graph: Graph) -> tuple[str, ...]:
    return tuple(n.name for n in graph.outputs() if n.kind == "softmax")
