"""Real training on tiny JPEG folders: run files, resume equality, signals, NaN guard, DDP, towers,
and the eval / predict / plot commands. Tiny nets and images keep the file within a few minutes."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import netdsl
from cli.main import main
from netdsl.training.config import resolve
from netdsl.training.loop import train

REPO = Path(__file__).resolve().parents[1]
CLASSES = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 220, 40)}
TINY = """net tiny "a tiny two-tower net for tests"
const classes = 4
defaults { weight_init = kaiming; bias_init = 0 }
input data: 3x16x16
towers 2 {
    conv1: conv(8, 3, pad=1) cross
    relu1: relu
    pool1: maxpool(2, stride=2)
    drop1: dropout(0.5)
    fc2: fc(classes) cross
}
prob: softmax
train { recipe = paper; normalize = mean_std; lr = 0.01; batch_size = 8; epochs = 2; workers = 0; deterministic = true }
"""
TIMING = {"images_per_s", "data_wait_pct", "epoch_s"}


def _image(path: Path, colour: tuple[int, int, int], rng: np.random.Generator) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = rng.integers(20, 40, 2)
    a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(a).save(path, quality=90)


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.net"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """4 colour classes: 10 train and 3 val images each, plus one extra val image (13: odd)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for name, colour in CLASSES.items():
        for i in range(10):
            _image(root / "train" / name / f"{i}.jpg", colour, rng)
        for i in range(3):
            _image(root / "val" / name / f"{i}.jpg", colour, rng)
    _image(root / "val" / "red" / "extra.png", CLASSES["red"], rng)
    return root


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def run_api(spec: Path, out: Path, **settings) -> int:
    net = netdsl.load(spec)
    return train(net, resolve(net.graph.training, None, {"out": str(out), **settings}), argv=["test"])


def rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def untimed(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows(run)]


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def same_state(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for i, s in sa["optimizer"]["state"].items():
        assert torch.equal(s["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
    assert sa["scheduler"] == sb["scheduler"]


def subprocess_env() -> dict[str, str]:
    # the same thread count as this process: a different one changes float sums, and the
    # equality tests compare bit for bit
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(torch.get_num_threads())}


# ----------------------------------------------------------------------------- one full run


@pytest.fixture(scope="module")
def run(spec, folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "full"
    code, output = cli("train", spec, "--data", folder, "--out", out, "--workers", 2, "--epochs", 3)
    assert code == 0, output
    return out


def test_run_directory(run):
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "spec.net", "env.json", "train.log", "metrics.csv", "last.pt", "best.pt",
            "curves.png", "tensorboard"} <= names
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert (run / "spec.net").read_text() == TINY
    import yaml
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 3 and saved["origin"]["epochs"] == "the command line"
    assert saved["train"]["lr"] == 0.01 and saved["origin"]["lr"] == "the spec's train block"
    assert saved["origin"]["momentum"] == "recipe paper"


def test_metrics_csv(run):
    r = rows(run)
    assert [x["epoch"] for x in r] == ["1", "2", "3"]
    for key in ("epoch", "train_loss", "val_loss", "val_acc1", "val_acc5"):
        assert key in r[0]
    assert all(0 <= float(x["val_acc1"]) <= 100 and float(x["val_acc5"]) == 100 for x in r)  # 4 classes
    assert all(x["val_images"] == "13" for x in r)
    assert float(r[-1]["val_acc1"]) >= 75, r  # colours are easy


def test_checkpoints_load_with_weights_only(run):
    state = torch.load(run / "last.pt", weights_only=True)
    assert state["epoch"] == 3 and state["step"] == 0
    assert not any(k.startswith("module.") for k in state["model"])
    assert state["classes"] == sorted(CLASSES)
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["best_acc1"] == pytest.approx(max(float(r["val_acc1"]) for r in rows(run)), abs=1e-3)


def test_eval_centre_and_ten_crops(spec, folder, run):
    code, out = cli("eval", spec, "--weights", run / "last.pt", "--data", folder)
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "centre" in lines and "10" in lines
    centre_acc = float(lines["centre"].split()[4].rstrip("%"))
    assert centre_acc == pytest.approx(float(rows(run)[-1]["val_acc1"]), abs=0.01)
    assert lines["10"].split()[-1] == "13"


def test_predict_top_classes(spec, folder, run):
    images = [folder / "val" / "blue" / "0.jpg", folder / "val" / "red" / "extra.png"]
    code, out = cli("predict", spec, "--weights", run / "best.pt", *images)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].endswith("0.jpg") and len(lines) == 2 + 2 * 4  # 4 classes: top-4
    probs = [float(line.split()[0]) for line in lines[1:5]]
    assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-3)
    code, out = cli("predict", spec, "--weights", run / "best.pt", folder / "nope.jpg")
    assert code == 2 and "cannot read" in out


def test_plot(run, tmp_path):
    code, out = cli("plot", run, "-o", tmp_path / "c.png")
    assert code == 0 and Image.open(tmp_path / "c.png").size[0] > 500
    code, out = cli("plot", tmp_path)
    assert code == 2 and "no metrics.csv" in out


