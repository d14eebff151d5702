"""One image, in a loader worker: robust decoding of any file into uint8 C x H x W, and the views that
cut it into crops (the paper's, torchvision's, centre and ten-crop tests).

Workers decode, crop and flip images and hand over uint8 batches; conversion to float,
normalisation and PCA lighting happen on the training device (loading.Preprocess), which keeps the
worker processes' work and the bytes they ship small.
"""
from __future__ import annotations

import functools
import io
import math
import os
import random
import stat
import warnings
from dataclasses import dataclass
from typing import Callable, NamedTuple, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from PIL.Image import DecompressionBombError

from ..errors import BadImage, first_line

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif",
                              ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
JPEG_END = b"\xff\xd9"
# No training image comes near this; a bigger "image" is a mistake (a disk image, a video) whose
# read would stall a loader worker or exhaust its memory.
MAX_FILE_BYTES = 512 * 2 ** 20


# ----------------------------------------------------------------------------- decoding


Reduction = Callable[[int, int], int]  # (height, width) -> JPEG scale denominator allowed


def decode_file(path: str, channels: int, reduction: Reduction | None = None) -> torch.Tensor:
    """Read an image file as a uint8 C x H x W tensor with `channels` channels (1 or 3).

    `reduction(h, w)`, given the stored size, says by how much (1, 2, 4, 8) the image may be
    shrunk; big JPEGs are then decoded at that reduced size (JPEG DCT scaling, PIL's draft mode),
    much faster than a full decode. Raises BadImage for empty, truncated or undecodable files, and
    for anything that is not a regular file or is larger than MAX_FILE_BYTES.
    """
    try:
        data = read_image_file(path)
    except OSError as err:
        raise BadImage(f"unreadable ({err.strerror or err})") from None
    return decode_bytes(data, channels, reduction)


def special_kind(mode: int) -> str:
    """What a file that is not a regular file is, from its st_mode, for messages."""
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "an unknown kind of file")


