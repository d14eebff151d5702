"""From a data set and a recipe to batches on the device: views, loaders, device-side preprocessing."""
from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import BadImage, UsageError, first_line
from ..ir import Graph
from .config import Config
from .data import Batch, CropDataset, DataSet, Encoded, EpochSampler, ImageSource, Stats, pass_batch
from .images import (Box, CentreView, PaperTrainView, RandomResizedView, TenCropView, View, crop_bounds, decode_bytes,
                     jpeg_decoder, resample)


def train_view(config: Config, size: tuple[int, int]) -> View:
    if config.crop == "random_resized":
        return RandomResizedView(size, flip=config.flip)
    return PaperTrainView(size, config.resize_for(size), flip=config.flip)


def test_view(config: Config, size: tuple[int, int], crops: int = 1) -> View:
    if crops == 10:  # the paper's; its mirror images only for a net trained with flips
        return TenCropView(size, config.resize_for(size), mirror=config.flip)
    return CentreView(size, config.resize_for(size))


def worker_count(config: Config, data: DataSet) -> int:
    if data.in_memory:
        return 0  # decoding nothing: worker processes would only add start-up and copies
    return config.workers if config.workers >= 0 else min(8, os.cpu_count() or 1)


def decode_device(config: Config, data: DataSet, device: torch.device) -> tuple[torch.device | None, str]:
    """(the device that decodes the JPEGs, or None for the loader workers; why not the device, when
    `auto` would have chosen it and cannot). See Config.decode; UsageError when `device` is asked for
    and no decoder runs there."""
    if data.in_memory or config.decode == "workers" or (config.decode == "auto" and device.type != "cuda"):
        return None, ""
    try:
        jpeg_decoder(str(device))
    except RuntimeError as err:
        if config.decode == "device":
            raise UsageError(f"decode = device: {err}; use decode = workers") from None
        return None, str(err)
    return device, ""


def _own_process_group(_: int) -> None:
    # Ctrl-C reaches the terminal's whole process group, and torchrun's agent signals a rank's whole
    # group: the main process saves and stops the workers itself, so they must not die first. A group of
    # their own keeps both away; a direct SIGTERM (multiprocessing's clean-up at exit) still ends them,
    # and torch's worker watchdog ends them if the main process dies.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_END = object()  # DeviceDecoder.ahead: the last batch has been handed over


