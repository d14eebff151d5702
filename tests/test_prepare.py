"""`netdsl prepare` and training on its store: hostile folders, a killed prepare resumed to the same
bytes, a damaged record named, and a store that trains exactly as the folder it came from."""
from __future__ import annotations

import csv
import filecmp
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import netdsl
from cli.main import main
from netdsl.errors import BadImage, DataError
from netdsl.training.config import resolve
from netdsl.training.data import Stats, open_data
from netdsl.training.images import decode_file
from netdsl.training.loop import train
from netdsl.errors import Interrupted
from netdsl.training.prepare import prepare
from netdsl.training.store import STORE_MARKER, StoreSource, store_state

REPO = Path(__file__).resolve().parents[1]
TINY = """net tiny "a tiny net for tests"
const classes = 2
defaults { weight_init = kaiming; bias_init = 0 }
input data: 3x16x16
conv1: conv(8, 3, pad=1)
relu1: relu
pool1: maxpool(2, stride=2)
fc2: fc(classes)
prob: softmax
train { recipe = paper; normalize = mean_std; lr = 0.01; batch_size = 8; epochs = 2; workers = 0; deterministic = true }
"""
COLOURS = {"blue": (40, 60, 220), "red": (220, 40, 40)}
TIMING = {"images_per_s", "data_wait_pct", "epoch_s"}