def test_existing_run_is_not_overwritten(spec, folder, run):
    code, out = cli("train", spec, "--data", folder, "--out", run)
    assert code == 2 and "already holds a run" in out and "--resume" in out


# ----------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def reference(spec, folder, tmp_path_factory) -> Path:
    """An uninterrupted 4-epoch run to compare resumed runs with."""
    out = tmp_path_factory.mktemp("runs") / "reference"
    assert run_api(spec, out, data=str(folder), epochs=4, batch_size=4) == 0
    return out


def test_resume_at_epoch_boundary_equals_uninterrupted(spec, folder, reference, tmp_path):
    out = tmp_path / "split"
    assert run_api(spec, out, data=str(folder), epochs=2, batch_size=4) == 0
    code, output = cli("train", "--resume", out, "--epochs", 4)
    assert code == 0, output
    assert "epochs: 4 from the command line replaces 2 saved in the run" in output
    import json
    sessions = json.loads((out / "env.json").read_text())
    assert len(sessions) == 2 and "--resume" in sessions[1]["command"] and sessions[0]["torch"] == torch.__version__
    same_state(out / "last.pt", reference / "last.pt")
    assert untimed(out) == untimed(reference)


def test_sigterm_mid_epoch_saves_and_resume_equals_uninterrupted(spec, folder, reference, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "netdsl.cli.main", "train", str(spec), "--data", str(folder), "--out",
           str(out), "--epochs", "4", "--batch-size", "4"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (out / "train.log").exists() and "epoch 1/4" in (out / "train.log").read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "Traceback" not in output and "saved" in output
    state = torch.load(out / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"]) < (4, 0)
    code, output = cli("train", "--resume", out)
    assert code == 0, output
    same_state(out / "last.pt", reference / "last.pt")
    assert untimed(out) == untimed(reference)


def test_ctrl_c_with_loader_workers_saves_cleanly(spec, folder, tmp_path):
    """Ctrl-C goes to the whole process group, loader workers included."""
    out = tmp_path / "ctrl-c"
    cmd = [sys.executable, "-m", "netdsl.cli.main", "train", str(spec), "--data", str(folder), "--out", str(out),
           "--epochs", "50", "--batch-size", "4", "--workers", "2"]
    proc = subprocess.Popen(cmd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    wait_for(lambda: (out / "metrics.csv").exists() and len(rows(out)) >= 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGINT, output
    assert "Traceback" not in output and "--resume" in output
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] >= 1


def wait_for(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {proc.communicate()[0]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_resume_keeps_the_scheduled_lr_unless_given(spec, folder, tmp_path):
    out = tmp_path / "lr"
    assert run_api(spec, out, data=str(folder), epochs=1, schedule="step", lr_step=1, lr_gamma=0.5) == 0
    code, output = cli("train", "--resume", out, "--epochs", 2)
    assert code == 0, output
    assert float(rows(out)[1]["lr"]) == pytest.approx(0.005)  # the schedule's, not the configured 0.01
    code, output = cli("train", "--resume", out, "--epochs", 3, "--lr", 0.2)
    assert code == 0, output
    assert "lr: 0.2 from the command line replaces 0.01 saved in the run" in output
    assert float(rows(out)[2]["lr"]) == pytest.approx(0.2)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(spec, folder, tmp_path):
    out = tmp_path / "nan"
    assert run_api(spec, out, data=str(folder), epochs=1) == 0
    good = weights(out / "last.pt")
    code, output = cli("train", "--resume", out, "--epochs", 3, "--lr", "1e30", "--set", "log_every=1")
    assert code == 3, output
    assert "not finite" in output and "end of epoch 1" in output and "Traceback" not in output
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 1
    assert all(torch.equal(v, good[k]) for k, v in weights(out / "last.pt").items())
    assert len(rows(out)) == 1


# ----------------------------------------------------------------------------- more than one device


def test_ddp_two_processes_gloo(spec, folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "netdsl.cli.main", "train", str(spec), "--data", str(folder), "--out", str(out),
           "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--nproc", "2"]
    done = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x 2 processes" in done.stdout
    r = rows(out)
    assert [x["val_images"] for x in r] == ["13", "13"]  # 7 + 6 over the ranks, none twice
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["world"] == 2 and len(state["ranks"]) == 2
    assert not any(k.startswith("module.") for k in state["model"])
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        ["best.pt", "config.yaml", "curves.png", "env.json", "last.pt", "metrics.csv", "spec.net", "train.log"])
    code, output = cli("eval", spec, "--weights", out / "last.pt", "--data", folder, "--crops", "centre")
    assert code == 0
    centre = next(line for line in output.splitlines() if line.startswith("centre"))
    assert float(centre.split()[4].rstrip("%")) == pytest.approx(float(r[-1]["val_acc1"]), abs=0.01)


def test_towers_on_two_devices_train_like_one(folder, tmp_path):
    # no dropout here: one tower per device draws its dropout masks per tower, one device for all
    spec = tmp_path / "tiny-no-dropout.net"
    spec.write_text(TINY.replace("    drop1: dropout(0.5)\n", ""))
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_api(spec, one, data=str(folder), epochs=1, device="cpu") == 0
    assert run_api(spec, two, data=str(folder), epochs=1, device="cpu,cpu") == 0
    a, b = weights(one / "last.pt"), weights(two / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k


# ----------------------------------------------------------------------------- clear errors


def test_wrong_layout_is_refused_before_training(spec, tmp_path):
    (tmp_path / "data" / "train" / "only").mkdir(parents=True)
    Image.new("RGB", (20, 20)).save(tmp_path / "data" / "train" / "only" / "a.jpg")
    code, out = cli("train", spec, "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert code == 2 and out.startswith("error: --data") and "no 'val/' folder" in out
    assert not (tmp_path / "run").exists()


def test_class_count_must_match_the_spec(spec, folder, tmp_path):
    three = tmp_path / "three"
    for split in ("train", "val"):
        for name in list(CLASSES)[:3]:
            (three / split / name).mkdir(parents=True)
            Image.new("RGB", (20, 20), CLASSES[name]).save(three / split / name / "0.jpg")
    code, out = cli("train", spec, "--data", three, "--out", tmp_path / "run")
    assert code == 2 and "outputs 4 classes" in out and "has 3 classes" in out and "-D classes=3" in out


def test_unknown_setting_and_bad_yaml(spec, tmp_path):
    code, out = cli("train", spec, "--set", "epoch=3")
    assert code == 2 and "unknown training setting 'epoch'" in out and "did you mean 'epochs'" in out
    (tmp_path / "c.yaml").write_text("lr: [1, 2\n")
    code, out = cli("train", spec, "--config", tmp_path / "c.yaml")
    assert code == 2 and "not valid YAML" in out


def test_broken_images_are_skipped_and_counted(spec, folder, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(folder, data)
    (data / "train" / "red" / "empty.jpg").write_bytes(b"")
    good = (data / "train" / "blue" / "0.jpg").read_bytes()
    (data / "train" / "blue" / "cut.jpg").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    code, output = cli("train", spec, "--data", data, "--out", out, "--epochs", 1, "--workers", 2)
    assert code == 0, output
    assert "skipped" in output and "empty.jpg: empty file" in output and "cut.jpg" in output
    assert rows(out)[0]["skipped"] == "2"


def test_bundled_digits_without_data(tmp_path):
    spec = tmp_path / "digits.net"
    spec.write_text("""net digits_tiny
input data: 1x16x16
conv1: conv(16, 3, pad=1)
relu1: relu
pool1: maxpool(2, stride=2)
fc2: fc(10)
prob: softmax
train { normalize = mean_std; flip = false; lighting = 0; lr = 0.05; batch_size = 32; epochs = 2 }
""")
    out = tmp_path / "run"
    code, output = cli("train", spec, "--out", out)
    assert code == 0, output
    assert "bundled digits" in output
    assert float(rows(out)[-1]["val_acc1"]) > 80


@pytest.mark.skipif(not os.environ.get("NETDSL_SLOW"), reason="the README's main job, about 2 minutes: NETDSL_SLOW=1")
def test_main_job_alexnet_mini_on_bundled_digits(tmp_path):
    out = tmp_path / "mini"
    done = subprocess.run([sys.executable, "-m", "netdsl.cli.main", "train", str(REPO / "specs" / "alexnet-mini.net"),
                           "--out", str(out)], env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert max(float(r["val_acc1"]) for r in rows(out)) >= 95


def test_a_signal_during_a_log_write_is_noted_not_a_crash(tmp_path):
    """Ctrl-C once ended a run with "reentrant call inside BufferedWriter": the handler wrote to
    train.log while the loop was writing to it. Here the write blocks on a full pipe, SIGTERM arrives
    in the middle of it, and the handler must neither crash nor lose its line."""
    import threading

    from netdsl.training.loop import Dist, StopFlag
    from netdsl.training.rundir import RunLog
    log = RunLog(Dist())
    read_end, write_end = os.pipe()
    log.file = open(write_end, "w", buffering=1)
    got: list[bytes] = []

    def interrupt_then_drain() -> None:
        time.sleep(0.3)  # the main thread is blocked in the write by now (the pipe holds 64 KiB)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
        time.sleep(0.1)
        while chunk := os.read(read_end, 1 << 16):
            got.append(chunk)

    reader = threading.Thread(target=interrupt_then_drain)
    reader.start()
    with StopFlag(log) as stop:
        log._write("x" * (1 << 20))  # far more than the pipe holds: blocks until drained
        log._write("after")
    log.file.close()
    reader.join(timeout=30)
    text = b"".join(got).decode()
    assert stop.signum == signal.SIGTERM
    assert "SIGTERM: stopping after this step and saving" in text and text.rstrip().endswith("after")
