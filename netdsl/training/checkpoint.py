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

from ..errors import CheckpointError
from ..lowering import weights as weights_file
from ..lowering.weights import load_weights

FORMAT = "netdsl-checkpoint"
VERSION = 1


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
    """A run's checkpoint (RUN_DIR means RUN_DIR/last.pt), or a state dict as {"model": weights}."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    state = weights_file.read(path)
    if state.get("format") != FORMAT:
        return {"model": weights_file.state_dict(state, path)}
    return state


def model_state(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's weights, with a `module.` prefix (DDP / DataParallel checkpoints) removed."""
    return weights_file.state_dict(state, "the checkpoint")


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
