"""The Caffe model zoo's real files (tests/fixtures/caffe_zoo/, with their sources and licenses in its README):
each imports, and checks with Caffe's shapes and parameter counts computed here independently (test_caffe's
reader and Caffe rules, extended below with the zoo's layers) and with torchvision's models; errors are one per
root cause; an SSD file stops at its backbone with --until; a Python data layer takes --input-shape; a guessed
input shape warns."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import netdsl
from conftest import ROOT
from test_caffe import CaffeRef, git_blob_hash, input_shapes, one, pair, read_prototxt

ZOO = ROOT / "tests" / "fixtures" / "caffe_zoo"
RESNET50 = ZOO / "KaimingHe__deep-residual-networks" / "prototxt__ResNet-50-deploy.prototxt"
SQUEEZENET10 = ZOO / "forresti__SqueezeNet" / "SqueezeNet_v1.0__deploy.prototxt"
SQUEEZENET11 = ZOO / "forresti__SqueezeNet" / "SqueezeNet_v1.1__deploy.prototxt"
DENSENET121 = ZOO / "soeaver__caffe-model" / "cls__densenet__deploy_densenet121.prototxt"
RESNEXT50 = ZOO / "soeaver__caffe-model" / "cls__resnext__deploy_resnext50-32x4d.prototxt"
RESNET18 = ZOO / "soeaver__caffe-model" / "cls__resnet__deploy_resnet18-priv.prototxt"
VGG16 = ZOO / "soeaver__caffe-model" / "cls__vgg__deploy_vgg16-pytorch.prototxt"
MOBILENET1 = ZOO / "shicai__MobileNet-Caffe" / "mobilenet_deploy.prototxt"
MOBILENET2 = ZOO / "shicai__MobileNet-Caffe" / "mobilenet_v2_deploy.prototxt"
SSD = ZOO / "chuanqi305__MobileNet-SSD" / "deploy.prototxt"
FCN32 = ZOO / "shelhamer__fcn.berkeleyvision.org" / "voc-fcn32s__train.prototxt"
FCN8 = ZOO / "shelhamer__fcn.berkeleyvision.org" / "voc-fcn8s__deploy.prototxt"
SPHEREFACE = ZOO / "wy1iu__sphereface" / "train__code__sphereface_deploy.prototxt"
SSD_BACKBONE_END = "conv17_2/relu"  # the last layer before MobileNet-SSD's head (its conv11_mbox_loc)


# ------------------------------------------------------------------ the independent reference, extended

class ZooRef(CaffeRef):
    """test_caffe's CaffeRef (Caffe's shape rules, written without netdsl) with the layers the zoo adds:
    floor pooling (round_mode, the forks' ceil_mode), Deconvolution, Crop, PReLU, Reshape, ELU, Clip, Swish,
    Python data layers (their shape given), and a stop after one layer (--until)."""

    def __init__(self, net: dict, inputs: dict | None = None, weights: dict | None = None,
                 until: str | None = None, python_shape: tuple | None = None):
        self.net, self.phase, self.weights, self.python_shape = net, "TEST", weights or {}, python_shape
        self.shapes, self.values = input_shapes(net), dict(inputs or {})
        self.tops, self.blob_shapes, self.params = {}, {}, 0
        for layer in net.get("layer", []):
            rules = layer.get("include", [])
            if rules and not any(one(r, "phase", "TEST") == "TEST" for r in rules):
                continue
            kind = one(layer, "type")
            if not (kind.endswith("Loss") or kind in ("Accuracy", "Silence")):
                self.layer(layer, kind)
            if one(layer, "name") == until:
                break

    def Python(self, layer, name, ins, xs):
        return [self.python_shape] + [()] * (len(layer["top"]) - 1), None

    def Pooling(self, layer, name, ins, xs):
        import torch
        p = one(layer, "pooling_param")
        floor = one(p, "round_mode", "CEIL") == "FLOOR" or one(p, "ceil_mode", "true") == "false"
        if not floor or one(p, "global_pooling") == "true":
            return super().Pooling(layer, name, ins, xs)
        c, h, w = ins[0]
        (k, _), (s, _), (pad, _) = pair(p, "kernel_size", None), pair(p, "stride", 1), pair(p, "pad", 0)

        def windows(n):  # pooling_layer.cpp with FLOOR: the same clip of a window starting in the padding
            out = (n + 2 * pad - k) // s + 1
            if pad and (out - 1) * s >= n + pad:
                out -= 1
            return [(max(i * s - pad, 0), min(i * s - pad + k, n)) for i in range(out)]
        rows, cols = windows(h), windows(w)
        if xs is None:
            return (c, len(rows), len(cols)), None
        assert one(p, "pool", "MAX") == "MAX"
        out = torch.stack([torch.stack([xs[0][:, :, r0:r1, c0:c1].amax(dim=(2, 3)) for c0, c1 in cols], -1)
                           for r0, r1 in rows], -2)
        return (c, len(rows), len(cols)), out

    def Deconvolution(self, layer, name, ins, xs):
        import torch.nn.functional as F
        p = one(layer, "convolution_param")
        (kh, kw), (sh, sw), (ph, pw) = pair(p, "kernel_size", None), pair(p, "stride", 1), pair(p, "pad", 0)
        d, g, out = one(p, "dilation", 1), one(p, "group", 1), one(p, "num_output")
        c, h, w = ins[0]
        bias = one(p, "bias_term", "true") == "true"
        shape = (out, sh * (h - 1) + d * (kh - 1) + 1 - 2 * ph, sw * (w - 1) + d * (kw - 1) + 1 - 2 * pw)
        blobs = self.learn(name, (c, out // g, kh, kw), *([(out,)] if bias else []))
        self.params += c * (out // g) * kh * kw + (out if bias else 0)
        if xs is None:
            return shape, None
        return shape, F.conv_transpose2d(xs[0], blobs[0], blobs[1] if bias else None, (sh, sw), (ph, pw),
                                         groups=g, dilation=d)

    def Crop(self, layer, name, ins, xs):
        p = one(layer, "crop_param", {})
        axis = one(p, "axis", 2)
        offsets = p.get("offset", [0])
        offsets = offsets * (4 - axis) if len(offsets) == 1 else offsets
        shape = tuple(ins[0][i] if i + 1 < axis else ins[1][i] for i in range(3))
        if xs is None:
            return shape, None
        starts = [0] * (axis - 1) + offsets
        return shape, xs[0][:, starts[0]:starts[0] + shape[0], starts[1]:starts[1] + shape[1],
                            starts[2]:starts[2] + shape[2]]

    def PReLU(self, layer, name, ins, xs):
        import torch
        shared = one(one(layer, "prelu_param", {}), "channel_shared", "false") == "true"
        n = 1 if shared else ins[0][0]
        (slope,) = self.learn(name, (n,))
        self.params += n
        if xs is None:
            return ins[0], None
        return ins[0], torch.where(xs[0] > 0, xs[0], slope.view(1, -1, *([1] * (xs[0].dim() - 2))) * xs[0])

    def Reshape(self, layer, name, ins, xs):
        p = one(layer, "reshape_param")
        dims, bottom = one(p, "shape")["dim"], [1, *ins[0]]
        new = [bottom[i] if d == 0 else d for i, d in enumerate(dims)]  # axis 0, num_axes -1 (the zoo's)
        if -1 in new:
            new[new.index(-1)] = math.prod(bottom) // -math.prod(new)
        return tuple(new[1:]), None if xs is None else xs[0].reshape(xs[0].shape[0], *new[1:])

    def ELU(self, layer, name, ins, xs):
        import torch.nn.functional as F
        return ins[0], None if xs is None else F.elu(xs[0], one(one(layer, "elu_param", {}), "alpha", 1.0))

    def Clip(self, layer, name, ins, xs):
        p = one(layer, "clip_param")
        return ins[0], None if xs is None else xs[0].clamp(one(p, "min"), one(p, "max"))

    def Swish(self, layer, name, ins, xs):
        return ins[0], None if xs is None else xs[0] * xs[0].sigmoid()


def reference(path: Path, **kwargs) -> ZooRef:
    return ZooRef(read_prototxt(path.read_text()), **kwargs)


def imported(path: Path, **options):
    from netdsl.caffe.importer import ImportOptions, import_file
    result = import_file(path, ImportOptions(**options))
    net = netdsl.loads(result.spec, path.stem + ".net")
    assert net.ok, net.render_diagnostics() + "\n" + result.spec
    return net, result


def assert_caffe_shapes(net, result, ref: ZooRef) -> int:
    """Every Caffe layer's top shape is its netdsl layer's (the last Caffe layer that maps to a netdsl layer:
    a Crop folded into a Deconvolution, a Scale into a BatchNorm), and the parameter counts agree."""
    last: dict[str, str] = {}
    for layer in ref.tops:
        node = result.fused_scales.get(layer) or result.layers.get(layer)
        if node is not None:
            last[node] = layer
    assert last, "no layer compared"
    for node, layer in last.items():
        assert net.graph.node(node).shape == ref.tops[layer], f"{layer}: netdsl {net.graph.node(node).shape}, " \
                                                              f"Caffe {ref.tops[layer]}"
    assert net.report.total_params == ref.params
    return len(last)


def import_error(path: Path | None = None, text: str | None = None, **options):
    from netdsl.caffe.importer import CaffeImportError, ImportOptions, import_file, import_prototxt
    with pytest.raises(CaffeImportError) as err:
        if path is not None:
            import_file(path, ImportOptions(**options))
        else:
            import_prototxt(text, "net.prototxt", ImportOptions(**options))
    return err.value


def torchvision_params(name: str) -> int:
    torchvision = pytest.importorskip("torchvision")
    return sum(p.numel() for p in getattr(torchvision.models, name)(weights=None).parameters())


# ------------------------------------------------------------------------------------ the fixtures

def test_fixtures_are_verbatim_with_their_licenses():
    rows = re.findall(r"^\| (\S+\.prototxt) \| (\S+) \| (\S+) \| `([0-9a-f]{40})` \| [^|]+ \| `([0-9a-f]{40})` \|$",
                      (ZOO / "README.md").read_text(), re.M)
    assert len(rows) == 13
    for here, repo, path, commit, blob in rows:
        assert here == f"{repo.replace('/', '__')}/{path.replace('/', '__')}"
        assert git_blob_hash(ZOO / here) == blob, here
        assert (ZOO / here).parent.joinpath("LICENSE").read_text().strip()
    assert sorted(str(p.relative_to(ZOO)) for p in ZOO.rglob("*.prototxt")) == sorted(r[0] for r in rows)


# ------------------------------------------------------------------------- classifiers: the counts

@pytest.mark.parametrize("path, torchvision, extra", [
    (RESNET50, "resnet50", 64),  # the authors' conv1 has a bias (64 values); torchvision's has none
    (SQUEEZENET10, "squeezenet1_0", 0),
    (SQUEEZENET11, "squeezenet1_1", 0),
    (VGG16, "vgg16", 0),
    (DENSENET121, "densenet121", 0),  # ceil_mode: false and a Reshape
    (RESNEXT50, "resnext50_32x4d", 0),  # ceil_mode: false
    (RESNET18, "resnet18", 0),  # ceil_mode: false
    (MOBILENET2, "mobilenet_v2", 32 * 32 + 2 * 32),  # this file's first block expands 32 -> 32 (a 1x1 conv, BN)
    (MOBILENET1, None, 0),
    (SPHEREFACE, None, 0),  # PReLU
], ids=lambda v: v.stem if isinstance(v, Path) else None)
def test_zoo_file_imports_with_caffes_shapes_and_counts(path, torchvision, extra):
    net, result = imported(path)
    ref = reference(path)
    assert assert_caffe_shapes(net, result, ref) > 20
    if torchvision:
        assert net.report.total_params == torchvision_params(torchvision) + extra


def test_published_counts():
    """The numbers people quote for these files, independently of both counters above."""
    expected = {RESNET50: 25_557_096, SQUEEZENET10: 1_248_424, SQUEEZENET11: 1_235_496, VGG16: 138_357_544,
                DENSENET121: 7_978_856, RESNEXT50: 25_028_904, RESNET18: 11_689_512, MOBILENET1: 4_231_976}
    for path, params in expected.items():
        assert imported(path)[0].report.total_params == params, path.name


def test_ceil_mode_false_rounds_pooling_down():
    net, result = imported(DENSENET121)
    assert net.graph.node("pool1").params["round"] == "floor" and net.graph.node("pool1").shape == (64, 56, 56)
    assert net.graph.node("pool1").params["stride"] == [2, 2]
    assert "pool1: maxpool(3, stride=2, pad=1, round=floor)" in result.spec
    # the DenseNet file's closing Reshape (dim: 0 dim: 0 of 1000x1x1) is a flatten
    assert net.graph.node("classifier_reshape").kind == "flatten" and net.graph.outputs()[0].shape == (1000,)
    squeeze, _ = imported(SQUEEZENET11)  # BVLC files keep Caffe's ceil: (56 - 3) / 2 + 1 = 27.5 -> 28
    assert squeeze.graph.node("pool3").shape == (128, 28, 28) and squeeze.graph.node("pool3").params["round"] == "ceil"


def test_mobilenet_v2_differs_from_torchvision_only_by_its_first_expansion():
    net, _ = imported(MOBILENET2)
    first = net.graph.node("conv2_1_expand")
    assert first.kind == "conv" and first.params["out"] == 32 and first.meta["in_shapes"][0][0] == 32


# ------------------------------------------------------------ classifiers: torchvision's outputs

def _copy_in_order(net, tv_module) -> dict:
    """torchvision's parameters, in module order, as the netdsl module's state (the same layer order)."""
    import torch
    model = net.to_torch().eval()
    ours = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    theirs = [t for t in tv_module.state_dict().values() if t.dtype != torch.long]
    assert len(ours) == len(theirs)
    state = {}
    for key, tensor in zip(ours, theirs):
        assert model.state_dict()[key].shape == tensor.shape, key
        state[key] = tensor
    model.load_state_dict(state, strict=False)
    return model


def _resnet18_name(key: str) -> str:
    """The soeaver ResNet-18's names (Caffe's ResNet convention) as torchvision's."""
    stem = {"conv1": "conv1", "bn_conv1": "bn1", "fc1000": "fc"}
    layer, _, tensor = key.rpartition(".")
    if layer in stem:
        return f"{stem[layer]}.{tensor}"
    m = re.fullmatch(r"(res|bn)(\d)([ab])_branch(1|2a|2b)", layer)
    assert m, key
    kind, stage, block, branch = m.groups()
    part = {("res", "1"): "downsample.0", ("bn", "1"): "downsample.1", ("res", "2a"): "conv1",
            ("bn", "2a"): "bn1", ("res", "2b"): "conv2", ("bn", "2b"): "bn2"}[kind, branch]
    return f"layer{int(stage) - 1}.{'ab'.index(block)}.{part}.{tensor}"


