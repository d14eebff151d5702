"""Hand-written GPU kernels (Triton), for what PyTorch's own ops do slowly.

The across-channel LRN (Krizhevsky et al. 2012, section 3.3) with windows that stop at tower edges, in
one pass forward and one backward. PyTorch has no fused LRN: its formulation (square, pad, 3-d average
pool, pow, multiply) reads and writes the activation some ten times, and on an H200 the paper's two
LRNs took 9.7 + 7.1 ms of a 27 ms training step at batch 256, bf16 (bench/RESULTS-gpu.md), thirty
times conv1. Here each program loads a block of positions x all channels, sums x^2 over each channel's
window by reloading the tile shifted by one channel at a time (the shifted loads hit the cache), and
writes y and the scale s; the backward reads dy, x and s the same way:

    s_c  = k + alpha / size * sum_{j in W(c)} x_j^2        W(c) = [c - size // 2, c + (size - 1) // 2], in c's tower
    y_c  = x_c * s_c^-beta
    dx_i = dy_i * s_i^-beta - 2 * alpha / size * beta * x_i * sum_{c: i in W(c)} dy_c * x_c * s_c^(-beta - 1)

Arithmetic in fp32 whatever the input's dtype (under bf16, k + alpha * sum would round the sum away),
any strides (contiguous or channels_last). Registered as the custom op `netdsl::lrn` (torch.library.
triton_op), so torch.compile and torch.export see an op, not a graph break.

Triton runs on CUDA; with TRITON_INTERPRET=1 its interpreter runs the same kernels on the CPU, which is
how the tests check them where there is no GPU (tests/test_kernels.py). This module imports Triton
(0.2 s), so it is imported when a fused LRN first runs; options.py says where one can.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton
from triton.runtime.jit import JITFunction


@triton.jit
def _tile(pid, P, HW, W, sn, sh, sw, PER_TOWER: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """A program's block of positions x every channel: the channel indices, each channel's tower start,
    the live positions (a column), and their offsets (a column) for strides sn, sh, sw."""
    p = (pid * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
    c = tl.arange(0, BLOCK_C)
    n, hw = p // HW, p % HW
    offsets = (n * sn + (hw // W) * sh + (hw % W) * sw)[:, None]
    return c, (c // PER_TOWER) * PER_TOWER, (p < P)[:, None], offsets


@triton.jit
def _lrn_forward(x_ptr, y_ptr, s_ptr, P, C, HW, W,
                 sxn, sxc, sxh, sxw, syn, syc, syh, syw,
                 alpha_n, beta, k,
                 PER_TOWER: tl.constexpr, BEFORE: tl.constexpr, AFTER: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    c, lo, rows, xpos = _tile(tl.program_id(0), P, HW, W, sxn, sxh, sxw, PER_TOWER, BLOCK_P, BLOCK_C)
    _, _, _, ypos = _tile(tl.program_id(0), P, HW, W, syn, syh, syw, PER_TOWER, BLOCK_P, BLOCK_C)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for d in tl.static_range(-BEFORE, AFTER + 1):
        cc = c + d
        ok = rows & ((cc >= lo) & (cc < lo + PER_TOWER) & (c < C))[None, :]
        v = tl.load(x_ptr + xpos + cc.to(tl.int64)[None, :] * sxc, mask=ok, other=0.0).to(tl.float32)
        acc += v * v
    ok = rows & (c < C)[None, :]
    x = tl.load(x_ptr + xpos + c.to(tl.int64)[None, :] * sxc, mask=ok, other=0.0).to(tl.float32)
    s = k + alpha_n * acc
    y = x * tl.exp2(-beta * tl.log2(s))
    tl.store(y_ptr + ypos + c.to(tl.int64)[None, :] * syc, y.to(y_ptr.dtype.element_ty), mask=ok)
    tl.store(s_ptr + ypos + c.to(tl.int64)[None, :] * syc, s, mask=ok)


@triton.jit
def _lrn_backward(dy_ptr, x_ptr, s_ptr, dx_ptr, P, C, HW, W,
                  sdn, sdc, sdh, sdw, sxn, sxc, sxh, sxw,
                  alpha_n, beta, k,
                  PER_TOWER: tl.constexpr, BEFORE: tl.constexpr, AFTER: tl.constexpr,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    # x, s and dx share x's strides (s and dx are made like x); dy has its own
    c, lo, rows, xpos = _tile(tl.program_id(0), P, HW, W, sxn, sxh, sxw, PER_TOWER, BLOCK_P, BLOCK_C)
    _, _, _, dpos = _tile(tl.program_id(0), P, HW, W, sdn, sdh, sdw, PER_TOWER, BLOCK_P, BLOCK_C)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for d in tl.static_range(-AFTER, BEFORE + 1):  # the channels whose window holds this one
        cc = c + d
        ok = rows & ((cc >= lo) & (cc < lo + PER_TOWER) & (c < C))[None, :]
        cc64 = cc.to(tl.int64)[None, :]
        dy = tl.load(dy_ptr + dpos + cc64 * sdc, mask=ok, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + xpos + cc64 * sxc, mask=ok, other=0.0).to(tl.float32)
        s = tl.load(s_ptr + xpos + cc64 * sxc, mask=ok, other=1.0)
        acc += dy * x * tl.exp2((-beta - 1.0) * tl.log2(s))
    ok = rows & (c < C)[None, :]
    c64 = c.to(tl.int64)[None, :]
    dy = tl.load(dy_ptr + dpos + c64 * sdc, mask=ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + xpos + c64 * sxc, mask=ok, other=0.0).to(tl.float32)
    s = tl.load(s_ptr + xpos + c64 * sxc, mask=ok, other=1.0)
    dx = dy * tl.exp2(-beta * tl.log2(s)) - 2.0 * alpha_n * beta * x * acc
    tl.store(dx_ptr + xpos + c64 * sxc, dx.to(dx_ptr.dtype.element_ty), mask=ok)


def _traceable(kernel):
    """wrap_triton(kernel): torch.compile and torch.export then trace into the launch. Under Triton's
    interpreter (TRITON_INTERPRET=1, the tests on a CPU) @triton.jit makes an InterpretedFunction, which
    runs eagerly as it is, and which torch 2.11 refuses to wrap ("wrap_triton only works on functions
    annotated with triton.jit"; 2.14 passes it through)."""
    return wrap_triton(kernel) if isinstance(kernel, JITFunction) else kernel


TILE = 4096  # positions x channels a program holds; bench/gpu_bench.py times 2048 and 8192 beside it


def _launch(x: torch.Tensor, towers: int, size: int) -> tuple[tuple, dict]:
    n, c, h, w = x.shape
    block_c = triton.next_power_of_2(c)
    block_p = max(TILE // block_c, 4)
    grid = (triton.cdiv(n * h * w, block_p),)
    meta = dict(PER_TOWER=c // towers, BEFORE=size // 2, AFTER=(size - 1) // 2, BLOCK_P=block_p, BLOCK_C=block_c)
    return grid, meta


@triton_op("netdsl::lrn", mutates_args=())
def _lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, towers: int) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.empty_like(x)
    s = torch.empty_like(x, dtype=torch.float32)
    grid, meta = _launch(x, towers, size)
    n, c, h, w = x.shape
    _traceable(_lrn_forward)[grid](x, y, s, n * h * w, c, h * w, w, *x.stride(), *y.stride(),
                                   alpha / size, beta, k, **meta)
    return y, s


@triton_op("netdsl::lrn_backward", mutates_args=())
def _lrn_grad(dy: torch.Tensor, x: torch.Tensor, s: torch.Tensor, size: int, alpha: float, beta: float,
              k: float, towers: int) -> torch.Tensor:
    dx = torch.empty_like(x)
    grid, meta = _launch(x, towers, size)
    n, c, h, w = x.shape
    _traceable(_lrn_backward)[grid](dy, x, s, dx, n * h * w, c, h * w, w, *dy.stride(), *x.stride(),
                                    alpha / size, beta, k, **meta)
    return dx


def _setup_context(ctx, inputs, output) -> None:
    x, size, alpha, beta, k, towers = inputs
    ctx.save_for_backward(x, output[1])
    ctx.args = (size, alpha, beta, k, towers)


def _backward(ctx, dy, _ds):
    x, s = ctx.saved_tensors
    return (_lrn_grad(dy, x, s, *ctx.args),) + (None,) * 5


_lrn.register_autograd(_backward, setup_context=_setup_context)


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, towers: int = 1) -> torch.Tensor:
    """Across-channel LRN of N x C x H x W `x`, windows within each of `towers` equal channel blocks."""
    return _lrn(x, size, alpha, beta, k, towers)[0]
