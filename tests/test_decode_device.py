"""Decoding on the training device (decode = device): the workers only read JPEG bytes and choose
the crops; the device decodes the batch (nvJPEG on CUDA) and cuts it. On the CPU the device path
runs the workers' very arithmetic, so it must give the workers' very batches, skips and training
runs; on CUDA (where there is one) it must give the same crops within the decoders' rounding."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_prepare import _folder, hostile, store  # noqa: F401  (fixtures)
from test_train import (cli, folder, run_api, same_state, spec, subprocess_env, untimed,  # noqa: F401
                        wait_for)

from netdsl.training.data import CropDataset, EncodedSource, FileSource, sample_rng, scan_layout
from netdsl.training.images import (CentreView, PaperTrainView, RandomResizedView, TenCropView, max_reduction,
                                    plain_jpeg_size, resample)
from netdsl.training.loading import DeviceDecoder, make_loader
from netdsl.training.store import StoreSource

ROOT = Path(__file__).resolve().parent.parent

# sizes at which no crop of the hostile folder's images (at most 120 pixels a side) is half the output
# size or more: the workers decode every JPEG at full size, as the device does
VIEWS = {"paper": PaperTrainView((64, 64), 73), "random_resized": RandomResizedView((64, 64)),
         "centre": CentreView((64, 80), 72), "ten": TenCropView((64, 64), 73)}


def _sources(hostile: Path, store: Path, channels: int) -> dict[str, EncodedSource]:
    layout = scan_layout(hostile)
    return {"folder": FileSource(layout.splits["train"] + layout.splits["val"], channels),
            "store": StoreSource(store, "train", channels)}


def _both(source: EncodedSource, view, device: torch.device, keys):
    workers = CropDataset(source, view, seed=3).__getitems__(keys)
    encoded = CropDataset(source, view, seed=3, encode=True).__getitems__(keys)
    return workers, encoded, DeviceDecoder(source.channels, view, device)(encoded)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("view", list(VIEWS))
def test_the_device_cuts_what_the_workers_cut(hostile, store, view, channels):
    """Every kind of file of the hostile folder (broken ones skipped with the workers' reasons, CMYK and
    PNGs cut by the workers themselves, gray JPEGs decoded as they are) and a prepared store."""
    for name, source in _sources(hostile, store, channels).items():
        keys = [(i, 5) for i in range(len(source))]
        workers, encoded, device = _both(source, VIEWS[view], torch.device("cpu"), keys)
        assert torch.equal(device.images, workers.images), (name, view)
        assert torch.equal(device.labels, workers.labels)
        assert device.skipped == workers.skipped
        # the workers shipped bytes for the plain JPEGs and cut the rest themselves
        plain = sum(plain_jpeg_size(source.encoded(i)[0]) is not None for i in range(len(source))
                    if source.name(i) not in dict(workers.skipped))
        assert len(encoded.slots) == plain and len(encoded.images) == len(workers.labels) - plain
        if name == "folder":
            assert 0 < plain < len(workers.labels) and workers.skipped, "the folder has every kind"
        else:
            assert len(encoded.images) == 0 and not workers.skipped  # every record is a plain JPEG


def test_where_workers_decode_at_reduced_size_the_device_gives_the_same_crops_near_enough(hostile):
    """A worker decodes a JPEG at 1/2, 1/4 or 1/8 size (DCT scaling) when every crop is still at least
    the output size; the device decodes at full size and resizes the same boxes: the images the
    workers decoded at full size are identical, the others close (noise like this folder's is the
    worst case for the difference of the two filters)."""
    view = PaperTrainView((32, 32), 37)
    source = FileSource(scan_layout(hostile).splits["train"], 3)
    keys = [(i, 5) for i in range(len(source))]
    workers, _, device = _both(source, view, torch.device("cpu"), keys)
    assert torch.equal(device.labels, workers.labels) and device.skipped == workers.skipped
    bad = {name for name, _ in workers.skipped}
    reduced = []
    for index, epoch in keys:
        if source.name(index) in bad:
            continue
        data, size = source.encoded(index)
        if size is not None:
            boxes = view.boxes(*size, sample_rng(3, epoch, index))
            reduced.append(max_reduction(boxes, view.size) > 1)
        else:
            reduced.append(False)
    reduced = torch.tensor(reduced)
    assert 0 < reduced.sum() < len(reduced)
    assert torch.equal(device.images[~reduced], workers.images[~reduced])
    diff = (device.images[reduced].float() - workers.images[reduced].float()).abs()
    assert diff.mean() < 8, diff.mean()


def test_a_jpeg_that_only_its_header_gets_right_is_skipped_as_the_workers_skip_it(tmp_path):
    """A JPEG whose header reads and that ends as a JPEG ends, but whose data is damaged: the batch
    decode fails as a whole, so the device decodes one by one, names the bad one and keeps the rest."""
    root = _folder(tmp_path / "data", 2, 4, 1)
    victim = root / "train" / "red" / "1.jpg"
    data = bytearray(victim.read_bytes())
    sos = data.index(b"\xff\xda")
    data[sos + 2:sos + 4] = b"\x00\x02"  # a start-of-scan segment too short to hold its own fields
    victim.write_bytes(bytes(data))
    assert plain_jpeg_size(bytes(data)) is not None
    source = FileSource(scan_layout(root).splits["train"], 3)
    workers, encoded, device = _both(source, VIEWS["paper"], torch.device("cpu"), [(i, 0) for i in range(8)])
    assert len(encoded.slots) == 8  # all handed to the device
    assert [name for name, _ in workers.skipped] == [str(victim)]
    assert device.skipped == workers.skipped and torch.equal(device.images, workers.images)
    assert torch.equal(device.labels, workers.labels) and len(device.labels) == 7


@pytest.mark.parametrize("shape,size", [((3, 40, 57), (32, 32)), ((3, 224, 300), (224, 224)),
                                         ((1, 17, 23), (40, 30)), ((3, 333, 250), (224, 224))])
def test_the_float_resampling_cuda_uses_is_within_one_of_the_uint8_path(shape, size):
    """CUDA's antialiased resampling takes floats only; the CPU's uint8 path is what workers use."""
    g = torch.Generator().manual_seed(0)
    region = torch.randint(0, 256, (1, *shape), generator=g, dtype=torch.uint8)
    exact = resample(region, size, exact_uint8=True)
    floats = resample(region, size, exact_uint8=False)
    assert floats.dtype == torch.uint8 and floats.shape == exact.shape == (1, shape[0], *size)
    assert (floats.int() - exact.int()).abs().max() <= 1


def test_loader_yields_device_batches_with_workers(hostile, store):
    source = StoreSource(store, "train", 3)
    view = VIEWS["random_resized"]
    plain = make_loader(source, view, batch_size=5, workers=2, train=True, seed=4)
    device = make_loader(source, view, batch_size=5, workers=2, train=True, seed=4, decode_on=torch.device("cpu"))
    assert device.decoder is not None and len(device) == len(plain)
    a, b = list(plain), list(device)
    assert len(a) == len(b) and all(torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)
                                    for x, y in zip(a, b))


def test_training_with_device_decoding_is_the_workers_run_and_resumes_exactly(spec, folder, tmp_path):  # noqa: F811
    """decode = device on the CPU: the same run, bit for bit; SIGTERM mid-epoch and --resume give the
    uninterrupted run (the crops come from the same per-sample random numbers)."""
    reference = tmp_path / "workers"
    assert run_api(spec, reference, data=str(folder), epochs=3, batch_size=4, workers=2, decode="workers") == 0
    out = tmp_path / "device"
    cmd = [sys.executable, "-m", "netdsl.cli.main", "train", str(spec), "--data", str(folder), "--out", str(out),
           "--epochs", "3", "--batch-size", "4", "--workers", "2", "--set", "decode=device"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (out / "train.log").exists() and "epoch 1/3" in (out / "train.log").read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "JPEGs decoded on cpu" in (out / "train.log").read_text()
    code, output = cli("train", "--resume", out)
    assert code == 0, output
    same_state(out / "last.pt", reference / "last.pt")
    assert untimed(out) == untimed(reference)


def test_decode_setting_is_checked(spec, folder, tmp_path):  # noqa: F811
    code, output = cli("train", spec, "--data", folder, "--out", tmp_path / "x", "--set", "decode=gpu")
    assert code == 2 and "decode = 'gpu': expected one of auto, workers, device" in output, output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("view", list(VIEWS))
def test_cuda_decodes_and_cuts_what_the_workers_cut(hostile, store, view):
    """nvJPEG and libjpeg-turbo may round an IDCT differently, and CUDA resamples in floats: the same
    crops (same boxes, flips, skips and labels), pixels within a few levels."""
    for name, source in _sources(hostile, store, 3).items():
        keys = [(i, 5) for i in range(len(source))]
        workers, _, device = _both(source, VIEWS[view], torch.device("cuda"), keys)
        assert device.images.is_cuda and device.images.shape == workers.images.shape, name
        diff = (device.images.cpu().int() - workers.images.int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 12, (name, view, diff.max())
        assert torch.equal(device.labels, workers.labels) and device.skipped == workers.skipped


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_decodes_there_by_default(spec, folder, tmp_path):  # noqa: F811
    out = tmp_path / "cuda"
    assert run_api(spec, out, data=str(folder), epochs=1, batch_size=4, workers=2, device="cuda",
                   deterministic=False) == 0
    assert "JPEGs decoded on cuda" in (out / "train.log").read_text()


def test_png_bytes_are_not_plain_jpegs():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(buf, "PNG")
    assert plain_jpeg_size(buf.getvalue()) is None and plain_jpeg_size(b"") is None
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(buf, "JPEG")
    assert plain_jpeg_size(buf.getvalue()) == (4, 5)
    assert plain_jpeg_size(buf.getvalue()[:-2]) is None  # no end marker: truncated


def _decode_threads() -> list:
    import threading
    return [t for t in threading.enumerate() if t.name == "netdsl-decode" and t.is_alive()]


def test_decoding_ahead_keeps_order_raises_the_threads_errors_and_stops_when_left(store):
    import time
    source = StoreSource(store, "train", 3)
    view = VIEWS["paper"]
    dataset = CropDataset(source, view, seed=1, encode=True)
    decoder = DeviceDecoder(3, view, torch.device("cpu"))
    encoded = [dataset.__getitems__([(i, 0), (i + 1, 0)]) for i in range(0, 10, 2)]
    ahead = list(decoder.ahead(iter(encoded)))
    assert all(torch.equal(a.images, decoder(e).images) for a, e in zip(ahead, encoded)) and len(ahead) == 5

    def failing():
        yield encoded[0]
        raise OSError("the disk went away")
    got = decoder.ahead(failing())
    assert next(got).labels.tolist() == encoded[0].labels.tolist()
    with pytest.raises(OSError, match="the disk went away"):
        next(got)

    def endless():
        while True:
            yield encoded[1]
    got = decoder.ahead(endless(), depth=2)
    next(got)
    got.close()  # a training loop that stops mid-epoch
    deadline = time.time() + 10
    while _decode_threads() and time.time() < deadline:
        time.sleep(0.01)
    assert not _decode_threads()


def test_decode_on_a_device_no_decoder_runs_on_is_a_clear_error(folder):  # noqa: F811
    """A CUDA device that is not there runs no decoder: asked for explicitly, a usage error naming both
    decoders' reasons; `auto` would fall back to the workers."""
    from netdsl.errors import UsageError
    from netdsl.training.config import Config
    from netdsl.training.data import open_data
    from netdsl.training.loading import decode_device
    if torch.cuda.device_count() > 7:
        pytest.skip("cuda:7 is here")
    data, absent = open_data(folder, 3), torch.device("cuda", 7)
    with pytest.raises(UsageError, match=r"decode = device: no JPEG decoder runs on cuda:7 \(TorchCodec: .*; torchvision: "):
        decode_device(Config(decode="device"), data, absent)
    device, why = decode_device(Config(decode="auto"), data, absent)
    assert device is None and why.startswith("no JPEG decoder runs on cuda:7")
    assert decode_device(Config(decode="workers"), data, absent) == (None, "")
    assert decode_device(Config(decode="device"), data, torch.device("cpu")) == (torch.device("cpu"), "")