@pytest.mark.parametrize("path, name", [(SQUEEZENET11, "squeezenet1_1"), (VGG16, "vgg16"), (RESNET18, "resnet18")],
                         ids=["squeezenet1_1", "vgg16", "resnet18"])
def test_zoo_file_computes_torchvisions_outputs_with_its_weights(path, name):
    """torchvision's model (random weights, and random batch-norm statistics) and the imported Caffe file
    with those weights give the same logits: the import keeps every shape, rounding, padding and order."""
    import torch
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    for module in tv.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    net, _ = imported(path)
    if name == "resnet18":
        model = net.to_torch().eval()
        theirs = tv.state_dict()
        model.load_state_dict({k: theirs[_resnet18_name(k)] for k in model.state_dict()
                               if not k.endswith("num_batches_tracked")}, strict=False)
    else:
        model = _copy_in_order(net, tv)
    x = torch.randn(2, *net.graph.inputs()[0].shape)  # SqueezeNet's files take 227x227
    with torch.no_grad():
        ours, theirs = model.logits(x).flatten(1), tv(x)
    assert ours.shape == (2, 1000)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- one error per cause

def test_densenet_failure_is_one_error_not_a_cascade(tmp_path, cli):
    """DenseNet-121 gave 545 errors for 2 problems. A real problem (a STOCHASTIC pool1) is one error now; every
    layer after it reads its output and is counted in one closing line."""
    text = DENSENET121.read_text().replace("pool: MAX", "pool: STOCHASTIC", 1)
    path = tmp_path / "densenet.prototxt"
    path.write_text(text)
    err = import_error(path)
    assert [d.layer for d in err.diagnostics] == ["pool1"]
    layers = read_prototxt(text)["layer"]
    after = len(layers) - 1 - [one(layer, "name") for layer in layers].index("pool1")
    assert err.skipped == after == 544
    result = cli("import", path)
    assert result.exit_code == 1 and result.output.count("error:") == 1
    assert (f"{path}: 1 error; 544 later layers were not converted because they read layers that failed; "
            "nothing written") in result.output


