"""Training data: folder layout checks, image sources, the epoch sampler, pixel statistics, the
bundled digits, and what the net's input and output must be to train on them.

Randomness is per sample and derived from (seed, epoch, index) alone, so the same run gives the
same crops whatever the number of workers or processes, and a resumed run repeats them exactly.
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol, Sequence

import numpy as np
import torch

from ..errors import BadImage, DataError, UsageError
from ..ir import Graph
from .images import (IMAGE_EXTENSIONS, Box, Reduction, View, crop_resize, decode_bytes, decode_file, max_reduction,
                     plain_jpeg_size, read_image_file, special_kind)

DIGITS_PATH = Path(__file__).resolve().parent.parent / "assets" / "digits.npz"
SPLITS = ("train", "val")


# ImageNet statistics on 0..1 pixels: the channel means and deviations torchvision uses, and the
# RGB principal components (eigenvalues, eigenvectors as columns) used for the paper's lighting
# noise, as published with fb.resnet.torch.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


# ----------------------------------------------------------------------------- layout


@dataclass
class Layout:
    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[str, int]]]  # split -> [(path, class index)]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): never read

    def describe(self) -> str:
        """One line, the folder first (check_classes names it by what precedes the first ':').
        Skipped entries are counted here because this line is what training and evaluation print:
        images missing from a data set must never go unnoticed."""
        sizes = ", ".join(f"{len(v):,} {k}" for k, v in self.splits.items())
        text = f"{self.root}: {len(self.classes)} classes, {sizes} images"
        if self.skipped:
            path, reason = self.skipped[0]
            n = len(self.skipped)
            text += (f"; {n:,} {'entry' if n == 1 else 'entries'} skipped "
                     f"(first: {os.path.relpath(path, self.root)}: {reason})")
        return text


@dataclass
class _SplitScan:
    classes: dict[str, list[str]] = field(default_factory=dict)
    loose: list[str] = field(default_factory=list)  # files directly in the split folder
    not_images: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


class _Entry(NamedTuple):
    path: str
    kind: str  # "file" (regular), "folder", or "skip" (anything else: never read)
    link: bool
    reason: str = ""  # why a "skip" is skipped


def scan_layout(root: str | os.PathLike) -> Layout:
    """Check that `root` holds train/ and val/ with the same class folders of images.

    Every problem found is reported at once in one DataError, so a wrong layout never reaches
    training (where it could silently train to loss 0 on a single class).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise DataError(_missing_splits_message(root, missing))
    scans = {s: _scan_split(root / s) for s in SPLITS}
    problems = _layout_problems(root, scans)
    if problems:
        raise DataError(f"--data {root} is not usable:\n" + "\n".join(f"  - {p}" for p in problems))
    classes = sorted(scans["train"].classes)
    index = {c: i for i, c in enumerate(classes)}
    splits = {s: [(p, index[c]) for c in classes for p in scans[s].classes[c]] for s in SPLITS}
    return Layout(root, classes, splits, [e for s in SPLITS for e in scans[s].skipped])


def _missing_splits_message(root: Path, missing: list[str]) -> str:
    names = " and ".join(f"'{m}/'" for m in missing)
    msg = (f"--data {root}: no {names} folder; expected {root}/train/<class>/<image> and "
           f"{root}/val/<class>/<image> (ImageNet's layout)")
    if (root / "ILSVRC2012_img_train.tar").is_file():
        msg += f"\n  {root} holds ImageNet's tars: `netdsl prepare --data {root} --out DIR` reads them as they are"
    subdirs = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if subdirs and len(missing) == 2:
        msg += f"\n  {root} holds {len(subdirs)} folder(s) ({', '.join(sorted(subdirs)[:3])}, ...): " \
               "if these are classes, move them into train/ and make a val/ beside it"
    return msg


def _scan_split(split_dir: Path) -> _SplitScan:
    scan = _SplitScan()
    around = _enclosing(os.path.join(split_dir, "-"))  # the split folder and all that hold it
    for e in _listing(str(split_dir), scan):
        name = os.path.basename(e.path)
        if e.kind == "skip":
            scan.skipped.append((e.path, e.reason))
        elif e.kind == "file":
            scan.loose.append(name)
        elif _folder_id(e.path) in around:  # `ln -s . train/all`: the split itself as a class
            scan.skipped.append((e.path, f"link loop (back to {os.path.realpath(e.path)})"))
        else:
            scan.classes[name] = _class_files(e.path, scan)
    return scan


