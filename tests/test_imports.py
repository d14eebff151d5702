"""`netdsl import FILE` recognises the format from the content, whatever the file is called, and says
which formats it reads when it recognises none."""
from __future__ import annotations

import shutil

import pytest

from netdsl.imports import detect
from conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.mark.parametrize("path, fmt", [
    (FIXTURES / "caffe" / "models__bvlc_alexnet__deploy.prototxt", "prototxt"),
    (FIXTURES / "caffe" / "models__bvlc_alexnet__solver.prototxt", "prototxt"),
    (FIXTURES / "cuda-convnet" / "cuda-convnet2" / "layers-imagenet-2gpu-model.cfg", "cuda-convnet"),
    (FIXTURES / "cuda-convnet" / "cuda-convnet" / "layers-18pct.cfg", "cuda-convnet"),
    (FIXTURES / "darknet" / "alexnet.cfg", "darknet"),
    (ROOT / "specs" / "alexnet.net", None),
])
def test_formats_are_recognised_by_content(path, fmt, tmp_path):
    assert detect(path) == fmt
    renamed = tmp_path / "model.txt"  # the name plays no part
    shutil.copy(path, renamed)
    assert detect(renamed) == fmt


def test_an_onnx_model_is_recognised(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    path = tmp_path / "whatever.bin"
    onnx.save(helper.make_model(graph), path)
    assert detect(path) == "onnx"


def test_unknown_files_name_the_formats_netdsl_reads(cli, tmp_path):
    keras = tmp_path / "model.json"
    keras.write_text('{"class_name": "Sequential", "config": {"layers": []}}')
    result = cli("import", keras)
    assert result.exit_code == 2
    assert "Keras" in result.output and "ONNX" in result.output and "Darknet" in result.output
    spec = cli("import", ROOT / "specs" / "alexnet.net")
    assert spec.exit_code == 2 and "netdsl spec already" in spec.output
