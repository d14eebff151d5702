"""The language: reading a spec (source.py), its grammar (grammar.lark), the AST (ast.py), the parser
(parser.py) and expression evaluation (values.py). Nothing here knows layer kinds or the IR."""
from .source import Source, Span, decode_spec, read_spec
from .parser import KEYWORDS, parse

__all__ = ["Source", "Span", "decode_spec", "read_spec", "parse", "KEYWORDS"]