def _class_files(class_dir: str, scan: _SplitScan) -> list[str]:
    """The image files under a class folder, depth first and in name order within a folder (the
    order os.walk gave before: sample indices, and so a resumed run's crops, depend on it).

    Links to folders are followed, as torchvision's ImageFolder does: data sets are often put
    together from linked folders, and whoever links one in means its images to count. But each
    real folder, known by (st_dev, st_ino), is entered once: a link back to a folder on the way
    down (`ln -s . a/x`, a link to a parent, or to any folder holding the class folder) is a loop,
    and a second link to a folder already scanned would count its images twice. Both are skipped
    and reported; following them turned 24 images into 1,009, or never finished.
    """
    files: list[str] = []
    seen: set[tuple[int, int]] = set()
    stack = [_Entry(class_dir, "folder", False)]
    chains = [_enclosing(class_dir)]  # the folders holding each stacked one, on the way down
    while stack:
        e, chain = stack.pop(), chains.pop()
        key, reason = _enter(e, chain, seen)
        if reason:
            scan.skipped.append((e.path, reason))
            continue
        chain = chain | {key}
        folders = []
        for sub in _listing(e.path, scan):
            if sub.kind == "skip":
                scan.skipped.append((sub.path, sub.reason))
            elif sub.kind == "folder":
                folders.append(sub)
            elif os.path.splitext(sub.path)[1].lower() in IMAGE_EXTENSIONS:
                files.append(sub.path)
            else:
                scan.not_images.append(sub.path)
        stack += reversed(folders)
        chains += [chain] * len(folders)
    return files


def _enter(e: _Entry, chain: frozenset, seen: set) -> tuple[tuple[int, int] | None, str]:
    """(folder id, "") after marking folder `e` seen, or (None, why it is not to be scanned)."""
    key = _folder_id(e.path)
    what = "link" if e.link else "folder"  # a bind mount can loop without a link
    if key is None:  # removed or replaced since it was listed
        return None, "unreadable folder"
    if key in chain:
        return None, f"{what} loop (back to {os.path.realpath(e.path)})"
    if key in seen:
        return None, f"{what} to a folder already scanned ({os.path.realpath(e.path)})"
    seen.add(key)
    return key, ""


