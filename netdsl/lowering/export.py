"""Export a lowered graph as TorchScript (torch.jit.trace), ONNX (torch.onnx.export, dynamic batch), or
one standalone Python file (eject.py)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..errors import UsageError
from ..ir import Graph
from .net import lower
from .options import EXPORT_FORMATS
from .weights import load_file


def export_model(graph: Graph, fmt: str, path: Path, *, weights: str | None = None, seed: int = 0,
                 logits: bool = False, spec: str = "<spec>") -> list[Path]:
    """Lower a checked graph (with `weights` loaded, else the spec's init drawn from `seed`) and save
    it; the files written (python with weights: the .py file and its state dict beside it)."""
    model = lower(graph, seed=seed, logits=logits).eval()
    if weights:
        load_file(model, weights)
    example = example_inputs(graph)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "python":
            return _python(model, graph, path, spec, logits, with_weights=bool(weights))
        if fmt == "torchscript":
            _torchscript(model, example, path)
        elif fmt == "onnx":
            _onnx(model, example, path, graph)
        else:
            raise UsageError(f"unknown format '{fmt}' ({' or '.join(EXPORT_FORMATS)})")
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    return [path]


def _python(model: torch.nn.Module, graph: Graph, path: Path, spec: str, logits: bool,
            with_weights: bool) -> list[Path]:
    """The standalone .py (eject.py); with weights, a plain state dict beside it (weights_only loads it)."""
    from .eject import python_source
    state = path.with_suffix(".pt") if with_weights else None
    path.write_text(python_source(graph, spec=spec, logits=logits, weights_file=state.name if state else None))
    if state is None:
        return [path]
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, state)
    return [path, state]


def example_inputs(graph: Graph, batch: int = 2) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(batch, *n.params["shape"], generator=gen) for n in graph.inputs())


def _torchscript(model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice; tracing is what we want
        traced = torch.jit.trace(model, example)
    traced.save(str(path))


def _onnx(model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path, graph: Graph) -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise UsageError("ONNX export needs the onnx and onnxscript packages: pip install 'netdsl[onnx]'") from None
    names = [n.name for n in graph.inputs()]
    batch = torch.export.Dim("batch", min=1, max=65536)
    dynamic = tuple({0: batch} for _ in names)  # forward takes one argument per spec input
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, example, dynamo=True, input_names=names, output_names=model.output_names,
                                        dynamic_shapes=dynamic, verbose=False, report=False)
    except Exception as err:  # noqa: BLE001  (the exporter raises many types; say which layer kinds fail)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"torch.onnx could not export {graph.name}: {first}") from None
    program.save(str(path))
