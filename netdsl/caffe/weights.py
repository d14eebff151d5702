"""Caffe-trained weights (.caffemodel, a binary NetParameter) -> a state dict for `net.to_torch()`.

The file is read with the protobuf package and Caffe's caffe.proto (compiled once into
proto_descriptor.py; no generated code). Layers match the spec's layers by name, with Caffe names
spelled as the importer spells them ("conv1/7x7_s2" -> conv1_7x7_s2); the Scale after a BatchNorm
fills that batchnorm's affine weight and bias. Every mismatch is reported, none is skipped silently.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import CaffeWeightsError, UsageError
from ..ir import numel
from ..layers import groups
from .importer import ImportOptions, ImportedNet, import_message, sanitize
from .prototxt import Field, Message, Word

MAX_CAFFEMODEL_BYTES = 2 ** 31 - 1  # protobuf's own limit for one message


@lru_cache(maxsize=1)
def caffe_pb():
    """The NetParameter message class, from a private descriptor pool (no clash with a user's caffe_pb2)."""
    try:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    except ImportError:
        raise UsageError("reading .caffemodel files needs the protobuf package: pip install 'netdsl[caffe]'") \
            from None
    from .proto_descriptor import FILE_DESCRIPTOR

    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(FILE_DESCRIPTOR))
    descriptor = pool.FindMessageTypeByName("caffe.NetParameter")
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(descriptor)
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # protobuf < 4.21


def read_caffemodel(path: str | os.PathLike) -> Any:
    """Parse a .caffemodel into a caffe.NetParameter message."""
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{p}: no such file" if not p.exists() else f"{p}: not a file")
    data = p.read_bytes()
    if len(data) > MAX_CAFFEMODEL_BYTES:
        raise UsageError(f"{p}: {len(data):,} bytes is more than protobuf reads in one message")
    message = caffe_pb()()
    try:
        message.ParseFromString(data)
    except DecodeError as err:
        raise CaffeWeightsError(str(p), [f"not a Caffe binary NetParameter (.caffemodel): {err}"]) from None
    if not message.layer and not message.layers:
        raise CaffeWeightsError(str(p), ["the file holds no layers: is it a .caffemodel?"])
    return message


# ------------------------------------------------------------------------------- blobs

@dataclass
class CaffeLayer:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    blobs: list[Any]  # numpy arrays, in Caffe's order
    transpose: bool = False  # InnerProduct with transpose: true stores [in, out]


def caffe_layers(message: Any) -> list[CaffeLayer]:
    import numpy as np

    out = []
    for layer in list(message.layer) + list(message.layers):
        ltype = layer.type if isinstance(layer.type, str) else _v1_type(layer)
        blobs = [_array(b, np) for b in layer.blobs]
        transpose = layer.HasField("inner_product_param") and layer.inner_product_param.transpose
        out.append(CaffeLayer(layer.name, ltype, list(layer.bottom), list(layer.top), blobs, transpose))
    return out


def _v1_type(layer: Any) -> str:
    from .importer import V1_TYPES
    name = layer.DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number[layer.type].name
    return V1_TYPES.get(name, name)


def _array(blob: Any, np) -> Any:
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:  # the legacy num x channels x height x width
        shape = (blob.num, blob.channels, blob.height, blob.width)
    data = np.asarray(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float32)
    if data.size != int(np.prod(shape)):
        raise CaffeWeightsError("<caffemodel>", [f"a blob of shape {shape} holds {data.size} values"])
    return data.reshape(shape)


# -------------------------------------------------------------------------- state dict

