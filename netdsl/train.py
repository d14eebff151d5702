"""Deprecated: `netdsl.train` moved to `netdsl.training` (kept for one release, for old notebooks)."""
import warnings

from .errors import UsageError as TrainError
from .lowering.devices import pick_devices as _pick_devices
from .training.data import check_classes as _check_classes, image_input as _image_input
from .training.loop import Dist, Progress, StopFlag, Trainer, init_distributed, train
from .training.rundir import RunLog

warnings.warn("netdsl.train is deprecated and will be removed in the next release; "
              "use netdsl.training.loop.train (or `netdsl train`)", DeprecationWarning, stacklevel=2)


def pick_devices(spec: str, dist: Dist) -> list:
    return _pick_devices(spec, dist.local_rank)


def check_input(net) -> tuple[int, tuple[int, int]]:
    return _image_input(net.graph)


def check_classes(net, data) -> None:
    _check_classes(net.graph, data)


__all__ = ["train", "Trainer", "Dist", "Progress", "StopFlag", "RunLog", "init_distributed", "pick_devices",
           "check_input", "check_classes", "TrainError"]
