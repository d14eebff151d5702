"""Devices and precision: what `to_torch(devices=..., amp=...)` and `netdsl train --device/--amp` accept.

One vocabulary per setting, checked here once: `check_device` for a device name (the API and the CLI
give the same message), `pick_devices` for the CLI's `--device` string, `amp_dtype` for the
mixed-precision values of options.py.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import DeviceError
from ..ir import Graph
from .options import check_amp

DeviceLike = str | torch.device
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(amp: str | None) -> torch.dtype | None:
    """The autocast dtype of an `amp` value (None for "none")."""
    value = check_amp(amp)
    return AMP_DTYPES.get(value)


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


def pick_devices(spec: str, local_rank: int = 0) -> list[torch.device]:
    """`--device`: `auto`, `cpu`, `cuda` (this process's GPU under torchrun), `cuda:1`, or one device
    per tower separated by commas (`cuda:0,cuda:1`)."""
    names = [s.strip() for s in spec.split(",") if s.strip()] or ["auto"]
    devices = []
    for name in names:
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        if name == "cuda" and torch.cuda.is_available():
            name = f"cuda:{local_rank % torch.cuda.device_count()}"
        try:
            devices.append(check_device(name))
        except DeviceError as err:
            raise DeviceError(f"--device {spec}: {err}") from None
    return devices
