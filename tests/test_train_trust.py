"""Nothing silently wrong and nothing lost in training (issue 12): defaults that train a plain spec, a
loss that explodes stops with the cause, runs that cannot be extended say why, run directories are
locked and written atomically, damaged checkpoints are refused, and a full disk is one message."""
from __future__ import annotations

import signal
import time
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli.main import main
from netdsl.training import checkpoint
from netdsl.training.rundir import read_metrics, write_atomic

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220)}
# A net as a user writes it from docs/language.md: no init, no train block.
PLAIN = """net plain
input data: 3x16x16
conv1: conv(16, 3, pad=1)
relu1: relu
pool1: maxpool(2)
conv2: conv(32, 3, pad=1)
relu2: relu
pool2: maxpool(2)
fc3: fc(3)
"""


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(result.output) from result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("val", 6)):
        for name, colour in COLOURS.items():
            for i in range(n):
                path = root / split / name / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                a = np.clip(np.array(colour)[None, None] + rng.normal(0, 25, (24, 24, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(path, quality=90)
    return root


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "plain.net"
    path.write_text(PLAIN)
    return path


BASE = ("--epochs", "2", "--batch-size", "8", "--workers", "0", "--set", "flip=false", "--set", "log_every=2")


def test_the_default_recipe_trains_a_plain_spec(plain, folder, tmp_path):
    code, out = cli("train", plain, "--data", folder, "--out", tmp_path / "run", *BASE)
    assert code == 0, out
    assert "normalize: auto -> mean_std" in out
    rows = list(read_metrics(tmp_path / "run" / "metrics.csv"))
    assert float(rows[-1]["val_acc1"]) > 90, rows[-1]
    assert json.dumps("mean_std") in json.dumps(checkpoint.load(tmp_path / "run")["config"])


def test_an_exploding_loss_stops_with_the_cause_and_the_fix(plain, folder, tmp_path):
    code, out = cli("train", plain, "--data", folder, "--out", tmp_path / "run", *BASE, "--set", "normalize=mean")
    assert code == 3, out
    assert "more than 10 times the 1.10 of a uniform guess over 3 classes" in out
    assert "try --set normalize=mean_std" in out and not (tmp_path / "run" / "last.pt").exists()


def test_extending_a_finished_cosine_run_is_refused_with_the_fix(plain, folder, tmp_path):
    run = tmp_path / "run"
    assert cli("train", plain, "--data", folder, "--out", run, *BASE, "--set", "schedule=cosine")[0] == 0
    code, out = cli("train", "--resume", run, "--epochs", "3")
    assert code == 2 and "cosine schedule ends at epoch 2 with learning rate 0" in out, out
    assert "--set schedule=constant --lr RATE" in out
    code, out = cli("train", "--resume", run, "--epochs", "3", "--set", "schedule=constant", "--lr", "0.001")
    assert code == 0, out


# ----------------------------------------------------------------------------- the run directory


def test_a_run_directory_is_locked_by_its_live_process(plain, folder, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from netdsl.training.rundir import RunLock\n"
                               f"lock = RunLock(Path({str(run)!r})).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out = cli("train", plain, "--data", folder, "--out", run, *BASE)
        assert code == 2 and "is in use by a run that is still going (pid" in out, out
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    (run / ".x.pt.123.tmp").write_bytes(b"half a checkpoint")  # what a killed save leaves
    code, out = cli("train", plain, "--data", folder, "--out", run, *BASE)  # the dead holder's lock is free
    assert code == 0, out
    assert not list(run.glob(".*")), "the lock and temporary files are gone"


def test_a_new_run_will_not_write_into_a_folder_of_other_files(plain, folder, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.yaml").write_text("mine too")
    spec = tmp_path / "here.net"
    spec.write_text(PLAIN + 'train { out = "." }\n')
    os.chdir(tmp_path)
    try:
        code, out = cli("train", spec, "--data", folder, *BASE)
    finally:
        os.chdir(REPO)
    assert code == 2 and "holds other files (here.net, notes.txt)" in out, out
    assert (tmp_path / "config.yaml").read_text() == "mine too"


def test_write_atomic_keeps_the_old_file_when_the_disk_is_full(tmp_path):
    path = tmp_path / "env.json"
    path.write_text("old")

    def full(f):
        f.write(b"new, half")
        raise OSError(28, "No space left on device")
    with pytest.raises(Exception, match="cannot write .*env.json: the disk is full; the previous env.json is intact"):
        write_atomic(path, save=full)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["env.json"]


@pytest.fixture(scope="module")
def trained(plain, folder, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli("train", plain, "--data", folder, "--out", run, *BASE)[0] == 0
    return run


def test_damaged_checkpoints_are_refused_with_one_line(trained, tmp_path):
    damaged = tmp_path / "damaged.pt"
    data = bytearray((trained / "last.pt").read_bytes())
    state = torch.load(trained / "last.pt", weights_only=True)
    key = next(k for k in state["model"] if k.endswith("conv2.weight"))
    raw = state["model"][key].numpy().tobytes()
    at = bytes(data).find(raw[:64])
    assert at > 0
    data[at + 40:at + 240] = os.urandom(200)  # 200 bytes of weights overwritten: still a loadable zip
    damaged.write_bytes(bytes(data))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    no_config = tmp_path / "run"
    no_config.mkdir()
    torch.save({"model": state["model"]}, no_config / "last.pt")
    for args, message in [
        (["eval", trained / "spec.net", "--weights", damaged, "--data", trained.parent],
         "do not match the checksum saved with them"),
        (["eval", trained / "spec.net", "--weights", empty], "not a PyTorch state dict or checkpoint"),
        (["predict", trained / "spec.net", "x.jpg", "--weights", empty], "not a PyTorch state dict or checkpoint"),
        (["train", "--resume", no_config], "holds weights only, not a run that can be resumed"),
        (["export", trained / "spec.net", "--format", "torchscript", "-o", tmp_path / "x.pt", "--weights", damaged],
         "do not match the checksum"),
    ]:
        code, out = cli(*args)
        assert code == 2 and message in out, (args, out)
        assert len(out.strip().splitlines()) == 1, out


def test_resume_after_a_kill_between_the_metrics_row_and_last_pt_repeats_the_epoch(plain, folder, tmp_path):
    run = tmp_path / "run"
    assert cli("train", plain, "--data", folder, "--out", run, *BASE, "--epochs", "1")[0] == 0
    rows = list(read_metrics(run / "metrics.csv"))
    # As if killed after epoch 2's row was written but before its last.pt: the row is dropped on resume.
    with open(run / "metrics.csv", "a") as f:
        f.write("2," + ",".join(["0"] * 13) + "\n")
    assert cli("train", "--resume", run, "--epochs", "2")[0] == 0
    after = list(read_metrics(run / "metrics.csv"))
    assert [r["epoch"] for r in after] == ["1", "2"] and after[0] == rows[0] and after[1]["train_loss"] != "0"


# ----------------------------------------------------------------------------- several processes


def _ranks_of(out: Path) -> list[int]:
    """Live processes whose command line names this run directory (the ranks, the launcher)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(out).encode() in (proc / "cmdline").read_bytes() and \
                        (proc / "stat").read_text().split()[2] != "Z":
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def _start_ddp(plain: Path, folder: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "netdsl.cli.main", "train", str(plain), "--data", str(folder), "--out", str(out),
           "--epochs", "50", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--nproc", "2",
           "--set", "log_every=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    for _ in range(600):  # until the ranks train (the log names the first epoch's end, or steps ran)
        if (out / "train.log").exists() and "epoch 1/50" in (out / "train.log").read_text():
            return proc
        if proc.poll() is not None:
            raise AssertionError(proc.communicate())
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("the ranks never started training")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc as on Linux")
def test_sigterm_to_a_multi_process_run_saves_and_exits_143(plain, folder, tmp_path):
    out = tmp_path / "ddp"
    proc = _start_ddp(plain, folder, out)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stdout + stderr
    assert "Traceback" not in stderr, stderr
    assert (out / "last.pt").exists() and "saved" in stdout
    assert checkpoint.load(out)["world"] == 2
    assert not _ranks_of(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc as on Linux")
def test_kill_9_of_a_multi_process_run_takes_its_ranks_with_it(plain, folder, tmp_path):
    out = tmp_path / "ddp"
    proc = _start_ddp(plain, folder, out)
    assert len(_ranks_of(out)) >= 3  # the launcher and two ranks
    os.killpg(proc.pid, signal.SIGKILL)  # the whole process group: the ranks have sessions of their own
    proc.communicate(timeout=60)
    for _ in range(300):
        if not _ranks_of(out):
            break
        time.sleep(0.1)
    assert not _ranks_of(out), "ranks outlived their launcher"