def state_dict_from_caffemodel(net, caffemodel: str | os.PathLike | Any, strict: bool = True,
                               name: str | None = None) -> dict[str, Any]:
    """The state dict, keyed like `net.to_torch().state_dict()`, holding the caffemodel's weights.

    `caffemodel` is a path or an already read NetParameter; `strict` requires weights for every layer
    that has parameters."""
    import torch

    net.raise_for_errors()
    message = caffemodel if not isinstance(caffemodel, (str, os.PathLike)) else read_caffemodel(caffemodel)
    name = name or (str(caffemodel) if isinstance(caffemodel, (str, os.PathLike)) else "<caffemodel>")
    nodes = {sanitize(n.name): n for n in net.graph}
    layers = caffe_layers(message)
    writer = _writers(layers)
    state: dict[str, Any] = {}
    problems: list[str] = []
    filled: set[str] = set()
    for layer in layers:
        if not layer.blobs:
            continue
        node = nodes.get(sanitize(layer.name))
        if node is None and layer.type == "Scale":
            node = _folded_into(layer, writer, nodes)
        if node is None:
            problems.append(f"{layer.name} ({layer.type}): the net has no layer of that name"
                            + (f" (looked for '{sanitize(layer.name)}')" if sanitize(layer.name) != layer.name else ""))
            continue
        try:
            for key, array in _tensors(layer, node).items():
                state[f"{node.name}.{key}"] = torch.from_numpy(array.copy())
            filled.add(node.name)
        except CaffeWeightsError as err:
            problems.extend(err.problems)
    _check_shapes(net, state, problems)
    if strict:
        missing = [n.name for n in net.graph if n.meta.get("param_count") and n.name not in filled]
        if missing:
            problems.append("no weights in the caffemodel for " + ", ".join(missing))
    if problems:
        raise CaffeWeightsError(name, problems)
    return state


def _writers(layers: list[CaffeLayer]) -> dict[str, CaffeLayer]:
    """For each Scale layer, the layer that last wrote its bottom blob before it."""
    last: dict[str, CaffeLayer] = {}
    before: dict[str, CaffeLayer] = {}
    for layer in layers:
        if layer.type == "Scale" and layer.bottoms and layer.bottoms[0] in last:
            before[layer.name] = last[layer.bottoms[0]]
        for top in layer.tops:
            last[top] = layer
    return before


def _folded_into(layer: CaffeLayer, writer: dict[str, CaffeLayer], nodes: dict) -> Any:
    source = writer.get(layer.name)
    if source is None or source.type != "BatchNorm":
        return None
    node = nodes.get(sanitize(source.name))
    return node if node is not None and node.kind == "batchnorm" and node.params.get("affine") else None


def _tensors(layer: CaffeLayer, node) -> dict[str, Any]:
    """The blobs of one Caffe layer as the netdsl layer's parameters and buffers."""
    import numpy as np

    blobs, kind = layer.blobs, node.kind
    if layer.type == "BatchNorm" and kind == "batchnorm":
        if len(blobs) < 3:
            raise CaffeWeightsError("", [f"{layer.name}: a BatchNorm needs 3 blobs (mean, variance, factor)"])
        factor = float(blobs[2].reshape(-1)[0])
        scale = 0.0 if factor == 0 else 1.0 / factor
        out = {"running_mean": (blobs[0].reshape(-1) * scale).astype(np.float32),
               "running_var": (blobs[1].reshape(-1) * scale).astype(np.float32)}
        return out
    if layer.type == "Scale" and kind in ("batchnorm", "scale"):
        out = {"weight": blobs[0].reshape(-1)}
        if len(blobs) > 1:
            out["bias"] = blobs[1].reshape(-1)
        return out
    if layer.type == "PReLU" and kind == "prelu":  # one slope per channel, or one for all (channel_shared)
        return {"weight": blobs[0].reshape(-1)}
    if (layer.type, kind) in (("Convolution", "conv"), ("InnerProduct", "fc"), ("Deconvolution", "convtranspose")):
        # a Deconvolution's weight is in x out/groups x kh x kw in Caffe, as in nn.ConvTranspose2d
        weight = blobs[0]
        if layer.transpose:
            weight = weight.reshape(weight.shape[-2], weight.shape[-1]).T
        out = {"weight": weight}
        if len(blobs) > 1:
            out["bias"] = blobs[1].reshape(-1)
        return out
    raise CaffeWeightsError("", [f"{layer.name}: Caffe {layer.type} weights do not fit netdsl's {kind} "
                                 f"'{node.name}'"])