def read_image_file(path: str) -> bytes:
    """The bytes of a regular file (or a link to one) of at most MAX_FILE_BYTES.

    The folder was scanned long before this runs (files may have been replaced since), and a
    worker stuck here stalls training: a FIFO blocks open() and read() for ever, /dev/zero never
    ends. So the path is checked with stat() before it is opened (opening some devices has effects
    of its own), opened non-blocking (a FIFO swapped in between cannot block), and checked again on
    the open file, which is what is read.
    """
    _check_regular(os.stat(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        _check_regular(st)
        return _read_capped(f, st.st_size)


def _check_regular(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise BadImage(f"not a regular file ({special_kind(st.st_mode)})")
    if st.st_size > MAX_FILE_BYTES:
        raise BadImage(f"file of {st.st_size:,} bytes is too large for an image")


def _read_capped(f: io.RawIOBase, size: int) -> bytes:
    """Read to the end, in one read for a file of the size stat gave, but never more than
    MAX_FILE_BYTES (the file may grow while it is read)."""
    chunks, total, want = [], 0, size + 1
    while total <= MAX_FILE_BYTES:
        chunk = f.read(min(want, MAX_FILE_BYTES + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total, want = total + len(chunk), 1 << 20
    raise BadImage(f"file of more than {MAX_FILE_BYTES:,} bytes is too large for an image")


def decode_bytes(data: bytes, channels: int, reduction: Reduction | None = None) -> torch.Tensor:
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            # PIL's complaints about the file (size, palettes, EXIF, truncation) are what BadImage and
            # the skip report are for; anything else, a deprecation of what netdsl calls included, shows.
            warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            img = Image.open(io.BytesIO(data))
            k = reduction(img.size[1], img.size[0]) if reduction and img.format == "JPEG" else 1
            if k == 1 and _fast_jpeg(img, data):
                return decode_plain_jpeg(data, channels)
            if k > 1:
                img.draft(img.mode, (math.ceil(img.size[0] / k), math.ceil(img.size[1] / k)))
            img.load()
            return _to_tensor(_to_mode(img, channels))
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not a recognised image format") from None
    except DecompressionBombError as err:
        # PIL refuses images of more than twice its pixel limit before decoding them: say which
        # limit, since a user with genuinely huge images may raise it
        raise BadImage(f"too many pixels to decode safely (PIL.Image.MAX_IMAGE_PIXELS): "
                       f"{first_line(err)}") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... for bad data
        raise BadImage(first_line(err)) from None


def _fast_jpeg(img: Image.Image, data: bytes) -> bool:
    """libjpeg-turbo through TorchCodec beats PIL for a full-size decode of a complete RGB or gray
    JPEG; everything else (CMYK, truncated, ...) goes through PIL."""
    return img.format == "JPEG" and img.mode in ("RGB", "L") and \
        data.rstrip(b"\0").endswith(JPEG_END)


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) of a complete RGB or gray JPEG, from its header alone: bytes that a plain
    JPEG decoder (libjpeg-turbo on the CPU, nvJPEG on a GPU) is given as they are. None for anything
    else, which PIL decodes (CMYK, truncated, other formats, not an image)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            with Image.open(io.BytesIO(data)) as img:
                return (img.size[1], img.size[0]) if _fast_jpeg(img, data) else None
    except Exception:  # whatever PIL makes of bad bytes, the decode that follows reports it
        return None


def decode_plain_jpeg(data: bytes, channels: int) -> torch.Tensor:
    """Decode bytes that plain_jpeg_size accepted (a store's records are all such): no header read."""
    if not data:
        raise BadImage("empty file")
    decode, modes = jpeg_decoder()
    try:
        return decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=modes[channels])
    except RuntimeError as err:
        raise BadImage(str(err).rsplit(",", 1)[-1].strip()) from None


@functools.cache
def jpeg_decoder(device: str = "cpu") -> tuple[Callable[..., torch.Tensor], dict[int, object]]:
    """(decode_jpeg, {channels: mode}) decoding on `device` (a CUDA device: nvJPEG, batched when given a
    list), from TorchCodec, which replaces torchvision.io's decoders (deprecated since torchvision 0.29);
    torchvision's where TorchCodec cannot decode there (not installed, built for another torch, or
    built without CUDA), whose DeprecationWarning then says so. Same libjpeg-turbo on the CPU, same
    pixels (tests/test_data.py). RuntimeError when neither decodes on `device`."""
    probe = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 90)).save(probe, "JPEG")  # it must decode, not just import
    probe_bytes = torch.frombuffer(bytearray(probe.getvalue()), dtype=torch.uint8)
    try:
        from torchcodec.decoders import decode_jpeg
        decode_jpeg(probe_bytes, mode="RGB", device=device)
        return functools.partial(decode_jpeg, device=device), {1: "GRAY", 3: "RGB"}
    except Exception as err:  # noqa: BLE001  (whatever a missing or mismatched build raises)
        codec = f"TorchCodec: {first_line(err)}"
    try:
        from torchvision.io import ImageReadMode, decode_jpeg as tv_decode_jpeg
        tv_decode_jpeg(probe_bytes, mode=ImageReadMode.RGB, device=device)
        return functools.partial(tv_decode_jpeg, device=device), {1: ImageReadMode.GRAY, 3: ImageReadMode.RGB}
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(f"no JPEG decoder runs on {device} ({codec}; torchvision: {first_line(err)})") from None


def max_reduction(boxes: Sequence["Box"], size: tuple[int, int]) -> int:
    """The largest JPEG scale denominator (1, 2, 4, 8) that keeps every box at least `size`,
    so that the crops are still downscaled, never upscaled."""
    k = 1
    while k < 8 and all(b.height / (2 * k) >= size[0] and b.width / (2 * k) >= size[1] for b in boxes):
        k *= 2
    return k


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode (palette, alpha, CMYK, 16-bit, float) to L or RGB."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        img = _flatten_alpha(img)
    target = "RGB" if channels == 3 else "L"
    return img if img.mode == target else img.convert(target)


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    a = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" and a.size and a.max() <= 1.0 else 65535.0
    if img.mode == "I" and a.size and a.max() <= 255:
        top = 255.0
    return Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    """Composite over white: transparent pixels often hold arbitrary colours."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_tensor(img: Image.Image) -> torch.Tensor:
    # np.array, not np.asarray: PIL's buffer is read-only, and torch warns (to the user's terminal) on
    # a tensor over read-only memory; the copy costs ~0.1 ms for a 500x375 image
    a = np.array(img)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)  # C x H x W, HWC in memory


# ----------------------------------------------------------------------------- views (crops)


class Box(NamedTuple):
    """A crop in source pixels, resized to the output size, maybe mirrored."""

    top: float
    left: float
    height: float
    width: float
    flip: bool = False


class View(Protocol):
    """How one sample becomes one or more crops of the output size."""

    size: tuple[int, int]
    crops: int

    def boxes(self, h: int, w: int, rng: random.Random) -> list[Box]: ...


def _square_centre(h: int, w: int) -> tuple[float, float, float]:
    side = min(h, w)
    return (h - side) / 2, (w - side) / 2, side


@dataclass
class PaperTrainView:
    """Short side to `resize`, the central resize x resize square, a random `size` crop of it,
    mirrored with probability 1/2 when `flip` (Krizhevsky et al. 2012, section 4.1)."""

    size: tuple[int, int]
    resize: int
    flip: bool = True
    crops: int = 1

    def boxes(self, h: int, w: int, rng: random.Random) -> list[Box]:
        top, left, side = _square_centre(h, w)
        s = side / self.resize  # source pixels per resized pixel
        oy = rng.randint(0, max(self.resize - self.size[0], 0))
        ox = rng.randint(0, max(self.resize - self.size[1], 0))
        flip = bool(self.flip and rng.random() < 0.5)
        return [Box(top + oy * s, left + ox * s, self.size[0] * s, self.size[1] * s, flip)]


@dataclass
class RandomResizedView:
    """torchvision's RandomResizedCrop (scale 0.08-1, aspect 3/4-4/3) and a random flip."""

    size: tuple[int, int]
    flip: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crops: int = 1

    def boxes(self, h: int, w: int, rng: random.Random) -> list[Box]:
        flip = bool(self.flip and rng.random() < 0.5)
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                return [Box(rng.randint(0, h - ch), rng.randint(0, w - cw), ch, cw, flip)]
        return [self._central(h, w, flip)]

    def _central(self, h: int, w: int, flip: bool) -> Box:
        in_ratio = w / h
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return Box((h - ch) / 2, (w - cw) / 2, ch, cw, flip)


@dataclass
class CentreView:
    """Short side to `resize`, then the central `size` crop (the usual single-crop test)."""

    size: tuple[int, int]
    resize: int
    crops: int = 1

    def boxes(self, h: int, w: int, rng: random.Random) -> list[Box]:
        s = min(h, w) / self.resize
        ch, cw = self.size[0] * s, self.size[1] * s
        return [Box((h - ch) / 2, (w - cw) / 2, ch, cw)]


@dataclass
class TenCropView:
    """The paper's test: the central resize x resize square, its four corner crops and centre
    crop, and their mirror images; predictions are averaged over the ten. Without `mirror` (for a
    net trained without flips, to which mirror images are foreign) the five crops alone."""

    size: tuple[int, int]
    resize: int
    mirror: bool = True

    @property
    def crops(self) -> int:
        return 10 if self.mirror else 5

    def boxes(self, h: int, w: int, rng: random.Random) -> list[Box]:
        top, left, side = _square_centre(h, w)
        s = side / self.resize
        dy, dx = self.resize - self.size[0], self.resize - self.size[1]
        offsets = [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy / 2, dx / 2)]
        ch, cw = self.size[0] * s, self.size[1] * s
        boxes = [Box(top + oy * s, left + ox * s, ch, cw) for oy, ox in offsets]
        return boxes + [b._replace(flip=True) for b in boxes] if self.mirror else boxes


