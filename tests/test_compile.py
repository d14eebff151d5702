"""torch.compile and torch.export of lowered specs: one graph, no break, no recompilation.

The lowered module is an fx GraphModule with generated straight-line code (autocast included), so
dynamo traces it whole. `fullgraph=True` makes any graph break an error, and the stance
"fail_on_recompile" makes any recompilation after the first step an error. Dynamo's tracing does not
depend on the backend, so the every-spec sweep uses backend="eager" (the real modules run; no C++
compile); inductor itself is checked on alexnet-mini against eager.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

import netdsl

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.net"))


def spec(name: str) -> netdsl.Net:
    return netdsl.load(ROOT / "specs" / f"{name}.net")


def data(net: netdsl.Net, n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = net.graph.inputs()[0].params["shape"]
    classes = net.graph.outputs()[0].shape[0]
    return torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def train_steps(model: torch.nn.Module, step_fn, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for i in range(steps):
        with torch.compiler.set_stance("fail_on_recompile" if i else "default"):
            loss = F.cross_entropy(step_fn(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def layouts(net: netdsl.Net) -> list:
    return [None, ["cpu", "cpu"]] if net.graph.towers else [None]


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_compiles_to_one_graph_without_recompiling(name):
    net = spec(name)
    x, y = data(net, n=1)  # (no spec here has batch norm on vectors, which would need 2)
    for devices, amp, channels_last in itertools.product(layouts(net), ("none", "bf16"), (False, True)):
        model = net.to_torch(devices, seed=0, logits=True, amp=amp, channels_last=channels_last)
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, backend="eager", fullgraph=True)  # a graph break raises
        # A recompilation raises. bf16 on a CPU without bf16 units is emulated (VGG16: 25 s a step
        # on the 2-core CI machine), so bf16 runs the compiling step and one more.
        train_steps(model, compiled, x, y, steps=3 if amp == "none" else 2)
        where = f"{name} devices={devices} amp={amp} channels_last={channels_last}"
        assert counters["stats"]["unique_graphs"] == 1, where
        assert not counters["graph_break"], where


def test_amp_is_in_the_generated_code():
    model = spec("alexnet").to_torch(amp="bf16")
    assert "with torch.autocast(data.device.type, dtype=torch.bfloat16):" in model.code
    placed = spec("lenet").to_torch(["cpu"], amp="bf16")
    assert "with torch.autocast('cpu', dtype=torch.bfloat16):" in placed.code
    with torch.no_grad():
        assert model.logits(torch.randn(1, 3, 224, 224)).dtype == torch.bfloat16


def test_inductor_trains_like_eager():
    net = spec("alexnet-mini")
    x, y = data(net, n=4)
    for amp, channels_last in (("none", False), ("bf16", True)):
        eager = net.to_torch(seed=0, logits=True, amp=amp, channels_last=channels_last).train()
        model = net.to_torch(seed=0, logits=True, amp=amp, channels_last=channels_last).train()
        for m in (eager, model):  # dropout draws differ between eager and inductor: switch it off
            for module in m.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
        torch._dynamo.reset()
        try:
            compiled = torch.compile(model, fullgraph=True)
            got = train_steps(model, compiled, x, y, steps=3)
        except Exception as err:  # noqa: BLE001  (no working C++ toolchain for inductor here)
            pytest.skip(f"inductor does not work on this machine: {type(err).__name__}: {err}")
        want = train_steps(eager, eager, x, y, steps=3)
        tol = 1e-4 if amp == "none" else 2e-2
        assert got == pytest.approx(want, rel=tol, abs=tol), (amp, got, want)


@pytest.mark.parametrize("name", SPECS)
def test_torch_export_succeeds_with_a_free_batch(name):
    net = spec(name)
    model = net.to_torch(seed=0).eval()
    x, _ = data(net)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x[:1]), model(x[:1]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ eject: one standalone file

EJECT_CHECK = """
import sys, torch
sys.path[:] = [p for p in sys.path if "netdsl" not in p and p not in ("", ".")] + [sys.argv[1]]
import importlib
mod = importlib.import_module(sys.argv[2])
assert not any(m == "netdsl" or m.startswith("netdsl.") for m in sys.modules), "the file imported netdsl"
model = getattr(mod, sys.argv[3])()
state = torch.load(sys.argv[4], weights_only=True)
assert list(model.state_dict()) == list(state), "state-dict keys differ"
model.load_state_dict(state)
model.eval()
x = torch.load(sys.argv[5], weights_only=True)
with torch.no_grad():
    torch.save(model(x), sys.argv[6])