def _folder_id(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of what `path` leads to: the identity of a folder, whatever the path."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _enclosing(folder: str) -> frozenset[tuple[int, int]]:
    """Every folder that holds `folder`, by its path as given and by its real path: entering any
    of them from inside would scan `folder` again (and other classes with it)."""
    paths = [*Path(os.path.abspath(folder)).parents, *Path(os.path.realpath(folder)).parents]
    return frozenset(key for key in map(_folder_id, paths) if key is not None)


def _listing(folder: str, scan: _SplitScan) -> list[_Entry]:
    """The visible entries of `folder` in name order; an unreadable folder is reported as skipped."""
    try:
        with os.scandir(folder) as it:
            found = sorted((d for d in it if not d.name.startswith(".")), key=lambda d: d.name)
    except OSError as err:
        scan.skipped.append((folder, f"unreadable folder ({err.strerror or err})"))
        return []
    return [_classify(d) for d in found]


def _classify(d: os.DirEntry) -> _Entry:
    """What an entry is, without ever opening it: reading a FIFO blocks for ever, a link to
    /dev/zero never ends. Plain files and folders are known from the listing itself (no stat per
    image); links and special files are stat()ed, which follows links but opens nothing."""
    link = d.is_symlink()
    try:
        if not link and d.is_file(follow_symlinks=False):
            return _Entry(d.path, "file", False)
        if not link and d.is_dir(follow_symlinks=False):
            return _Entry(d.path, "folder", False)
        mode = os.stat(d.path).st_mode
    except OSError as err:
        return _Entry(d.path, "skip", link, _stat_error(d.path, link, err))
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return _Entry(d.path, "file" if stat.S_ISREG(mode) else "folder", link)
    kind = f"a link to {special_kind(mode)}, {_link_target(d.path)}" if link else special_kind(mode)
    return _Entry(d.path, "skip", link, f"not a regular file ({kind})")


def _stat_error(path: str, link: bool, err: OSError) -> str:
    if link and err.errno == errno.ELOOP:
        return f"link loop (to {_link_target(path)}, which never resolves)"
    if link and err.errno == errno.ENOENT:
        return f"broken link (to {_link_target(path)})"
    return f"unreadable ({err.strerror or err})"


def _link_target(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _layout_problems(root: Path, scans: dict[str, _SplitScan]) -> list[str]:
    problems = []
    for split, scan in scans.items():
        if scan.loose:
            problems.append(
                f"{split}/ holds {len(scan.loose):,} file(s) directly ({_some(scan.loose)}); every "
                f"image must be in a class folder, {split}/<class>/<image> (ImageNet's validation "
                "images come flat: sort them into class folders first)")
        if not scan.classes:
            problems.append(f"{split}/ has no class folders")
        empty = [c for c, files in scan.classes.items() if not files]
        if empty:
            problems.append(f"{split}/ has {len(empty)} class folder(s) with no images: {_some(empty)}")
        if scan.not_images:
            rel = [os.path.relpath(p, root) for p in scan.not_images]
            problems.append(f"{len(rel):,} file(s) in {split}/ are not images ({_some(rel)}); "
                            f"netdsl reads {', '.join(sorted(IMAGE_EXTENSIONS))}")
    train, val = set(scans["train"].classes), set(scans["val"].classes)
    if train and val and train != val:
        parts = []
        if train - val:
            parts.append(f"only in train/: {_some(sorted(train - val))}")
        if val - train:
            parts.append(f"only in val/: {_some(sorted(val - train))}")
        problems.append("train/ and val/ have different classes: " + "; ".join(parts))
    if len(train) == 1:
        problems.append(f"train/ has a single class ({next(iter(train))}); a classifier needs two "
                        "or more (with one, the loss is 0 from the start and nothing is learned)")
    return problems


def _some(names: Sequence[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n:,} more" if len(names) > n else "")

# ----------------------------------------------------------------------------- datasets


class Batch(NamedTuple):
    images: torch.Tensor  # uint8, N x C x H x W, or N x crops x C x H x W for multi-crop views (any strides)
    labels: torch.Tensor  # int64, N
    skipped: list[tuple[str, str]]  # (path, reason) for files that could not be decoded


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """Python's Mersenne Twister seeded from a hash of the key: the same on every platform, and
    20 times cheaper to make per sample than a numpy Generator."""
    key = f"{seed}/{epoch}/{index}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little"))


class Encoded(NamedTuple):
    """A batch whose JPEGs the training device decodes (decode = device): the workers read the
    bytes and choose the crops, exactly as they would for decoding them (the same random numbers
    drawn in the same order), and cut themselves only the images no plain JPEG decoder takes."""

    jpegs: torch.Tensor  # uint8: the JPEGs' bytes one after the other (one shared-memory block, not J)
    lengths: torch.Tensor  # int64, J
    boxes: torch.Tensor  # float64, J x crops x 5: top, left, height, width, flip; in stored pixels
    slots: torch.Tensor  # int64, J: each JPEG's place in the batch
    names: list[str]  # each JPEG's source, to name it if the device cannot decode it
    images: torch.Tensor  # uint8 crops the workers cut, for the other places, in order
    labels: torch.Tensor  # int64, N
    skipped: list[tuple[str, str]]


class ImageSource(Protocol):
    channels: int

    def __len__(self) -> int: ...
    def label(self, i: int) -> int: ...
    def name(self, i: int) -> str: ...
    def image(self, i: int, reduction: Reduction | None) -> torch.Tensor: ...


class EncodedSource(ImageSource, Protocol):
    """A source of encoded images, which the device may decode."""

    def encoded(self, i: int) -> tuple[bytes, tuple[int, int] | None]:
        """The image's bytes, and its (height, width) when they are a plain JPEG (images.plain_jpeg_size)."""


class FileSource:
    """Images in files, decoded on demand.

    Paths and labels are kept in numpy arrays, not a list of Python objects: forked loader workers
    then share them for good (reading a list would touch its objects' reference counts and copy
    every page into every worker: gigabytes for ImageNet's 1.28 million files).
    """

    def __init__(self, samples: Sequence[tuple[str, int]], channels: int):
        self.paths = np.array([os.fsencode(p) for p, _ in samples], dtype=np.bytes_)
        self.labels = np.array([label for _, label in samples], dtype=np.int64)
        self.channels = channels

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def name(self, i: int) -> str:
        return os.fsdecode(self.paths[i])

    def image(self, i: int, reduction: Reduction | None) -> torch.Tensor:
        return decode_file(self.name(i), self.channels, reduction)

    def encoded(self, i: int) -> tuple[bytes, tuple[int, int] | None]:
        try:
            data = read_image_file(self.name(i))
        except OSError as err:  # as decode_file reports it
            raise BadImage(f"unreadable ({err.strerror or err})") from None
        return data, plain_jpeg_size(data)


@dataclass
class ArraySource:
    """Images held in memory as uint8 arrays (N x H x W, or N x C x H x W)."""

    images: np.ndarray
    labels: np.ndarray
    channels: int

    def __post_init__(self) -> None:
        x = torch.from_numpy(np.ascontiguousarray(self.images))
        x = x.unsqueeze(1) if x.dim() == 3 else x
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and self.channels == 1:
            luma = torch.einsum("nchw,c->nhw", x.float(), torch.tensor([0.299, 0.587, 0.114]))
            x = luma[:, None].round().to(torch.uint8)
        self._x = x.contiguous()

    def __len__(self) -> int:
        return len(self.labels)

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def name(self, i: int) -> str:
        return f"#{i}"

    def image(self, i: int, reduction: Reduction | None) -> torch.Tensor:
        return self._x[i]


class CropDataset(torch.utils.data.Dataset):
    """Samples of an ImageSource, cut by a View into uint8 crops. Keys are (index, epoch) pairs
    from EpochSampler; `__getitems__` builds a whole Batch in the worker (no collation step), or with
    `encode` an Encoded batch of JPEG bytes and crop boxes for the device to decode and cut."""

    def __init__(self, source: ImageSource, view: View, seed: int = 0, encode: bool = False):
        self.source, self.view, self.seed, self.encode = source, view, seed, encode

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> Batch | Encoded:
        return self.__getitems__([key])

    def __getitems__(self, keys: Sequence[tuple[int, int]]) -> Batch | Encoded:
        n, crops = len(keys), self.view.crops
        c, (h, w) = self.source.channels, self.view.size
        out = crop_buffer(n, crops, c, (h, w))
        labels, skipped, kept = [], [], 0
        jpegs: list[bytes] = []
        boxes: list[list[Box]] = []
        slots: list[int] = []
        names: list[int] = []  # source indices of the JPEGs
        for index, epoch in keys:
            rng = sample_rng(self.seed, epoch, index)
            try:
                if self.encode:
                    data, size = self.source.encoded(index)
                    if size is not None:
                        boxes.append(self.view.boxes(*size, rng))
                        jpegs.append(data)
                        slots.append(len(labels))
                        names.append(index)
                        labels.append(self.source.label(index))
                        continue
                    crops_ = self._crops(rng, lambda r, data=data: decode_bytes(data, c, r))
                else:
                    crops_ = self._crops(rng, lambda r, index=index: self.source.image(index, r))
            except BadImage as err:
                skipped.append((self.source.name(index), str(err)))
                continue
            for k, crop in enumerate(crops_):
                (out[kept, k] if crops > 1 else out[kept]).copy_(crop)
            labels.append(self.source.label(index))
            kept += 1
        labels_ = torch.tensor(labels, dtype=torch.int64)
        if not self.encode:
            return Batch(out[:kept], labels_, skipped)
        lengths = [len(d) for d in jpegs]
        return Encoded(torch.frombuffer(bytearray(b"".join(jpegs)), dtype=torch.uint8) if jpegs else
                       torch.empty(0, dtype=torch.uint8),
                       torch.tensor(lengths, dtype=torch.int64),
                       torch.tensor([[[*b[:4], float(b.flip)] for b in bs] for bs in boxes],
                                    dtype=torch.float64).view(len(jpegs), crops, 5),
                       torch.tensor(slots, dtype=torch.int64), [self.source.name(i) for i in names],
                       out[:kept], labels_, skipped)

    def _crops(self, rng: random.Random, decode: Callable[[Reduction], torch.Tensor]) -> list[torch.Tensor]:
        """Decode (at a reduced size when the crops allow) and cut; the crops are chosen on the
        stored size, read by the decoder from the header before it decodes."""
        plan: dict = {}

        def reduction(h: int, w: int) -> int:
            plan["hw"], plan["boxes"] = (h, w), self.view.boxes(h, w, rng)
            return max_reduction(plan["boxes"], self.view.size)

        img = decode(reduction)
        h, w = img.shape[1:]
        if not plan:
            reduction(h, w)
        sy, sx = h / plan["hw"][0], w / plan["hw"][1]
        boxes = [Box(b.top * sy, b.left * sx, b.height * sy, b.width * sx, b.flip) for b in plan["boxes"]]
        return [crop_resize(img, b, self.view.size) for b in boxes]


def crop_buffer(n: int, crops: int, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """uint8 N x C x H x W (N x crops x C x H x W when crops > 1) in channels-last memory: the CPU's
    resampling makes each crop H x W x C in memory (images.resample), so writing it here is a plain
    copy. Into channels-first memory it was a transposition, 0.1-0.2 ms a crop on this 2-core machine,
    a quarter of the whole cost of a stored image (bench/RESULTS-prepare.md); Preprocess gives the
    model the layout it runs in. One channel: plain N x C x H x W strides, the same memory order (with
    channels-last strides a 1-channel batch would count as both layouts, and a convolution on the CPU
    then picks its channels-last kernels: other roundings)."""
    h, w = size
    if channels == 1:
        return torch.empty((n, crops, 1, h, w) if crops > 1 else (n, 1, h, w), dtype=torch.uint8)
    if crops > 1:
        return torch.empty((n, crops, h, w, channels), dtype=torch.uint8).permute(0, 1, 4, 2, 3)
    return torch.empty((n, h, w, channels), dtype=torch.uint8).permute(0, 3, 1, 2)


def pass_batch(batch: Batch) -> Batch:
    """The DataLoader's collate_fn: CropDataset already returns whole batches."""
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """This process's share of an epoch, as (index, epoch) keys.

    The order depends only on (seed, epoch). Training shards are cut to equal length (every
    process must take the same number of steps); evaluation shards keep every sample exactly once
    (none padded, so nothing is counted twice). `start` skips keys already seen when resuming
    mid-epoch.
    """

    def __init__(self, n: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world: int = 1,
                 equal_shards: bool = True):
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world, self.equal_shards = rank, world, equal_shards
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) & 0x7FFF_FFFF_FFFF_FFFF)
        return torch.randperm(self.n, generator=g).tolist()

    def _shard(self) -> list[int]:
        order = self._order()
        if self.equal_shards:
            order = order[: len(order) // self.world * self.world]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter([(i, self.epoch) for i in self._shard()[self.start :]])

    def __len__(self) -> int:
        return max(len(self._shard()) - self.start, 0)


# ----------------------------------------------------------------------------- data sets


@dataclass
class Stats:
    """Pixel statistics on a 0..1 scale, per channel, for normalisation and PCA lighting."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    eigval: tuple[float, ...]
    eigvec: tuple[tuple[float, ...], ...]

    @classmethod
    def imagenet(cls, channels: int) -> "Stats":
        if channels == 3:
            return cls(IMAGENET_MEAN, IMAGENET_STD, IMAGENET_EIGVAL, IMAGENET_EIGVEC)
        # gray: ImageNet's mean luminance, and its first principal component (nearly luminance)
        return cls((0.449,), (0.226,), (IMAGENET_EIGVAL[0],), ((1.0,),))

    @classmethod
    def of_pixels(cls, pixels: np.ndarray) -> "Stats":
        """From an (N, C) array of 0..1 pixel values."""
        mean, std = pixels.mean(0), pixels.std(0)
        if pixels.shape[1] == 1:
            return cls((float(mean[0]),), (float(std[0]),), (float(std[0] ** 2),), ((1.0,),))
        eigval, eigvec = np.linalg.eigh(np.cov(pixels, rowvar=False))
        order = np.argsort(eigval)[::-1]
        return cls(tuple(map(float, mean)), tuple(map(float, std)), tuple(map(float, eigval[order])),
                   tuple(tuple(map(float, row)) for row in eigvec[:, order]))


@dataclass
class DataSet:
    """The train and val sources of a run, with their class names and statistics."""

    name: str
    classes: list[str]
    train: ImageSource
    val: ImageSource
    stats: Stats
    in_memory: bool


def open_folder(root: str | os.PathLike, channels: int) -> DataSet:
    layout = scan_layout(root)
    return DataSet(layout.describe(), layout.classes, FileSource(layout.splits["train"], channels),
                   FileSource(layout.splits["val"], channels), Stats.imagenet(channels), False)


def open_digits(channels: int) -> DataSet:
    """scikit-learn's 8x8 handwritten digits, bundled with netdsl (see assets/DIGITS-ATTRIBUTION.md)."""
    with np.load(DIGITS_PATH) as d:
        xt, yt, xv, yv = d["x_train"], d["y_train"], d["x_val"], d["y_val"]
        classes = [str(c) for c in d["classes"]]
    pixels = (xt.reshape(-1, 1) / 255.0).repeat(channels, axis=1)
    stats = Stats.of_pixels(pixels)
    if channels == 3:  # identical channels: one real component (the others are numerically 0)
        stats = Stats(stats.mean, stats.std, (stats.std[0] ** 2 * 3, 0.0, 0.0),
                      ((3 ** -0.5, 0.0, 0.0),) * 3)
    name = f"bundled digits (scikit-learn, 8x8 upscaled): {len(classes)} classes, " \
           f"{len(yt):,} train, {len(yv):,} val images"
    return DataSet(name, classes, ArraySource(xt, yt, channels), ArraySource(xv, yv, channels),
                   stats, True)


def open_data(data: str | os.PathLike | None, channels: int) -> DataSet:
    """`data` is a folder in ImageNet's layout, a store `netdsl prepare` made (store.py), or None for
    the bundled digits."""
    if channels not in (1, 3):
        raise UsageError(f"the spec's input has {channels} channels; images can feed 1 (gray) or 3 (RGB)")
    if data is None:
        return open_digits(channels)
    from .store import open_store, store_state
    return open_store(data, channels) if store_state(data) else open_folder(data, channels)


# ----------------------------------------------------------------------------- the net's ends


def image_input(graph: Graph) -> tuple[int, tuple[int, int]]:
    """(channels, (height, width)) of the net's one image input; UsageError for any other input."""
    inputs = graph.inputs()
    if len(inputs) != 1 or inputs[0].shape is None or len(inputs[0].shape) != 3:
        raise UsageError(f"{graph.source}: training needs one image input (C x H x W); "
                         f"this spec has {len(inputs)} input(s)")
    c, h, w = inputs[0].shape
    return c, (h, w)


def check_classes(graph: Graph, data: DataSet) -> None:
    """The net must end in one vector of class scores, one per class of the data."""
    outputs = graph.outputs()
    if len(outputs) != 1 or outputs[0].shape is None or len(outputs[0].shape) != 1:
        raise UsageError(f"{graph.source}: training needs one output of class scores")
    n = outputs[0].shape[0]
    if n != len(data.classes):
        raise UsageError(f"{graph.source} outputs {n} classes but {data.name.split(':')[0]} has "
                         f"{len(data.classes)} classes; " + (
                             f"train with -D classes={len(data.classes)} (the spec's `const classes`)"
                             if "classes" in graph.constants else
                             f"change the last layer (e.g. `const classes = {len(data.classes)}` used by it, "
                             f"then -D classes=N on the command line) or the data"))
