"""Measuring a training step's memory, for tests/test_memory.py and bench/memory_bench.py.

- measured_saved: the activations autograd saves for backward (saved_tensors_hooks).
- cpu_step_peak: the peak of one SGD training step on the CPU, measured with PyTorch's profiler as
  `netdsl profile` measures it (netdsl/training/profile.py, cpu_peak_memory).
- optimizer_step_rise: what an optimizer step allocates beside the weights, gradients and state (its
  copies), for each optimizer in OPTIMIZER_STEPS, per-tensor or foreach.
"""
from __future__ import annotations

import torch

from netdsl.training.profile import Step, allocation_rise, cpu_peak_memory

OPTIMIZER_STEPS = {  # (the memory pass's name, weight decay): torch.optim's class and arguments
    ("sgd", False): ("SGD", {}), ("sgd", True): ("SGD", {"weight_decay": 5e-4}),
    ("momentum", True): ("SGD", {"momentum": 0.9, "weight_decay": 5e-4}),
    ("nesterov", False): ("SGD", {"momentum": 0.9, "nesterov": True}),
    ("nesterov", True): ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
    ("adam", False): ("Adam", {}), ("adam", True): ("Adam", {"weight_decay": 5e-4}),
    ("adamw", True): ("AdamW", {"weight_decay": 5e-4}),
}


def make_optimizer(model: torch.nn.Module, name: str, decay: bool, foreach: bool) -> torch.optim.Optimizer:
    cls, args = OPTIMIZER_STEPS[name, decay]
    return getattr(torch.optim, cls)(model.parameters(), lr=0.01, foreach=foreach, **args)


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


def cpu_step_peak(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  opt: torch.optim.Optimizer | None = None) -> int:
    """Peak bytes of one training step (forward, cross-entropy, backward, `opt`: SGD with momentum 0.9 if
    none) on the CPU, measured as `netdsl profile` does (profile.cpu_peak_memory), the second step: the
    optimizer state exists from its start, as in every later step."""
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = Step(model, [x], [y], opt, torch.amp.GradScaler("cpu", enabled=False))
    step.train()
    step.update()
    return cpu_peak_memory(step)


def optimizer_step_rise(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, decay: bool,
                        foreach: bool) -> int:
    """Bytes an optimizer step allocates at its peak (its second: the state exists), measured alone."""
    opt = make_optimizer(model, name, decay, foreach)
    for measure in (False, True):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if measure:
            return allocation_rise(opt.step)
        opt.step()
