"""Golden `netdsl check` output for every spec, and the facts of the famous nets."""
from __future__ import annotations

import json
import os

import pytest

from conftest import ROOT, SPECS

GOLDEN = ROOT / "tests" / "golden"


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_check_output_matches_golden(spec, cli, in_root):
    result = cli("check", spec.relative_to(ROOT))
    assert result.exit_code == 0, result.output
    golden = GOLDEN / f"{spec.stem}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(result.output)
    assert golden.exists(), f"no golden output for {spec.name}: review it, then run with UPDATE_GOLDEN=1"
    assert result.output == golden.read_text()


def check_json(cli, name: str) -> dict:
    result = cli("check", "--json", ROOT / "specs" / name)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("name, params, macs", [
    ("alexnet.net", 60_965_224, 724_406_816),
    ("alexnet-torchvision.net", 61_100_840, 714_188_480),
    ("caffenet.net", 60_965_224, 724_406_816),
    ("vgg16.net", 138_357_544, None),
    ("googlenet.net", 6_998_552, None),
    ("lenet.net", 431_080, 2_293_000),
])
def test_known_totals(cli, name, params, macs):
    data = check_json(cli, name)
    assert data["total_params"] == params
    if macs is not None:
        assert data["total_macs"] == macs
    assert data["total_flops"] == 2 * data["total_macs"]


def test_alexnet_spatial_chain(cli):
    data = check_json(cli, "alexnet.net")
    shapes = {layer["name"]: layer["output_shape"] for layer in data["layers"]}
    chain = [shapes[n][1] for n in ("data", "conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5")]
    assert chain == [224, 55, 27, 27, 13, 13, 13, 13, 6]
    assert shapes["fc6"] == [4096] and shapes["prob"] == [1000]
    fc6 = next(layer for layer in data["layers"] if layer["name"] == "fc6")
    assert fc6["input_shapes"] == [[256, 6, 6]]  # 9216 features


def test_alexnet_towers(cli):
    data = check_json(cli, "alexnet.net")
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert [layers[n]["groups"] for n in ("conv1", "conv2", "conv3", "conv4", "conv5")] == [1, 2, 1, 2, 2]
    assert {n for n, l in layers.items() if l["tower_mode"] == "cross"} == {"conv1", "conv3", "fc6", "fc7", "fc8"}
    assert data["towers"]["tower 0"]["params"] == data["towers"]["tower 1"]["params"] == 60_965_224 // 2
    # conv3 reads the other tower's 128x13x13 half: each tower sends its half to the other
    assert data["cross_tower_bytes"]["conv3"] == 256 * 13 * 13 * 4
    assert data["cross_tower_bytes"]["fc6"] == 9216 * 4


def test_alexnet_without_groups_has_more_parameters(cli, tmp_path):
    text = (ROOT / "specs" / "alexnet.net").read_text().replace("towers 2 {", "towers 1 {")
    spec = tmp_path / "alexnet-one-tower.net"
    spec.write_text(text)
    data = json.loads(cli("check", "--json", spec).output)
    assert data["total_params"] == 62_378_344


def test_json_layer_fields(cli):
    data = check_json(cli, "lenet.net")
    for layer in data["layers"]:
        assert {"name", "kind", "output_shape", "params"} <= layer.keys()
        assert isinstance(layer["params"], int)
    assert [l["output_shape"] for l in data["layers"]][:3] == [[1, 28, 28], [20, 24, 24], [20, 12, 12]]
