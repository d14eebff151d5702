"""Lowering to PyTorch: the lowered module is provably the network the spec describes."""
from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

import netdsl
from netdsl.errors import DeviceError
from netdsl.lowering.modules import CaffePool2d, GroupedLinear, PaddedConv2d
from netdsl.lowering.net import LoweredNet
from netdsl.lowering.towers import TowerSplit


from reference_nets import TORCHVISION_ALEXNET, PaperAlexNet, rename_state_dict

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p.stem for p in (ROOT / "specs").glob("*.net"))
TOWER_SPECS = ["alexnet", "alexnet-mini"]

# Every way a split layer can read its inputs: cross and local weight layers, replicated + partitioned
# (add), batch norm, per-tower LRN and softmax, asymmetric padding, ceil rounding, grouped and cross
# grouped fc, and leaving the split.
MIXED_TOWERS = """
net mixed
input data: 4x9x9
towers 2 {
    c1: conv(4, 3, pad=1) cross
    s1: add <- c1, data
    b1: batchnorm
    r1: relu
    n1: lrn(3, k=2)
    c2: conv(8, 3, pad=(0, 1), groups=2, round=ceil)
    p2: maxpool(3, stride=2, pad=(0, 1))
    f1: flatten
    fc1: fc(8)
    fc2: fc(4, groups=4) cross
    sm: softmax
}
out: fc(3) <- sm
"""


def spec(name: str) -> netdsl.Net:
    net = netdsl.load(ROOT / "specs" / f"{name}.net")
    assert net.ok, net.render_diagnostics()
    return net


def batch(net: netdsl.Net, n: int = 2, seed: int = 0) -> torch.Tensor:
    shape = net.graph.inputs()[0].params["shape"]
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def canonical_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter gradients under their state-dict names (tower slices concatenated)."""
    parts: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for name, p in model.named_parameters():
        m = re.fullmatch(r"(.*)\.towers\.(\d+)\.(\w+)", name)
        key, t = (f"{m[1]}.{m[3]}", int(m[2])) if m else (name, 0)
        parts.setdefault(key, []).append((t, p.grad))
    return {k: torch.cat([g for _, g in sorted(v, key=lambda x: x[0])]) for k, v in parts.items()}


def runtime_shapes(model: LoweredNet, *xs: torch.Tensor) -> dict[str, list[tuple[int, ...]]]:
    """Every layer's output shape (per tower on N devices), recorded by forward hooks."""
    seen: dict[str, list[tuple[int, ...]]] = {}
    handles = []
    for node in model.ir:
        if node.kind == "input":
            continue
        module = model.layer(node.name)
        targets = list(module.towers) if isinstance(module, TowerSplit) else [module]
        for m in targets:
            handles.append(m.register_forward_hook(
                lambda mod, a, out, name=node.name: seen.setdefault(name, []).append(tuple(out.shape[1:]))))
    with torch.no_grad():
        model(*xs)
    for h in handles:
        h.remove()
    return seen


# ------------------------------------------------------------------ static shape == runtime shape

@pytest.mark.parametrize("name", SPECS)
def test_every_layer_runs_at_the_shape_the_checker_inferred(name):
    net = spec(name)
    model = net.to_torch(seed=0).eval()
    seen = runtime_shapes(model, batch(net))
    for node in net.graph:
        if node.kind != "input":
            assert seen[node.name] == [node.shape], node.name
    assert sum(p.numel() for p in model.parameters()) == net.report.total_params


@pytest.mark.parametrize("name", TOWER_SPECS)
def test_every_tower_runs_at_its_share_of_the_inferred_shape(name):
    net = spec(name)
    seen = runtime_shapes(net.to_torch(["cpu", "cpu"], seed=0).eval(), batch(net))
    for node in net.graph:
        if node.kind == "input":
            continue
        want = [node.shape]
        if node.towers:
            c = node.shape[0] // 2 if node.meta["placement"] == "partitioned" else node.shape[0]
            want = [(c, *node.shape[1:])] * 2
        assert seen[node.name] == want, node.name


