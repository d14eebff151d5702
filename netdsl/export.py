"""Export a lowered spec as TorchScript (torch.jit.trace) or ONNX (torch.onnx.export, dynamic batch)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from .api import Net


class ExportFailed(Exception):
    """A clear reason why nothing was written."""


def export_model(net: Net, fmt: str, path: Path, *, weights: str | None = None, seed: int = 0,
                 logits: bool = False) -> Path:
    model = net.to_torch(seed=seed, logits=logits).eval()
    if weights:
        load_weights(model, weights)
    example = example_inputs(net)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "torchscript":
            _torchscript(model, example, path)
        elif fmt == "onnx":
            _onnx(model, example, path, net)
        else:
            raise ExportFailed(f"unknown format '{fmt}' (torchscript or onnx)")
    except OSError as err:
        raise ExportFailed(f"cannot write {path}: {err.strerror or err}") from None
    return path


def example_inputs(net: Net, batch: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, *n.params["shape"], generator=gen) for n in net.graph.inputs())


def load_weights(model: torch.nn.Module, weights: str) -> None:
    """A state dict saved with torch.save, or a checkpoint dict holding one under 'model'/'state_dict'."""
    try:
        state: Any = torch.load(weights, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportFailed(f"{weights}: no such file") from None
    except Exception as err:  # noqa: BLE001  (pickle, zip and format errors all mean "not a state dict")
        raise ExportFailed(f"{weights}: not a PyTorch state dict ({type(err).__name__}: {err})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict):
        raise ExportFailed(f"{weights}: expected a state dict, found {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ExportFailed(f"{weights} does not fit this spec:\n{err}") from None


def _torchscript(model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; tracing is what we want
        traced = torch.jit.trace(model, example)
    traced.save(str(path))


def _onnx(model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, net: Net) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ExportFailed("ONNX export needs the onnx and onnxscript packages: pip install 'netdsl[onnx]'") from None
    names = [n.name for n in net.graph.inputs()]
    batch = torch.export.Dim("batch", min=1, max=65536)
    # forward(*inputs) takes varargs, so the dynamic shapes are one tuple for the `inputs` argument.
    dynamic = (tuple({0: batch} for _ in names),)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, example, dynamo=True, input_names=names, output_names=model.output_names,
                                        dynamic_shapes=dynamic, verbose=False, report=False)
    except Exception as err:  # noqa: BLE001  (the exporter raises many types; say which layer kinds fail)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportFailed(f"torch.onnx could not export {net.graph.name}: {first}") from None
    program.save(str(path))
