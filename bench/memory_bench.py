"""Training memory: netdsl's static estimate (`netdsl check --batch N --dtype D`) against measurement.

- On the CPU (any machine): the activations autograd saves for backward, measured with
  torch.autograd.graph.saved_tensors_hooks (distinct storages, parameters excluded) over one training
  forward, against the estimate's `saved + weight copies`, at a small batch (the estimate is per image).
- On the CPU: the peak of one SGD-with-momentum training step, from the profiler's count of allocations,
  against the estimated peak, at batch 4, 64 and 256 where RAM and time allow.
- On the CPU: what one optimizer step allocates (its copies of the weights), for every optimizer and
  weight decay, per-tensor (the CPU's default) and foreach (CUDA's), against optimizer_temporaries.
- On CUDA: one SGD-with-momentum training step's `torch.cuda.max_memory_allocated()` (the second step,
  when the momentum buffers exist) against the estimated peak, batch 64 and 256, fp32 and bf16.

Nets: AlexNet (the paper's, and torchvision's), VGG-16 (specs/zoo/vgg16.net) and ResNet-50.

Reproduce:  python bench/memory_bench.py                    (CPU part; writes bench/RESULTS-memory.md)
            python bench/memory_bench.py --device cuda      (both parts, on a GPU; --no-cpu: the CUDA table alone)
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
from pathlib import Path

import torch

import netdsl
from netdsl.passes.memory import optimizer_temporaries, training_memory

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from measure_memory import OPTIMIZER_STEPS, cpu_step_peak, measured_saved, optimizer_step_rise  # noqa: E402

NETS = {"AlexNet (paper, 2 towers)": "specs/alexnet.net", "AlexNet (torchvision)": "specs/alexnet-torchvision.net",
        "VGG-16": "specs/zoo/vgg16.net", "ResNet-50": "specs/zoo/resnet50.net"}
MiB = 2 ** 20
CPU = torch.backends.cpu.get_cpu_capability().lower()


def cpu_rows(batch: int) -> list[str]:
    rows = []
    for label, spec in NETS.items():
        net = netdsl.load(ROOT / spec)
        for dtype in ("fp32", "bf16"):
            model = net.to_torch(seed=0, amp=None if dtype == "fp32" else dtype).train()
            x = torch.randn(batch, *net.graph.inputs()[0].params["shape"])
            got = measured_saved(model, x)
            m = training_memory(net.graph, batch, dtype, "momentum", "cpu")
            est = m.saved + m.weight_copies
            rows.append(f"| {label} | {dtype} | {batch} | {got / MiB:,.1f} | {est / MiB:,.1f} | {est / got:.3f} |")
            print(rows[-1], flush=True)
    return rows


# The CPU peak table at the goal's batch sizes (issue 15: 64 and 256) where this machine allows: a step
# whose estimated peak exceeds MEMORY_SHARE of the RAM, or whose multiply-adds exceed STEP_GMACS (about
# a minute a step on 2 AVX2 cores; bf16 convolutions are emulated without AVX-512 BF16 or AMX: a
# twentieth of that), is left out and listed.
MEMORY_SHARE, STEP_GMACS = 0.5, 1_000


def cpu_peak_rows(batches: tuple[int, ...]) -> tuple[list[str], list[str]]:
    rows, left_out = [], []
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for label, spec in NETS.items():
        net = netdsl.load(ROOT / spec)
        macs = sum(n.meta.get("macs", 0) for n in net.graph) / 1e9
        for dtype in ("fp32", "bf16"):
            for batch in batches:
                est = training_memory(net.graph, batch, dtype, "momentum", "cpu").peak
                budget = STEP_GMACS if dtype == "fp32" or "avx512" in CPU else STEP_GMACS / 20
                if est > MEMORY_SHARE * ram or batch * macs > budget:
                    left_out.append(f"{label} {dtype} batch {batch} ({est / 2 ** 30:.1f} GiB, "
                                    f"{batch * macs:,.0f} GMAC a step)")
                    continue
                model = net.to_torch(seed=0, amp=None if dtype == "fp32" else dtype, logits=True).train()
                x = torch.randn(batch, *net.graph.inputs()[0].params["shape"])
                y = torch.randint(0, net.graph.outputs()[0].shape[0], (batch,))
                peak = cpu_step_peak(model, x, y)
                rows.append(f"| {label} | {dtype} | {batch} | {peak / MiB:,.1f} | {est / MiB:,.1f} | {est / peak:.3f} |")
                print(rows[-1], flush=True)
                del model, x, y
    return rows, left_out


def optimizer_rows() -> list[str]:
    """The optimizer step's copies for torchvision's AlexNet (batch 2: the step does not depend on it)."""
    net = netdsl.load(ROOT / NETS["AlexNet (torchvision)"])
    sizes = [p.numel() for p in net.to_torch(seed=0).parameters()]
    params, largest = sum(sizes), max(sizes)
    x, y = torch.randn(2, 3, 224, 224), torch.randint(0, 1000, (2,))
    rows = []
    for name, decay in OPTIMIZER_STEPS:
        cells = []
        for foreach in (False, True):
            model = net.to_torch(seed=0, logits=True).train()
            got = optimizer_step_rise(model, x, y, name, decay, foreach)
            est = optimizer_temporaries(params, largest, name, decay, foreach)
            cells.append(f"{got / MiB:,.1f} | {est / MiB:,.1f}")
        rows.append(f"| {name} | {'yes' if decay else 'no'} | {' | '.join(cells)} |")
        print(rows[-1], flush=True)
    return rows


def cuda_rows(batches: tuple[int, ...]) -> list[str]:
    rows = []
    for label, spec in NETS.items():
        net = netdsl.load(ROOT / spec)
        for dtype in ("fp32", "bf16"):
            for batch in batches:
                peak = _cuda_peak(net, batch, dtype)
                est = training_memory(net.graph, batch, dtype, "momentum", "cuda").peak
                ratio = f"{est / peak:.3f}" if peak else "-"
                rows.append(f"| {label} | {dtype} | {batch} | {peak / MiB:,.0f} | {est / MiB:,.0f} | {ratio} |")
                print(rows[-1], flush=True)
    return rows


def _cuda_peak(net: netdsl.Net, batch: int, dtype: str) -> int:
    torch.cuda.empty_cache()
    model = net.to_torch("cuda", seed=0, amp=None if dtype == "fp32" else dtype, logits=True).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    shape = net.graph.inputs()[0].params["shape"]
    x = torch.randn(batch, *shape, device="cuda")
    y = torch.randint(0, net.graph.outputs()[0].shape[0], (batch,), device="cuda")
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, opt, x, y
    return peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--cpu-batch", type=int, default=4, help="batch of the saved-for-backward table")
    p.add_argument("--peak-batches", default="4,64,256", help="batches of the CPU peak table")
    p.add_argument("--no-cpu", dest="cpu", action="store_false",
                   help="the CUDA table alone (a GPU session's minutes; the CPU tables are in the repository)")
    p.add_argument("--out", default=str(ROOT / "bench" / "RESULTS-memory.md"))
    args = p.parse_args()
    skipped = ["| (not run: --no-cpu) | | | | | |"]
    cpu = cpu_rows(args.cpu_batch) if args.cpu else skipped
    cpu_peaks, left_out = cpu_peak_rows(tuple(map(int, args.peak_batches.split(",")))) if args.cpu else (skipped, [])
    optimizers = optimizer_rows() if args.cpu else skipped
    gpu = cuda_rows((64, 256)) if args.device == "cuda" else []
    when = datetime.date.today().isoformat()
    text = f"""# Training memory: the static estimate against measurement

