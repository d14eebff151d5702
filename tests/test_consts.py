"""-D NAME=VALUE: a spec's top-level constants from the command line, checked like the spec's own values,
recorded in the run and restored on --resume."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import netdsl
from conftest import ROOT

MINI = ROOT / "specs" / "alexnet-mini.net"


def test_an_override_replaces_the_constant():
    net = netdsl.load(MINI, consts={"classes": "3"})
    assert net.ok, net.render_diagnostics()
    assert net.graph.node("fc8").shape == (3,) and net.consts == {"classes": "3"}
    assert netdsl.load(MINI).graph.node("fc8").shape == (10,)


@pytest.mark.parametrize("consts, message", [
    ({"clases": "3"}, "-D clases=3: the spec has no constant 'clases'"),
    ({"classes": "abc"}, "-D classes=abc: gives the word 'abc', but 'classes' is a whole number (the spec says 10)"),
    ({"classes": "2.5"}, "-D classes=2.5: gives 2.5, but 'classes' is a whole number (the spec says 10)"),
    ({"classes": "(("}, "-D classes=((: '((' is not a value"),
])
def test_bad_overrides_are_located_errors(consts, message):
    net = netdsl.load(MINI, consts=consts)
    assert not net.ok
    [err] = net.errors
    assert err.message.startswith(message)
    if "clases" in consts:
        assert err.span is None and "did you mean 'classes'?" in err.notes
    else:
        assert err.span.line == 8  # const classes = 10


def test_types_follow_the_spec():
    spec = "const rate = 0.5\nconst act = relu\nconst bn = true\ninput data: 3x8x8\nd: dropout(rate)\n"
    assert netdsl.loads(spec, consts={"rate": "1"}).ok  # a whole number where a number is expected
    assert netdsl.loads(spec, consts={"act": "tanh", "bn": "false"}).ok
    assert not netdsl.loads(spec, consts={"bn": "1"}).ok


def test_cli_check_with_d(cli):
    result = cli("check", MINI, "-D", "classes=3")
    assert result.exit_code == 0, result.output
    assert "output: prob 3" in result.output
    result = cli("check", MINI, "-D", "clases=3")
    assert result.exit_code == 1 and "did you mean 'classes'?" in result.output
    result = cli("check", MINI, "-D", "classes")
    assert result.exit_code == 2 and "expected NAME=VALUE" in result.output


def _folder(root: Path, classes: int) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        for split, n in (("train", 6), ("val", 2)):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(rng.normal(60 * c + 40, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.jpg")
    return root


TINY = """net tiny
const classes = 10
input data: 3x16x16
c: conv(4, 3, pad=1)
r: relu
p: maxpool(2, stride=2, round=floor)
f: fc(classes)
train { epochs = 1; batch_size = 6; workers = 0; lr = 0.01; deterministic = true; flip = false }
"""


def test_train_with_d_records_it_and_resume_restores_it(cli, tmp_path):
    spec = tmp_path / "tiny.net"
    spec.write_text(TINY)
    data = _folder(tmp_path / "three", 3)
    out = tmp_path / "run"
    refused = cli("train", spec, "--data", data, "--out", tmp_path / "refused")
    assert refused.exit_code != 0 and "3 classes" in refused.output  # 10 outputs for 3 classes
    result = cli("train", spec, "-D", "classes=3", "--data", data, "--out", out)
    assert result.exit_code == 0, result.output
    state = torch.load(out / "last.pt", weights_only=True)
    assert state["consts"] == {"classes": "3"} and state["model"]["f.weight"].shape[0] == 3
    assert (out / "spec.net").read_text().startswith("# trained with:\n#   -D classes=3\n")
    resumed = cli("train", "--resume", out, "--epochs", 2)
    assert resumed.exit_code == 0, resumed.output
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2
    other = cli("train", "--resume", out, "--epochs", 3, "-D", "classes=4")
    assert other.exit_code == 2 and "trained with -D classes=3" in other.output
    # eval and predict take the run's -D from its checkpoint; a different one is refused
    evaluated = cli("eval", spec, "--weights", out / "best.pt", "--data", data, "--crops", "centre")
    assert evaluated.exit_code == 0, evaluated.output
    assert "using -D classes=3 from" in evaluated.output and "centre crop" in evaluated.output
    image = next((data / "val" / "class0").iterdir())
    predicted = cli("predict", spec, "--weights", out / "best.pt", image, "--top", 3)
    assert predicted.exit_code == 0 and len(predicted.output.strip().splitlines()) >= 4, predicted.output
    refused = cli("eval", spec, "-D", "classes=4", "--weights", out / "best.pt", "--data", data)
    assert refused.exit_code == 2 and "was trained with -D classes=3, not -D classes=4" in refused.output