"""


@pytest.mark.parametrize("name, cls", [("alexnet", "Alexnet"), ("googlenet", "Googlenet"), ("alexnet-mini", "AlexnetMini"),
                                       ("lenet", "Lenet")])
def test_ejected_file_runs_without_netdsl_and_equals_the_lowered_module(name, cls, tmp_path):
    import subprocess
    import sys

    from click.testing import CliRunner

    from netdsl.cli import main
    net = spec(name)
    weights = tmp_path / "trained.pt"
    lowered = net.to_torch(seed=3).eval()
    torch.save({"model": lowered.state_dict()}, weights)  # a checkpoint-like dict, as training writes
    out = tmp_path / "gen" / "ejected_net.py"
    result = CliRunner().invoke(main, ["export", str(ROOT / "specs" / f"{name}.net"), "--format", "python",
                                       "-o", str(out), "--weights", str(weights)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 0, result.output
    assert out.with_suffix(".pt").exists()
    text = out.read_text()
    assert f"specs/{name}.net" in text.splitlines()[0] and "netdsl" not in text.split("import torch")[1].split("class")[0]
    x, _ = data(net, n=3)
    torch.save(x, tmp_path / "x.pt")
    run = subprocess.run([sys.executable, "-I", "-c", EJECT_CHECK, str(out.parent), out.stem, cls,
                          str(out.with_suffix(".pt")), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "y.pt"), lowered(x), rtol=1e-6, atol=1e-6)


def test_ejected_file_applies_the_specs_initialisation(tmp_path):
    from netdsl.lowering.eject import python_source
    net = spec("alexnet")
    path = tmp_path / "paper.py"
    path.write_text(python_source(net.graph, spec="specs/alexnet.net"))
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # noqa: S102  (our own generated file)
    model = namespace["Alexnet"]()
    assert float(model.conv2.bias.mean()) == 1.0 and float(model.conv1.bias.abs().sum()) == 0.0
    assert abs(float(model.fc6.weight.std()) - 0.01) < 1e-3  # N(0, 0.01), as the paper


# ------------------------------------------------------------------ on a CUDA GPU (skipped without one)

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
def test_cuda_compiles_to_one_graph_in_every_precision():
    net = spec("alexnet")  # the towers: one device and one device per tower
    x, y = (t.cuda() for t in data(net, n=8))
    for devices, amp, channels_last in itertools.product((["cuda:0"], ["cuda:0", "cuda:0"]), ("none", "bf16", "fp16"),
                                                         (False, True)):
        model = net.to_torch(devices, seed=0, logits=True, amp=amp, channels_last=channels_last)
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        losses = train_steps(model, compiled, x, y, steps=3)
        assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], (devices, amp, channels_last)
        assert all(torch.isfinite(torch.tensor(losses))), losses


@cuda
def test_cuda_inductor_equals_eager_in_bf16():
    net = spec("alexnet")
    x, _ = (t.cuda() for t in data(net, n=16))
    eager = net.to_torch(["cuda:0"], seed=0, logits=True, amp="bf16", channels_last=True).eval()
    torch._dynamo.reset()
    compiled = torch.compile(eager, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x).float(), eager(x).float(), rtol=0.05, atol=0.05)
