"""Data: folder layout checks, decoding odd and broken images, crops, sampling, the bundled digits."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from types import SimpleNamespace

from netdsl import errors
from netdsl.training import data, images
from netdsl.training.loading import Preprocess, make_loader

D = SimpleNamespace(**{**vars(images), **vars(data)}, LayoutError=errors.DataError)  # the old netdsl.data

RNG = np.random.default_rng(0)


def write_image(path: Path, size=(40, 30), mode="RGB", fmt=None, colour=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if colour is not None:
        a = np.clip(np.array(colour)[None, None, :] + RNG.integers(-20, 20, (h, w, 3)), 0, 255)
    else:
        a = RNG.integers(0, 256, (h, w, 3))
    img = Image.fromarray(a.astype(np.uint8)).convert(mode)
    img.save(path, fmt)
    return path


def make_folder(root: Path, classes=("cat", "dog"), n=(3, 2)) -> Path:
    for split, count in zip(("train", "val"), n):
        for c in classes:
            for i in range(count):
                write_image(root / split / c / f"{i}.jpg")
    return root


# ----------------------------------------------------------------------------- layout


def test_good_layout(tmp_path):
    layout = D.scan_layout(make_folder(tmp_path))
    assert layout.classes == ["cat", "dog"]
    assert len(layout.splits["train"]) == 6 and len(layout.splits["val"]) == 4
    assert {label for _, label in layout.splits["val"]} == {0, 1}


def layout_error(root: Path) -> str:
    with pytest.raises(D.LayoutError) as err:
        D.scan_layout(root)
    return str(err.value)


def test_missing_folder(tmp_path):
    assert "no such folder" in layout_error(tmp_path / "nope")


def test_missing_split(tmp_path):
    make_folder(tmp_path)
    import shutil
    shutil.rmtree(tmp_path / "val")
    msg = layout_error(tmp_path)
    assert "no 'val/' folder" in msg and "ImageNet's layout" in msg


def test_classes_directly_in_root_get_a_hint(tmp_path):
    write_image(tmp_path / "cat" / "0.jpg")
    write_image(tmp_path / "dog" / "0.jpg")
    msg = layout_error(tmp_path)
    assert "no 'train/' and 'val/' folder" in msg and "if these are classes" in msg


def test_classes_differ(tmp_path):
    make_folder(tmp_path)
    write_image(tmp_path / "val" / "bird" / "0.jpg")
    msg = layout_error(tmp_path)
    assert "different classes" in msg and "only in val/: bird" in msg


def test_empty_class(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "fish").mkdir()
    (tmp_path / "val" / "fish").mkdir()
    (tmp_path / "val" / "fish" / ".DS_Store").write_text("x")  # hidden files do not count
    msg = layout_error(tmp_path)
    assert "train/ has 1 class folder(s) with no images: fish" in msg
    assert "val/ has 1 class folder(s) with no images: fish" in msg


def test_single_class(tmp_path):
    make_folder(tmp_path, classes=("cat",))
    assert "single class (cat)" in layout_error(tmp_path)


def test_files_that_are_not_images(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "notes.txt").write_text("hello")
    (tmp_path / "train" / "cat" / "labels.csv").write_text("a,b")
    msg = layout_error(tmp_path)
    assert "2 file(s) in train/ are not images" in msg and "notes.txt" in msg


def test_flat_val_folder(tmp_path):
    """ImageNet's validation images come flat: the classic silent failure."""
    make_folder(tmp_path)
    for i in range(3):
        write_image(tmp_path / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    msg = layout_error(tmp_path)
    assert "val/ holds 3 file(s) directly" in msg and "class folder" in msg


def test_every_problem_reported_at_once(tmp_path):
    make_folder(tmp_path)
    (tmp_path / "train" / "cat" / "x.txt").write_text("x")
    write_image(tmp_path / "val" / "loose.jpg")
    msg = layout_error(tmp_path)
    assert "not images" in msg and "directly" in msg


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("mode,fmt,name", [
    ("RGB", "JPEG", "rgb.jpg"), ("L", "JPEG", "gray.jpg"), ("CMYK", "JPEG", "cmyk.jpg"),
    ("RGBA", "PNG", "alpha.png"), ("LA", "PNG", "la.png"), ("P", "PNG", "palette.png"),
    ("RGB", "BMP", "rgb.bmp"), ("1", "PNG", "bits.png"), ("RGB", "WEBP", "rgb.webp"),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_odd_images_convert_to_the_spec_channels(tmp_path, mode, fmt, name, channels):
    path = write_image(tmp_path / name, mode=mode, fmt=fmt)
    x = D.decode_file(str(path), channels)
    assert x.dtype == torch.uint8 and tuple(x.shape) == (channels, 30, 40)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    a = np.full((30, 40), 40000, dtype=np.uint16)  # 61% of full scale
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    x = D.decode_file(str(tmp_path / "g16.png"), 3)
    assert x.shape == (3, 30, 40) and abs(int(x[0, 0, 0]) - round(40000 / 257)) <= 1


def test_transparent_pixels_become_white(tmp_path):
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert D.decode_file(str(tmp_path / "clear.png"), 3).unique().tolist() == [255]


def test_cmyk_colours_match_pil(tmp_path):
    path = write_image(tmp_path / "c.jpg", mode="CMYK", fmt="JPEG")
    ours = D.decode_file(str(path), 3).permute(1, 2, 0).numpy()
    ref = np.asarray(Image.open(path).convert("RGB"))
    assert np.abs(ours.astype(int) - ref).max() <= 1


def broken_files(root: Path) -> dict[str, Path]:
    good = write_image(root / "good.jpg").read_bytes()
    files = {"zero": root / "zero.jpg", "truncated": root / "truncated.jpg", "garbage": root / "garbage.jpg",
             "png_truncated": root / "half.png"}
    files["zero"].write_bytes(b"")
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["garbage"].write_bytes(b"this is not an image at all" * 20)
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    files["png_truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return files


def test_broken_files_raise_bad_image(tmp_path):
    reasons = {}
    for kind, path in broken_files(tmp_path).items():
        with pytest.raises(D.BadImage) as err:
            D.decode_file(str(path), 3)
        reasons[kind] = str(err.value)
    assert reasons["zero"] == "empty file"
    assert "truncated" in reasons["truncated"]
    assert "not a recognised image" in reasons["garbage"]


def test_big_jpeg_is_decoded_at_reduced_size(tmp_path):
    path = write_image(tmp_path / "big.jpg", size=(1600, 1200))
    assert D.decode_file(str(path), 3, lambda h, w: 4).shape == (3, 300, 400)
    assert D.decode_file(str(path), 3).shape == (3, 1200, 1600)


def test_reduction_never_upscales_a_crop():
    size = (224, 224)
    assert D.max_reduction([D.Box(0, 0, 1000, 1000)], size) == 4
    assert D.max_reduction([D.Box(0, 0, 300, 1000)], size) == 1
    assert D.max_reduction([D.Box(0, 0, 1000, 1000), D.Box(0, 0, 500, 500)], size) == 2


# ----------------------------------------------------------------------------- views


def test_paper_view_crops_inside_the_central_square():
    view = D.PaperTrainView((224, 224), 256)
    import random; rng = random.Random(1)
    for _ in range(50):
        (box,) = view.boxes(375, 500, rng)
        scale = 375 / 256
        assert box.height == pytest.approx(224 * scale)
        assert (500 - 375) / 2 <= box.left <= (500 - 375) / 2 + 32 * scale + 1e-9
        assert 0 <= box.top <= 32 * scale + 1e-9


def test_ten_crops_are_corners_centre_and_mirrors():
    boxes = D.TenCropView((224, 224), 256).boxes(256, 256, None)
    assert len(boxes) == 10 and sum(b.flip for b in boxes) == 5
    assert {(b.top, b.left) for b in boxes[:5]} == {(0, 0), (0, 32), (32, 0), (32, 32), (16, 16)}
    unmirrored = D.TenCropView((224, 224), 256, mirror=False)
    assert unmirrored.crops == 5 and unmirrored.boxes(256, 256, None) == boxes[:5]


def test_random_resized_view_stays_inside_the_image():
    view = D.RandomResizedView((224, 224))
    import random; rng = random.Random(2)
    for _ in range(100):
        (b,) = view.boxes(375, 500, rng)
        assert 0 <= b.top and b.top + b.height <= 375 and 0 <= b.left and b.left + b.width <= 500


def test_crop_resize_and_flip():
    img = torch.arange(2 * 6 * 8, dtype=torch.uint8).view(2, 6, 8)
    out = D.crop_resize(img, D.Box(1, 2, 4, 4, flip=False), (4, 4))
    assert torch.equal(out, img[:, 1:5, 2:6])
    flipped = D.crop_resize(img, D.Box(1, 2, 4, 4, flip=True), (4, 4))
    assert torch.equal(flipped, img[:, 1:5, 2:6].flip(-1))
    assert D.crop_resize(torch.zeros(3, 100, 80, dtype=torch.uint8), D.Box(0, 0, 100, 80), (16, 16)).shape == (3, 16, 16)


# ----------------------------------------------------------------------------- datasets, sampling


def test_broken_files_are_skipped_and_counted(tmp_path):
    files = broken_files(tmp_path)
    good = [(str(write_image(tmp_path / f"ok{i}.jpg")), i % 2) for i in range(3)]
    samples = good + [(str(p), 0) for p in files.values()]
    ds = D.CropDataset(D.FileSource(samples, 3), D.CentreView((16, 16), 18))
    loader = make_loader(ds.source, ds.view, batch_size=4, workers=2, train=False, seed=0)
    batches = list(loader.loader)
    assert sum(len(b.labels) for b in batches) == 3
    skipped = [p for b in batches for p, _ in b.skipped]
    assert sorted(skipped) == sorted(str(p) for p in files.values())
    assert all(b.images.dtype == torch.uint8 and b.images.shape[1:] == (3, 16, 16) for b in batches)


def test_augmentation_does_not_depend_on_workers(tmp_path):
    samples = [(str(write_image(tmp_path / f"{i}.jpg", size=(50, 40))), 0) for i in range(10)]
    source, view = D.FileSource(samples, 3), D.PaperTrainView((16, 16), 20)
    runs = []
    for workers in (0, 2):
        loader = make_loader(source, view, batch_size=3, workers=workers, train=True, seed=7)
        loader.sampler.set_epoch(3)
        runs.append(torch.cat([b.images for b in loader.loader]))
    assert torch.equal(runs[0], runs[1])


def test_sampler_shards_evaluation_without_double_counting():
    seen = []
    for rank in range(3):
        s = D.EpochSampler(10, shuffle=False, rank=rank, world=3, equal_shards=False)
        seen += [i for i, _ in s]
    assert sorted(seen) == list(range(10))


def test_sampler_training_shards_are_equal_and_resume_mid_epoch():
    shards = [list(D.EpochSampler(10, shuffle=True, seed=1, rank=r, world=3)) for r in range(3)]
    assert {len(s) for s in shards} == {3}
    assert len({i for s in shards for i, _ in s}) == 9
    s = D.EpochSampler(10, shuffle=True, seed=1)
    s.set_epoch(2)
    full = list(s)
    s.set_epoch(2, start=4)
    assert list(s) == full[4:] and len(s) == 6
    s.set_epoch(3)
    assert list(s) != full


def test_bundled_digits():
    ds = D.open_data(None, 1)
    assert ds.classes == [str(i) for i in range(10)]
    assert len(ds.train) == 1438 and len(ds.val) == 359
    assert ds.train.image(0, None).shape == (1, 8, 8)
    assert D.open_digits(3).train.image(0, None).shape == (3, 8, 8)
    view = D.PaperTrainView((32, 32), 37, flip=False)
    batch = D.CropDataset(ds.train, view).__getitems__([(0, 0), (1, 0)])
    assert batch.images.shape == (2, 1, 32, 32) and batch.labels.tolist() == [ds.train.label(0), ds.train.label(1)]


def test_preprocess_normalises_and_adds_lighting():
    stats = D.Stats.imagenet(3)
    x = torch.full((2, 3, 4, 4), 128, dtype=torch.uint8)
    mean_std = Preprocess(stats, "mean_std", 0.0, torch.device("cpu"))(x)
    expected = (128 / 255 - torch.tensor(D.IMAGENET_MEAN)) / torch.tensor(D.IMAGENET_STD)
    assert torch.allclose(mean_std[0, :, 0, 0], expected)
    paper = Preprocess(stats, "mean", 0.1, torch.device("cpu"))
    plain = paper(x)
    assert torch.allclose(plain[0, :, 0, 0], 128 - torch.tensor(D.IMAGENET_MEAN) * 255, atol=1e-4)
    noisy = paper(x, torch.Generator().manual_seed(0))
    shift = (noisy - plain)[:, :, 0, 0]
    assert not torch.allclose(noisy, plain)
    assert torch.allclose((noisy - plain), shift[:, :, None, None].expand_as(noisy))  # one RGB shift per image
    assert not torch.allclose(shift[0], shift[1])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_model_sees_its_own_layout_whatever_the_batchs(channels, channels_last):
    """The workers write crops channels-last (a plain copy of what the CPU's resampling makes); the
    device decoder and older batches are channels-first. The model must get the same numbers either way:
    the CPU's convolutions round differently by layout (a 1-channel batch with channels-last strides
    changed AlexNet-mini's training curve)."""
    source = D.ArraySource(np.random.default_rng(0).integers(0, 256, (6, 3, 20, 24), dtype=np.uint8),
                           np.arange(6) % 2, channels)
    view = D.PaperTrainView((16, 16), 18)
    batch = D.CropDataset(source, view).__getitems__([(i, 0) for i in range(6)]).images
    plain = batch.contiguous()
    assert torch.equal(batch, plain)
    if channels == 3:
        assert batch.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous()
    else:
        assert batch.stride() == plain.stride()  # one channel: no layout that a kernel could read two ways
    # and a batch in channels-last strides even with one channel (which then counts as both layouts)
    last = torch.empty_like(plain, memory_format=torch.channels_last).copy_(plain)
    pre = Preprocess(D.Stats.imagenet(channels), "mean_std", 0.0, torch.device("cpu"), channels_last)
    a, b, d = pre(batch), pre(plain), pre(last)
    assert a.stride() == b.stride() == d.stride()
    conv = torch.nn.Conv2d(channels, 8, 3)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    assert torch.equal(conv(a), conv(b)) and torch.equal(conv(a), conv(d))


def test_layout_error_for_wrong_channel_count():
    with pytest.raises(D.UsageError, match="1 \\(gray\\) or 3 \\(RGB\\)"):
        D.open_data(None, 4)


def test_decoding_calls_nothing_deprecated_and_torchcodec_is_what_decodes(tmp_path):
    """torchvision.io's decoders are deprecated since torchvision 0.29: the loader decodes JPEGs with
    TorchCodec, with warnings as errors (only PIL's complaints about a file are silenced, and only
    for the file being decoded)."""
    import io
    import warnings

    import numpy as np
    from PIL import Image

    from netdsl.training.images import decode_bytes, jpeg_decoder
    pytest.importorskip("torchcodec", reason="TorchCodec is a dependency; this checks the installed one loads")
    decode, _ = jpeg_decoder()
    assert decode.func.__module__.startswith("torchcodec"), decode.func.__module__
    rng = np.random.default_rng(0)
    pixels = (rng.random((75, 100, 3)) * 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=90)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = decode_bytes(buf.getvalue(), 3)
        gray = decode_bytes(buf.getvalue(), 1)
    want = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))).permute(2, 0, 1)
    assert got.shape == (3, 75, 100) and gray.shape == (1, 75, 100)
    assert (got.int() - want.int()).abs().max() <= 1  # the same libjpeg-turbo (PIL may round an IDCT differently)