Reproduce: `python bench/memory_bench.py` (CPU), `python bench/memory_bench.py --device cuda` (adds the
GPU table). Run {when}, torch {torch.__version__}, {platform.machine()}.

## Saved for backward (CPU, measured with saved_tensors_hooks)

| net | dtype | batch | measured MiB | estimate MiB | estimate / measured |
|---|---|---|---|---|---|
{chr(10).join(cpu)}

## Peak of a training step (CPU, SGD with momentum)

Measured with PyTorch's profiler (`profile_memory=True`: every allocation and free, with the
allocator's running total): what was live before the step (weights, buffers, momentum, the batch) plus
the total's largest rise during it (netdsl/training/profile.py, as `netdsl profile` measures it). The
estimate `as on cpu` (the CPU's tower ops, autocast rules and backward transients). Left out here (memory above half the RAM, or too slow: bf16 convolutions are
emulated on this CPU): {"; ".join(left_out) or "nothing"}.

| net | dtype | batch | measured MiB | estimate MiB | estimate / measured |
|---|---|---|---|---|---|
{chr(10).join(cpu_peaks)}

## The optimizer step's copies (CPU, torchvision's AlexNet)

What one optimizer step allocates beside the weights, gradients and state, measured alone with the
profiler, against `passes/memory.py:optimizer_temporaries`. PyTorch's optimizers loop over the
weights one at a time by default on the CPU (a copy lives for one weight: the largest, fc6's 144 MiB)
and use their foreach form on CUDA (a copy of every weight at once, 233 MiB); both forms run here. At
small batches this is the step's peak (the table above uses SGD with momentum and no weight decay,
which copies nothing; the paper's weight decay adds fc6's 144 MiB on the CPU, every weight on CUDA).

| optimizer | weight decay | per-tensor: measured MiB | estimate MiB | foreach: measured MiB | estimate MiB |
|---|---|---|---|---|---|
{chr(10).join(optimizers)}

## Peak of a training step (CUDA, `max_memory_allocated`, SGD with momentum)

""" + ("| net | dtype | batch | measured MiB | estimate MiB | estimate / measured |\n|---|---|---|---|---|---|\n"
       + "\n".join(gpu) + f"\n\nGPU: {torch.cuda.get_device_name()}.\n" if gpu else
       "Not measured yet: no GPU was available when this file was written. `bash bench/gpu_run.sh` runs it on one.\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
