"""`netdsl import FILE`: what people already have, as netdsl specs. The format is recognised from the
file's content (not its name): Caffe prototxt (caffe/importer.py), ONNX (onnx.py), cuda-convnet and
cuda-convnet2 layer files (cudaconvnet.py), Darknet cfg (darknet.py). Each importer writes spec text
(base.py has what they share); the checker then counts it like any spec.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from ..errors import UsageError
from .base import ImportedNet, ImportOptions

# format -> (importer "module:function", what it reads)
FORMATS = {
    "prototxt": ("netdsl.caffe.importer:import_file", "Caffe .prototxt (a net, or a solver naming one)"),
    "onnx": ("netdsl.imports.onnx:import_file", "ONNX model (.onnx)"),
    "cuda-convnet": ("netdsl.imports.cudaconvnet:import_file", "cuda-convnet / cuda-convnet2 layer file (.cfg, INI)"),
    "darknet": ("netdsl.imports.darknet:import_file", "Darknet .cfg ([net], [convolutional], ...)"),
}
SNIFF = 64 * 1024  # bytes read to recognise a format


def detect(path: str | Path) -> str | None:
    """The format of a file from its first bytes, or None when it is none netdsl reads."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF)
    except OSError as err:
        raise UsageError(f"{path}: cannot read it ({err.strerror or err})") from None
    if _is_onnx(head):
        return "onnx"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("utf-8", "replace")
    body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    sections = re.findall(r"^\s*\[([^\]\n]+)\]\s*$", body, re.M)
    if sections:
        if any(s.strip().lower() in ("net", "network") for s in sections):
            return "darknet"
        if re.search(r"^\s*type\s*=", body, re.M):
            return "cuda-convnet"
    if re.search(r"^\s*(layers?|input|input_shape|input_dim|name|net|train_net|base_lr)\s*[:{]", body, re.M):
        return "prototxt"
    return None


# ModelProto's fields and their protobuf wire types (0 varint, 2 length-delimited)
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def _is_onnx(head: bytes) -> bool:
    """An ONNX ModelProto: protobuf that starts with ir_version (field 1, varint: byte 0x08) and whose
    top-level fields, as far as the head goes, are all ModelProto's with their wire types, a graph or
    an opset among them. (Producer names are no guide: files written with onnx.helper have none.)
    Other binary protobufs starting with 0x08, such as Caffe's mean.binaryproto, break the pattern."""
    if head[:1] != b"\x08":
        return False
    pos, seen = 0, set()
    while pos < len(head):
        tag, pos = _varint(head, pos)
        if tag is None:
            break
        field, wire = tag >> 3, tag & 7
        if _ONNX_FIELDS.get(field) != wire:
            return False
        value, pos = _varint(head, pos)
        if value is None:
            break
        if field == 1 and not 1 <= value <= 100:  # ir_version: 3 to 11 so far
            return False
        seen.add(field)
        if wire == 2:
            pos += value
    return 1 in seen and bool(seen & {7, 8})


def _varint(data: bytes, pos: int) -> tuple[int | None, int]:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
    return None, pos


def import_file(path: str | Path, options: ImportOptions | None = None) -> ImportedNet:
    """Import FILE whatever its format; UsageError naming the formats netdsl reads when it is none."""
    fmt = detect(path)
    if fmt is None and Path(path).suffix.lower() in (".prototxt", ".pbtxt"):
        fmt = "prototxt"  # named so but unrecognised (empty, damaged): Caffe's importer says what is wrong
    elif fmt is None and Path(path).suffix.lower() == ".onnx":
        fmt = "onnx"  # the same for ONNX: its importer says the file does not parse
    if fmt is None:
        hint = _what_else(path)
        raise UsageError(f"{path}: not a format netdsl imports{hint}; it reads: "
                         + "; ".join(what for _, what in FORMATS.values()))
    module, _, function = FORMATS[fmt][0].partition(":")
    try:
        importer = getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as err:
        if err.name and err.name.startswith("netdsl"):
            raise UsageError(f"{path}: {FORMATS[fmt][1]} files cannot be imported yet") from None
        raise UsageError(f"{path}: importing {fmt} needs the '{err.name}' package "
                         f"(pip install netdsl[{'onnx' if fmt == 'onnx' else 'caffe'}])") from None
    imported = importer(path, options or ImportOptions())
    imported.format = fmt
    return imported


def _what_else(path: str | Path) -> str:
    """A word on what the file seems to be, for formats netdsl does not read."""
    try:
        head = Path(path).read_bytes()[:4096]
    except OSError:
        return ""
    text = head.decode("utf-8", "replace").lstrip()
    if text.startswith("{") and '"class_name"' in text:
        return " (it looks like a Keras model's JSON, which netdsl does not read: export it to ONNX)"
    if text.startswith("net ") or "input " in text and ":" in text:
        return " (it looks like a netdsl spec already: `netdsl check` it)"
    return ""


__all__ = ["import_file", "detect", "FORMATS", "ImportedNet", "ImportOptions"]
