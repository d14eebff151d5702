"""Lowering: a checked IR Graph -> PyTorch. `lower` builds a LoweredNet (net.py) from one module per
layer (builders.py, modules.py), with towers on one device or on N (towers.py, devices.py);
export.py saves it as TorchScript or ONNX.

Everything here imports torch, except options.py (the settings' values, read by training's config
and the CLI without torch); so the names below are imported when first used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "lower": "net", "LoweredNet": "net", "build_node": "net", "seeded": "net",
    "TowerSplit": "towers", "BUILDERS": "builders", "NO_BUILDER": "builders",
    "resolve_devices": "devices", "check_device": "devices", "pick_devices": "devices", "amp_dtype": "devices",
    "export_model": "export", "example_inputs": "export",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
