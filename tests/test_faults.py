"""Fault injection (issue 12): a run killed (SIGKILL) in the middle of each file it writes, at every
write of a whole run, resumes and ends with exactly the weights of a run never killed, with one
metrics row per epoch, best.pt wherever last.pt says there is one, and no temporary files left."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SPEC = """net faults
input data: 3x12x12
conv1: conv(8, 3, pad=1)
relu1: relu
pool1: maxpool(2)
fc2: fc(3)
train { epochs = 3; batch_size = 6; workers = 0; deterministic = true; flip = false; keep_every = 2 }
"""
# The child counts the files it writes and dies at the n-th, after the temporary file is complete but
# before it replaces the real one: the worst moment (a kill before is the same as one a write earlier).
CHILD = """
import os, signal, sys
from netdsl.training import checkpoint, rundir
die_at, count = int(sys.argv[1]), [0]
real = rundir.write_atomic
def write_atomic(path, data=None, *, save=None):
    count[0] += 1
    if count[0] != die_at:
        return real(path, data, save=save)
    def then_die(f):
        save(f) if save else f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, save=then_die)
rundir.write_atomic = checkpoint.write_atomic = write_atomic
from netdsl.cli.main import main
sys.argv = ["netdsl", "train", *sys.argv[2:]]
main()
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 3)):
        for c, colour in enumerate(((220, 40, 40), (40, 200, 60), (40, 60, 220))):
            for i in range(n):
                path = root / "data" / split / str(c) / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                a = np.clip(np.array(colour)[None, None] + rng.normal(0, 30, (14, 14, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(path)
    (root / "faults.net").write_text(SPEC)
    return root


def run(setup: Path, out: Path, die_at: int = 0, resume: bool = False) -> subprocess.CompletedProcess:
    args = ["--resume", str(out)] if resume else [str(setup / "faults.net"), "--data", str(setup / "data"),
                                                   "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(die_at), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def finish(setup: Path, out: Path) -> None:
    """What a user does after a crash: resume when there is a checkpoint, else start again."""
    done = run(setup, out, resume=(out / "last.pt").exists())
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_kill_during_any_write_loses_nothing(setup, tmp_path):
    reference = tmp_path / "reference"
    done = run(setup, reference)
    assert done.returncode == 0, done.stdout + done.stderr
    want = torch.load(reference / "last.pt", weights_only=True)
    killed = 0
    for die_at in range(1, 100):  # every write of the run, until a run has fewer writes than die_at
        out = tmp_path / f"killed-{die_at}"
        first = run(setup, out, die_at=die_at)
        if first.returncode == 0:
            break
        assert first.returncode == -9, first.stdout + first.stderr
        killed += 1
        finish(setup, out)
        got = torch.load(out / "last.pt", weights_only=True)
        assert got["epoch"] == 3 and got["best_epoch"] == want["best_epoch"], die_at
        for key, value in want["model"].items():
            assert torch.equal(got["model"][key], value), (die_at, key)
        with open(out / "metrics.csv", newline="") as f:
            assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"], die_at
        assert (out / "best.pt").exists() and (out / "epoch-002.pt").exists(), die_at
        assert not list(out.glob(".*")), (die_at, [p.name for p in out.glob(".*")])
    # 4 writes at the start (config.yaml, spec.net, env.json, metrics.csv), then per epoch the row,
    # best.pt when better, last.pt, and epoch-002.pt: 14 or so, each killed once
    assert killed >= 12, killed


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs (root, Linux); the test is skipped where one cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if sys.platform != "linux" or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                                 capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(mount: Path) -> Path:
    filler = mount / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_one_message_and_the_run_resumes_when_there_is_room(setup, small_disk):
    out = small_disk / "run"
    first = run(setup, out)  # 3 epochs fit in 4 MiB
    assert first.returncode == 0, first.stdout + first.stderr
    filler = _fill(small_disk)
    env_before = (out / "env.json").read_text()
    full = subprocess.run(
        [sys.executable, "-m", "netdsl.cli", "train", "--resume", str(out), "--epochs", "5"], cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "Traceback" not in full.stderr and "the disk is full" in full.stderr, full.stderr
    assert (out / "env.json").read_text() == env_before  # never truncated in place
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3  # the last good state
    assert not list(out.glob(".*.tmp"))
    filler.unlink()
    again = subprocess.run([sys.executable, "-m", "netdsl.cli", "train", "--resume", str(out), "--epochs", "5"],
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 5