def test_a_root_cause_behind_a_failure_is_still_reported():
    text = """input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
    layer { name: "bad" type: "Normalize" bottom: "data" top: "a" }
    layer { name: "behind" type: "ReLU" bottom: "a" top: "b" }
    layer { name: "typo" type: "Eltwise" bottom: "b" bottom: "dta" top: "c" }
    layer { name: "fine" type: "ReLU" bottom: "data" top: "d" }
    layer { name: "also_bad" type: "Pooling" bottom: "d" top: "e" pooling_param { pool: STOCHASTIC kernel_size: 2 } }
    layer { name: "behind_too" type: "Concat" bottom: "e" bottom: "b" top: "f" }"""
    err = import_error(text=text)
    assert [d.layer for d in err.diagnostics] == ["bad", "typo", "also_bad"]
    assert "bottom 'dta' is not written by any layer before it" in err.diagnostics[1].message
    assert err.skipped == 2 and "2 later layers were not converted" in err.outcome


def test_fcn8s_crop_of_a_convolution_is_one_clear_error():
    err = import_error(FCN8)
    assert [d.layer for d in err.diagnostics] == ["score_pool4c"]
    message = err.diagnostics[0].message
    assert "Crop of 'score_pool4' (21x44x44) to the size of 'upscore2' (21x34x34)" in message
    assert "netdsl has no crop layer" in message and "is a conv, not a transposed convolution" in \
        err.diagnostics[0].notes[0]
    assert err.diagnostics[0].span.line == 512 and err.skipped == 6


