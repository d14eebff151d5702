"""cuda-convnet and cuda-convnet2 layer files (netdsl/imports/cudaconvnet.py), on the authors' real files
(tests/fixtures/cuda-convnet): shapes, parameters and multiply-adds checked against a reference written
here from layer.py's rules without any of netdsl's code, the two-GPU AlexNet's towers, the CLI, errors,
and the forward pass against cuda-convnet's kernels re-implemented in numpy."""
from __future__ import annotations

import configparser
import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import netdsl
from conftest import ROOT, run_netdsl
from netdsl.errors import UsageError
from netdsl.imports import detect, import_file
from netdsl.imports.base import ImportOptions
from netdsl.imports.cudaconvnet import CudaConvnetImportError, import_text

FIXTURES = ROOT / "tests" / "fixtures" / "cuda-convnet"
V2 = FIXTURES / "cuda-convnet2"
V1 = FIXTURES / "cuda-convnet"
LAYER_FILES = sorted([*V2.glob("layers*.cfg"), *V1.glob("layers*.cfg")])
TWO_GPU = V2 / "layers-imagenet-2gpu-model.cfg"


def git_blob_hash(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_fixtures_are_the_authors_files():
    """Every file is byte-identical to the commit the README names, and its licence is beside it."""
    rows = re.findall(r"^\| (\S+) \| (\S+) \| `([0-9a-f]{40})` \|", (FIXTURES / "README.md").read_text(), re.M)
    assert len(rows) == 26
    for here, _, blob in rows:
        assert git_blob_hash(FIXTURES / here) == blob, here
    assert "Apache License" in (V2 / "LICENSE").read_text()
    assert "Alex Krizhevsky" in (V1 / "LICENSE").read_text()
    assert {p.name for p in FIXTURES.rglob("*.cfg")} == {Path(h).name for h, _, _ in rows}


@pytest.mark.parametrize("path", LAYER_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_detected_as_cuda_convnet(path):
    assert detect(path) == "cuda-convnet"


# ------------------------------------------------------------------ an independent reference
# cuda-convnet's own arithmetic (layer.py: LocalLayerParser, PoolLayerParser, FCLayerParser, ...), per
# layer of the file as cuda-convnet sees it (one replica, flat `outputs`), read with Python's ConfigParser
# as the authors' code read it.

def reference(path: Path, size: int) -> dict[str, dict]:
    cp = configparser.RawConfigParser(strict=False)
    cp.read(path)
    layers: dict[str, dict] = {}
    for name in cp.sections():
        o = dict(cp.items(name))
        kind = o["type"]
        ins = [i.strip() for i in o.get("inputs", "").split(",") if i.strip()]

        def ints(key, default=None):
            if key not in o:
                return [default] * len(ins)
            values = [int(v) for v in o[key].split(",")]
            return values * len(ins) if len(values) == 1 else values

        info = {"type": kind, "params": 0, "macs": 0}
        if kind == "data":
            info["outputs"] = 3 * size * size if o["dataidx"] == "0" else 1
        elif kind.startswith("cost."):
            continue
        elif kind == "conv":
            channels, pad, stride = ints("channels"), ints("padding", 0), ints("stride", 1)
            fsize, filters, groups = ints("filtersize"), ints("filters"), ints("groups", 1)
            img = [int(math.sqrt(layers[i]["outputs"] // c)) for i, c in zip(ins, channels)]
            modules = 1 + int(math.ceil((2 * pad[0] + img[0] - fsize[0]) / float(stride[0])))
            out = filters[0] * groups[0]
            weights = sum(out * (c // g) * f * f for c, g, f in zip(channels, groups, fsize))
            info.update(outputs=out * modules * modules, modules=modules, params=weights + out,
                        macs=weights * modules * modules)
        elif kind == "fc":
            n_in = sum(layers[i]["outputs"] for i in ins)
            out = int(o["outputs"])
            info.update(outputs=out, params=n_in * out + out, macs=n_in * out)
        elif kind == "pool":
            c = int(o["channels"])
            img = int(math.sqrt(layers[ins[0]]["outputs"] // c))
            start, sx, stride = int(o.get("start", 0)), int(o["sizex"]), int(o["stride"])
            outx = int(math.ceil((img - start - sx) / float(stride))) + 1
            info.update(outputs=outx * outx * c, modules=outx)
        elif kind in ("concat", "pass"):
            info["outputs"] = sum(layers[i]["outputs"] for i in ins)
        else:  # cmrnorm, rnorm, neuron, softmax, dropout, dropout2, eltsum: the input's size
            info["outputs"] = layers[ins[0]]["outputs"]
        layers[name] = info
    return layers


IMPORTS = {  # file -> the image size the authors' examples use
    "cuda-convnet2/layers-imagenet-1gpu.cfg": 224,
    "cuda-convnet2/layers-imagenet-2gpu-data.cfg": 224,
    "cuda-convnet2/layers-imagenet-2gpu-model.cfg": 224,
    "cuda-convnet2/layers-imagenet-4gpu-data.cfg": 224,
    "cuda-convnet2/layers-imagenet-4gpu-data-model.cfg": 224,
    "cuda-convnet/layers-18pct.cfg": 32,
    "cuda-convnet/layers-19pct.cfg": 32,
    "cuda-convnet/layers-80sec.cfg": 32,
}
# what the files use that netdsl has no kind for: one error per cause, at the first layer's line, with a
# note naming the other layers with the same cause
REFUSED = {
    "cuda-convnet2/layers-cifar10-11pct.cfg": ["69:1: error: local3: 'local' is a locally-connected layer",
                                               "= the same in local4 (line 80)"],
    "cuda-convnet/layers-conv-local-11pct.cfg": ["68:1: error: local3: 'local'", "= the same in local4 (line 79)"],
    "cuda-convnet/layers-conv-local-13pct.cfg": ["59:1: error: local3: 'local'", "= the same in local4 (line 70)"],
    "cuda-convnet/layers-example.cfg": ["30:1: error: local32: 'local'", "66:1: error: cnorm1: 'cnorm' is contrast",
                                        "85:1: error: conv32-2: sharedBiases=0",
                                        "99:1: error: conv32-3: randSparse"],
    "cuda-convnet/layers.gc.cfg": ["33:1: error: local32: 'local'"],
}


def test_every_real_file_is_accounted_for():
    assert {f"{p.parent.name}/{p.name}" for p in LAYER_FILES} == set(IMPORTS) | set(REFUSED)


@pytest.mark.parametrize("name", sorted(IMPORTS))
def test_real_files_match_the_reference(name):
    """Every layer's output size, and the parameters and multiply-adds of the whole net, as cuda-convnet
    computes them; a layer run on N GPUs is one netdsl layer with N times the channels."""
    path, size = FIXTURES / name, IMPORTS[name]
    imported = import_file(path, ImportOptions(input_shape=(3, size, size)))
    net = netdsl.loads(imported.spec, name)
    assert net.ok, net.render_diagnostics()
    assert not net.diagnostics, net.render_diagnostics()  # no warnings either
    ref = reference(path, size)
    assert net.report.total_params == sum(r["params"] for r in ref.values())
    assert net.report.total_macs == sum(r["macs"] for r in ref.values())
    members: dict[str, list[str]] = {}
    for layer, node in imported.layers.items():
        members.setdefault(node, []).append(layer)
    for layer, r in ref.items():
        if r["type"] in ("data", "pass"):  # pass copies every GPU's part onto one: no layer of its own
            assert layer not in imported.layers
            continue
        node = net.graph.node(imported.layers[layer])
        per_gpu = len(members[node.name])
        assert math.prod(node.shape) == per_gpu * r["outputs"], layer
        if "modules" in r:
            assert node.shape[1:] == (r["modules"], r["modules"]), layer
        if per_gpu > 1:
            assert node.towers and graph_towers(net, node) == per_gpu, layer


def graph_towers(net, node) -> int:
    return net.graph.towers[node.towers].count


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_real_files_netdsl_cannot_express_fail_clearly(name):
    path = FIXTURES / name
    with pytest.raises(CudaConvnetImportError) as err:
        import_file(path, ImportOptions(input_shape=(3, 32, 32)))
    text = str(err.value)
    errors = [e for e in REFUSED[name] if ": error: " in e]
    for expected in errors:
        assert f"{path}:{expected}" in text, text
    for expected in REFUSED[name]:
        assert expected in text, text
    assert text.count(": error: ") == len(errors), text  # one per cause, no cascade
    assert "Traceback" not in text


# ------------------------------------------------------------------ the two-GPU AlexNet

def test_two_gpu_alexnet_towers_and_counts():
    """layers-imagenet-2gpu-model.cfg: two towers, 55/27/13/6 maps, 60,965,224 parameters and 724,406,816
    multiply-adds; fc1000 runs on GPU 0 (gpu=0), outside the towers block, which netdsl runs on tower 0's
    device: GPU 0 holds 32,531,112 parameters, GPU 1 28,434,112."""
    imported = import_file(TWO_GPU, ImportOptions(input_shape=(3, 224, 224)))
    net = netdsl.loads(imported.spec, "2gpu.net")
    assert net.ok, net.render_diagnostics()
    graph = net.graph
    assert [t.count for t in graph.towers.values()] == [2]
    sizes = {n: graph.node(n).shape[1] for n in ("conv1", "pool1", "pool2", "pool3")}
    assert sizes == {"conv1": 55, "pool1": 27, "pool2": 13, "pool3": 6}
    assert net.report.total_params == 60_965_224
    assert net.report.total_macs == 724_406_816
    towers = {k: v.params for k, v in net.report.towers.items()}
    assert towers == {"outside towers": 4_097_000, "tower 0": 28_434_112, "tower 1": 28_434_112}
    assert towers["tower 0"] + towers["outside towers"] == 32_531_112
    assert graph.node("fc1000").towers is None and graph.node("probs").towers is None
    crossing = {n.name for n in graph if n.cross}
    assert crossing == {"conv3", "fc2048", "fc2048b"}  # conv3a/b, fc2048a/b, fc2048ba/bb read both GPUs
    assert graph.node("conv2").meta["tower_groups"] == 2  # conv2a reads pool1a only: grouped by towers
    assert imported.layers["conv1a"] == imported.layers["conv1b"] == "conv1"
    assert imported.layers["fc1000"] == "fc1000"
    assert "fc1000: fc(1000, bias_init=0)" in imported.spec and "# gpu=0" in imported.spec
    assert graph.node("cnorm2").params["region"] == "within"  # type=rnorm: within-map
    assert graph.node("rnorm1").params["k"] == 2  # minDiv=2 from the params file


def test_two_gpu_alexnet_through_the_cli(tmp_path):
    """`netdsl import` finds layer-params-imagenet-2gpu-model.cfg beside the file; `netdsl check --json`
    reports the towers."""
    out = tmp_path / "alexnet2.net"
    done = run_netdsl("import", TWO_GPU, "-o", out, "--input-shape", "3x224x224")
    assert done.returncode == 0, done.stderr
    assert "60,965,224 parameters, 724,406,816 MACs" in done.stderr
    assert "Traceback" not in done.stderr
    text = out.read_text()
    assert "towers 2 {" in text and "layer-params-imagenet-2gpu-model.cfg (found beside it)" in text
    check = run_netdsl("check", "--json", out)
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["total_params"] == 60_965_224 and report["total_macs"] == 724_406_816
    towers = report["towers"]
    assert towers["tower 0"]["params"] + towers["outside towers"]["params"] == 32_531_112
    assert towers["tower 1"]["params"] == 28_434_112


def test_four_gpu_hybrid_is_data_parallel_then_towers():
    """layers-imagenet-4gpu-data-model.cfg ("one weird trick"): conv layers replicated on GPUs 0-3 (one
    layer each), the fc layers split over 4 towers, `pass` (every GPU's part copied to each) a cross fc."""
    imported = import_file(V2 / "layers-imagenet-4gpu-data-model.cfg", ImportOptions(input_shape=(3, 224, 224)))
    net = netdsl.loads(imported.spec, "4gpu.net")
    assert net.ok, net.render_diagnostics()
    assert [t.count for t in net.graph.towers.values()] == [4]
    assert net.graph.node("conv1").towers is None
    assert net.graph.node("fc1024").towers and not net.graph.node("fc1024").cross
    assert net.graph.node("fc1024b").cross
    assert "pass1a" not in imported.layers  # a gather, no layer of its own
    assert any("replicated on GPUs 0, 1, 2, 3" in n for n in imported.notes)
    assert net.report.total_params == import_and_count(V2 / "layers-imagenet-1gpu.cfg")


def import_and_count(path: Path) -> int:
    return netdsl.loads(import_file(path, ImportOptions(input_shape=(3, 224, 224))).spec).report.total_params


# ------------------------------------------------------------------ input size, params, CLI

def test_image_size_guessed_from_the_authors_examples_with_a_warning():
    imported = import_file(TWO_GPU)
    assert "input data: 3x224x224" in imported.spec
    assert any(n.startswith("warning: input 'data' is 3x224x224, guessed") and "--input-shape" in n
               for n in imported.notes)
    v1 = import_file(V1 / "layers-18pct.cfg")  # its comment says CIFAR-10: the original provider's 32x32
    assert "input data: 3x32x32" in v1.spec


def test_no_size_and_no_guess_asks_for_input_shape(tmp_path):
    path = tmp_path / "layers-mine.cfg"
    path.write_text((V1 / "layers-19pct.cfg").read_text().replace("CIFAR-10", "my data"))
    with pytest.raises(CudaConvnetImportError) as err:
        import_file(path)
    assert "layers-mine.cfg:3:1: error: data: cuda-convnet takes the image size from its data provider" \
        in str(err.value)
    assert "--input-shape 3xHxW" in str(err.value)


def test_params_file_given_or_missing(tmp_path, cli):
    layers = tmp_path / "net.cfg"
    layers.write_text((V1 / "layers-18pct.cfg").read_text())
    result = cli("import", layers, "--input-shape", "3x32x32")
    assert result.exit_code == 1
    assert "net.cfg:34:1: error: rnorm1: needs 'scale' from the layer-params file" in result.output
    assert "--params" in result.output
    result = cli("import", layers, "--input-shape", "3x32x32", "--params", V1 / "layer-params-18pct.cfg")
    assert result.exit_code == 0, result.output
    assert "rnorm1: lrn(3, alpha=5e-05, beta=0.75, region=within)" in result.output
    result = cli("import", layers, "--params", tmp_path / "missing.cfg")
    assert result.exit_code == 2 and "--params" in result.output and "no such file" in result.output


def test_input_shape_must_agree_with_channels(cli):
    result = cli("import", V1 / "layers-80sec.cfg", "--input-shape", "1x28x28")
    assert result.exit_code == 1
    assert "has 1 channels; the layers reading it say channels=3" in result.output


def test_until_stops_after_a_layer():
    imported = import_file(V2 / "layers-imagenet-1gpu.cfg", ImportOptions(input_shape=(3, 224, 224), until="pool3"))
    net = netdsl.loads(imported.spec)
    assert net.ok and [n.name for n in net.graph.outputs()] == ["pool3_neuron"]
    assert "fc4096a" not in imported.spec
    with pytest.raises(UsageError, match="did you mean 'pool3'"):
        import_file(V2 / "layers-imagenet-1gpu.cfg", ImportOptions(until="pool33"))


# ------------------------------------------------------------------ errors

err_outcome: list[str] = [""]


def _fails(text: str, params: str | None = None) -> str:
    """The error's text; its closing line (what the CLI prints after it) in err_outcome[0]."""
    with pytest.raises(CudaConvnetImportError) as err:
        import_text(text, "t.cfg", params, ImportOptions(input_shape=(3, 32, 32)))
    err_outcome[0] = err.value.outcome
    return str(err.value)


DATA = "[data]\ntype=data\ndataIdx=0\n\n"


def test_unknown_type_names_the_line_and_the_types():
    text = _fails(DATA + "[c1]\ntype=convv\ninputs=data\n")
    assert "t.cfg:6:1: error: c1: unknown layer type 'convv'" in text
    assert "did you mean 'conv'?" in text
    assert text.count(": error: ") == 1


def test_a_failed_layer_is_one_error_not_a_cascade():
    text = _fails(DATA + "[l1]\ntype=local\ninputs=data\nchannels=3\nfilters=16\nfilterSize=3\ninitW=0.01\n"
                  "[c2]\ntype=conv\ninputs=l1\nchannels=16\nfilters=16\nfilterSize=3\n"
                  "[p3]\ntype=pool\npool=max\ninputs=c2\nchannels=16\nsizeX=2\nstride=2\n")
    assert text.count(": error: ") == 1
    assert err_outcome[0] == ("t.cfg: 1 error; 2 later layers were not converted because they read layers "
                              "that failed (c2, p3); nothing written")


def test_neuron_and_inputs_errors():
    text = _fails(DATA + "[c1]\ntype=conv\ninputs=data\nchannels=3\nfilters=16\nfilterSize=3\nneuron=softrelu\n"
                  "[c2]\ntype=conv\ninputs=dta\nchannels=3\nfilters=16\nfilterSize=3\n")
    assert "t.cfg:11:1: error: c1: neuron 'softrelu' is not supported by netdsl" in text
    assert "t.cfg:14:1: error: c2: input layer 'dta' not defined before it" in text and "did you mean 'data'" in text


def test_channels_must_match_the_input():
    text = _fails(DATA + "[c1]\ntype=conv\ninputs=data\nchannels=3\nfilters=16\nfilterSize=3\n"
                  "[c2]\ntype=conv\ninputs=c1\nchannels=32\nfilters=16\nfilterSize=3\n")
    assert "t.cfg:14:1: error: c2: channels=32, but its input 'c1' has 16 channels" in text


def test_a_size_netdsl_cannot_reproduce_is_an_error_not_a_wrong_spec():
    """A 1x1 window with stride 4 on 10 pixels: cuda-convnet's ceil gives 4 windows, the last one wholly
    outside the image; netdsl never counts a window that reads only padding."""
    text = import_error(DATA + "[c1]\ntype=conv\ninputs=data\nchannels=3\nfilters=16\nfilterSize=1\nstride=4\n",
                        (3, 10, 10))
    assert "netdsl computes 16x3x3 for 'c1', cuda-convnet 16x4x4" in text


def import_error(text: str, shape) -> str:
    with pytest.raises(CudaConvnetImportError) as err:
        import_text(text, "t.cfg", None, ImportOptions(input_shape=shape))
    return str(err.value)


def test_cli_unsupported_layer_exit_code_and_message():
    done = run_netdsl("import", V2 / "layers-cifar10-11pct.cfg")
    assert done.returncode == 1
    assert "layers-cifar10-11pct.cfg:69:1: error: local3: 'local' is a locally-connected layer" in done.stderr
    assert "nothing written" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------ the forward pass
# cuda-convnet's kernels (cudaconv3/src/conv_util.cu, filter_acts.cu, layer.cu) re-implemented in numpy,
# on small synthetic files, against the lowered module with the same weights.

def cc_conv(x, w, b, pad, stride):
    """filterActs: modulesX = 1 + ceil((2*pad + s - f) / stride); pixels outside the image are 0."""
    c, s, _ = x.shape
    f = w.shape[-1]
    m = 1 + math.ceil((2 * pad + s - f) / stride)
    big = np.zeros((c, s + 2 * pad + f + stride * m, s + 2 * pad + f + stride * m))
    big[:, pad:pad + s, pad:pad + s] = x
    out = np.zeros((w.shape[0], m, m))
    for i in range(m):
        for j in range(m):
            patch = big[:, i * stride:i * stride + f, j * stride:j * stride + f]
            out[:, i, j] = np.tensordot(w, patch, axes=([1, 2, 3], [0, 1, 2])) + b
    return out


def cc_pool(x, size, stride, start, avg):
    c, s, _ = x.shape
    m = int(math.ceil((s - start - size) / stride)) + 1
    out = np.zeros((c, m, m))
    for i in range(m):
        for j in range(m):
            y0, x0 = start + i * stride, start + j * stride
            region = x[:, max(0, y0):min(s, y0 + size), max(0, x0):min(s, x0 + size)]
            out[:, i, j] = region.reshape(c, -1).mean(1) if avg else region.reshape(c, -1).max(1)
    return out


def cc_cmrnorm(x, size, scale, power, min_div):
    c = x.shape[0]
    out = np.empty_like(x)
    for f in range(c):
        lo = f - size // 2
        window = x[max(0, lo):min(c, lo + size)]
        out[f] = x[f] * (min_div + scale / size * (window ** 2).sum(0)) ** -power
    return out


def cc_rnorm(x, size, scale, power, min_div):
    c, s, _ = x.shape
    out = np.empty_like(x)
    for i in range(s):
        for j in range(s):
            y0, x0 = i - size // 2, j - size // 2
            region = x[:, max(0, y0):min(s, y0 + size), max(0, x0):min(s, x0 + size)]
            out[:, i, j] = x[:, i, j] * (min_div + scale / size ** 2 * (region ** 2).sum((1, 2))) ** -power
    return out


ONE_GPU = DATA + """
[conv1]
type=conv
inputs=data
channels=3
filters=16
padding=1
stride=3
filterSize=4
initW=0.1
neuron=tanh[1.5,0.5]
[rnorm1]
type=cmrnorm
inputs=conv1
channels=16
size=5
[cnorm1]
type=rnorm
inputs=rnorm1
channels=16
size=3
[pool1]
type=pool
pool=avg
inputs=cnorm1
start=-1
sizeX=3
stride=2
channels=16
[pool2]
type=pool
pool=max
inputs=conv1
sizeX=2
stride=2
channels=16
neuron=linear[2,-0.5]
[conv2]
type=conv
inputs=pool1,pool2
channels=16,16
filters=16,16
padding=1
filterSize=3
initW=0.1
[drop]
type=dropout2
inputs=conv2
[fc]
type=fc
inputs=drop,pool2
outputs=10
initW=0.1,0.1
[probs]
type=softmax
inputs=fc
"""
ONE_GPU_PARAMS = """
[rnorm1]
scale=0.2
pow=0.75
minDiv=2
[cnorm1]
scale=0.5
pow=0.5
[drop]
keep=0.75
"""


def lowered(spec: str, weights: dict):
    import torch
    net = netdsl.loads(spec)
    assert net.ok, net.render_diagnostics()
    model = net.to_torch().eval().double()  # float64 first: load_state_dict copies into the parameters' dtype
    state = model.state_dict()
    for key, value in weights.items():
        assert state[key].shape == value.shape, key
        state[key] = torch.tensor(value, dtype=torch.float64)
    model.load_state_dict(state)
    return net, model


def test_forward_matches_cuda_convnets_kernels():
    rng = np.random.default_rng(0)
    imported = import_text(ONE_GPU, "one.cfg", ONE_GPU_PARAMS, ImportOptions(input_shape=(3, 13, 13)))
    w1, b1 = rng.normal(size=(16, 3, 4, 4)), rng.normal(size=16)
    w2, b2 = rng.normal(size=(16, 32, 3, 3)) * 0.2, rng.normal(size=16)
    x = rng.normal(size=(3, 13, 13))
    # the reference: cuda-convnet's forward, the test pass
    conv1 = 1.5 * np.tanh(0.5 * cc_conv(x, w1, b1, 1, 3))  # 1 + ceil((2 + 13 - 4) / 3) = 5: overhangs
    pool1 = cc_pool(cc_rnorm(cc_cmrnorm(conv1, 5, 0.2, 0.75, 2.0), 3, 0.5, 0.5, 1.0), 3, 2, -1, avg=True)
    pool2 = 2 * cc_pool(conv1, 2, 2, 0, avg=False) - 0.5  # ceil((5 - 2) / 2) + 1 = 3: overhangs
    conv2 = cc_conv(np.concatenate([pool1, pool2]), w2, b2, 1, 1)  # two inputs, one weight matrix each
    drop = 0.75 * conv2  # dropout2 at test time: times keep
    n_in = drop.size + pool2.size
    wf, bf = rng.normal(size=(10, n_in)) * 0.1, rng.normal(size=10)
    logits = wf @ np.concatenate([drop.ravel(), pool2.ravel()]) + bf
    want = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    net, model = lowered(imported.spec, {"conv1.weight": w1, "conv1.bias": b1, "conv2.weight": w2,
                                         "conv2.bias": b2, "fc.weight": wf, "fc.bias": bf})
    assert net.graph.node("pool1").shape == (16, 3, 3) and pool1.shape == (16, 3, 3)
    seen = trace(model, x)
    for name, value in {"conv1_neuron": conv1, "pool1": pool1, "pool2_neuron": pool2, "conv2": conv2,
                        "drop_scale": drop, "probs": want}.items():
        np.testing.assert_allclose(seen[name][0].numpy().reshape(value.shape), value, rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def trace(model, x) -> dict:
    """Every layer's output of the lowered module (a torch.fx GraphModule), by name."""
    import torch
    from torch.fx import Interpreter

    seen: dict = {}

    class Recorder(Interpreter):
        def run_node(self, n):
            seen[n.name] = out = super().run_node(n)
            return out

    with torch.no_grad():
        Recorder(model).run(torch.tensor(x[None]))
    return seen


TWO = DATA + """
[conv1a]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
stride=2
gpu=0
neuron=relu
[conv1b]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
stride=2
gpu=1
neuron=relu
[rnorm1a]
type=cmrnorm
inputs=conv1a
channels=16
size=5
[rnorm1b]
type=cmrnorm
inputs=conv1b
channels=16
size=5
[conv2a]
type=conv
inputs=rnorm1a
channels=16
filters=16
filterSize=3
padding=1
[conv2b]
type=conv
inputs=rnorm1b
channels=16
filters=16
filterSize=3
padding=1
[conv3a]
type=conv
inputs=conv2a,conv2b
channels=16,16
filters=16,16
filterSize=3
gpu=0
[conv3b]
type=conv
inputs=conv2a,conv2b
channels=16,16
filters=16,16
filterSize=3
gpu=1
[fca]
type=fc
inputs=conv3a,conv3b
outputs=8
gpu=0
[fcb]
type=fc
inputs=conv3b,conv3a
outputs=8
gpu=1
[fc]
type=fc
inputs=fca,fcb
outputs=5
gpu=0
"""


def test_two_gpu_forward_is_the_per_gpu_computation():
    """Each GPU's layers computed separately, as cuda-convnet runs them, equal the towers spec with the
    per-GPU weight matrices placed in its merged weights (fcb reads the GPUs in the other order)."""
    rng = np.random.default_rng(1)
    imported = import_text(TWO, "two.cfg", "[rnorm1a]\nscale=0.1\npow=0.75\n[rnorm1b]\nscale=0.1\npow=0.75\n",
                           ImportOptions(input_shape=(3, 11, 11)))
    assert "towers 2 {" in imported.spec
    x = rng.normal(size=(3, 11, 11))
    W = {k: rng.normal(size=s) * 0.3 for k, s in {
        "1a": (16, 3, 3, 3), "1b": (16, 3, 3, 3), "2a": (16, 16, 3, 3), "2b": (16, 16, 3, 3),
        "3a": (16, 32, 3, 3), "3b": (16, 32, 3, 3)}.items()}
    B = {k: rng.normal(size=16) for k in W}
    a1 = cc_cmrnorm(np.maximum(cc_conv(x, W["1a"], B["1a"], 0, 2), 0), 5, 0.1, 0.75, 1.0)
    b1 = cc_cmrnorm(np.maximum(cc_conv(x, W["1b"], B["1b"], 0, 2), 0), 5, 0.1, 0.75, 1.0)
    a2, b2 = cc_conv(a1, W["2a"], B["2a"], 1, 1), cc_conv(b1, W["2b"], B["2b"], 1, 1)
    both = np.concatenate([a2, b2])
    a3, b3 = cc_conv(both, W["3a"], B["3a"], 0, 1), cc_conv(both, W["3b"], B["3b"], 0, 1)
    n = a3.size
    fa_a, fa_b = rng.normal(size=(8, n)), rng.normal(size=(8, n))  # fca: one matrix for conv3a, one for conv3b
    fb_b, fb_a = rng.normal(size=(8, n)), rng.normal(size=(8, n))  # fcb reads conv3b first
    bfa, bfb = rng.normal(size=8), rng.normal(size=8)
    fca = fa_a @ a3.ravel() + fa_b @ b3.ravel() + bfa
    fcb = fb_b @ b3.ravel() + fb_a @ a3.ravel() + bfb
    wf, bf = rng.normal(size=(5, 16)), rng.normal(size=5)
    want = wf @ np.concatenate([fca, fcb]) + bf
    weights = {
        "conv1.weight": np.concatenate([W["1a"], W["1b"]]), "conv1.bias": np.concatenate([B["1a"], B["1b"]]),
        "conv2.weight": np.concatenate([W["2a"], W["2b"]]), "conv2.bias": np.concatenate([B["2a"], B["2b"]]),
        "conv3.weight": np.concatenate([W["3a"], W["3b"]]), "conv3.bias": np.concatenate([B["3a"], B["3b"]]),
        # the gathered input is conv3a's maps then conv3b's, flattened
        "fc_2.weight": np.concatenate([np.concatenate([fa_a, fa_b], 1), np.concatenate([fb_a, fb_b], 1)]),
        "fc_2.bias": np.concatenate([bfa, bfb]), "fc.weight": wf, "fc.bias": bf}
    net, model = lowered(imported.spec, weights)
    assert {n.name for n in net.graph if n.cross} == {"conv3", "fc_2"}
    assert net.graph.node("conv2").meta["tower_groups"] == 2
    seen = trace(model, x)
    for name, value in {"rnorm1": np.concatenate([a1, b1]), "conv2": both, "conv3": np.concatenate([a3, b3]),
                        "fc_2": np.concatenate([fca, fcb]), "fc": want}.items():
        np.testing.assert_allclose(seen[name][0].numpy().reshape(value.shape), value, rtol=1e-10, atol=1e-10,
                                   err_msg=name)


def test_the_2gpu_model_puts_32_5m_parameters_on_gpu_0_and_28_4m_on_gpu_1(tmp_path):
    """fc1000 has gpu=0: it runs after the split, on tower 0's device, as netdsl lowers it."""
    import json
    from click.testing import CliRunner
    from cli.main import main
    out = tmp_path / "net.net"
    src = Path(__file__).parent / "fixtures" / "cuda-convnet" / "cuda-convnet2" / "layers-imagenet-2gpu-model.cfg"
    assert CliRunner().invoke(main, ["import", str(src), "-o", str(out)]).exit_code == 0
    result = CliRunner().invoke(main, ["check", "--json", str(out)])
    devices = json.loads(result.output)["devices"]
    assert [d["params"] for d in devices] == [32_531_112, 28_434_112]
    assert "device 0          32,531,112" in CliRunner().invoke(main, ["check", str(out)]).output
