"""netdsl: describe, check, draw and train convolutional networks from a declarative spec.

The pipeline, one folder or module per stage (docs/architecture.md):
    lang/ -> elaborate.py -> ir.py + layers/ + passes/ -> report.py, draw.py -> lowering/ -> training/
"""
from .api import Net, load, loads
from .errors import Error, NetdslError, UsageError

__version__ = "0.1.0"
__all__ = ["load", "loads", "Net", "Error", "NetdslError", "UsageError", "__version__"]