# -------------------------------------------------------------------------------- SSD and --until

def test_ssd_without_until_is_one_error_naming_the_until(cli):
    err = import_error(SSD)
    assert len(err.diagnostics) == 1 and err.skipped == 0
    d = err.diagnostics[0]
    assert d.layer == "conv11_mbox_priorbox" and "SSD's detection head (PriorBox and DetectionOutput" in d.message
    assert "the head starts at 'conv11_mbox_loc'" in d.notes[0]
    assert f"--until '{SSD_BACKBONE_END}'" in d.notes[1]
    result = cli("import", SSD)
    assert result.exit_code == 1 and result.output.count("error:") == 1 and "Traceback" not in result.output


def test_ssd_with_until_imports_the_backbone(tmp_path, cli):
    net, result = imported(SSD, until=SSD_BACKBONE_END)
    ref = reference(SSD, until=SSD_BACKBONE_END)
    assert assert_caffe_shapes(net, result, ref) > 100
    assert [n.name for n in net.graph.outputs()] == ["conv17_2_relu"] and net.graph.outputs()[0].shape == (128, 1, 1)
    assert net.graph.node("conv0").shape == (32, 150, 150)
    assert any("stopped after 'conv17_2/relu' (--until): the 49 layer(s) after it are not imported" in n
               and "PriorBox x6" in n for n in result.notes)
    out = tmp_path / "ssd.net"
    run = cli("import", SSD, "--until", SSD_BACKBONE_END, "-o", out)
    assert run.exit_code == 0, run.output
    assert netdsl.load(out).report.total_params == ref.params