def _check_shapes(net, state: dict[str, Any], problems: list[str]) -> None:
    """Compare with the shapes the lowered module has, reshaping Caffe's legacy 4-D blobs."""
    expected = expected_shapes(net)
    for key in list(state):
        want = expected.get(key)
        have = tuple(state[key].shape)
        if want is None:
            problems.append(f"{key}: the net's layer has no such weight (bias=false?)")
            del state[key]
        elif have != want:
            if state[key].numel() == numel(want):  # e.g. an fc weight stored as 1 x 1 x out x in
                state[key] = state[key].reshape(want)
            else:
                problems.append(f"{key}: the caffemodel has {_fmt(have)}, the net needs {_fmt(want)}")
                del state[key]


def expected_shapes(net) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for node in net.graph:
        p, ins = node.params, node.meta.get("in_shapes") or [()]
        if node.kind == "conv":
            out[f"{node.name}.weight"] = (p["out"], ins[0][0] // groups(node), *p["kernel"])
        elif node.kind == "convtranspose":
            out[f"{node.name}.weight"] = (ins[0][0], p["out"] // groups(node), *p["kernel"])
        elif node.kind == "prelu":
            out[f"{node.name}.weight"] = (1 if p["shared"] else ins[0][0],)
        elif node.kind == "fc":
            out[f"{node.name}.weight"] = (p["out"], numel(ins[0]) // groups(node))
        elif node.kind == "batchnorm":
            c = ins[0][0]
            out.update({f"{node.name}.running_mean": (c,), f"{node.name}.running_var": (c,)})
            if p["affine"]:
                out.update({f"{node.name}.weight": (c,), f"{node.name}.bias": (c,)})
        elif node.kind == "scale":
            out[f"{node.name}.weight"] = (ins[0][0],)
            if p["bias"]:
                out[f"{node.name}.bias"] = (ins[0][0],)
        if node.kind in ("conv", "fc", "convtranspose") and p["bias"]:
            out[f"{node.name}.bias"] = (p["out"],)
    return out


def _fmt(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape) or "a scalar"


def load_caffemodel(net, caffemodel: str | os.PathLike | Any, module=None, strict: bool = True,
                    name: str | None = None):
    """Lower `net` (unless a module is given) and load the caffemodel's weights into it."""
    state = state_dict_from_caffemodel(net, caffemodel, strict=strict, name=name)
    module = module if module is not None else net.to_torch()
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if unexpected or (strict and missing):
        raise CaffeWeightsError(str(caffemodel), [f"the lowered module has no '{k}'" for k in unexpected]
                                + [f"not in the caffemodel: '{k}'" for k in missing])
    return module


# -------------------------------------------------------------------- the net inside a caffemodel

def spec_from_caffemodel(caffemodel: str | os.PathLike | Any, options: ImportOptions | None = None,
                         name: str | None = None) -> ImportedNet:
    """The netdsl spec of the net a .caffemodel carries (Caffe saves the layers with the weights)."""
    message = caffemodel if not isinstance(caffemodel, (str, os.PathLike)) else read_caffemodel(caffemodel)
    label = name or (str(caffemodel) if isinstance(caffemodel, (str, os.PathLike)) else "<caffemodel>")
    return import_message(to_message(message), label, options)


def to_message(pb: Any, key: str = "") -> Message:
    """A protobuf message as the importer's Message tree (blobs left out)."""
    fields: list[Field] = []
    for fd, value in pb.ListFields():
        if fd.name == "blobs":
            continue
        values = list(value) if _repeated(fd) else [value]
        for v in values:
            fields.append(Field(fd.name, _value(fd, v), None))
    return Message(key, fields, None)  # no source positions in a binary file


def _repeated(fd: Any) -> bool:
    if hasattr(fd, "is_repeated"):
        return fd.is_repeated
    return fd.label == fd.LABEL_REPEATED


def _value(fd: Any, v: Any) -> Any:
    if fd.message_type is not None:
        return to_message(v, fd.name)
    if fd.enum_type is not None:
        return Word(fd.enum_type.values_by_number[v].name)
    if isinstance(v, bool):
        return Word("true" if v else "false")
    return v
