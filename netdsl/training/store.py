"""Reading a prepared store (`netdsl prepare`, training/prepare.py): the images of a data set as
JPEG bytes in one file per split, with an index, read through a memory map.

    DST/netdsl-store.json    the marker, written last: classes, counts, options, statistics, skipped
    DST/train.bin            the records' bytes, one after the other (JPEG files, whole)
    DST/train.index.npy      one RECORD per image: offset, length, CRC32, label, stored size, ...
    DST/train.names.npy      each record's source file, relative to SRC/train (for messages)
    DST/val.*                the same for val/

A record is decoded exactly as a file of the same bytes is (images.decode_bytes), so the same seeds
give the same crops. A record whose bytes fail their CRC32 is skipped and reported like an
unreadable file, its split, index and source file named.
"""
from __future__ import annotations

import json
import mmap
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import BadImage, DataError
from .data import SPLITS, DataSet, Stats
from .images import Reduction, decode_bytes, decode_plain_jpeg

STORE_MARKER = "netdsl-store.json"
WORK_DIR = ".prepare"  # a prepare in progress: its manifest and partial indexes
FORMAT, VERSION = "netdsl-store", 1
RECORD = np.dtype([("offset", "<u8"), ("source_bytes", "<u8"), ("length", "<u4"), ("crc32", "<u4"),
                   ("label", "<i4"), ("source", "<u4"), ("height", "<u2"), ("width", "<u2")])


def store_state(root: str | os.PathLike) -> str | None:
    """"store" for a finished store, "unfinished" for a prepare that has not ended, else None."""
    root = Path(root)
    if (root / STORE_MARKER).is_file():
        return "store"
    if (root / WORK_DIR / "manifest.json").is_file():
        return "unfinished"
    return None


def read_marker(root: Path) -> dict:
    path = root / STORE_MARKER
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"--data {root}: cannot read {STORE_MARKER} ({getattr(err, 'strerror', None) or err}); "
                        "prepare the store again (netdsl prepare)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"--data {root}: {STORE_MARKER} is not a netdsl store's")
    if meta.get("version") != VERSION:
        raise DataError(f"--data {root}: a store of version {meta.get('version')}; this netdsl reads "
                        f"version {VERSION}: prepare it again")
    return meta


class StoreSource:
    """The images of one split of a store, decoded on demand from the memory-mapped shard.

    The index and names are memory-mapped numpy arrays and the shard one read-only shared map, so
    forked loader workers share all three (nothing is copied per worker); a worker that was not
    forked (spawn) maps them again itself.
    """

    def __init__(self, root: Path, split: str, channels: int):
        self.root, self.split, self.channels = Path(root), split, channels
        self.bin_path = self.root / f"{split}.bin"
        try:
            self.index = np.load(self.root / f"{split}.index.npy", mmap_mode="r")
            self.names = np.load(self.root / f"{split}.names.npy", mmap_mode="r")
            size = os.path.getsize(self.bin_path)
        except (OSError, ValueError) as err:
            raise DataError(f"--data {root}: the {split} split cannot be read "
                            f"({getattr(err, 'strerror', None) or err}); prepare the store again") from None
        if self.index.dtype != RECORD or len(self.names) != len(self.index):
            raise DataError(f"--data {root}: {split}.index.npy or {split}.names.npy is not what this "
                            "netdsl writes; prepare the store again")
        need = int((self.index["offset"].astype(np.uint64) + self.index["length"]).max()) if len(self.index) else 0
        if size < need:
            raise DataError(f"--data {root}: {self.bin_path.name} holds {size:,} bytes but its index needs "
                            f"{need:,}: the store is incomplete or damaged; prepare it again")
        self.labels = self.index["label"]
        self._map: mmap.mmap | None = None
        self._pid = -1

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_map": None, "_pid": -1}

    def __len__(self) -> int:
        return len(self.index)

    def label(self, i: int) -> int:
        return int(self.labels[i])

    def name(self, i: int) -> str:
        return f"{self.root}: record {self.split}[{i}] (from {self.split}/{os.fsdecode(bytes(self.names[i]))})"

    def record(self, i: int) -> bytes:
        """The bytes of record i, checked against their CRC32 (BadImage if they fail)."""
        rec = self.index[i]
        start, n = int(rec["offset"]), int(rec["length"])
        data = self._bytes()[start:start + n]
        if len(data) != n:
            raise BadImage(f"the store's {self.bin_path.name} ends before this record: the store is damaged; "
                           "prepare it again")
        crc = zlib.crc32(data)
        if crc != int(rec["crc32"]):
            raise BadImage(f"checksum mismatch (CRC32 {crc:08x}, the index says {int(rec['crc32']):08x}): "
                           f"its {n:,} bytes at offset {start:,} of {self.bin_path.name} are damaged; "
                           "prepare the store again (or from that source file)")
        return data

    def image(self, i: int, reduction: Reduction | None) -> torch.Tensor:
        data, (h, w) = self.encoded(i)
        k = reduction(h, w) if reduction else 1
        if k == 1:  # every record is a plain JPEG of the size its index gives: no header to read
            return decode_plain_jpeg(data, self.channels)
        return decode_bytes(data, self.channels, lambda *_: k)

    def encoded(self, i: int) -> tuple[bytes, tuple[int, int]]:
        """Record i's bytes (checked) and its stored (height, width)."""
        rec = self.index[i]
        return self.record(i), (int(rec["height"]), int(rec["width"]))

    def _bytes(self) -> mmap.mmap | bytes:
        if self._map is None or self._pid != os.getpid():
            if os.path.getsize(self.bin_path) == 0:  # mmap refuses an empty file
                return b""
            with open(self.bin_path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._pid = os.getpid()
        return self._map


def _stats(meta: dict, channels: int) -> Stats:
    d = meta["stats"][str(channels)]
    return Stats(tuple(d["mean"]), tuple(d["std"]), tuple(d["eigval"]), tuple(tuple(r) for r in d["eigvec"]))


def open_store(root: str | os.PathLike, channels: int) -> DataSet:
    """A prepared store as a DataSet; DataError for an unfinished or damaged one."""
    root = Path(root)
    if store_state(root) == "unfinished":
        raise DataError(f"--data {root}: a `netdsl prepare` into this folder has not finished; run the same "
                        "prepare command again to complete it")
    meta = read_marker(root)
    train, val = (StoreSource(root, s, channels) for s in SPLITS)
    for source in (train, val):
        want = meta["splits"][source.split]["images"]
        if len(source) != want:
            raise DataError(f"--data {root}: {source.split}.index.npy holds {len(source):,} records, "
                            f"{STORE_MARKER} says {want:,}; prepare the store again")
    skipped = len(meta.get("skipped", []))
    name = (f"{root}: prepared store, {len(meta['classes'])} classes, {len(train):,} train, {len(val):,} val images"
            + (f"; {skipped:,} source file(s) skipped when prepared (listed in {STORE_MARKER})" if skipped else ""))
    return DataSet(name, list(meta["classes"]), train, val, _stats(meta, channels), False)