def test_until_names_a_layer(cli):
    result = cli("import", SSD, "--until", "conv17_2/rel")
    assert result.exit_code == 2 and "--until 'conv17_2/rel': deploy.prototxt has no layer of that name" in \
        result.output and "did you mean 'conv17_2/relu'" in result.output and "Traceback" not in result.output


def test_permute_is_refused_unless_it_is_the_identity():
    from netdsl.caffe.importer import import_prototxt
    head = 'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
    net = netdsl.loads(import_prototxt(
        head + 'layer { name: "p" type: "Permute" bottom: "data" top: "p" permute_param { order: 0 order: 1 } }\n'
               'layer { name: "r" type: "ReLU" bottom: "p" top: "r" }').spec)
    assert net.ok and net.graph.node("r").inputs == ["data"]
    err = import_error(text=head + 'layer { name: "p" type: "Permute" bottom: "data" top: "p"\n'
                                   '  permute_param { order: 0 order: 2 order: 3 order: 1 } }')
    (d,) = err.diagnostics
    assert "Permute puts the channels last (N x H x W x C)" in d.message and "no axis permutation" in d.message
    assert d.span.line == 3


# ------------------------------------------------------------------------- Python data layers, FCN

def test_python_data_layer_needs_input_shape():
    err = import_error(FCN32)
    (d,) = err.diagnostics
    assert d.layer == "data" and "Python data layer voc_layers.SBDDSegDataLayer makes its data in Python" in d.message
    assert "--input-shape CxHxW" in d.notes[0] and err.skipped == 40


