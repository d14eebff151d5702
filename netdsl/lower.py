"""Deprecated: `netdsl.lower` moved to `netdsl.lowering` (kept for one release, for old notebooks)."""
import warnings

from .errors import DeviceError, LoweringError
from .lowering.devices import AMP_DTYPES, check_device, resolve_devices
from .lowering.modules import TowerLocal
from .lowering.net import LoweredNet, build_node, lower, seeded
from .lowering.towers import TowerSplit, tower_module

warnings.warn("netdsl.lower is deprecated and will be removed in the next release; "
              "use netdsl.lowering (or Net.to_torch)", DeprecationWarning, stacklevel=2)

__all__ = ["lower", "LoweredNet", "TowerSplit", "TowerLocal", "build_node", "seeded", "resolve_devices",
           "check_device", "tower_module", "AMP_DTYPES", "DeviceError", "LoweringError"]