BATCHED = r'''
import json, sys, torch
from pathlib import Path
from netdsl.training.data import CropDataset, FileSource, scan_layout
from netdsl.training.images import CentreView, PaperTrainView, RandomResizedView, TenCropView
from netdsl.training.loading import DeviceDecoder
from netdsl.training.store import StoreSource
hostile, store = Path(sys.argv[1]), Path(sys.argv[2])
# small crops and a dozen images per source: the interpreter runs each program's loops in Python
# (scales near 1: the taps a program loops over grow with the square of the scale)
views = {"paper": PaperTrainView((64, 64), 73), "random_resized": RandomResizedView((64, 64)),
         "centre": CentreView((64, 80), 72), "ten": TenCropView((64, 64), 73)}
layout = scan_layout(hostile)
sources = {"folder": FileSource(layout.splits["train"] + layout.splits["val"], 3), "store": StoreSource(store, "train", 3)}
out = []
for vname, view in views.items():
    for sname, source in sources.items():
        keys = [(i, 5) for i in range(0, len(source), 4 if vname == "ten" else 2)]
        workers = CropDataset(source, view, seed=3).__getitems__(keys)
        decoder = DeviceDecoder(3, view, torch.device("cpu"), batched=True)
        assert decoder.batched
        device = decoder(CropDataset(source, view, seed=3, encode=True).__getitems__(keys))
        diff = (device.images.int() - workers.images.int()).abs()
        out.append(dict(view=vname, source=sname, max=diff.max().item(), mean=diff.float().mean().item(),
                        labels=torch.equal(device.labels, workers.labels), skipped=device.skipped == workers.skipped))
print(json.dumps(out))
'''