class DeviceDecoder:
    """Encoded batches -> Batches of uint8 crops on `device`: the JPEGs decoded in one batched call
    (nvJPEG on CUDA), then cut and resized there as the workers would (images.crop_resize's
    arithmetic). An image the device cannot decode is decoded on the CPU as a worker would (PIL
    included); one that nothing decodes is skipped and reported like any bad file.
    """

    def __init__(self, channels: int, view: View, device: torch.device, batched: bool | None = None):
        """`batched`: cut every crop of a batch in one kernel launch (device_crops.py; default: on CUDA),
        else image by image with PyTorch ops (on the CPU, the workers' own uint8 arithmetic)."""
        self.channels, self.size, self.crops = channels, view.size, view.crops
        self.device = device
        self.decode, modes = jpeg_decoder(str(device))
        self.mode = modes[channels]
        self.batched = device.type == "cuda" if batched is None else batched
        self.note = ""  # why crops are cut image by image after all, for the run's log
        if self.batched:
            try:
                from . import device_crops
                self.cut = device_crops.cut
                self._probe_cut()
            except ImportError:  # no Triton
                self.batched = False
            except Exception as err:  # noqa: BLE001  (a kernel that does not compile or run on this device)
                self.batched = False
                self.note = f"crops cut image by image: the one-launch crop kernel failed here ({first_line(err)})"

    def _probe_cut(self) -> None:
        """The one-launch cut of a small gradient image (a mirrored box resized to the view's size), against
        the image-by-image cut: a kernel that does not compile for this device, or cuts wrong, fails here,
        before training."""
        c = self.channels
        ramp = torch.arange(c * 24 * 32, device=self.device).reshape(c, 24, 32) % 251
        image, box = ramp.to(torch.uint8), (0, Box(2.0, 3.0, 20.0, 27.0, True), 0)
        fast, slow = (torch.empty(1, c, *self.size, dtype=torch.uint8, device=self.device) for _ in range(2))
        if not self.cut([image], [box], fast):
            return  # (no launch: more taps than it handles, so `cut` declines batches like it anyway)
        self._cut([image], [box], slow)
        gap = (fast.int() - slow.int()).abs().max().item()
        if gap > 1:
            raise RuntimeError(f"its crop differs from the image-by-image cut by {gap} levels")

    def __call__(self, enc: Encoded) -> Batch:
        n, (h, w) = len(enc.labels), self.size
        shape = (n, self.crops, self.channels, h, w) if self.crops > 1 else (n, self.channels, h, w)
        out = torch.empty(shape, dtype=torch.uint8, device=self.device)
        slots = enc.slots.tolist()
        ready = sorted(set(range(n)) - set(slots))
        if ready:
            out[ready] = enc.images.to(self.device, non_blocking=True)
        keep = torch.ones(n, dtype=torch.bool)
        skipped = list(enc.skipped)
        images, cuts = [], []  # the decoded images; (image, box, place in `out`) per crop
        for img, boxes, slot, name in zip(self._decode(enc), enc.boxes.tolist(), slots, enc.names):
            if isinstance(img, str):
                keep[slot] = False
                skipped.append((name, img))
                continue
            cuts += [(len(images), Box(*b[:4], bool(b[4])), slot * self.crops + k) for k, b in enumerate(boxes)]
            images.append(img)
        if not (self.batched and self.cut(images, cuts, out)):
            self._cut(images, cuts, out.view(-1, self.channels, h, w))
        if not keep.all():
            out = out[keep.to(self.device)]
        return Batch(out, enc.labels[keep], skipped)

    def _cut(self, images: list[torch.Tensor], cuts: list[tuple[int, Box, int]], out: torch.Tensor) -> None:
        """Image by image: images.crop_resize's arithmetic, flips gathered into one copy."""
        flips = []
        for i, box, place in cuts:
            top, bottom, left, right = crop_bounds(images[i].shape, box)
            region = images[i][None, :, top:bottom, left:right]
            out[place].copy_(region[0] if region.shape[-2:] == self.size else resample(region, self.size)[0])
            if box.flip:
                flips.append(place)
        if flips:  # one gather and scatter for the whole batch, not one kernel per image
            index = torch.tensor(flips, device=self.device)
            out[index] = out[index].flip(-1)

    def ahead(self, encoded: Iterator[Encoded], depth: int = 2) -> Iterator[Batch]:
        """The batches of `encoded`, decoded by a thread of their own up to `depth` batches ahead (on
        a CUDA stream of its own), so that decoding overlaps the training steps: the decoders and
        torch's kernels release the GIL, and nvJPEG's Huffman decoding runs on the CPU. The order
        is kept; a failure in the thread is raised here."""
        ready: queue.Queue = queue.Queue(depth)
        stop = threading.Event()
        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def work() -> None:
            try:
                for enc in encoded:
                    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                        batch = self(enc)
                        done = side.record_event() if side is not None else None
                    if not put((batch, done)):
                        return
                put(_END)
            except BaseException as err:  # noqa: BLE001  (handed to the consumer, raised there)
                put(err)

        thread = threading.Thread(target=work, name="netdsl-decode", daemon=True)
        thread.start()
        try:
            while True:
                item = ready.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, done = item
                if done is not None:  # the step's stream waits for the decode; the memory is its too
                    stream = torch.cuda.current_stream(self.device)
                    stream.wait_event(done)
                    batch.images.record_stream(stream)
                yield batch
        finally:
            stop.set()

    def _decode(self, enc: Encoded) -> list[torch.Tensor | str]:
        """Each JPEG decoded on the device, or the reason it could not be decoded anywhere."""
        datas = list(torch.split(enc.jpegs, enc.lengths.tolist()))
        if not datas:
            return []
        if self.device.type == "cuda":
            # torchvision's CUDA decoder allocates its outputs on the caller's stream but writes them
            # from a stream of its own that does not wait for the caller's (pytorch/vision#9606): a
            # block just freed here, which this stream's queued crops still read, could be
            # overwritten. Waiting for this (the decoding thread's) stream first rules that out.
            torch.cuda.current_stream(self.device).synchronize()
        try:
            return list(self.decode(datas, mode=self.mode))
        except RuntimeError:  # the batch fails as a whole: find which, one by one
            return [self._decode_one(d) for d in datas]

    def _decode_one(self, data: torch.Tensor) -> torch.Tensor | str:
        try:
            return self.decode(data, mode=self.mode)
        except RuntimeError:
            pass
        try:  # what the device's decoder does not take (a rare sampling, an oddity libjpeg forgives)
            return decode_bytes(data.numpy().tobytes(), self.channels).to(self.device)
        except BadImage as err:
            return str(err)


@dataclass
class Loader:
    loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    batch_size: int  # per process
    decoder: DeviceDecoder | None = None  # decode = device: the workers hand over JPEG bytes

    def __iter__(self) -> Iterator[Batch]:
        """Batches of uint8 crops (on the device, when it decodes)."""
        if self.decoder is None:
            yield from self.loader
        else:
            yield from self.decoder.ahead(iter(self.loader))

    def __len__(self) -> int:
        return len(self.loader)


