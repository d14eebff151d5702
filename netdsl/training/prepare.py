"""`netdsl prepare`: the paper's preprocessing as a one-time step. Every image of SRC/train and
SRC/val is decoded once, converted to RGB, its short side brought to `size` (or cut to the paper's
size x size square), encoded as JPEG, and written to a store (store.py) that training reads through
a memory map: a few large files instead of a million small ones, and images that decode several
times faster than the originals.

- Decoding is training's own (images.decode_bytes, reduced-size JPEG decoding included): a file
  training would skip (empty, truncated, not an image, ...) is skipped here with the same reason and
  listed in the summary and in the store; odd ones (CMYK, 16-bit, gray, alpha, palette) are
  converted as training converts them.
- A JPEG that is already small enough (short side <= size; exactly size x size with `square`) and
  that training decodes as it is (complete, RGB or gray) is stored byte for byte, not re-encoded:
  training on the store then sees exactly the pixels, and so the crops and the loss curve, of
  training on the folder. Everything else is resized (never enlarged, except to fill `square`) and
  re-encoded with Pillow (libjpeg-turbo) at `quality`.
- Parallel over worker processes, in order: the store does not depend on the number of workers.
  Progress is committed every `chunk` images (shards appended and flushed to disk, then the
  manifest replaced atomically); a prepare killed anywhere continues from the last commit when run
  again, after checking the committed records, and ends with the same bytes as one that ran
  through.
- The pixel statistics of the train split are summed exactly (integers), so they too are the same
  however the work was divided or interrupted.
- SRC may also hold ImageNet 2012 as distributed (scan_archives): the images are read inside its
  tars, and the store is the one the unpacked and sorted folder gives.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import mmap
import multiprocessing
import os
import shutil
import signal
import sys
import time
import zlib
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from ..errors import BadImage, DataError, Interrupted, UsageError
from .data import SPLITS, Layout, Stats, scan_layout
from .images import (IMAGE_EXTENSIONS, MAX_FILE_BYTES, Box, _square_centre, crop_resize, decode_bytes, plain_jpeg_size,
                     read_image_file)
from .rundir import RunLock, write_atomic
from .store import FORMAT, RECORD, STORE_MARKER, VERSION, WORK_DIR, read_marker, store_state

MANIFEST = "manifest.json"
LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L, for the gray statistics
TASK = 32  # images per worker task, at most
SHOW_SKIPPED = 20  # skipped files named in the summary (all are in the store's json)


@dataclass(frozen=True)
class Options:
    size: int = 256
    square: bool = False
    quality: int = 90

    def fits(self, h: int, w: int) -> bool:
        """Stored as it is: no resize needed."""
        return h == w == self.size if self.square else min(h, w) <= self.size

    def target(self, h: int, w: int) -> tuple[Box, tuple[int, int]]:
        """The region of an image that does not fit, and the size it becomes."""
        if self.square:  # the paper: short side to size, then the central square
            top, left, side = _square_centre(h, w)
            return Box(top, left, side, side), (self.size, self.size)
        s = self.size / min(h, w)
        size = (self.size, max(1, round(w * s))) if h <= w else (max(1, round(h * s)), self.size)
        return Box(0, 0, h, w), size

    def reduction(self, h: int, w: int) -> int:
        """JPEG DCT scaling (1, 2, 4, 8) that keeps the short side at least `size`."""
        k = 1
        while k < 8 and min(h, w) / (2 * k) >= self.size:
            k *= 2
        return k

    def describe(self) -> str:
        shape = f"{self.size}x{self.size} (short side {self.size}, central square)" if self.square else \
            f"short side at most {self.size}"
        return f"{shape}, JPEG quality {self.quality}"


# ----------------------------------------------------------------------------- one image (in a worker)


class Item(NamedTuple):
    payload: bytes | None  # the record's bytes; None: skipped
    reason: str  # why skipped
    source_bytes: int
    height: int = 0
    width: int = 0
    as_is: bool = False
    s1: tuple[int, ...] = ()  # sum of each channel's 0..255 values
    s2: tuple[int, ...] = ()  # sums of products: RR, RG, RB, GG, GB, BB
    pixels: int = 0


class Member(NamedTuple):
    """An image inside an uncompressed tar: its bytes are at `offset` of the tar file."""

    tar: str
    offset: int
    size: int


_TAR_FILES: dict[str, int] = {}  # tar path -> descriptor, per worker process


def read_ref(ref: str | Member) -> bytes:
    """The bytes of a file, or of a member of a tar (read in place, never unpacked)."""
    if isinstance(ref, str):
        return read_image_file(ref)
    if ref.size > MAX_FILE_BYTES:
        raise BadImage(f"file of {ref.size:,} bytes is too large for an image")
    fd = _TAR_FILES.get(ref.tar)
    if fd is None:
        fd = _TAR_FILES[ref.tar] = os.open(ref.tar, os.O_RDONLY)
    data = os.pread(fd, ref.size, ref.offset)
    if len(data) != ref.size:
        raise BadImage(f"the archive ends inside this member ({len(data):,} of {ref.size:,} bytes)")
    return data


def prepare_file(ref: str | Member, opts: Options) -> Item:
    """Read, decode, resize and encode one file (or tar member), as a worker does."""
    try:
        data = read_ref(ref)
    except BadImage as err:
        return Item(None, str(err), 0)
    except OSError as err:  # what decode_file reports
        return Item(None, f"unreadable ({err.strerror or err})", 0)
    try:
        img = decode_bytes(data, 3, opts.reduction)
    except BadImage as err:
        return Item(None, str(err), len(data))
    h, w = img.shape[1:]
    if opts.fits(h, w) and plain_jpeg_size(data) == (h, w):
        payload, as_is = data, True
    else:
        if not opts.fits(h, w):
            box, size = opts.target(h, w)
            img = crop_resize(img, box, size)
        try:
            payload, as_is = _encode(img, opts.quality), False
        except Exception as err:  # what training reads but JPEG cannot hold: more than 65,500 pixels a side
            return Item(None, f"cannot be stored as a JPEG of {img.shape[2]}x{img.shape[1]} "
                              f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__})",
                        len(data))
    a = img.reshape(3, -1).double()  # integer sums below 2**53: exact in any order
    s1 = [int(v) for v in a.sum(1).tolist()]
    s2 = (a @ a.T).tolist()
    return Item(payload, "", len(data), int(img.shape[1]), int(img.shape[2]), as_is, tuple(s1),
                tuple(int(s2[i][j]) for i in range(3) for j in range(i, 3)), int(a.shape[1]))


def _encode(img, quality: int) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img.permute(1, 2, 0).numpy())).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _prepare_task(refs: list[str | Member], opts: Options) -> list[Item]:
    return [prepare_file(r, opts) for r in refs]


def _init_worker() -> None:
    import torch

    from .host import die_with_parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(signal.SIGKILL)  # a killed prepare leaves no workers behind
    torch.set_num_threads(1)  # one image per process; no thread pools forked half-made


# ----------------------------------------------------------------------------- progress


@dataclass
class SplitProgress:
    total: int  # source files
    done: int = 0  # source files handled (stored or skipped), in order
    records: int = 0
    bin_bytes: int = 0
    source_bytes: int = 0
    as_is: int = 0
    pixels: int = 0
    s1: list[int] = field(default_factory=lambda: [0] * 3)
    s2: list[int] = field(default_factory=lambda: [0] * 6)
    skipped: list[list[str]] = field(default_factory=list)  # [file relative to the split, reason]


@dataclass
class State:
    source: str
    options: Options
    fingerprint: str
    classes: list[str]
    splits: dict[str, SplitProgress]

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT + "-manifest", "version": VERSION, "source": self.source,
                           "options": asdict(self.options), "fingerprint": self.fingerprint,
                           "classes": self.classes, "splits": {s: asdict(p) for s, p in self.splits.items()}})

    @classmethod
    def from_json(cls, text: str) -> "State":
        d = json.loads(text)
        if d.get("format") != FORMAT + "-manifest" or d.get("version") != VERSION:
            raise ValueError("not this netdsl's manifest")
        return cls(d["source"], Options(**d["options"]), d["fingerprint"], d["classes"],
                   {s: SplitProgress(**p) for s, p in d["splits"].items()})


@dataclass
class Summary:
    out: Path
    meta: dict  # the store's json
    images: int = 0  # prepared by this run
    seconds: float = 0.0
    workers: int = 0
    resumed_from: int = 0
    already: bool = False

    def render(self) -> str:
        m, sp = self.meta, self.meta["splits"]
        opts = Options(**m["options"])
        files = sum(s["source_files"] for s in sp.values())
        src_bytes = sum(s["source_bytes"] for s in sp.values())
        stored = sum(s["bytes"] for s in sp.values())
        kept = sum(s["kept_as_is"] for s in sp.values())
        lines = [f"{'already prepared' if self.already else 'prepared'}: {self.out} from {m['source']} "
                 f"({len(m['classes'])} classes; {opts.describe()})"]
        lines.append("  " + "; ".join(f"{s}: {d['images']:,} images of {d['source_files']:,} files"
                                      for s, d in sp.items()))
        ratio = f" ({100 * stored / src_bytes:.1f}% of the files read)" if src_bytes else ""
        lines.append(f"  {files:,} files, {_mb(src_bytes)} read -> {sum(d['images'] for d in sp.values()):,} "
                     f"records, {_mb(stored)}{ratio}; {kept:,} JPEG(s) small enough kept byte for byte")
        measured = (m.get("measured") or {}).get("3")
        if measured:
            lines.append("  train pixels (0..1): mean " + " ".join(f"{v:.3f}" for v in measured["mean"]) +
                         ", std " + " ".join(f"{v:.3f}" for v in measured["std"]) +
                         " (recorded; training normalises with ImageNet's, as for a folder)")
        skipped = m.get("skipped", [])
        if skipped:
            lines.append(f"  skipped {len(skipped):,} file(s), as training would skip them:")
            lines += [f"    {s['split']}/{s['file']}: {s['reason']}" for s in skipped[:SHOW_SKIPPED]]
            if len(skipped) > SHOW_SKIPPED:
                lines.append(f"    ... and {len(skipped) - SHOW_SKIPPED:,} more (all listed in {STORE_MARKER})")
        if self.images:
            rate = self.images / self.seconds if self.seconds > 0 else float("inf")
            lines.append(f"  this run: {self.images:,} images in {self.seconds:.1f} s, {rate:,.1f} images/s "
                         f"with {self.workers} worker process(es)" +
                         (f" (resumed after {self.resumed_from:,})" if self.resumed_from else ""))
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n / 1e3:,.1f} kB"


# ----------------------------------------------------------------------------- what is read


@dataclass
class Source:
    """What a prepare reads, in the order of the store: per split, each image's reference (a path or
    a tar member) and label; its name relative to the split folder (for messages and the store)."""

    root: Path
    classes: list[str]
    splits: dict[str, list[tuple[str | Member, int]]]
    skipped: list[tuple[str, str, str]]  # (split, name, reason): never read
    fingerprint: str
    names: dict[str, list[str]] | None = None  # tar members' names; files' are their paths
    words: dict[str, str] | None = None  # what each class is (ImageNet's devkit)

    def name(self, split: str, i: int) -> str:
        if self.names is not None:
            return self.names[split][i]
        return os.path.relpath(self.splits[split][i][0], self.root / split)

    @classmethod
    def of_folder(cls, root: Path) -> "Source":
        layout = scan_layout(root)
        skipped = []
        for path, reason in layout.skipped:  # special files, link loops, unreadable folders
            split, _, rest = os.path.relpath(path, root).partition(os.sep)
            skipped.append((split, rest or split, reason))
        return cls(root, layout.classes, layout.splits, skipped, _fingerprint(layout))


# ----------------------------------------------------------------------------- ImageNet's tars


TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
LOC_SOLUTION, LOC_SYNSETS = "LOC_val_solution.csv", "LOC_synset_mapping.txt"
VAL_TRUTH, VAL_META = "data/ILSVRC2012_validation_ground_truth.txt", "data/meta.mat"


def is_archive_source(src: Path) -> bool:
    return src.is_dir() and ((src / TRAIN_TAR).is_file() or (src / VAL_TAR).is_file())


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of an open file, as a file of their own: a tar inside a tar."""

    def __init__(self, f, start: int, size: int):
        self.f, self.start, self.size, self.pos = f, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = {0: pos, 1: self.pos + pos, 2: self.size + pos}[whence]
        return self.pos

    def readinto(self, b) -> int:
        self.f.seek(self.start + self.pos)
        data = self.f.read(max(0, min(len(b), self.size - self.pos)))
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _tar(name: str, fileobj):
    import tarfile
    try:
        return tarfile.open(fileobj=fileobj, mode="r:")
    except tarfile.TarError as err:
        raise DataError(f"{name}: not an uncompressed tar ({err}); netdsl reads ImageNet's tars as they are "
                        "distributed, without unpacking them") from None