def test_the_one_launch_cut_cuda_uses_is_within_one_level_of_the_workers(hostile, store):
    """device_crops.cut (a Triton kernel cutting a whole batch, the CUDA path) run by Triton's interpreter
    on the CPU: every view, the hostile folder and a store, against the workers' crops."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", BATCHED, str(hostile), str(store)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(rows) == 8
    for r in rows:
        # the CPU's uint8 path rounds between its two 1-d passes; the kernel sums in one 2-d pass
        assert r["labels"] and r["skipped"] and r["max"] <= 1 and r["mean"] < 0.5, r


def test_a_crop_kernel_that_fails_or_cuts_wrong_on_the_device_leaves_the_image_by_image_cut(monkeypatch):
    """Fault injection: the one-launch kernel is checked against the image-by-image cut when the decoder
    is made, so a kernel that does not compile for a GPU, or cuts wrong there, costs speed, not the run,
    and the run's log says why (DeviceDecoder.note)."""
    pytest.importorskip("triton")
    from netdsl.training import device_crops

    def broken(images, boxes, out):
        raise RuntimeError("PTX .version 9.9 does not support .target sm_90a\nmore detail")

    def wrong(images, boxes, out):
        out.fill_(7)
        return True
    view = PaperTrainView((16, 16), 20)
    for cut, why in ((broken, "failed here (PTX .version 9.9 does not support .target sm_90a)"),
                     (wrong, "differs from the image-by-image cut by")):
        monkeypatch.setattr(device_crops, "cut", cut)
        decoder = DeviceDecoder(3, view, torch.device("cpu"), batched=True)
        assert not decoder.batched and "crops cut image by image" in decoder.note and why in decoder.note
    # the real kernel passes its probe: test_the_one_launch_cut_cuda_uses_is_within_one_level_of_the_workers
