"""netdsl: describe, check, draw and train convolutional networks from a declarative spec."""
from .api import Net, NetdslError, load, loads
from .source import UsageError

__version__ = "0.1.0"
__all__ = ["load", "loads", "Net", "NetdslError", "UsageError", "__version__"]