def test_fcn32s_with_input_shape_folds_its_crop_into_the_deconvolution(cli, tmp_path):
    net, result = imported(FCN32, input_shape=(3, 500, 500))
    ref = reference(FCN32, python_shape=(3, 500, 500))
    assert assert_caffe_shapes(net, result, ref) > 30
    up = net.graph.node("upscore")
    # (16 - 1) * 32 + 64 = 544 rows, cut to 500 from row 19 (Caffe's Crop offset): pad (19, 544 - 19 - 500)
    assert up.kind == "convtranspose" and up.shape == (21, 500, 500) and up.params["pad"] == [[19, 25], [19, 25]]
    assert result.layers["score"] == "upscore" and [n.name for n in net.graph.outputs()] == ["upscore"]
    assert re.search(r"^input data: 3x500x500 +# Python data layer 'data' \(voc_layers.SBDDSegDataLayer\)",
                     result.spec, re.M)
    run = cli("import", FCN32, "--input-shape", "3x500x500", "-o", tmp_path / "fcn.net")
    assert run.exit_code == 0 and "136,152,917 parameters" in run.output, run.output


# ----------------------------------------------------------- the new layers, numerically, with weights

LAYERS = """
name: "zoo_layers"
input: "data"
input_shape { dim: 2 dim: 3 dim: 9 dim: 11 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
  convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 2 } }
layer { name: "crop" type: "Crop" bottom: "up" bottom: "data" top: "crop" crop_param { axis: 2 offset: 3 offset: 5 } }
layer { name: "shared" type: "PReLU" bottom: "crop" top: "shared" prelu_param { channel_shared: true } }
layer { name: "elu" type: "ELU" bottom: "shared" top: "elu" elu_param { alpha: 0.5 } }
layer { name: "clip" type: "Clip" bottom: "elu" top: "clip" clip_param { min: 0 max: 6 } }
layer { name: "swish" type: "Swish" bottom: "clip" top: "swish" }
layer { name: "pool" type: "Pooling" bottom: "swish" top: "pool"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR } }
layer { name: "flat" type: "Reshape" bottom: "pool" top: "flat" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 5 } }
"""


