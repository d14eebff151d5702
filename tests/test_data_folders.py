"""Data folders that lie: link loops, links to folders, FIFOs, devices, broken links, huge files and
decompression bombs. Scanning finishes, counts exactly the real images and reports every entry it
skipped with its reason; decoding refuses anything that is not a regular file.

Anything that could hang or eat memory on a wrong implementation (walking a link loop, opening a
FIFO, reading /dev/zero) runs in a child process with a timeout and a memory limit, so a regression
fails the test instead of stalling or killing the test run. The timeouts are hang guards, not
speed requirements.
"""
from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from netdsl.errors import BadImage
from netdsl.training import data, images

HANG_GUARD_S = 60
posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"),
                                reason="needs FIFOs, symlinks and /dev/zero")

# The child runs one function of netdsl.training.data with the address space capped at 2 GiB
# above what the imports took, so an unbounded read fails with MemoryError instead of swapping.
CHILD = r"""
import pickle, sys
from netdsl.training import data
try:
    import resource
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2 ** 31, resource.getrlimit(resource.RLIMIT_AS)[1]))
except (ImportError, OSError, ValueError, StopIteration):
    pass
name, args = pickle.load(sys.stdin.buffer)
try:
    out = ("returned", getattr(data, name)(*args))
except BaseException as err:
    out = ("raised", type(err).__name__, str(err))
sys.stdout.buffer.write(pickle.dumps(out))
"""


def in_child(name: str, *args):
    """data.<name>(*args) in a fresh process: ("returned", value) or ("raised", type, message)."""
    try:
        done = subprocess.run([sys.executable, "-c", CHILD], input=pickle.dumps((name, args)),
                              capture_output=True, timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}{args} did not finish within {HANG_GUARD_S} s: it hangs")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return pickle.loads(done.stdout)


