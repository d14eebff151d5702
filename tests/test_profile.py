"""`netdsl profile`: real runs on the CPU (a tiny spec, alexnet-mini at batch 4, 2 runs each): every
layer timed forward and backward, the per-layer sum and the step both reported with their gap, the
roofline columns, JSON, the chart, and the usage errors. The CUDA test runs only where there is a GPU."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner, Result

import netdsl
from netdsl.cli import main
from netdsl.training import profile as prof
from conftest import ROOT

TINY = """net tiny "a tiny convnet"
input data: 3x16x16
pool0: avgpool(2, stride=2)
conv1: conv(8, 3, pad=1)
relu1: relu
fc1: fc(10)
prob: softmax
"""


def run_cli(*args) -> Result:
    return CliRunner().invoke(main, ["profile", *map(str, args)])


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("profile") / "tiny.net"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    """alexnet-mini profiled once through the CLI: (JSON, chart path)."""
    chart = tmp_path_factory.mktemp("chart") / "mini.png"
    result = run_cli(ROOT / "specs/alexnet-mini.net", "--batch", 4, "--runs", 2, "--json", "-o", chart)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), chart


@pytest.fixture(scope="module")
def tiny(tiny_spec):
    """The tiny spec profiled once through the API."""
    return prof.profile(netdsl.load(tiny_spec), prof.Settings(device="cpu", batch=4, runs=2))


def test_every_layer_of_alexnet_mini_is_timed_forward_and_backward(mini):
    data, _ = mini
    ir = netdsl.load(ROOT / "specs/alexnet-mini.net").graph
    expected = [n.name for n in ir if n.kind not in ("input", "softmax")]
    assert [layer["name"] for layer in data["layers"]] == expected
    assert data["not_run"] == ["prob"]  # training takes logits
    for layer in data["layers"]:
        assert layer["forward_ms"] > 0 and layer["backward_ms"] > 0, layer
        assert len(layer["forward_samples_ms"]) == len(layer["backward_samples_ms"]) == data["runs"] == 2


def test_the_sum_and_the_step_are_both_reported_with_their_signed_gap(mini):
    totals = mini[0]["totals"]
    layers = sum(layer["forward_ms"] + layer["backward_ms"] for layer in mini[0]["layers"])
    assert totals["layers_ms"] == pytest.approx(layers)
    assert totals["step_ms"] > 0 and totals["optimizer_ms"] > 0
    assert totals["gap_ms"] == pytest.approx(totals["step_ms"] - totals["layers_ms"])


def test_the_text_report_shows_sum_step_and_gap_that_add_up(tiny_spec):
    result = run_cli(tiny_spec, "--batch", 4, "--runs", 2)
    assert result.exit_code == 0, result.output
    out = result.stdout

    def value(label: str) -> float:
        line = next(line for line in out.splitlines() if line.strip().startswith(label))
        return float(line[len(line) - len(line.lstrip()) + len(label):].split("ms")[0].replace(",", ""))
    assert value("gap, step - layers") == pytest.approx(
        value("training step, forward + loss + backward") - value("layers, forward + backward, each alone"),
        abs=0.011)
    for column in ("fwd ms", "bwd ms", "% step", "GFLOP", "MB", "bound ms", "binds", "achieved"):
        assert column in out
    assert "timer time.perf_counter" in out and "peaks" in out and "batch 4, fp32" in out
    assert "outside any layer (in the step, not in the sum): data_1 (expect_shape)" in out


def test_json_is_one_object_with_the_header_peaks_layers_and_totals(mini):
    data = mini[0]
    assert data["net"] == "alexnet_mini" and data["batch"] == 4 and data["dtype"] == "fp32"
    assert data["device"].startswith("CPU") and data["torch"] == torch.__version__
    assert data["peaks"]["flops_per_s"] > 1e8 and data["peaks"]["bytes_per_s"] > 1e8
    assert data["compile_note"] is None
    assert set(data["totals"]) >= {"layers_ms", "step_ms", "gap_ms", "optimizer_ms", "bound_ms"}
    conv1 = data["layers"][0]
    assert set(conv1) >= {"percent_of_step", "bound_ms", "binds", "achieved", "forward", "backward"}
    assert next(x for x in data["layers"] if x["name"] == "conv3")["binds"] == "compute"
    assert conv1["backward"]["flops"] == conv1["forward"]["flops"]  # the weight gradient only
    conv2 = next(x for x in data["layers"] if x["name"] == "conv2")
    assert conv2["backward"]["flops"] == 2 * conv2["forward"]["flops"]  # and the input gradient
    assert next(x for x in data["layers"] if x["name"] == "relu1")["binds"] == "memory"
    assert any("flatten" in g for g in data["outside_layers"])


def test_the_measured_memory_peak_is_printed_beside_the_estimate(mini, tiny_spec):
    """On the CPU too (PyTorch's profiler counts the allocations): alexnet-mini's step with its spec's
    optimizer (Nesterov, weight decay), whose peak the estimate must match within 10%."""
    memory = mini[0]["memory"]
    assert memory["measured_by"] == "PyTorch's profiler counting every allocation"
    assert abs(memory["estimate_bytes"] - memory["measured_bytes"]) <= 0.10 * memory["measured_bytes"], memory
    assert memory["compiled_measured_bytes"] is None
    netdsl_check = json.loads(CliRunner().invoke(main, ["check", str(ROOT / "specs/alexnet-mini.net"), "--json",
                                                        "--batch", "4", "--device", "cpu"]).stdout)
    assert netdsl_check["training_memory"]["peak"] == memory["estimate_bytes"]
    text = run_cli(tiny_spec, "--batch", 4, "--runs", 1).stdout
    assert "estimate (the static pass, netdsl check)" in text and "measured peak, eager step" in text


def test_the_chart_is_a_png(mini):
    from PIL import Image
    chart = mini[1]
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] > 500 and image.size[1] > 500


def test_the_static_costs_follow_the_stated_rules(tiny):
    peaks = tiny.peaks
    by = {layer.name: layer for layer in tiny.layers}
    rows = {r.name: r for r in prof.rows(tiny)}
    conv = rows["conv1"]
    assert conv.forward.flops == 2 * by["conv1"].node.meta["macs"] * 4
    assert conv.backward.flops == conv.forward.flops  # its input (pooled images) needs no gradient
    weights = 8 * 3 * 3 * 3 * 4 + 8 * 4
    assert conv.forward.bytes == (4 * 3 * 8 * 8 + 4 * 8 * 8 * 8) * 4 + weights
    relu = rows["relu1"]
    assert relu.forward.flops == 4 * 8 * 8 * 8 and relu.forward.bytes == 2 * 4 * 8 * 8 * 8 * 4
    assert relu.bound_ms == pytest.approx(1e3 * (max(relu.forward.times(peaks)) + max(relu.backward.times(peaks))))
    assert relu.achieved == pytest.approx(relu.bound_ms / relu.total_ms)


def test_a_layer_backward_computes_only_the_gradients_training_needs(tiny):
    by = {layer.name: layer for layer in tiny.layers}
    assert not by["pool0"].needs_backward and by["pool0"].backward == [0.0, 0.0]  # reads the images only
    assert not by["conv1"].inputs[0].requires_grad  # weight gradients only, as in training
    assert by["relu1"].inputs[0].requires_grad
    assert prof.rows(tiny)[0].binds == "memory"  # the forward alone
    pool0 = next(line for line in prof.to_text(tiny).splitlines() if line.startswith("pool0"))
    assert pool0.split()[3] == "-"  # no backward time


def test_default_runs_fit_the_cpu_budget():
    settings, cpu, cuda = prof.Settings(), prof.Clock(torch.device("cpu")), prof.Clock(torch.device("cuda"))
    assert prof.choose_runs(settings, cpu, 12.0)[0] == 3  # alexnet at batch 16 on 2 cores
    assert prof.choose_runs(settings, cpu, 0.01)[0] == 10
    assert prof.choose_runs(settings, cuda, 12.0)[0] == 10
    assert prof.choose_runs(prof.Settings(runs=4), cpu, 12.0) == (4, "--runs")


def test_compile_reports_the_whole_step_and_says_layers_are_not_attributed(tiny_spec, monkeypatch):
    """The plumbing, with dynamo's eager backend: inductor takes 110 s to compile alexnet-mini on 2 cores
    (tests/test_compile.py checks inductor itself)."""
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: compile_module(self, backend="eager"))
    torch._dynamo.reset()
    result = run_cli(tiny_spec, "--batch", 4, "--runs", 2, "--compile")
    assert result.exit_code == 0, result.output
    assert "compiled step (torch.compile)" in result.stdout
    assert "per-layer attribution under compile is not measured" in result.stdout


def test_cuda_without_cuda_is_a_usage_error(tiny_spec):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_cli(tiny_spec, "--device", "cuda")
    assert result.exit_code == 2
    assert "error: --device cuda: this machine has no CUDA device" in result.output


def test_fp16_on_the_cpu_is_a_usage_error(tiny_spec):
    result = run_cli(tiny_spec, "--device", "cpu", "--amp", "fp16")
    assert result.exit_code == 2 and "--amp fp16 needs a CUDA device" in result.output


def test_a_bad_spec_prints_diagnostics_and_exits_1(tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("input data: 3x8x8\nc: conv(4, 9)\n")
    result = run_cli(bad)
    assert result.exit_code == 1 and "bad.net:2:1: error: c: the 9-wide window" in result.output


def test_bf16_and_channels_last_run_on_the_cpu(tiny_spec):
    result = run_cli(tiny_spec, "--batch", 4, "--runs", 1, "--amp", "bf16", "--channels-last", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dtype"] == "bf16 autocast" and data["channels_last"] is True
    assert "bf16" in data["peaks"]["matmul"]
    conv1 = next(x for x in data["layers"] if x["name"] == "conv1")
    assert conv1["forward"]["bytes"] < (4 * 3 * 8 * 8 + 4 * 8 * 8 * 8) * 4  # bf16 input, output, weights


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_uses_events_and_reports_peak_memory(tiny_spec):
    result = run_cli(tiny_spec, "--device", "cuda", "--batch", 8, "--runs", 3)
    assert result.exit_code == 0, result.output
    assert "timer CUDA events" in result.stdout
    assert "measured peak, eager step" in result.stdout and "torch.cuda.max_memory_allocated" in result.stdout
    data = json.loads(run_cli(tiny_spec, "--device", "cuda", "--batch", 8, "--runs", 3, "--json").stdout)
    assert data["timer"].startswith("CUDA events") and data["memory"]["measured_bytes"] > 0
    assert all(x["forward_ms"] > 0 for x in data["layers"])
