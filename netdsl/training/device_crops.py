"""Cutting a whole batch's crops on the GPU in one kernel launch (decode = device, loading.DeviceDecoder).

After the batched JPEG decode, every crop box must be cut out of its image, resized to the output size
(bilinear, antialiased, as torchvision's Resize and the CPU path do) and mirrored when it is flipped.
Done with PyTorch ops that is four or five kernel launches and some forty microseconds of Python per
image, some ten milliseconds per batch of 256: more than an H200 takes for AlexNet's whole training
step on that batch. This Triton kernel does every box of the batch in one launch, reading the
decoded images from one buffer; each output pixel sums its taps with PyTorch's antialiasing weights
(aten's `_compute_indices_min_size_weights_aa`: for a scale s = in / out, centre s (i + 0.5),
support max(s, 1), triangle weights normalised), in fp32, in one 2-d pass where PyTorch makes two
1-d passes: within one level of the CPU path after rounding (tests/test_decode_device.py, on the CPU
through Triton's interpreter).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import torch
import triton
import triton.language as tl

from .images import Box, crop_bounds

FIELDS = 9  # per box: image offset, height, width, top, left, crop height, crop width, flip, output offset
MAX_TAPS = 15  # per axis (a box more than 7 times the output size); beyond, the caller cuts per image
BLOCK = 1024  # output pixels per program (x up to 4 channels: 32 accumulators a thread at 4 warps)
# Triton's interpreter (TRITON_INTERPRET=1, the tests on a CPU) runs programs one after another in Python,
# where each op costs the same whatever its size: there, fewer and larger programs
INTERPRETED_BLOCK = 4096


def taps(box_size: float, out_size: int) -> int:
    """Source pixels one output pixel reads along an axis, at most: the support 2 max(s, 1), plus one."""
    return math.ceil(2 * max(box_size / out_size, 1.0)) + 1


@triton.jit
def _window(o, crop, out_size):
    """aten's antialiased bilinear window for output index o: (centre, support, first, end) in the crop."""
    s = crop.to(tl.float32) / out_size
    support = tl.maximum(s, 1.0)
    centre = s * (o.to(tl.float32) + 0.5)
    lo = tl.maximum((centre - support + 0.5).to(tl.int32), 0)  # truncation, as aten's int64 cast
    hi = tl.minimum((centre + support + 0.5).to(tl.int32), crop)
    return centre, support, lo, hi


@triton.jit
def _tap(centre, support, lo, hi, t):
    """(source index, unnormalised triangle weight) of tap t (0 past the window's end)."""
    i = lo + t
    w = tl.maximum(1.0 - tl.abs((i.to(tl.float32) - centre + 0.5) / support), 0.0)
    return i, tl.where(i < hi, w, 0.0)


@triton.jit
def crop_resize(src_ptr, out_ptr, box_ptr, OH, OW,
                C: tl.constexpr, CB: tl.constexpr, TAPS: tl.constexpr, BLOCK: tl.constexpr, FIELDS: tl.constexpr):
    b = box_ptr + tl.program_id(0) * FIELDS
    base, height, width = tl.load(b), tl.load(b + 1), tl.load(b + 2)  # the image: element offset, size
    top, left = tl.load(b + 3).to(tl.int32), tl.load(b + 4).to(tl.int32)
    ch, cw = tl.load(b + 5).to(tl.int32), tl.load(b + 6).to(tl.int32)
    flip, dst = tl.load(b + 7), tl.load(b + 8)  # mirrored?, element offset of the output crop
    k = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = k < OH * OW
    oy, ox = k // OW, k % OW
    cy, sy, y0, y1 = _window(oy, ch, OH)
    cx, sx, x0, x1 = _window(ox, cw, OW)
    total_x = tl.zeros((BLOCK,), dtype=tl.float32)
    for t in tl.static_range(TAPS):
        _, wx = _tap(cx, sx, x0, x1, t)
        total_x += wx
    channel = tl.arange(0, CB)[:, None]  # every channel at once: the weights are the channels' too
    planes = src_ptr + base + channel.to(tl.int64) * height * width
    acc = tl.zeros((CB, BLOCK), dtype=tl.float32)
    total_y = tl.zeros((BLOCK,), dtype=tl.float32)
    for ty in tl.static_range(TAPS):
        iy, wy = _tap(cy, sy, y0, y1, ty)
        total_y += wy
        row = planes + ((top + iy).to(tl.int64) * width + left)[None, :]
        for tx in tl.static_range(TAPS):
            ix, wx = _tap(cx, sx, x0, x1, tx)
            w = wy * wx
            v = tl.load(row + ix[None, :], mask=(channel < C) & (live & (w > 0))[None, :], other=0)
            acc += w[None, :] * v.to(tl.float32)
    value = tl.minimum(tl.maximum(tl.floor(acc / (total_y * total_x)[None, :] + 0.5), 0.0), 255.0)
    ox_out = tl.where(flip != 0, OW - 1 - ox, ox)
    tl.store(out_ptr + dst + channel * OH * OW + (oy * OW + ox_out)[None, :], value.to(tl.uint8),
             mask=(channel < C) & live[None, :])


def cut(images: Sequence[torch.Tensor], boxes: Sequence[tuple[int, Box, int]], out: torch.Tensor) -> bool:
    """Cut `boxes` ((image index, box in the image's pixels, place) triples) out of the uint8 C x H x W
    `images` into `out`, a contiguous uint8 tensor of crops (... x C x OH x OW) on the images' device,
    crop `place` of it (counting crops in memory order) for each box. False, having done nothing,
    when a box needs more than MAX_TAPS source pixels a side."""
    oh, ow = out.shape[-2:]
    c = out.shape[-3]
    table, need, offsets = [], 1, [0]
    for img in images:
        offsets.append(offsets[-1] + img.numel())
    for i, box, place in boxes:
        _, h, w = images[i].shape
        top, bottom, left, right = crop_bounds((h, w), box)
        need = max(need, taps(bottom - top, oh), taps(right - left, ow))
        table.append((offsets[i], h, w, top, left, bottom - top, right - left, int(box.flip), place * c * oh * ow))
    if need > MAX_TAPS:
        return False
    if not boxes:
        return True
    src = torch.cat([img.reshape(-1) for img in images])  # one buffer; a CHW copy of any strided image
    table_ = torch.tensor(table, dtype=torch.int64).to(out.device, non_blocking=True)
    block = INTERPRETED_BLOCK if os.environ.get("TRITON_INTERPRET") == "1" else BLOCK
    grid = (len(boxes), -(-oh * ow // block))
    crop_resize[grid](src, out, table_, oh, ow, C=c, CB=triton.next_power_of_2(c), TAPS=need | 1, BLOCK=block,
                      FIELDS=FIELDS)
    return True