def write_image(path: Path, fmt: str | None = None, size=(24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(len(str(path))).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, fmt)
    return path


def real_images(root: Path, per_class: int = 3) -> list[Path]:
    """train/ and val/ with classes a and b, JPEG and PNG files: 2 x 2 x per_class images."""
    made = []
    for split in ("train", "val"):
        for c in ("a", "b"):
            for i in range(per_class):
                made.append(write_image(root / split / c / f"{i}.{'png' if i % 2 else 'jpg'}"))
    return made


def make_unix_socket(path: Path) -> socket.socket:
    # bound by a relative name: tmp_path can be longer than a socket address may be (108 bytes)
    sock = socket.socket(socket.AF_UNIX)
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        sock.bind(path.name)
    finally:
        os.chdir(cwd)
    return sock


def skipped_reasons(layout) -> dict[str, str]:
    return {os.path.relpath(p, layout.root): reason for p, reason in layout.skipped}


# ----------------------------------------------------------------------------- scanning


@posix_only
def test_scan_skips_loops_and_special_files_and_counts_real_images(tmp_path):
    root = tmp_path / "data"
    made = real_images(root)
    a = root / "train" / "a"
    os.symlink(".", a / "self.jpg")              # a link loop: the folder itself
    os.symlink("..", a / "up")                   # a link to the parent folder (train/, other classes)
    os.symlink("ring.jpg", a / "ring.jpg")       # a link to itself: ELOOP
    os.symlink("nowhere.jpg", a / "gone.jpg")    # a broken link
    os.symlink("/dev/zero", a / "z.jpg")         # endless bytes
    os.mkfifo(a / "x.jpg")                       # reading blocks for ever
    os.mkfifo(root / "val" / "b" / "y.png")
    os.mkfifo(root / "train" / "loose.jpg")      # a special file directly in a split: skipped, not loose
    os.symlink(".", root / "train" / "all")      # a class folder that is the split itself
    sock = make_unix_socket(a / "s.jpg")
    try:
        result = in_child("scan_layout", str(root))
    finally:
        sock.close()
    assert result[0] == "returned", result
    layout = result[1]
    assert layout.classes == ["a", "b"]
    assert sorted(p for split in layout.splits.values() for p, _ in split) == sorted(map(str, made))
    reasons = skipped_reasons(layout)
    assert set(reasons) == {"train/a/self.jpg", "train/a/up", "train/a/ring.jpg", "train/a/gone.jpg",
                            "train/a/z.jpg", "train/a/x.jpg", "train/a/s.jpg", "val/b/y.png",
                            "train/loose.jpg", "train/all"}
    assert reasons["train/a/self.jpg"].startswith("link loop")
    assert reasons["train/a/up"].startswith("link loop")
    assert reasons["train/all"].startswith("link loop")
    assert reasons["train/a/ring.jpg"].startswith("link loop")
    assert reasons["train/a/gone.jpg"] == "broken link (to nowhere.jpg)"
    assert reasons["train/a/z.jpg"] == "not a regular file (a link to a character device, /dev/zero)"
    assert reasons["train/a/x.jpg"] == "not a regular file (a FIFO)"
    assert reasons["train/a/s.jpg"] == "not a regular file (a socket)"


@posix_only
def test_links_to_folders_are_followed_once(tmp_path):
    root = tmp_path / "data"
    made = real_images(root, per_class=2)
    extra = [write_image(tmp_path / "extra" / f"e{i}.jpg") for i in range(2)]
    os.symlink(tmp_path / "extra", root / "train" / "a" / "more")       # followed: its images count
    os.symlink(tmp_path / "extra", root / "train" / "a" / "more_again")  # the same folder: skipped
    layout = data.scan_layout(root)
    train_a = [p for p, label in layout.splits["train"] if label == 0]
    assert train_a == [str(p) for p in made[:2]] + [str(root / "train/a/more" / p.name) for p in extra]
    assert list(skipped_reasons(layout)) == ["train/a/more_again"]
    assert skipped_reasons(layout)["train/a/more_again"].startswith("link to a folder already scanned")


def test_nested_folders_keep_the_order_of_os_walk(tmp_path):
    # sample indices (and so a resumed run's crops) depend on this order: it must not change
    root = tmp_path / "data"
    real_images(root)
    for rel in ("train/a/z/1.jpg", "train/a/m/2.jpg", "train/a/m/k/3.jpg", "train/a/B/4.jpg"):
        write_image(root / rel)
    walked = []
    for dirpath, dirnames, filenames in os.walk(root / "train" / "a"):
        dirnames.sort()
        walked += [os.path.join(dirpath, f) for f in sorted(filenames)]
    layout = data.scan_layout(root)
    assert [p for p, label in layout.splits["train"] if label == 0] == walked
    assert layout.skipped == []


@posix_only
def test_describe_reports_skipped_entries(tmp_path):
    root = tmp_path / "data"
    real_images(root)
    assert data.scan_layout(root).describe() == f"{root}: 2 classes, 6 train, 6 val images"
    os.mkfifo(root / "train" / "a" / "x.jpg")
    os.symlink("nowhere.jpg", root / "val" / "b" / "gone.jpg")
    text = data.scan_layout(root).describe()
    assert text == (f"{root}: 2 classes, 6 train, 6 val images; 2 entries skipped "
                    "(first: train/a/x.jpg: not a regular file (a FIFO))")
    assert text.split(":")[0] == str(root)  # check_classes names the folder by what precedes ':'
    assert "\n" not in text


@posix_only
def test_skipped_special_files_are_not_a_layout_error(tmp_path):
    root = tmp_path / "data"
    real_images(root)
    os.mkfifo(root / "val" / "x.jpg")            # would be a loose file if it were one
    (root / "val" / "notes.txt").write_text("") # a regular file directly in val/ still is
    with pytest.raises(data.DataError) as err:
        data.scan_layout(root)
    assert "notes.txt" in str(err.value) and "x.jpg" not in str(err.value)
    os.remove(root / "val" / "notes.txt")
    assert len(data.scan_layout(root).skipped) == 1


# ----------------------------------------------------------------------------- decoding


@posix_only
def test_decode_refuses_what_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "x.jpg")
    os.symlink("/dev/zero", tmp_path / "z.jpg")
    os.mkdir(tmp_path / "d.jpg")
    expected = {"x.jpg": "not a regular file (a FIFO)",
                "z.jpg": "not a regular file (a character device)",
                "d.jpg": "not a regular file (a folder)"}
    for name, reason in expected.items():
        assert in_child("decode_file", str(tmp_path / name), 3) == ("raised", "BadImage", reason)


def test_decode_refuses_a_huge_file_without_reading_it(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(BadImage) as err:
        images.decode_file(str(path), 3)
    assert str(err.value) == f"file of {images.MAX_FILE_BYTES + 1:,} bytes is too large for an image"


def test_decode_reads_a_link_to_a_regular_file(tmp_path):
    target = write_image(tmp_path / "real.png", "PNG")
    link = tmp_path / "link.png"
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError):
        pytest.skip("no symlinks here")
    assert tuple(images.decode_file(str(link), 3).shape) == (3, 16, 24)


def test_decompression_bomb_reason_is_kept_whole(tmp_path, monkeypatch):
    path = write_image(tmp_path / "bomb.png", "PNG", size=(40, 30))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,200 pixels: over twice the limit
    with pytest.raises(BadImage) as err:
        images.decode_file(str(path), 3)
    reason = str(err.value)
    assert "decompression bomb" in reason
    assert "Image size (1200 pixels) exceeds limit of 200 pixels" in reason
