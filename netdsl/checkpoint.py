"""Checkpoints: atomic writes, safe loads (weights_only=True), RNG states.

A checkpoint holds only tensors and plain Python values, so `torch.load(..., weights_only=True)`
reads it: the model's state dict (keys as in the spec, never a `module.` prefix), the optimizer,
scheduler and AMP scaler, the position in the run, every process's RNG states, the resolved
configuration, the class names, the pixel statistics and the spec's text.
"""
from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .source import UsageError

FORMAT = "netdsl-checkpoint"
VERSION = 1


class CheckpointError(UsageError):
    """A checkpoint that cannot be read, or does not fit the net."""


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`:
    a crash leaves either the old checkpoint or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and unpickler errors all mean the same here
        raise CheckpointError(f"{path}: {_why_unreadable(str(err))}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a checkpoint or state dict")
    if state.get("format") != FORMAT:
        if all(torch.is_tensor(v) for v in state.values()):  # a bare state dict
            return {"model": state}
        raise CheckpointError(f"{path}: not a netdsl checkpoint or a state dict")
    return state


def _why_unreadable(message: str) -> str:
    if any(s in message for s in ("invalid load key", "central directory", "not a zip file", "EOF",
                                  "Unsupported operand")):
        return "not a PyTorch checkpoint file (truncated, or something else)"
    if "Weights only load failed" in message:
        return ("it holds Python objects besides tensors and plain values, and netdsl loads "
                "checkpoints with weights_only=True; save just the state dict")
    return f"not a readable checkpoint ({message.splitlines()[0]})"


def model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights, with a `module.` prefix (DDP / DataParallel checkpoints) removed."""
    weights = state["model"]
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    wrong = [f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in weights and weights[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                 for label, items in (("missing", missing), ("not in the net", unexpected),
                                      ("shape differs (checkpoint vs net)", wrong)) if items]
        raise CheckpointError(f"{where} does not fit this net: " + "; ".join(parts))
    model.load_state_dict(weights)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(_plain, np_state[2:])],
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