def _image(path: Path, size: tuple[int, int], rng: np.random.Generator, colour=(128, 128, 128), mode="RGB",
           fmt=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(a).convert(mode).save(path, fmt, quality=90)
    return path


def _folder(root: Path, seed: int, n_train: int, n_val: int, sizes=(20, 40)) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        for name, colour in COLOURS.items():
            for i in range(n):
                _image(root / split / name / f"{i}.jpg", tuple(int(v) for v in rng.integers(*sizes, 2)), rng, colour)
    return root


HOSTILE_BAD = {"train/red/zero.jpg", "train/red/cut.jpg", "train/blue/text.jpg", "val/blue/cut.jpg"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """Good JPEGs (some larger than the --size 48 used here) mixed with every odd and broken kind."""
    root = _folder(tmp_path_factory.mktemp("hostile"), 0, 10, 4, sizes=(20, 120))
    rng = np.random.default_rng(1)
    good = (root / "train" / "red" / "0.jpg").read_bytes()
    (root / "train" / "red" / "zero.jpg").write_bytes(b"")
    (root / "train" / "red" / "cut.jpg").write_bytes(good[: len(good) // 2])
    (root / "val" / "blue" / "cut.jpg").write_bytes(good[: len(good) // 3])
    (root / "train" / "blue" / "text.jpg").write_text("not an image, whatever the name says\n" * 20)
    _image(root / "train" / "blue" / "cmyk.jpg", (90, 70), rng, COLOURS["blue"], "CMYK", "JPEG")
    _image(root / "train" / "red" / "gray.jpg", (60, 40), rng, mode="L", fmt="JPEG")
    _image(root / "val" / "red" / "alpha.png", (60, 60), rng, COLOURS["red"], "RGBA", "PNG")
    Image.fromarray(np.full((50, 60), 40000, dtype=np.uint16)).save(root / "train" / "blue" / "g16.png")
    return root


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.net"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def store(hostile, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stores") / "hostile"
    prepare(hostile, out, size=48, workers=2, chunk=8, progress=False)
    return out


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k not in TIMING} for r in csv.DictReader(f)]


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)


# ----------------------------------------------------------------------------- hostile folders


def test_hostile_folder_is_skipped_as_training_skips_it(hostile, store):
    import json
    meta = json.loads((store / STORE_MARKER).read_text())
    skipped = {f"{s['split']}/{s['file']}": s["reason"] for s in meta["skipped"]}
    assert set(skipped) == HOSTILE_BAD
    for name, reason in skipped.items():  # the very reasons training gives for these files
        with pytest.raises(BadImage) as err:
            decode_file(str(hostile / name), 3)
        assert reason == str(err.value)
    assert skipped["train/red/zero.jpg"] == "empty file"
    n_train = sum(1 for _ in (hostile / "train").rglob("*.*"))
    assert meta["splits"]["train"] == {**meta["splits"]["train"], "images": n_train - 3, "source_files": n_train,
                                       "skipped": 3}
    assert store_state(store) == "store" and not (store / ".prepare").exists() and not (store / ".lock").exists()
    assert {p.name for p in store.iterdir()} == {STORE_MARKER, *(f"{s}.{x}" for s in ("train", "val")
                                                                 for x in ("bin", "index.npy", "names.npy"))}


def test_odd_images_are_stored_as_rgb_jpegs_of_the_size(hostile, store):
    source = StoreSource(store, "train", 3)
    names = {os.fsdecode(bytes(n)): i for i, n in enumerate(source.names)}
    assert {"blue/cmyk.jpg", "blue/g16.png", "red/gray.jpg"} <= set(names)
    for i in range(len(source)):
        rec = source.index[i]
        x = source.image(i, None)
        assert x.shape == (3, rec["height"], rec["width"]) and min(x.shape[1:]) <= 48
        raw = Image.open(__import__("io").BytesIO(source.record(i)))
        assert raw.format == "JPEG" and raw.mode in ("RGB", "L")
    # converted as training converts them: 16-bit gray 40000 -> 156, CMYK like PIL
    g16 = source.image(names["blue/g16.png"], None)
    assert abs(int(g16.float().mean()) - round(40000 / 257)) <= 2
    ref = decode_file(str(hostile / "train" / "blue" / "cmyk.jpg"), 3).float()
    cmyk = source.image(names["blue/cmyk.jpg"], None).float()
    assert cmyk.shape == (3, 48, 62) and (cmyk.mean((1, 2)) - ref.mean((1, 2))).abs().max() < 2
    # a big image is shrunk to short side 48; a small JPEG is kept byte for byte
    big = max(range(len(source)), key=lambda i: int(source.index[i]["source_bytes"]))
    assert min(source.image(big, None).shape[1:]) == 48
    small = names["red/gray.jpg"]
    assert source.index[small]["height"] == 40
    assert source.record(small) == (hostile / "train" / "red" / "gray.jpg").read_bytes()
    assert len(StoreSource(store, "val", 3)) == 2 * 4 + 1  # 4 a class and the alpha PNG; not the cut JPEG


def test_train_and_eval_on_the_store(spec, store, tmp_path):
    out = tmp_path / "run"
    code, output = cli("train", spec, "--data", store, "--out", out, "--epochs", 1, "--workers", 2)
    assert code == 0, output
    assert "prepared store" in output and rows(out)[0]["skipped"] == "0"
    code, output = cli("eval", spec, "--weights", out / "best.pt", "--data", store, "--crops", "centre",
                       "--workers", 0)
    assert code == 0 and "prepared store" in output, output


def test_square_through_the_cli_and_a_second_run_does_nothing(hostile, tmp_path):
    out = tmp_path / "sq"
    code, output = cli("prepare", "--data", hostile, "--out", out, "--size", 32, "--square", "--quality", 80,
                       "--workers", 2)
    assert code == 0, output
    assert "prepared:" in output and "skipped 4 file(s)" in output and "train/red/zero.jpg: empty file" in output
    for split in ("train", "val"):
        index = StoreSource(out, split, 3).index
        assert set(index["height"]) == {32} and set(index["width"]) == {32}
    code, again = cli("prepare", "--data", hostile, "--out", out, "--size", 32, "--square", "--quality", 80)
    assert code == 0 and "already prepared" in again
    code, other = cli("prepare", "--data", hostile, "--out", out, "--size", 48)
    assert code == 2 and "other options" in other


def test_refusals(hostile, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, output = cli("prepare", "--data", hostile, "--out", tmp_path / "busy")
    assert code == 2 and "holds other files (notes.txt)" in output
    code, output = cli("prepare", "--data", hostile, "--out", hostile / "train" / "store")
    assert code == 2 and "inside" in output
    code, output = cli("prepare", "--data", tmp_path / "busy", "--out", tmp_path / "x")
    assert code == 2 and "no 'train/' and 'val/' folder" in output


# ----------------------------------------------------------------------------- resuming


KILLER = """
import os, signal, sys
from netdsl.training.prepare import prepare
split, event, after = sys.argv[3], sys.argv[4], int(sys.argv[5])
def hook(e, s, done):
    if e == event and s == split and done >= after:
        os.kill(os.getpid(), signal.SIGKILL)
prepare(sys.argv[1], sys.argv[2], size=48, workers=2, chunk=4, progress=False, _hook=hook)
"""


def _killed(src: Path, out: Path, split: str, event: str, after: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", KILLER, src, out, split, event, str(after)], env=env,
                       capture_output=True, text=True, timeout=120, start_new_session=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert store_state(out) == "unfinished"


def test_killed_prepare_resumes_to_the_same_bytes(hostile, store, tmp_path):
    out = tmp_path / "resumed"
    _killed(hostile, out, "train", "written", 8)  # shard appended, manifest not yet replaced
    import json
    committed = json.loads((out / ".prepare" / "manifest.json").read_text())["splits"]["train"]
    assert 0 < committed["done"] < 8 and os.path.getsize(out / "train.bin") > committed["bin_bytes"]
    with pytest.raises(DataError, match="has not finished"):
        open_data(out, 3)
    _killed(hostile, out, "val", "committed", 4)

    def stop(event, split, done):  # Ctrl-C in-process, after one more commit
        if event == "committed":
            raise KeyboardInterrupt
    with pytest.raises(Interrupted) as err:
        prepare(hostile, out, size=48, workers=1, chunk=2, progress=False, _hook=stop)
    assert 0 < err.value.done < err.value.total
    lines = []
    summary = prepare(hostile, out, size=48, workers=1, chunk=3, progress=False, echo=lines.append)
    assert "continuing the prepare" in lines[0] and "checked against their CRC32" in lines[0]
    assert summary.resumed_from == err.value.done
    same_files(out, store)  # other workers, chunks and interruptions: the same bytes


def test_resume_refuses_a_changed_source(hostile, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(hostile, src)
    out = tmp_path / "out"
    _killed(src, out, "train", "committed", 4)
    (src / "train" / "red" / "new.jpg").write_bytes((src / "train" / "red" / "1.jpg").read_bytes())
    code, output = cli("prepare", "--data", src, "--out", out, "--size", 48)
    assert code == 2 and "have changed" in output
    code, output = cli("prepare", "--data", src, "--out", out, "--size", 64)
    assert code == 2 and "other options" in output


# ----------------------------------------------------------------------------- damage


def test_a_flipped_byte_names_the_record(spec, store, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(store, damaged)
    source = StoreSource(damaged, "train", 3)
    k = 2
    name = os.fsdecode(bytes(source.names[k]))
    offset = int(source.index[k]["offset"]) + int(source.index[k]["length"]) // 2
    with open(damaged / "train.bin", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))
    source = StoreSource(damaged, "train", 3)
    with pytest.raises(BadImage, match="checksum mismatch") as err:
        source.image(k, None)
    assert "train.bin" in str(err.value)
    assert f"record train[{k}] (from train/{name})" in source.name(k)
    source.image(k - 1, None), source.image(k + 1, None)  # the others read as before
    out = tmp_path / "run"
    # batches of 1: no remainder dropped, so the record is read (training names what it skips)
    code, output = cli("train", spec, "--data", damaged, "--out", out, "--epochs", 1, "--batch-size", 1,
                       "--lr", 0.0001)
    assert code == 0, output
    assert f"record train[{k}] (from train/{name}): checksum mismatch" in output, output
    assert rows(out)[0]["skipped"] == "1"


def test_truncated_shard_is_refused_when_opened(store, tmp_path):
    damaged = tmp_path / "short"
    shutil.copytree(store, damaged)
    os.truncate(damaged / "val.bin", os.path.getsize(damaged / "val.bin") - 10)
    with pytest.raises(DataError, match="incomplete or damaged"):
        open_data(damaged, 3)


# ----------------------------------------------------------------------------- the same training


def _train(spec: Path, data: Path, out: Path) -> None:
    net = netdsl.load(spec)
    assert train(net, resolve(net.graph.training, None, {"out": str(out), "data": str(data)}), argv=["test"]) == 0


def test_store_trains_exactly_as_its_folder(spec, tmp_path):
    """JPEGs already at most --size are stored byte for byte: the same pixels, crops and loss curve."""
    folder = _folder(tmp_path / "folder", 7, 12, 3)
    out = tmp_path / "store"
    summary = prepare(folder, out, workers=2, progress=False)
    assert summary.meta["splits"]["train"]["kept_as_is"] == 24 and summary.meta["splits"]["val"]["kept_as_is"] == 6
    _train(spec, folder, tmp_path / "a")
    _train(spec, out, tmp_path / "b")
    assert rows(tmp_path / "a") == rows(tmp_path / "b")
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(v, wb[k]) for k, v in wa.items())
    # the recorded statistics are those of every stored pixel
    data = open_data(out, 3)
    pixels = torch.cat([data.train.image(i, None).reshape(3, -1) for i in range(len(data.train))], 1)
    ref = Stats.of_pixels(pixels.T.double().numpy() / 255)
    measured = summary.meta["measured"]["3"]
    assert np.allclose(measured["mean"], ref.mean) and np.allclose(measured["std"], ref.std)
    assert np.allclose(measured["eigval"], ref.eigval)
    assert np.allclose(np.abs(measured["eigvec"]), np.abs(ref.eigvec), atol=1e-6)
    assert data.stats == Stats.imagenet(3)  # training normalises as it does for the folder


# ----------------------------------------------------------------------------- ImageNet's tars


WNIDS = ("n01440764", "n01443537", "n01484850")


def _tar(path: Path, members: list[tuple[str, bytes]], mode: str = "w") -> None:
    import io
    import tarfile
    with tarfile.open(path, mode) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> tuple[Path, Path]:
    """ImageNet as distributed (a tar of class tars, a flat val tar, the labels as Kaggle's csv), in
    small, and the folder that unpacking and sorting it gives."""
    root = tmp_path_factory.mktemp("imagenet")
    folder, archives = root / "folder", root / "archives"
    archives.mkdir()
    rng = np.random.default_rng(3)
    inner = []
    for c, wnid in enumerate(WNIDS):
        files = []
        for i in range(4):
            path = _image(folder / "train" / wnid / f"{wnid}_{i}.JPEG", tuple(int(v) for v in rng.integers(20, 120, 2)),
                          rng, list(COLOURS.values())[c % 2])
            files.append((path.name, path.read_bytes()))
        if c == 0:  # broken members are skipped as broken files are
            files += [(f"{wnid}_8.JPEG", b""), (f"{wnid}_9.JPEG", files[0][1][:300])]
            for name, data in files[-2:]:
                (folder / "train" / wnid / name).write_bytes(data)
        _tar(root / f"{wnid}.tar", files[::-1])  # any order inside: the store follows the names
        inner.append((f"{wnid}.tar", (root / f"{wnid}.tar").read_bytes()))
    _tar(archives / "ILSVRC2012_img_train.tar", inner)
    ids = rng.permutation(len(WNIDS) * 2) + 1
    val, truth = [], {}
    for k, number in enumerate(ids):
        wnid = WNIDS[k % len(WNIDS)]
        name = f"ILSVRC2012_val_{number:08d}"
        path = _image(folder / "val" / wnid / f"{name}.JPEG", (30, 40), rng)
        val.append((f"{name}.JPEG", path.read_bytes()))
        truth[int(number)] = wnid
    _tar(archives / "ILSVRC2012_img_val.tar", sorted(val))
    (archives / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "".join(
        f"ILSVRC2012_val_{n:08d},{w} 1 2 30 40 {w} 3 4 20 20\n" for n, w in truth.items()))
    (archives / "LOC_synset_mapping.txt").write_text("".join(f"{w} fish number {i}\n" for i, w in enumerate(WNIDS)))
    return archives, folder


def _same_store(a: Path, b: Path) -> None:
    import json
    for split in ("train", "val"):
        for part in ("bin", "index.npy", "names.npy"):
            assert (a / f"{split}.{part}").read_bytes() == (b / f"{split}.{part}").read_bytes(), (split, part)
    ma, mb = (json.loads((d / STORE_MARKER).read_text()) for d in (a, b))
    for key in ("classes", "splits", "skipped", "measured", "stats", "options"):
        assert ma[key] == mb[key], key


def test_imagenet_tars_give_the_store_of_the_unpacked_folder(imagenet, tmp_path):
    archives, folder = imagenet
    code, output = cli("prepare", "--data", archives, "--out", tmp_path / "tars", "--size", 48, "--workers", 2)
    assert code == 0, output
    assert "train/n01440764/n01440764_8.JPEG: empty file" in output
    prepare(folder, tmp_path / "folder", size=48, workers=1, progress=False)
    _same_store(tmp_path / "tars", tmp_path / "folder")
    import json
    meta = json.loads((tmp_path / "tars" / STORE_MARKER).read_text())
    assert meta["classes"] == list(WNIDS) and meta["class_words"][WNIDS[1]] == "fish number 1"
    assert meta["splits"]["val"]["images"] == 6


def test_imagenet_devkit_labels(imagenet, tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    import io
    archives, folder = imagenet
    devkit = tmp_path / "archives"
    devkit.mkdir()
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        os.symlink(archives / name, devkit / name)
    synsets = np.zeros((len(WNIDS) + 1, 1), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"),
                                                   ("num_children", "O")])
    for i, wnid in enumerate((*WNIDS, "n00000001")):  # and a parent synset, as the devkit has
        synsets[i, 0] = (i + 1, wnid, f"fish number {i}", 0 if i < len(WNIDS) else 3)
    meta = io.BytesIO()
    scipy_io.savemat(meta, {"synsets": synsets})
    names = sorted(p.name for p in (folder / "val").rglob("*.JPEG"))
    wnid_of = {p.name: p.parent.name for p in (folder / "val").rglob("*.JPEG")}
    truth = "".join(f"{WNIDS.index(wnid_of[n]) + 1}\n" for n in names)
    _tar(devkit / "ILSVRC2012_devkit_t12.tar.gz", [
        ("ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue()),
        ("ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth.encode())], "w:gz")
    prepare(devkit, tmp_path / "dk", size=48, workers=2, progress=False)
    prepare(folder, tmp_path / "folder", size=48, workers=2, progress=False)
    _same_store(tmp_path / "dk", tmp_path / "folder")
    (devkit / "ILSVRC2012_devkit_t12.tar.gz").unlink()
    code, output = cli("prepare", "--data", devkit, "--out", tmp_path / "none")
    assert code == 2 and "labels are missing" in output