# ------------------------------------------------------------------ the same as the references

def test_torchvision_alexnet_has_the_same_parameters_and_outputs():
    import torchvision
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    model = spec("alexnet-torchvision").to_torch().eval()
    theirs = rename_state_dict(tv.state_dict(), TORCHVISION_ALEXNET)
    assert [(k, v.shape) for k, v in model.state_dict().items()] == [(k, v.shape) for k, v in theirs.items()]
    model.load_state_dict(theirs)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("devices", [None, ["cpu", "cpu"]], ids=["one-device", "two-devices"])
def test_paper_alexnet_equals_the_hand_written_grouped_reference(devices):
    torch.manual_seed(0)
    ref = PaperAlexNet().eval()
    model = spec("alexnet").to_torch(devices).eval()
    model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        want = ref(x)
        torch.testing.assert_close(model.logits(x), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(x), want.softmax(1), rtol=1e-5, atol=1e-5)


def aten_ops(model: nn.Module, x: torch.Tensor) -> collections.Counter:
    """Every aten op (with its tensor shapes) of one training step: forward, backward, SGD."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: collections.Counter = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            shapes = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
            self.ops[(str(func), shapes)] += 1
            return func(*args, **(kwargs or {}))

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with Record() as record:
        F.cross_entropy(model(x), torch.tensor([1])).backward()
        opt.step()
    return record.ops


def test_the_lowered_modules_run_exactly_the_references_aten_ops():
    """No overhead by construction: a training step runs the same aten ops on the same shapes (only
    where torchvision applies dropout to the flattened 9216-vector, the spec applies it to 256x6x6)."""
    import torchvision
    x = torch.randn(1, 3, 224, 224)
    tv = torchvision.models.alexnet()
    ours = spec("alexnet-torchvision").to_torch(logits=True)
    ours.load_state_dict(rename_state_dict(tv.state_dict(), TORCHVISION_ALEXNET))
    flat = {k[0]: v for k, v in (aten_ops(tv, x) - aten_ops(ours, x)).items()}
    assert flat == {k[0]: v for k, v in (aten_ops(ours, x) - aten_ops(tv, x)).items()}
    assert set(flat) <= {"aten.mul.Tensor", "aten.empty_like.default", "aten.bernoulli_.float", "aten.div_.Scalar"}
    ref = PaperAlexNet()  # towers as grouped convs, LRN per tower's slice
    paper = spec("alexnet").to_torch(logits=True, towers={"conv": "grouped", "lrn": "slices"})
    paper.load_state_dict(ref.state_dict())
    assert aten_ops(paper, x) == aten_ops(ref, x)


@pytest.mark.parametrize("conv, lrn", [("grouped", "band"), ("grouped", "pool"), ("split", "slices"), ("split", "band")])
def test_every_way_of_running_towers_on_one_device_is_the_same_net(conv, lrn):
    """The tower ops (options.TOWER_OPS) change how a split runs, never what it computes or its weights."""
    net = spec("alexnet")
    ref = net.to_torch(seed=0, logits=True, towers={"conv": "grouped", "lrn": "slices"}).double()
    model = net.to_torch(seed=0, logits=True, towers={"conv": conv, "lrn": lrn}).double()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    torch.testing.assert_close(model.state_dict(), ref.state_dict(), rtol=0, atol=0)
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    for m in (ref, model):
        m.eval()
        F.cross_entropy(m(x), torch.tensor([3, 7])).backward()
    torch.testing.assert_close(model(x), ref(x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(canonical_grads(model), canonical_grads(ref), rtol=1e-9, atol=1e-12)


def test_a_bad_tower_op_is_a_usage_error():
    with pytest.raises(netdsl.UsageError, match="tower_ops\\['lrn'\\] must be one of pool, band, slices, fused"):
        spec("alexnet").to_torch(towers={"lrn": "fast"})
    with pytest.raises(netdsl.UsageError, match="unknown op 'pool'"):
        spec("alexnet").to_torch(towers={"pool": "band"})


def test_ceil_convolution_is_extra_bottom_right_zero_padding():
    model = spec("alexnet").to_torch(seed=0)
    conv1 = model.layer("conv1")
    assert isinstance(conv1, PaddedConv2d) and conv1.pads == (0, 3, 0, 3)  # (224 + 3 - 11) / 4 + 1 = 55
    x = torch.randn(1, 3, 224, 224)
    want = F.conv2d(F.pad(x, (0, 3, 0, 3)), conv1.weight, conv1.bias, stride=4)
    torch.testing.assert_close(conv1(x), want)
    assert want.shape[-1] == 55


def test_pooling_lowers_natively_where_pytorch_agrees():
    caffenet = spec("caffenet").to_torch()
    assert isinstance(caffenet.layer("pool1"), nn.MaxPool2d)
    mixed = netdsl.loads(MIXED_TOWERS).to_torch()
    assert isinstance(mixed.layer("p2"), CaffePool2d)  # asymmetric padding


# ------------------------------------------------------------------ towers: one device vs N devices

def test_one_and_two_devices_agree_on_outputs_and_gradients_for_alexnet_mini():
    net = spec("alexnet-mini")
    one, two = net.to_torch(seed=3).eval(), net.to_torch(["cpu", "cpu"], seed=3).eval()
    assert_same_state(one, two)
    x, y = batch(net, 4), torch.tensor([0, 1, 2, 3])
    for model in (one, two):
        F.cross_entropy(model.logits(x), y).backward()
    with torch.no_grad():
        torch.testing.assert_close(one(x), two(x), rtol=1e-5, atol=1e-6)
    assert_same_grads(one, two)


def test_one_and_two_devices_agree_in_training_on_every_kind_of_tower_input():
    net = netdsl.loads(MIXED_TOWERS)
    assert net.ok, net.render_diagnostics()
    one, two = net.to_torch(seed=5).train(), net.to_torch(["cpu", "cpu"], seed=5).train()
    assert isinstance(one.layer("fc1"), GroupedLinear)
    x = torch.randn(6, 4, 9, 9)
    out1, out2 = one(x), two(x)
    torch.testing.assert_close(out1, out2, rtol=1e-5, atol=1e-6)
    (out1 ** 2).sum().backward()
    (out2 ** 2).sum().backward()
    assert_same_grads(one, two)
    assert_same_state(one, two)  # batch-norm running statistics moved the same way


def test_one_device_towers_normalise_each_tower_separately():
    net = netdsl.loads("net t\ninput data: 8x3x3\ntowers 2 {\n c: conv(8, 1) cross\n n: lrn(5, k=2)\n}\n")
    model = net.to_torch(seed=0)
    x = torch.randn(2, 8, 3, 3)
    h = model.layer("c")(x)
    lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2)
    want = torch.cat([lrn(h[:, :4]), lrn(h[:, 4:])], 1)
    torch.testing.assert_close(model(x), want)
    assert not torch.allclose(lrn(h), want)  # normalising across towers would differ
    cl = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, want)
    assert cl.is_contiguous(memory_format=torch.channels_last)  # the per-tower path keeps the layout


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-6, atol=1e-7, msg=key)


def assert_same_grads(a: nn.Module, b: nn.Module) -> None:
    ga, gb = canonical_grads(a), canonical_grads(b)
    assert list(ga) == list(gb)
    for key in ga:
        torch.testing.assert_close(ga[key], gb[key], rtol=1e-5, atol=1e-6, msg=key)


def test_checkpoints_move_between_layouts_both_ways():
    net = spec("alexnet-mini")
    one, two = net.to_torch(seed=1).eval(), net.to_torch(["cpu", "cpu"], seed=2).eval()
    assert {k: v.shape for k, v in one.state_dict().items()} == {k: v.shape for k, v in two.state_dict().items()}
    assert isinstance(two.layer("conv2"), TowerSplit)
    assert two.state_dict()["conv2.weight"].shape == (64, 16, 3, 3)  # full [out, in/groups, kh, kw]
    x = batch(net)
    assert str(two.load_state_dict(one.state_dict())) == "<All keys matched successfully>"
    with torch.no_grad():
        torch.testing.assert_close(two(x), one(x))
    back = net.to_torch(seed=9).eval()
    back.load_state_dict(two.state_dict())
    assert_same_state(back, one)


def test_a_bad_checkpoint_names_the_layer_not_the_towers():
    net = spec("alexnet-mini")
    two = net.to_torch(["cpu", "cpu"], seed=0)
    state = net.to_torch(seed=0).state_dict()
    state["conv2.weight"] = torch.zeros(64, 32, 3, 3)
    with pytest.raises(RuntimeError, match=r"size mismatch for conv2\.weight"):
        two.load_state_dict(state)
    del state["conv2.weight"]
    result = two.load_state_dict(state, strict=False)
    assert result.missing_keys == ["conv2.weight"]


def test_devices_that_do_not_fit_are_clear_errors():
    net = spec("alexnet")
    with pytest.raises(DeviceError, match=r"device 'cuda:7' does not exist"):
        net.to_torch(["cuda:7", "cuda:8"])
    with pytest.raises(DeviceError, match=r"2 towers: give 1 device or 2, got 3"):
        net.to_torch(["cpu", "cpu", "cpu"])
    with pytest.raises(DeviceError, match=r"'gpu0' is not a device name"):
        net.to_torch(["gpu0"])
    with pytest.raises(DeviceError, match=r"no towers"):
        spec("lenet").to_torch(["cpu", "cpu"])
    assert isinstance(DeviceError("x"), netdsl.UsageError)


def test_one_device_list_places_the_module():
    model = spec("lenet").to_torch(["cpu"])
    assert model.output_device == torch.device("cpu")
    assert model(torch.randn(1, 1, 28, 28)).device.type == "cpu"


# ------------------------------------------------------------------ names, logits, inputs, errors

def test_state_dict_keys_are_layer_names_and_block_scopes_nest():
    keys = list(spec("googlenet").to_torch().state_dict())
    assert keys[:4] == ["conv1.conv.weight", "conv1.conv.bias", "conv2_reduce.conv.weight", "conv2_reduce.conv.bias"]
    assert "inception_3a.b3.conv.weight" in keys
    model = spec("googlenet").to_torch()
    assert isinstance(model.layer("inception_3a.b3.conv"), nn.Conv2d)
    assert model.inception_3a.b3.conv is model.layer("inception_3a.b3.conv")


def test_a_layer_may_be_named_like_a_module_method():
    model = netdsl.loads("net t\ninput data: 3x4x4\neval: conv(2, 3)\nto: fc(2)\n").to_torch()
    assert list(model.state_dict()) == ["eval.weight", "eval.bias", "to.weight", "to.bias"]
    assert model.eval() is model and not model.training
    assert model(torch.randn(1, 3, 4, 4)).shape == (1, 2)


def test_in_place_relus_keep_autograd_correct():
    spec_text = ("net t\ninput data: 3x6x6\nc: conv(4, 3)\nr: relu(slope=-0.1)\np: maxpool(2)\n"
                 "q: relu\nf: fc(2)\n")
    model = netdsl.loads(spec_text).to_torch(seed=0).double()
    assert not model.layer("r").inplace and model.layer("q").inplace  # negative slope: never in place
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(model, (x,))


def test_a_lowered_module_deep_copies_and_pickles(tmp_path):
    import copy
    net = spec("alexnet-mini")
    for model in (net.to_torch(seed=0).eval(), net.to_torch(["cpu", "cpu"], seed=0).eval()):
        twin = copy.deepcopy(model)
        torch.save(model, tmp_path / "m.pt")
        loaded = torch.load(tmp_path / "m.pt", weights_only=False)
        x = batch(net)
        with torch.no_grad():
            for other in (twin, loaded):
                torch.testing.assert_close(other(x), model(x))
        with torch.no_grad():
            next(twin.parameters()).add_(1.0)  # the copy's plan runs the copy's own modules
            assert not torch.allclose(twin(x), model(x))


def test_logits_stop_before_the_trailing_softmax():
    net = spec("alexnet-mini")
    model = net.to_torch(seed=0).eval()
    x = batch(net)
    with torch.no_grad():
        probs, logits = model(x), model.logits(x)
        torch.testing.assert_close(probs, logits.softmax(1))
        torch.testing.assert_close(net.to_torch(seed=0, logits=True).eval()(x), logits)
    assert model.ends_in_softmax and model.output_names == ["prob"]
    assert net.to_torch(logits=True).output_names == ["fc8"]
    tv = spec("alexnet-torchvision").to_torch().eval()
    assert not tv.ends_in_softmax
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(tv.logits(x), tv(x))


def test_a_wrong_input_shape_names_the_input():
    model = spec("alexnet").to_torch()
    with pytest.raises(ValueError, match=r"input 'data' is declared 3x224x224 .* got 1x3x227x227"):
        model(torch.randn(1, 3, 227, 227))
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'data'"):
        model()


def test_a_spec_with_errors_raises_netdsl_error():
    net = netdsl.loads("net t\ninput data: 3x8x8\nc: conv(4, 11)\n")
    assert not net.ok
    with pytest.raises(netdsl.NetdslError, match="does not fit"):
        net.to_torch()


def test_check_and_report_never_import_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom netdsl.cli import main\n"
            "r = CliRunner().invoke(main, ['check', 'specs/alexnet.net'])\nassert r.exit_code == 0, r.output\n"
            "import netdsl\nnetdsl.load('specs/googlenet.net').report.to_text()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------------ initialisation

def test_paper_init_for_alexnet():
    state = spec("alexnet").to_torch(seed=0).state_dict()
    for layer in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert torch.all(state[f"{layer}.bias"] == 1), layer
    for layer in ("conv1", "conv3", "fc8"):
        assert torch.all(state[f"{layer}.bias"] == 0), layer
    w = state["fc6.weight"]
    assert abs(w.mean().item()) < 1e-4 and abs(w.std().item() - 0.01) < 1e-4


def test_init_is_reproducible_layout_independent_and_leaves_the_global_rng_alone():
    net = spec("alexnet-mini")
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = net.to_torch(seed=7).state_dict(), net.to_torch(["cpu", "cpu"], seed=7).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = net.to_torch(seed=8).state_dict()
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_xavier_kaiming_and_default_initialisers():
    lenet = spec("lenet").to_torch(seed=0).state_dict()  # xavier: U(+-sqrt(6 / (fan_in + fan_out)))
    bound = (6 / (20 * 25 + 50 * 25)) ** 0.5
    w = lenet["conv2.weight"]
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    mini = spec("alexnet-mini").to_torch(seed=0).state_dict()  # kaiming: N(0, sqrt(2 / fan_in))
    assert abs(mini["fc6.weight"].std().item() - (2 / (64 * 16)) ** 0.5) < 2e-3
    tv = spec("alexnet-torchvision").to_torch(seed=0).state_dict()  # PyTorch's default
    assert tv["fc8.weight"].abs().max() <= 1 / 4096 ** 0.5


# ------------------------------------------------------------------ runtime options

def test_channels_last_gives_the_same_outputs():
    net = spec("alexnet-mini")
    ref, model = net.to_torch(seed=0).eval(), net.to_torch(seed=0, channels_last=True).eval()
    assert model.layer("conv2").weight.is_contiguous(memory_format=torch.channels_last)
    x = batch(net)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-6)


def test_bf16_autocast_on_cpu():
    net = spec("alexnet-mini")
    ref, model = net.to_torch(seed=0).eval(), net.to_torch(seed=0, amp="bf16").eval()
    x = batch(net)
    with torch.no_grad():
        logits = model.logits(x)
        assert logits.dtype == torch.bfloat16
        torch.testing.assert_close(logits.float(), ref.logits(x), rtol=0.05, atol=0.05)
    F.cross_entropy(model.logits(x).float(), torch.tensor([0, 1])).backward()
    assert model.layer("conv1").weight.grad.dtype == torch.float32


def test_bad_amp_is_a_usage_error():
    with pytest.raises(netdsl.UsageError, match="amp must be one of"):
        spec("lenet").to_torch(amp="fp8")


def test_torch_compile_gives_the_same_outputs():
    net = spec("lenet")
    ref, model = net.to_torch(seed=0).eval(), net.to_torch(seed=0, compile=True).eval()
    assert list(model.state_dict()) == list(ref.state_dict())  # no _orig_mod. prefix
    x = batch(net)
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as err:  # noqa: BLE001  (no working compiler toolchain here)
        pytest.skip(f"torch.compile does not work on this machine: {type(err).__name__}")
    torch.testing.assert_close(out, ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training with a GradScaler needs a CUDA device")
def test_fp16_with_a_grad_scaler_on_gpu():
    net = spec("alexnet-mini")
    model = net.to_torch(["cuda:0"], seed=0, amp="fp16", logits=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda")
    loss = F.cross_entropy(model(batch(net, 4).cuda()).float(), torch.tensor([0, 1, 2, 3], device="cuda"))
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)


# ------------------------------------------------------------------ export

def run_cli(*args: str):
    from netdsl.cli import main
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"netdsl {' '.join(args)} crashed:\n{result.output}") from result.exception
    return result


def test_export_torchscript_loads_back_with_the_same_outputs(tmp_path):
    out = tmp_path / "mini.pt"
    result = run_cli("export", str(ROOT / "specs/alexnet-mini.net"), "--format", "torchscript", "-o", str(out))
    assert result.exit_code == 0, result.output
    net = spec("alexnet-mini")
    x = batch(net, 3)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(out))(x), net.to_torch(seed=0).eval()(x))


def test_export_onnx_runs_in_onnxruntime_with_a_free_batch(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="pip install 'netdsl[onnx]'")
    pytest.importorskip("onnxscript", reason="pip install 'netdsl[onnx]'")
    net = spec("alexnet-mini")
    weights = tmp_path / "w.pt"
    torch.save(net.to_torch(seed=11).state_dict(), weights)
    out = tmp_path / "mini.onnx"
    result = run_cli("export", str(ROOT / "specs/alexnet-mini.net"), "--format", "onnx", "-o", str(out),
                     "--weights", str(weights), "--logits")
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out))
    assert [o.name for o in session.get_outputs()] == ["fc8"]
    x = batch(net, 5)
    got = session.run(None, {"data": x.numpy()})[0]
    with torch.no_grad():
        want = net.to_torch(seed=11, logits=True).eval()(x)
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)


def test_export_with_unusable_weights_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    result = run_cli("export", str(ROOT / "specs/lenet.net"), "--format", "torchscript", "-o",
                     str(tmp_path / "x.pt"), "--weights", str(bad))
    assert result.exit_code == 2
    assert "not a PyTorch state dict" in result.output and "Traceback" not in result.output
    torch.save(spec("alexnet-mini").to_torch().state_dict(), bad)
    result = run_cli("export", str(ROOT / "specs/lenet.net"), "--format", "torchscript", "-o",
                     str(tmp_path / "x.pt"), "--weights", str(bad))
    assert result.exit_code == 2 and "does not fit this spec" in result.output