def scan_archives(src: Path) -> Source:
    """ImageNet as distributed, in SRC: ILSVRC2012_img_train.tar (one tar per class, named by its
    WordNet id), ILSVRC2012_img_val.tar (flat), and the validation labels from the devkit
    (ILSVRC2012_devkit_t12.tar.gz: its ground truth and meta.mat) or from LOC_val_solution.csv
    (with LOC_synset_mapping.txt for the class descriptions). Images are read inside the tars
    (uncompressed: each member is a byte range), never unpacked. The order, names and labels are
    those of the folder that unpacking and sorting would give, so the store is the same."""
    missing = [n for n in (TRAIN_TAR, VAL_TAR) if not (src / n).is_file()]
    if missing:
        raise DataError(f"--data {src}: {' and '.join(missing)} missing; ImageNet's distribution needs both "
                        f"(and {DEVKIT} or {LOC_SOLUTION} for the validation labels)")
    h = hashlib.sha256()
    problems, skipped, not_images = [], [], []
    per_class: dict[str, list[tuple[str, Member]]] = {}
    train_tar = src / TRAIN_TAR
    with open(train_tar, "rb") as f:
        for m in _tar(str(train_tar), f):
            if m.isdir():
                continue
            if not m.isfile() or not m.name.endswith(".tar"):
                problems.append(f"{TRAIN_TAR} holds {m.name}, not a class's tar (<wnid>.tar)")
                continue
            wnid = os.path.basename(m.name)[:-4]
            files = per_class.setdefault(wnid, [])
            for im in _tar(f"{TRAIN_TAR}:{m.name}", _Window(f, m.offset_data, m.size)):
                name = f"{wnid}/{im.name}"
                if im.isdir():
                    continue
                if not im.isfile() or im.issparse():
                    skipped.append(("train", name, "not a regular file in the archive"))
                elif os.path.splitext(im.name)[1].lower() not in IMAGE_EXTENSIONS:
                    not_images.append(f"train/{name}")
                else:
                    files.append((name, Member(str(train_tar), m.offset_data + im.offset_data, im.size)))
    classes = sorted(per_class)
    index = {c: i for i, c in enumerate(classes)}
    labels, words, label_file = _val_labels(src)
    words = {c: words[c] for c in classes if c in words} if words else None
    val: list[tuple[int, str, Member]] = []
    unlabelled, unknown = [], set()
    val_tar = src / VAL_TAR
    with open(val_tar, "rb") as f:
        for m in _tar(str(val_tar), f):
            if m.isdir():
                continue
            base = os.path.basename(m.name)
            wnid = labels.get(os.path.splitext(base)[0])
            if not m.isfile() or m.issparse():
                skipped.append(("val", m.name, "not a regular file in the archive"))
            elif os.path.splitext(base)[1].lower() not in IMAGE_EXTENSIONS:
                not_images.append(f"val/{m.name}")
            elif wnid is None:
                unlabelled.append(m.name)
            elif wnid not in index:
                unknown.add(wnid)
            else:
                val.append((index[wnid], f"{wnid}/{base}", Member(str(val_tar), m.offset_data, m.size)))
    empty = [c for c in classes if not per_class[c]]
    if not classes:
        problems.append(f"{TRAIN_TAR} holds no class tars")
    if empty:
        problems.append(f"{len(empty)} class tar(s) with no images: {', '.join(empty[:3])}")
    if len(classes) == 1:
        problems.append(f"a single class ({classes[0]}); a classifier needs two or more")
    if not_images:
        problems.append(f"{len(not_images):,} member(s) are not images ({', '.join(not_images[:3])})")
    if unlabelled:
        problems.append(f"{len(unlabelled):,} validation image(s) have no label in {label_file} "
                        f"({', '.join(unlabelled[:3])})")
    if unknown:
        problems.append(f"{label_file} names classes that {TRAIN_TAR} does not hold: {', '.join(sorted(unknown)[:3])}")
    if not val and not unlabelled:
        problems.append(f"{VAL_TAR} holds no images")
    if problems:
        raise DataError(f"--data {src} is not usable:\n" + "\n".join(f"  - {p}" for p in problems))
    train = [(c, name, ref) for c in classes for name, ref in sorted(per_class[c])]
    val.sort(key=lambda v: (v[0], v[1]))
    splits = {"train": [(ref, index[c]) for c, _, ref in train], "val": [(ref, label) for label, _, ref in val]}
    names = {"train": [name for _, name, _ in train], "val": [name for _, name, _ in val]}
    h.update(json.dumps(classes).encode())
    for path in (train_tar, val_tar, src / label_file):
        st = os.stat(path)
        h.update(f"\0{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    for split in SPLITS:
        for name, (ref, label) in zip(names[split], splits[split]):
            h.update(f"\0{split}\0{name}\0{label}\0{ref.offset}\0{ref.size}".encode("utf-8", "surrogateescape"))
    for entry in skipped:
        h.update(("\0skip\0" + "\0".join(entry)).encode("utf-8", "surrogateescape"))
    return Source(src, classes, splits, skipped, h.hexdigest(), names, words)


def _val_labels(src: Path) -> tuple[dict[str, str], dict[str, str] | None, str]:
    """({validation image name without extension: wnid}, {wnid: description}, the file they came from)."""
    if (src / LOC_SOLUTION).is_file():
        import csv
        labels = {}
        with open(src / LOC_SOLUTION, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                boxes = (row.get("PredictionString") or "").split()
                if row.get("ImageId") and boxes:
                    labels[row["ImageId"]] = boxes[0]
        words = None
        if (src / LOC_SYNSETS).is_file():
            lines = (src / LOC_SYNSETS).read_text(encoding="utf-8").splitlines()
            words = dict(line.split(" ", 1) for line in lines if " " in line)
        return labels, words, LOC_SOLUTION
    if (src / DEVKIT).is_file():
        return (*_devkit_labels(src / DEVKIT), DEVKIT)
    raise DataError(f"--data {src}: the validation images' labels are missing: put ImageNet's devkit "
                    f"({DEVKIT}) or Kaggle's {LOC_SOLUTION} beside {VAL_TAR}")


def _devkit_labels(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    import tarfile
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                for want in (VAL_TRUTH, VAL_META):
                    if m.isfile() and m.name.endswith(want):
                        found[want] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"{path}: cannot be read ({err})") from None
    missing = [w for w in (VAL_TRUTH, VAL_META) if w not in found]
    if missing:
        raise DataError(f"{path}: no {' or '.join(missing)}; is it ImageNet 2012's devkit?")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError(f"reading {path.name}'s meta.mat needs scipy (pip install scipy); or give "
                        f"{LOC_SOLUTION} and {LOC_SYNSETS} instead") from None
    synsets = loadmat(io.BytesIO(found[VAL_META]), squeeze_me=True)["synsets"]
    wnid = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
    words = {str(w): str(d) for w, d in zip(synsets["WNID"], synsets["words"])}
    ids = [int(line) for line in found[VAL_TRUTH].decode().split()]
    try:
        labels = {f"ILSVRC2012_val_{i + 1:08d}": wnid[k] for i, k in enumerate(ids)}
    except KeyError as err:
        raise DataError(f"{path}: the ground truth names class {err} that meta.mat does not hold") from None
    return labels, words


# ----------------------------------------------------------------------------- the command


def prepare(src: str | os.PathLike, out: str | os.PathLike, *, size: int = 256, square: bool = False,
            quality: int = 90, workers: int | None = None, chunk: int = 1024, progress: bool = True,
            echo: Callable[[str], None] | None = None,
            _hook: Callable[[str, str, int], None] | None = None) -> Summary:
    """Prepare SRC (ImageNet's folder layout, or its distribution's tars: see scan_archives) into
    the store OUT, or continue a prepare into OUT that was stopped. `chunk`: images per commit.
    `_hook(event, split, done)` is called after each chunk is "written" (not yet committed) and
    "committed" (for tests that kill a prepare there)."""
    echo = echo or (lambda line: print(line, file=sys.stderr))
    if not 1 <= quality <= 100:
        raise UsageError(f"--quality {quality}: a JPEG quality is 1 to 100")
    if size < 1:
        raise UsageError(f"--size {size}: must be at least 1")
    opts = Options(size, square, quality)
    src, out = Path(src), Path(out)
    source = scan_archives(src) if is_archive_source(src) else Source.of_folder(src)
    _check_out(src, out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(out).acquire()
    except UsageError:
        raise UsageError(f"{out} is being written by another netdsl prepare that is still going") from None
    try:
        fingerprint = source.fingerprint
        if store_state(out) == "store":
            return _already(out, opts, fingerprint)
        state = _resume(out, opts, fingerprint, echo) or _start(out, src, source, opts, fingerprint)
        workers = max(1, workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                     else os.cpu_count() or 1))
        before = sum(p.done for p in state.splits.values())
        started = time.monotonic()
        _run(out, source, state, opts, workers, max(1, chunk), progress, _hook)
        seconds = time.monotonic() - started
        meta = _finish(out, source, state)
        return Summary(out, meta, sum(p.done for p in state.splits.values()) - before, seconds, workers, before)
    finally:
        lock.release()


def _check_out(src: Path, out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a new or empty folder")
    real = out.resolve()
    for split in SPLITS:
        inside = (src / split).resolve()
        if real == inside or inside in real.parents:
            raise UsageError(f"--out {out} is inside {src / split}: the store would be read as images")
    if out.is_dir() and not store_state(out):
        others = sorted(p.name for p in out.iterdir() if p.name not in (".lock", WORK_DIR)
                        and not (p.name.startswith(".") and p.name.endswith(".tmp")))
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise UsageError(f"--out {out} holds other files ({shown}); give a new or empty folder (or one "
                             "that a netdsl prepare wrote)")


def _fingerprint(layout: Layout) -> str:
    """What the store is made from: class names, and each file's path, label, size and mtime.
    A resumed prepare must read the same files, or it would not end as an uninterrupted one."""
    h = hashlib.sha256(json.dumps(layout.classes).encode())
    for split in SPLITS:
        base = layout.root / split
        for path, label in layout.splits[split]:
            try:
                st = os.stat(path)
                size, mtime = st.st_size, st.st_mtime_ns
            except OSError:
                size = mtime = -1
            h.update(f"\0{split}\0{os.path.relpath(path, base)}\0{label}\0{size}\0{mtime}".encode(
                "utf-8", "surrogateescape"))
    for path, reason in layout.skipped:
        h.update(f"\0skip\0{os.path.relpath(path, layout.root)}\0{reason}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _start(out: Path, src: Path, source: Source, opts: Options, fingerprint: str) -> State:
    work = out / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    state = State(str(src), opts, fingerprint, source.classes,
                  {s: SplitProgress(len(source.splits[s])) for s in SPLITS})
    write_atomic(work / MANIFEST, state.to_json())  # first: a folder with a manifest is a prepare's
    for split in SPLITS:
        open(out / f"{split}.bin", "wb").close()
        open(work / f"{split}.index.part", "wb").close()
    return state


def _resume(out: Path, opts: Options, fingerprint: str, echo: Callable[[str], None]) -> State | None:
    work = out / WORK_DIR
    try:
        text = (work / MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        state = State.from_json(text)
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(f"{work / MANIFEST} cannot be read ({err}); delete {out} and prepare again") from None
    if state.options != opts:
        raise UsageError(f"{out} holds an unfinished prepare with other options ({state.options.describe()}); "
                         "run it again with those options to finish it, or choose another --out")
    if state.fingerprint != fingerprint:
        raise UsageError(f"the files of the source have changed since the unfinished prepare into {out} began "
                         f"(added, removed or modified); delete {out} and prepare again")
    for p in work.glob(".*.tmp"):
        p.unlink(missing_ok=True)
    checked = 0
    for split, p in state.splits.items():
        _truncate(out / f"{split}.bin", p.bin_bytes, out)
        _truncate(work / f"{split}.index.part", p.records * RECORD.itemsize, out)
        checked += _verify(out, split, p)
    done, total = (sum(getattr(p, k) for p in state.splits.values()) for k in ("done", "total"))
    echo(f"continuing the prepare into {out}: {done:,} of {total:,} files done before "
         f"({checked:,} records checked against their CRC32)")
    return state


def _truncate(path: Path, size: int, out: Path) -> None:
    try:
        have = os.path.getsize(path)
    except FileNotFoundError:
        have = -1
    if have < size:
        raise DataError(f"{path} holds {max(have, 0):,} bytes but {size:,} were committed: the unfinished "
                        f"store is damaged; delete {out} and prepare again")
    if have > size:  # written after the last commit
        os.truncate(path, size)


def _verify(out: Path, split: str, p: SplitProgress) -> int:
    records = np.fromfile(out / WORK_DIR / f"{split}.index.part", dtype=RECORD)
    if not len(records):
        return 0
    with open(out / f"{split}.bin", "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        for i, r in enumerate(records):
            start = int(r["offset"])
            if zlib.crc32(mm[start:start + int(r["length"])]) != int(r["crc32"]):
                raise DataError(f"{out}: committed record {split}[{i}] fails its CRC32 (the disk changed it "
                                f"after it was written); delete {out} and prepare again")
    return len(records)


def _already(out: Path, opts: Options, fingerprint: str) -> Summary:
    meta = read_marker(out)
    if Options(**meta["options"]) != opts:
        raise UsageError(f"{out} holds a store prepared with other options "
                         f"({Options(**meta['options']).describe()}); choose another --out")
    if meta.get("fingerprint") != fingerprint:
        raise UsageError(f"{out} holds a store prepared from other files (the source has changed since); "
                         f"delete it and prepare again, or choose another --out")
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)  # left if killed after the marker was written
    return Summary(out, meta, already=True)


# ----------------------------------------------------------------------------- the work


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main process, as Ctrl-C does."""
    def stop(signum, frame):
        raise KeyboardInterrupt(signum)
    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _run(out: Path, source: Source, state: State, opts: Options, workers: int, chunk: int, progress: bool,
         hook: Callable | None) -> None:
    total = sum(p.total for p in state.splits.values())
    done = sum(p.done for p in state.splits.values())
    if done == total:
        return
    from tqdm import tqdm
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    bar = tqdm(total=total, initial=done, unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=None if progress else True, desc="prepare")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    try:
        with _stop_on_signals():
            for split in SPLITS:
                _run_split(out, source, state, split, opts, pool, workers, chunk, bar, hook)
    except KeyboardInterrupt as err:
        pool.shutdown(wait=True, cancel_futures=True)
        signum = err.args[0] if err.args and isinstance(err.args[0], int) else signal.SIGINT
        raise Interrupted(int(signum), sum(p.done for p in state.splits.values()), total) from None
    except BrokenProcessPool:
        raise DataError("a worker process died (out of memory, or killed); what was committed is kept: "
                        "run the same command again to continue") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()


def _run_split(out: Path, source: Source, state: State, split: str, opts: Options, pool: ProcessPoolExecutor,
               workers: int, chunk: int, bar, hook: Callable | None) -> None:
    p, files = state.splits[split], source.splits[split]
    if p.done == p.total:
        return
    task = max(1, min(TASK, math.ceil((p.total - p.done) / (4 * workers))))
    starts = iter(range(p.done, p.total, task))
    pending: deque = deque()

    def submit() -> None:
        start = next(starts, None)
        if start is not None:
            refs = [ref for ref, _ in files[start:start + task]]
            pending.append((start, pool.submit(_prepare_task, refs, opts)))

    for _ in range(4 * workers):
        submit()
    work = out / WORK_DIR
    with open(out / f"{split}.bin", "ab") as fb, open(work / f"{split}.index.part", "ab") as fi:
        batch: list[tuple[int, list[Item]]] = []
        n = 0
        while pending:
            start, future = pending.popleft()
            items = future.result()
            submit()
            batch.append((start, items))
            n += len(items)
            bar.update(len(items))
            if n >= chunk or not pending:
                _commit(state, split, batch, source, fb, fi, work, hook)
                batch, n = [], 0


def _commit(state: State, split: str, batch: list[tuple[int, list[Item]]], source: Source, fb, fi, work: Path,
            hook: Callable | None) -> None:
    """Append a chunk's records, flush them to disk, then replace the manifest that counts them."""
    p = state.splits[split]
    payloads, records = [], np.zeros(sum(len(items) for _, items in batch), RECORD)
    k = 0
    for start, items in batch:
        for j, it in enumerate(items):
            pos = start + j
            assert pos == p.done, (pos, p.done)
            p.done += 1
            p.source_bytes += it.source_bytes
            if it.payload is None:
                p.skipped.append([source.name(split, pos), it.reason])
                continue
            records[k] = (p.bin_bytes, it.source_bytes, len(it.payload), zlib.crc32(it.payload),
                          source.splits[split][pos][1],
                          pos, it.height, it.width)
            k += 1
            payloads.append(it.payload)
            p.bin_bytes += len(it.payload)
            p.records += 1
            p.as_is += it.as_is
            p.pixels += it.pixels
            p.s1 = [a + b for a, b in zip(p.s1, it.s1)]
            p.s2 = [a + b for a, b in zip(p.s2, it.s2)]
    fb.write(b"".join(payloads))
    fi.write(records[:k].tobytes())
    for f in (fb, fi):
        f.flush()
        os.fsync(f.fileno())
    if hook:
        hook("written", split, p.done)
    write_atomic(work / MANIFEST, state.to_json())
    if hook:
        hook("committed", split, p.done)


# ----------------------------------------------------------------------------- the end


def _finish(out: Path, source: Source, state: State) -> dict:
    """The indexes, names and statistics, and last the marker that makes OUT a store."""
    work = out / WORK_DIR
    for split in SPLITS:
        records = np.fromfile(work / f"{split}.index.part", dtype=RECORD)
        names = [os.fsencode(source.name(split, int(i))) for i in records["source"]]
        _write(out / f"{split}.index.npy", save=lambda f: np.save(f, records))
        _write(out / f"{split}.names.npy",
               save=lambda f: np.save(f, np.array(names, dtype=np.bytes_) if names else np.zeros(0, "S1")))
    skipped = [{"split": s, "file": f, "reason": r} for s in SPLITS for f, r in state.splits[s].skipped]
    skipped += [{"split": s, "file": f, "reason": r} for s, f, r in source.skipped]
    meta = {
        "format": FORMAT, "version": VERSION, "source": state.source, "options": asdict(state.options),
        "classes": state.classes, **({"class_words": source.words} if source.words else {}),
        "splits": {s: {"images": p.records, "bytes": p.bin_bytes, "source_files": p.total,
                       "source_bytes": p.source_bytes, "kept_as_is": p.as_is, "skipped": len(p.skipped)}
                   for s, p in state.splits.items()},
        # what training normalises with: ImageNet's, as for a folder, so that a store trains as its folder
        "stats": {str(c): _stats_dict(Stats.imagenet(c)) for c in (3, 1)},
        # the train split's own, measured on every stored pixel (before JPEG encoding)
        "measured": _measured(state.splits["train"]),
        "skipped": skipped,
        "fingerprint": state.fingerprint,
    }
    _write(out / STORE_MARKER, json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return meta


def _write(path: Path, data: str | None = None, *, save: Callable | None = None) -> None:
    """write_atomic, with the permissions of any new file (its temporary file is private): a store
    is often shared by everyone who trains on it."""
    write_atomic(path, data, save=save)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _stats_dict(s: Stats) -> dict:
    return {"mean": list(s.mean), "std": list(s.std), "eigval": list(s.eigval), "eigvec": [list(r) for r in s.eigvec]}


def _measured(p: SplitProgress) -> dict | None:
    """Stats.of_pixels of every stored train pixel (population std, sample covariance for the PCA),
    from the exact integer sums."""
    n = p.pixels
    if n < 2:
        return None
    s1 = p.s1
    s2 = np.zeros((3, 3), dtype=object)
    for (i, j), v in zip([(i, j) for i in range(3) for j in range(i, 3)], p.s2):
        s2[i, j] = s2[j, i] = v
    scatter = np.array([[(n * s2[i, j] - s1[i] * s1[j]) / (n * 255 ** 2) for j in range(3)] for i in range(3)],
                       dtype=np.float64)  # sum of squared deviations, on 0..1 pixels (exact ints, one division)
    mean = np.array(s1, dtype=np.float64) / (n * 255)
    std = np.sqrt(np.diag(scatter) / n)
    eigval, eigvec = np.linalg.eigh(scatter / (n - 1))
    order = np.argsort(eigval)[::-1]
    rgb = Stats(tuple(map(float, mean)), tuple(map(float, std)), tuple(map(float, eigval[order])),
                tuple(tuple(map(float, row)) for row in eigvec[:, order]))
    w = np.array(LUMA)
    g_mean, g_var = float(w @ mean), float(w @ scatter @ w / n)
    gray = Stats((g_mean,), (math.sqrt(g_var),), (g_var,), ((1.0,),))
    return {"3": _stats_dict(rgb), "1": _stats_dict(gray)}


__all__ = ["Options", "Summary", "prepare", "prepare_file"]
