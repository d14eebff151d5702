"""Towers on N devices: each split layer becomes a TowerSplit holding one module per tower, each on its
device, with the one-device state-dict keys and shapes (so checkpoints move between layouts).

`tower_module` cuts tower t's share out of the one-device module: its output channels (rows) of every
parameter, and for a cross or grouped layer the input range those channels read.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import LoweringError
from ..ir import Graph, Node
from .modules import GroupedLinear, PaddedConv2d, TowerLocal


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


def canonical_keys(module: nn.Module, incompatible: Any) -> None:
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


def own_slice(node: Node) -> bool:
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
    if own_slice(node):
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
    total_in = fc.in_features  # GroupedLinear's too: all groups
    if own_slice(node):
        lo, hi, g_t, span = 0, total_in // n, g // n, None
    else:
        lo, hi, g_t = _input_range(node, total_in, fc.out_features, g, t, n)
        span = None if (lo, hi) == (0, total_in) else (lo, hi)
    out, bias = fc.out_features // n, fc.bias is not None
    share: nn.Linear = nn.Linear(hi - lo, out, bias) if g_t == 1 else GroupedLinear(hi - lo, out, g_t, bias)
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