def make_loader(source: ImageSource, view: View, *, batch_size: int, workers: int, train: bool,
                seed: int, rank: int = 0, world: int = 1, pin_memory: bool = False,
                persistent: bool | None = None, decode_on: torch.device | None = None) -> Loader:
    """`persistent`: keep worker processes between epochs (default: when training). `decode_on`: a
    device that decodes the JPEGs (the workers then only read them; see DeviceDecoder)."""
    sampler = EpochSampler(len(source), shuffle=train, seed=seed, rank=rank, world=world,
                           equal_shards=train)
    shard = len(sampler)
    loader = torch.utils.data.DataLoader(
        CropDataset(source, view, seed=seed, encode=decode_on is not None), batch_size=batch_size, sampler=sampler,
        num_workers=workers, collate_fn=pass_batch, pin_memory=pin_memory,
        # a full last batch only (when there is one): batch norm cannot train on a batch of 1
        drop_last=train and shard >= batch_size,
        persistent_workers=(train if persistent is None else persistent) and workers > 0,
        worker_init_fn=_own_process_group if workers else None,
        prefetch_factor=4 if workers else None,
        # the loader's own generator, so that making an iterator leaves the global RNG alone
        generator=torch.Generator().manual_seed(seed))
    decoder = DeviceDecoder(source.channels, view, decode_on) if decode_on is not None else None
    return Loader(loader, sampler, batch_size, decoder)


def resolve_normalize(normalize: str, graph: Graph) -> str:
    """`auto`: the paper's 0..255 pixels minus the mean only for a net whose every conv and fc starts
    from small weights like the paper's N(0, 0.01); default (Kaiming) or Xavier init on 0..255 inputs
    makes the first outputs thousands of times too large (a 3-class net sat at loss 4,393 and chance
    accuracy), so those get torchvision's unit-scale (x/255 - mean) / std."""
    if normalize != "auto":
        return normalize
    weighted = [n.params.get("weight_init", {"fn": "default"}) for n in graph if n.kind in ("conv", "fc")]
    return "mean" if weighted and all(_small(init) for init in weighted) else "mean_std"


def _small(init: dict) -> bool:
    if init["fn"] == "normal":
        return abs(init["mean"]) + 3 * init["std"] <= 0.2
    if init["fn"] == "uniform":
        return max(abs(init["low"]), abs(init["high"])) <= 0.2
    return init["fn"] == "constant" and abs(init["value"]) <= 0.2


class Preprocess:
    """uint8 crops -> normalised float batches, on the device; PCA lighting noise when training.

    normalize = "mean": pixels 0..255 minus the mean (the paper); "mean_std": (x/255 - mean) / std.
    """

    def __init__(self, stats: Stats, normalize: str, lighting: float, device: torch.device,
                 channels_last: bool = False):
        c = len(stats.mean)
        self.mean = torch.tensor(stats.mean, device=device).view(1, c, 1, 1)
        scale = torch.full((c,), 1 / 255) if normalize == "mean" else torch.tensor(stats.std)
        self.scale = scale.to(device).view(1, c, 1, 1)
        self.gain = 1 / (255 * self.scale)
        self.eigval = torch.tensor(stats.eigval, device=device)
        self.eigvec = torch.tensor(stats.eigvec, device=device)
        self.lighting = lighting
        self.device = device
        # the model's layout, whatever the batch's (the workers' crops come channels-last): the same
        # numbers whichever way the batch was made (the CPU's kernels differ by layout)
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True)
        # exactly the layout's strides: `contiguous(memory_format=)` keeps a 1-channel batch that counts as
        # both layouts, and the CPU's convolutions then pick their kernels by its strides
        n, c, h, w = x.shape
        if x.stride() != ((c * h * w, 1, w * c, c) if self.layout is torch.channels_last else (c * h * w, h * w, w, 1)):
            x = torch.empty_like(x, memory_format=self.layout).copy_(x)
        # (x/255 + lighting - mean) / scale as one multiply and one add on the float copy
        x = x.float()
        shift = -self.mean
        if noise is not None and self.lighting > 0:
            shift = shift + self._lighting(x.shape[0], x.shape[-3], noise)
        return x.mul_(self.gain).add_(shift / self.scale)

    def _lighting(self, n: int, channels: int, noise: torch.Generator) -> torch.Tensor:
        """Krizhevsky et al. 2012, 4.1: add eigvec @ (alpha * eigval), alpha ~ N(0, lighting)."""
        alpha = torch.randn(n, channels, generator=noise).to(self.device) * self.lighting
        return ((alpha * self.eigval) @ self.eigvec.T).view(n, channels, 1, 1)


def noise_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    """The lighting noise of one batch depends on where it is in the run, nothing else."""
    key = ((seed * 1_000_003 + epoch) * 1_000_033 + step) * 101 + rank
    return torch.Generator().manual_seed(key & 0x7FFF_FFFF_FFFF_FFFF)


def stats_to_dict(stats: Stats) -> dict:
    return {"mean": list(stats.mean), "std": list(stats.std), "eigval": list(stats.eigval),
            "eigvec": [list(r) for r in stats.eigvec]}


def stats_from_dict(d: dict) -> Stats:
    return Stats(tuple(d["mean"]), tuple(d["std"]), tuple(d["eigval"]), tuple(tuple(r) for r in d["eigvec"]))


__all__ = ["Batch", "Loader", "Preprocess", "make_loader", "noise_generator", "test_view", "train_view",
           "worker_count", "stats_to_dict", "stats_from_dict"]
