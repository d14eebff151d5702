"""Checkpoints: atomic writes, safe loads (weights_only=True), RNG states.

A checkpoint holds only tensors and plain Python values, so `torch.load(..., weights_only=True)`
reads it: the model's state dict (keys as in the spec, never a `module.` prefix), the optimizer,
scheduler and AMP scaler, the position in the run, every process's RNG states, the resolved
configuration, the class names, the pixel statistics and the spec's text.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..lowering import weights as weights_file
from ..lowering.weights import load_weights, weights_checksum
from .rundir import write_atomic

FORMAT = "netdsl-checkpoint"
VERSION = 1
RUN_KEYS = ("model", "config", "epoch", "step", "ranks", "world")  # what resuming reads


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """A crash leaves either the old checkpoint or the new one, never half of one (rundir.write_atomic);
    the weights carry a checksum that `load` verifies."""
    state = with_checksum(state)
    write_atomic(path, save=lambda f: torch.save(state, f))


def with_checksum(state: dict[str, Any]) -> dict[str, Any]:
    """The state with the SHA-256 of its weights (hashed once, however many files it is saved as)."""
    if "model" not in state or "checksum" in state:
        return state
    return {**state, "checksum": weights_checksum(state["model"])}


def load(path: str | os.PathLike) -> dict[str, Any]:
    """A run's checkpoint (RUN_DIR means RUN_DIR/last.pt), or a state dict as {"model": weights}."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    state = weights_file.read(path)
    if state.get("format") != FORMAT:
        return {"model": weights_file.state_dict(state, path)}
    missing = [k for k in RUN_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: a netdsl checkpoint without {', '.join(missing)} (damaged, or not "
                              "written by netdsl train)")
    return state  # its checksum is verified when the weights are taken out (model_state)


def model_state(state: dict[str, Any], where: str | os.PathLike = "the checkpoint") -> dict[str, torch.Tensor]:
    """The model's weights (checksum verified), with a `module.` prefix (DDP / DataParallel) removed."""
    return weights_file.state_dict(state, where)


__all__ = ["FORMAT", "VERSION", "save_atomic", "load", "model_state", "load_weights", "rng_state",
           "set_rng_state", "CheckpointError"]


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
