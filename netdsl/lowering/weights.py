"""Reading weights into a lowered module: a netdsl checkpoint, or any state dict saved with torch.save
(bare, or under 'model' / 'state_dict', with or without DDP's `module.` prefix).

Files are read with `torch.load(..., weights_only=True)`: tensors and plain values only, never code.
Training's checkpoints (training/checkpoint.py) and `netdsl export --weights` both come through here.
"""
from __future__ import annotations

import hashlib
import re
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError


def read(path: str | os.PathLike) -> dict[str, Any]:
    """The dict a weights file holds; CheckpointError when it is missing or not a PyTorch file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint or state dict")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file, not a PyTorch state dict or checkpoint (a save cut short?)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (pickle, zip and unpickler errors all mean the same here)
        raise CheckpointError(f"{path}: {_why_unreadable(str(err))}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a PyTorch state dict or checkpoint (it holds a {type(state).__name__})")
    return state


def _why_unreadable(message: str) -> str:
    if any(s in message for s in ("invalid load key", "central directory", "not a zip file", "EOF",
                                  "Unsupported operand")):
        return "not a PyTorch state dict or checkpoint (truncated, or something else)"
    if "Weights only load failed" in message:
        return ("it holds Python objects besides tensors and plain values, and netdsl loads "
                "checkpoints with weights_only=True; save just the state dict")
    first = message.strip().splitlines()[0] if message.strip() else "it ends at once"
    return f"not a PyTorch state dict or checkpoint ({first})"


def weights_checksum(weights: dict[str, torch.Tensor]) -> str:
    """SHA-256 of every tensor's name, dtype, shape and bytes, saved with netdsl's checkpoints: one
    damaged after it was written (200 bytes overwritten still load, and evaluate to NaN) is refused."""
    h = hashlib.sha256()
    for key in sorted(weights):
        t = weights[key].detach().cpu().contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verify(state: dict[str, Any], where: str | os.PathLike) -> None:
    """CheckpointError when the weights do not match the checksum saved with them."""
    saved = state.get("checksum")
    if isinstance(saved, str) and isinstance(state.get("model"), dict) and weights_checksum(state["model"]) != saved:
        raise CheckpointError(f"{where}: the weights do not match the checksum saved with them: the file was "
                              "changed or damaged after it was written; use another checkpoint (best.pt, "
                              "epoch-NNN.pt)")


def state_dict(state: dict[str, Any], where: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model's weights in what `read` returned, with a `module.` prefix (DDP, DataParallel) removed."""
    verify(state, where)
    for key in ("model", "state_dict"):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    if not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{where}: not a netdsl checkpoint or a state dict")
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str | os.PathLike) -> None:
    """Load a state dict that must fit exactly; CheckpointError names what is missing, extra or misshapen."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for label, items in (("missing", missing), ("not in the net", unexpected),
                                      ("shape differs (weights vs net)", wrong)) if items]
        raise CheckpointError(f"{where} does not fit this spec: " + "; ".join(parts))
    model.load_state_dict(weights)


def load_file(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """`model.load_state_dict` from a file, with the checks above."""
    load_weights(model, state_dict(read(path), path), path)


def rename(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Another model's state dict under netdsl's layer names: each key is renamed by the first rule
    `(pattern, replacement)` whose regular expression matches the whole key (`re.fullmatch`). In the
    replacement, `{2}` is group 2 and `{2+1}` group 2 plus one (torchvision counts blocks from 0, a
    `repeat` from 1: `layer1.0.conv1.weight` -> `layer1.block_1.conv1.weight`). specs/zoo/torchvision.yaml
    holds the rules for torchvision's models (docs/zoo.md). A key no rule matches is an error naming it,
    never silently dropped."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    out: dict[str, torch.Tensor] = {}
    unmatched = []
    for key, value in state.items():
        for pattern, replacement in compiled:
            match = pattern.fullmatch(key)
            if match:
                new = _TEMPLATE.sub(lambda m: _group(match, m), replacement)
                if new in out:
                    raise CheckpointError(f"the name map sends two keys to '{new}' (the second is '{key}')")
                out[new] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise CheckpointError(f"no rule of the name map matches {len(unmatched)} key(s): "
                              + ", ".join(unmatched[:6]) + (" ..." if len(unmatched) > 6 else ""))
    return out


_TEMPLATE = re.compile(r"\{(\d+)([+-]\d+)?\}")


def _group(match: re.Match, field: re.Match) -> str:
    value = match.group(int(field.group(1)))
    return str(int(value) + int(field.group(2))) if field.group(2) else value


def fit(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    """load_weights, where a tensor may also come in another shape of the same layout and size: a Linear's
    [out, in] for a 1x1 convolution's [out, in, 1, 1] (ConvNeXt's pointwise layers), a [C] scale for [C, 1, 1]."""
    own = model.state_dict()
    weights = {k: v.reshape(own[k].shape) if k in own and v.shape != own[k].shape and v.numel() == own[k].numel()
               and _squeezed(v.shape) == _squeezed(own[k].shape) else v for k, v in weights.items()}
    load_weights(model, weights, where)


def _squeezed(shape: torch.Size) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)