def test_new_layers_with_caffemodel_weights_compute_caffes_values(tmp_path, cli):
    import torch
    from google.protobuf import text_format
    pytest.importorskip("google.protobuf")
    from netdsl.caffe.weights import caffe_pb

    prototxt, caffemodel, spec, state = (tmp_path / f for f in ("n.prototxt", "n.caffemodel", "n.net", "w.pt"))
    prototxt.write_text(LAYERS)
    shapes = ZooRef(read_prototxt(LAYERS)).blob_shapes
    message = text_format.Parse(LAYERS, caffe_pb()())
    gen, weights = torch.Generator().manual_seed(3), {}
    for layer in message.layer:
        for shape in shapes.get(layer.name, []):
            t = torch.randn(shape, generator=gen) * 0.5
            blob = layer.blobs.add()
            blob.shape.dim.extend(shape)
            blob.data.extend(t.flatten().tolist())
            weights.setdefault(layer.name, []).append(t)
    caffemodel.write_bytes(message.SerializeToString())
    assert cli("import", prototxt, "-o", spec).exit_code == 0
    run = cli("import-weights", caffemodel, "--spec", spec, "-o", state)
    assert run.exit_code == 0, run.output

    net = netdsl.load(spec)
    kinds = {n.name: n.kind for n in net.graph}
    assert [kinds[k] for k in ("prelu", "up", "shared", "elu", "clip", "swish", "flat")] == \
        ["prelu", "convtranspose", "prelu", "elu", "relu6", "silu", "flatten"]
    assert "crop" not in kinds and net.graph.node("up").params["pad"] == [[4, 7], [6, 7]]
    # 9x11 -> (9 - 1) * 2 + 4 - 2 = 18 x 22, cut at row 3 and column 5 to 9x11: pads 1 + 3, 1 + (18 - 3 - 9); ...
    model = net.to_torch().eval()
    model.load_state_dict(torch.load(state, weights_only=True))
    x = torch.randn(2, 3, 9, 11)
    ref = ZooRef(read_prototxt(LAYERS), inputs={"data": x}, weights=weights)
    assert net.report.total_params == ref.params
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref.values["fc"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("body, message", [
    ('layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 0 dim: 4 dim: -1 } } }',
     "Reshape from 4x6x6 to 4x36 (per sample): netdsl's shapes are C x H x W maps and vectors"),
    ('layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: -1 dim: 12 } } }',
     "the reshape to 12x12 moves values across the batch axis"),
    ('layer { name: "c" type: "Clip" bottom: "data" top: "c" clip_param { min: -1 max: 1 } }',
     "Clip to [-1, 1]: netdsl clips only as relu6 (0 to 6)"),
    ('layer { name: "s" type: "Swish" bottom: "data" top: "s" swish_param { beta: 2 } }',
     "Swish with beta 2"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
     '  pooling_param { kernel_size: 2 round_mode: CEIL ceil_mode: false } }',
     "round_mode CEIL and ceil_mode false disagree"),
    ('layer { name: "c" type: "Crop" bottom: "data" bottom: "data" top: "c" crop_param { offset: 1 } }',
     "offset 1 + 6 rows of 'data' is past the 6 rows of 'data'"),
    ('layer { name: "py" type: "Python" bottom: "data" top: "py" python_param { module: "m" layer: "L" } }',
     "Python layer m.L runs Python code, which netdsl cannot read"),
])
def test_what_the_zoo_layers_refuse(body, message):
    err = import_error(text='input: "data" input_shape { dim: 1 dim: 4 dim: 6 dim: 6 }\n' + body)
    assert len(err.diagnostics) == 1 and message in err.diagnostics[0].message, err.diagnostics[0].message


def test_reshapes_that_import():
    from netdsl.caffe.importer import import_prototxt
    head = 'input: "data" input_shape { dim: 1 dim: 4 dim: 1 dim: 1 }\n'
    for shape, kind in (("dim: 0 dim: -1", "flatten"), ("dim: 0 dim: 0", "flatten"),
                        ("dim: 0 dim: 4 dim: 1 dim: 1", None), ("dim: 1 dim: 4", "flatten")):
        net = netdsl.loads(import_prototxt(head + f'layer {{ name: "r" type: "Reshape" bottom: "data" top: "r" '
                                                  f'reshape_param {{ shape {{ {shape} }} }} }}\n'
                                                  'layer { name: "out" type: "ReLU" bottom: "r" top: "out" }').spec)
        assert net.ok and (net.graph.node("r").kind if "r" in net.graph else None) == kind, shape


# ----------------------------------------------------------------------------- a guessed input shape

def test_guessed_input_shape_is_a_warning_that_says_how_to_override_it(tmp_path, cli):
    text = """layer { name: "data" type: "Data" top: "data" top: "label"
      data_param { source: "/data/cifar100_upscaled_64px_lmdb" backend: LMDB batch_size: 64 } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
      convolution_param { num_output: 8 kernel_size: 3 } }
    """
    path = tmp_path / "cifar.prototxt"
    path.write_text(text)
    net, result = imported(path)
    assert net.graph.node("data").shape == (3, 32, 32)
    (warning,) = [n for n in result.notes if n.startswith("warning:")]
    assert "input shape 3x32x32 guessed from the name of the data source '/data/cifar100_upscaled_64px_lmdb'" in \
        warning and "--input-shape CxHxW" in warning
    assert "#   warning: input shape 3x32x32 guessed" in result.spec and "a guess, see the warning" in result.spec
    net, result = imported(path, input_shape=(3, 64, 64))  # the override: no guess, no warning
    assert net.graph.node("data").shape == (3, 64, 64) and not any("warning" in n for n in result.notes)
    mnist, result = imported(ROOT / "tests" / "fixtures" / "caffe" / "examples__mnist__lenet_train_test.prototxt")
    assert mnist.graph.node("data").shape == (1, 28, 28)
    assert any("'examples/mnist/mnist_test_lmdb': it contains 'mnist'" in n for n in result.notes)
    # shown with the errors when the import fails
    (tmp_path / "bad.prototxt").write_text(text + 'layer { name: "x" type: "Normalize" bottom: "conv" top: "x" }\n')
    run = cli("import", tmp_path / "bad.prototxt")
    assert run.exit_code == 1 and "warning: data: input shape 3x32x32 guessed" in run.output