def crop_bounds(shape: Sequence[int], box: Box) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): `box` rounded to whole pixels of an image of `shape` (.. x H x W),
    at least one pixel, inside the image."""
    h, w = shape[-2:]
    top = min(max(int(round(box.top)), 0), h - 1)
    left = min(max(int(round(box.left)), 0), w - 1)
    bottom = min(max(int(round(box.top + box.height)), top + 1), h)
    right = min(max(int(round(box.left + box.width)), left + 1), w)
    return top, bottom, left, right


def crop_resize(img: torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """Cut `box` out of a uint8 C x H x W image and resize it to `size` (bilinear, antialiased)."""
    top, bottom, left, right = crop_bounds(img.shape, box)
    region = img[:, top:bottom, left:right].unsqueeze(0)
    if region.shape[-2:] != size:
        region = resample(region, size)
    out = region[0]
    return out.flip(-1) if box.flip else out


def resample(region: torch.Tensor, size: tuple[int, int], exact_uint8: bool | None = None) -> torch.Tensor:
    """Resize uint8 1 x C x h x w to `size`, bilinear and antialiased, as torchvision's Resize does.

    On the CPU, uint8 in channels-last memory takes PyTorch's fast vectorised path. CUDA's
    antialiased resampling takes floating point only: bilinear weights are positive and sum to 1,
    so the float result stays in 0..255 and rounding is the only step back (within 1 of the uint8
    path, tests/test_data.py). `exact_uint8` picks the path (default: uint8 on the CPU)."""
    if region.is_cpu if exact_uint8 is None else exact_uint8:
        return F.interpolate(region.contiguous(memory_format=torch.channels_last), size=size,
                             mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(region.float(), size=size, mode="bilinear", antialias=True,
                         align_corners=False).round_().to(torch.uint8)
