"""Measuring a training step's memory, for tests/test_memory.py and bench/memory_bench.py.

- measured_saved: the activations autograd saves for backward (saved_tensors_hooks).
- cpu_step_peak: the peak of one SGD-with-momentum training step on the CPU. The CPU keeps no running
  count of its allocations; PyTorch's profiler does (`profile_memory=True`: each allocation and free is
  an instant "[memory]" event of the trace, with the allocator's running total). The running total
  starts when the profiler does, so the peak is what was live before the step (the weights, buffers,
  momentum buffers and the batch: their sizes) plus the total's largest rise during the step. Gradients
  are set to None before, so that no block allocated earlier is freed inside (the profiler cannot count
  those frees).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch


def measured_saved(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in one training forward, parameters excluded
    (autocast's copies of them included, as they are new tensors)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def cpu_step_peak(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Peak bytes of one training step (forward, cross-entropy, backward, SGD with momentum) on the CPU,
    the second step: the momentum buffers exist from its start, as in every later step."""
    from torch.profiler import ProfilerActivity, profile
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    opt.zero_grad(set_to_none=True)
    live = [*model.parameters(), *model.buffers(), *(s["momentum_buffer"] for s in opt.state.values()), x, y]
    before = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in live}.values())
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("name") == "[memory]"]
    events.sort(key=lambda e: e["ts"])
    start = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
    return before + max(e["args"]["Total Allocated"] - start for e in events)
