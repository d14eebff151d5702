"""specs/zoo/: every convolutional classification family of torchvision's zoo, each provably the same
network: the same parameter count, and the same eval outputs once torchvision's weights are copied in
through the name map of specs/zoo/torchvision.yaml (batch-norm statistics randomised first, so that a
wrong map of a normalisation layer cannot pass)."""
from __future__ import annotations

import pytest
import torch
import yaml

import netdsl
from netdsl.lowering.weights import fit, rename
from conftest import ROOT

ZOO = ROOT / "specs" / "zoo"
MAP = yaml.safe_load((ZOO / "torchvision.yaml").read_text()) or {}


def test_every_zoo_spec_has_a_torchvision_entry():
    assert sorted(p.stem for p in ZOO.glob("*.net")) == sorted(MAP)


def _randomise_norms(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", sorted(MAP))
def test_zoo_spec_equals_torchvision(name):
    import torchvision
    entry = MAP[name]
    net = netdsl.load(ZOO / f"{name}.net")
    assert net.ok, net.render_diagnostics()
    assert not net.warnings, net.render_diagnostics()  # a zoo spec checks clean
    torch.manual_seed(0)
    theirs = torchvision.models.get_model(entry["builder"], weights=None, **entry.get("kwargs", {})).eval()
    _randomise_norms(theirs)
    assert net.report.total_params == sum(p.numel() for p in theirs.parameters())
    ours = net.to_torch(seed=0).eval()
    fit(ours, rename(theirs.state_dict(), [tuple(r) for r in entry["names"]]), f"torchvision {entry['builder']}")
    x = torch.randn(2, *net.graph.inputs()[0].params["shape"], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
