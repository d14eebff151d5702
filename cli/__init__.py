"""The `netdsl` command line: a thin click layer over the Python API."""
from .main import main

__all__ = ["main"]
