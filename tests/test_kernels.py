"""The fused LRN (lowering/kernels.py): the same numbers as PyTorch's LRN per tower, forward and
backward, in every layout; checked on the CPU through Triton's interpreter (TRITON_INTERPRET=1, in a
process of its own: the interpreter is chosen when the kernels are made), and on CUDA where there is one."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import netdsl

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("triton", reason="the fused LRN is a Triton kernel")

CHECKS = r'''
import json, sys, torch
from torch import nn
import netdsl
from netdsl.lowering.modules import TowerLRN

def per_tower(x, size, alpha, beta, k, towers):
    lrn = nn.LocalResponseNorm(size, alpha, beta, k)
    return torch.cat([lrn(p) for p in x.chunk(towers, 1)], 1)

out = []
torch.manual_seed(0)
cases = [(1, 5, 16, False, torch.float32), (2, 5, 96, True, torch.float32), (2, 4, 24, False, torch.float32),
         (4, 3, 32, True, torch.float32), (2, 5, 48, True, torch.bfloat16), (3, 1, 9, False, torch.float32)]
for towers, size, c, cl, dtype in cases:
    x = torch.randn(2, c, 7, 9) * 3
    x = x.contiguous(memory_format=torch.channels_last) if cl else x
    fused = TowerLRN(size, 1e-2, 0.75, 2.0, towers=towers, channels=c, method="fused")
    xa = x.detach().double().requires_grad_()
    xb = x.detach().to(dtype).requires_grad_()
    ya, yb = per_tower(xa, size, 1e-2, 0.75, 2.0, towers), fused(xb)
    dy = torch.randn(ya.shape, dtype=torch.float64)
    ya.backward(dy)
    yb.backward(dy.to(dtype))
    xc = x.detach().requires_grad_()
    fused(xc).sum().backward()  # a gradient of stride 0 (expanded ones)
    xd = x.detach().double().requires_grad_()
    per_tower(xd, size, 1e-2, 0.75, 2.0, towers).sum().backward()
    out.append(dict(case=[towers, size, c, cl, str(dtype)], y=(ya - yb.double()).abs().max().item(),
                    dx=(xa.grad - xb.grad.double()).abs().max().item(), ones=(xd.grad - xc.grad.double()).abs().max().item(),
                    y_scale=ya.abs().max().item(), dx_scale=xa.grad.abs().max().item(),
                    strides=yb.stride() == xb.stride() and xb.grad.stride() == xb.stride(), dtype=str(yb.dtype)))

def both(net, x):
    outs = []
    for way in ("band", "fused"):
        model = net.to_torch(seed=0, logits=True, towers={"lrn": way})
        torch.manual_seed(1)  # the same dropout masks
        y = model(x)
        y.square().sum().backward()
        outs.append((model, y.detach(), {k: p.grad for k, p in model.named_parameters()}))
    return outs

# the paper net: its outputs (its gradients pass max pools, whose choices fp32 rounding flips: band and
# slices differ there by percents too)
net = netdsl.load(sys.argv[1])
(band, ya, _), (fused, yb, _) = both(net, torch.randn(2, *net.graph.inputs()[0].params["shape"]))
lrns = [m for m in fused.modules() if isinstance(m, TowerLRN)]
out.append(dict(net="alexnet", y=((ya - yb).abs().max() / ya.abs().max()).item(), lrns=len(lrns),
                methods=sorted({m.method for m in lrns}), same_keys=list(band.state_dict()) == list(fused.state_dict())))
# towers with an LRN between convolutions and no pool: the gradients too
net = netdsl.loads("net t\ninput data: 3x12x12\ntowers 2 {\n c1: conv(16, 3, pad=1) cross\n r1: relu\n"
                   " n1: lrn(5, alpha=0.01, k=2)\n c2: conv(8, 3) \n n2: lrn(3, k=1)\n f: fc(6) cross\n}\n")
assert net.ok, net.render_diagnostics()
(_, ya, ga), (_, yb, gb) = both(net, torch.randn(3, 3, 12, 12))
out.append(dict(net="towers", y=((ya - yb).abs().max() / ya.abs().max()).item(),
                grads=max(((ga[k] - gb[k]).abs().max() / ga[k].abs().max()).item() for k in ga)))
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def interpreted() -> list[dict]:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", CHECKS, str(ROOT / "specs" / "alexnet.net")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fused_lrn_is_pytorchs_lrn_per_tower(interpreted):
    """Forward and backward against nn.LocalResponseNorm on each tower's slice (fp64), for odd and even
    windows, 1-4 towers, contiguous and channels_last, a gradient of stride 0; bf16 in, bf16 out."""
    for r in (r for r in interpreted if "case" in r):
        fp32 = r["case"][-1] == "torch.float32"
        tol = 1e-5 if fp32 else 2e-2
        assert r["y"] <= tol * r["y_scale"] and r["dx"] <= tol * r["dx_scale"], r
        assert r["ones"] <= 1e-5 * max(r["dx_scale"], 1), r
        assert r["strides"], r  # the output and the gradient keep the input's layout
        assert r["dtype"] == r["case"][-1], r


def test_nets_lowered_with_the_fused_lrn_are_the_same_nets(interpreted):
    paper, towers = (next(r for r in interpreted if r.get("net") == n) for n in ("alexnet", "towers"))
    assert paper["y"] < 1e-5 and paper["same_keys"] and paper["lrns"] == 2 and paper["methods"] == ["fused"], paper
    assert towers["y"] < 1e-5 and towers["grads"] < 1e-5, towers


def test_fused_lrn_is_refused_where_triton_cannot_run_it():
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("here the fused LRN runs")
    net = netdsl.load(ROOT / "specs" / "alexnet.net")
    with pytest.raises(netdsl.UsageError, match="'fused' is a Triton kernel: it runs on CUDA devices; use band, pool or"):
        net.to_torch(towers={"lrn": "fused"})


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_fused_lrn_matches_pytorch(dtype):
    from netdsl.lowering.modules import TowerLRN
    torch.manual_seed(0)
    for c, hw in ((96, 55), (256, 27)):
        x = (torch.randn(8, c, hw, hw, device="cuda") * 3).contiguous(memory_format=torch.channels_last)
        xa = x.double().requires_grad_()
        xb = x.to(dtype).requires_grad_()
        lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)
        ya = torch.cat([lrn(p) for p in xa.chunk(2, 1)], 1)
        yb = TowerLRN(5, 1e-4, 0.75, 2.0, towers=2, channels=c, method="fused")(xb)
        dy = torch.randn_like(ya)
        ya.backward(dy)
        yb.backward(dy.to(dtype))
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert (ya - yb.double()).abs().max() <= tol * ya.abs().max()
        assert (xa.grad - xb.grad.double()).abs().max() <= tol * xa.grad.abs().max()


@cuda
def test_cuda_paper_net_with_the_fused_lrn_compiles_to_one_graph():
    from torch._dynamo.utils import counters
    from test_compile import data, spec, train_steps
    net = spec("alexnet")
    x, y = (t.cuda() for t in data(net, n=8))
    for amp, channels_last in (("none", False), ("bf16", True)):
        model = net.to_torch(["cuda:0"], seed=0, logits=True, amp=amp, channels_last=channels_last,
                             towers={"lrn": "fused"})
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(model, fullgraph=True)
        losses = train_steps(model, compiled, x, y, steps=3)
        assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"], (amp, channels_last)
        assert all(torch.isfinite(torch.tensor(losses))), losses
