"""The IR: a typed layer graph, independent of the syntax.

Like torch.fx, a Graph is an ordered list of Nodes (topological: every input comes before its
consumers). Elaboration fills in what the spec says; passes annotate `node.meta`; back ends (report,
draw, lowering, Caffe export) read both and never go back to the source text or to layer names.

What a Node carries, and who writes it:

    elaboration   name, kind, params (normalised hyper-parameters), inputs, span, towers, cross,
                  scope (enclosing block instances), repeat (iteration numbers), expect;
                  meta: invalid (a parameter was wrong), suspect (an unknown key was ignored)
    towers pass   meta: placement ("partitioned" | "replicated"), tower_groups, reads_all_towers
    shape pass    meta: in_shapes, shape, windows (sliding-window layers: a Window per axis)
    cost pass     meta: param_count, macs, flops, activation_bytes, cross_bytes, rf, jump

`Graph.lint()` checks the invariants (names unique, inputs defined before use, shapes present after
the shape pass); `str(graph)` prints one line per node, as torch.fx's Graph does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import IRError
from .lang.source import Span

Shape = tuple[int, ...]
IR_VERSION = 2


def fmt_shape(shape: Shape | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def repeat_suffix(repeat: tuple[int, ...]) -> str:
    """How repeat iterations show in a layer's name: `c` in iteration (2, 1) is `c_2_1`."""
    return "".join(f"_{i}" for i in repeat)


@dataclass
class Towers:
    """A split into `count` logical towers; they become devices only at run time."""

    name: str
    count: int
    span: Span | None = None


@dataclass
class BlockInstance:
    """One call of a block: `inception_3a: inception(64, 96, 128, 16, 32, 32)`."""

    name: str  # the instance's full name, which prefixes its layers' names (`inception_3a.`)
    block: str  # the block definition it instantiates
    call: str | None = None  # the call as written, when every argument is a literal
    span: Span | None = None
    repeat: tuple[int, ...] = ()  # iteration numbers of the repeats around the call

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"block": self.block}
        if self.call:
            out["call"] = self.call
        if self.repeat:
            out["repeat"] = list(self.repeat)
        if self.span:
            out["span"] = self.span.to_dict()
        return out

    @classmethod
    def from_dict(cls, name: str, data: dict | str) -> "BlockInstance":
        if isinstance(data, str):  # IR version 1: instance -> definition
            return cls(name, data)
        return cls(name, data["block"], data.get("call"), Span(**data["span"]) if data.get("span") else None,
                   tuple(data.get("repeat", ())))


@dataclass
class Node:
    name: str
    kind: str
    params: dict[str, Any]  # hyper-parameters, checked and normalised by the kind's schema
    inputs: list[str]
    span: Span | None = None
    towers: str | None = None  # the split this layer lies in
    cross: bool = False  # reads every tower instead of its own
    scope: tuple[str, ...] = ()  # enclosing block instances, outermost first
    expect: Shape | None = None
    expect_span: Span | None = None
    repeat: tuple[int, ...] = ()  # iteration numbers of the repeats that made its name (`c_2_1`: (2, 1))
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> Shape | None:
        return self.meta.get("shape")

    @property
    def partitioned(self) -> bool:
        """Inside a split, with its output channels divided among the towers (one slice each)."""
        return bool(self.towers) and self.meta.get("placement") == "partitioned"

    @property
    def replicated(self) -> bool:
        """Inside a split, with a whole copy of its output on every tower."""
        return bool(self.towers) and self.meta.get("placement") == "replicated"

    @property
    def path(self) -> tuple[str, ...]:
        """The name as a module path: `inception_3a.b3.conv` -> ("inception_3a", "b3", "conv")."""
        parts, outer = [], ""
        for instance in (*self.scope, self.name):
            parts.append(instance[len(outer) + 1:] if outer else instance)
            outer = instance
        return tuple(parts)

    @property
    def stem(self) -> str:
        """The name as the spec writes it: no block prefix, no repeat suffix (`u_3.c_2` -> `c`)."""
        local = self.path[-1]
        return local[:len(local) - len(repeat_suffix(self.repeat))]

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "params": self.params,
                               "inputs": list(self.inputs)}
        if self.towers:
            out["towers"] = self.towers
            out["cross"] = self.cross
        if self.scope:
            out["scope"] = list(self.scope)
        if self.repeat:
            out["repeat"] = list(self.repeat)
        if self.expect:
            out["expect"] = list(self.expect)
        if self.span:
            out["span"] = self.span.to_dict()
        if self.shape is not None:
            out["shape"] = list(self.shape)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Node":
        span = Span(**data["span"]) if data.get("span") else None
        return cls(data["name"], data["kind"], dict(data["params"]), list(data["inputs"]), span,
                   data.get("towers"), data.get("cross", False), tuple(data.get("scope", ())),
                   tuple(data["expect"]) if data.get("expect") else None,
                   repeat=tuple(data.get("repeat", ())))

    def __str__(self) -> str:
        args = ", ".join(f"%{i}" for i in self.inputs)
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.params.items())
        where = []
        if self.towers:
            where.append(f"{self.towers}" + (" cross" if self.cross else "")
                         + (f" {self.meta['placement']}" if "placement" in self.meta else ""))
        if self.span:
            where.append(f"line {self.span.line}")
        text = f"%{self.name} : {fmt_shape(self.shape)} = {self.kind}[{params}]({args})"
        return text + (f"  # {', '.join(where)}" if where else "")


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    towers: dict[str, Towers] = field(default_factory=dict)
    instances: dict[str, BlockInstance] = field(default_factory=dict)  # block instances by name
    title: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    source: str = "<spec>"
    constants: dict[str, Any] = field(default_factory=dict)  # top-level `const`s (after -D), plain values

    def __post_init__(self) -> None:
        self._index = {n.name: n for n in self.nodes}

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self._index[node.name] = node
        return node

    def __contains__(self, name: str) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def node(self, name: str) -> Node:
        return self._index[name]

    @property
    def blocks(self) -> dict[str, str]:
        """Block instance -> the block it instantiates."""
        return {name: inst.block for name, inst in self.instances.items()}

    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "input"]

    def consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {n.name: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out.setdefault(i, []).append(n)
        return out

    def outputs(self) -> list[Node]:
        used = self.consumers()
        return [n for n in self.nodes if not used[n.name] and n.kind != "input"]

    def tower_count(self, node: Node) -> int:
        """How many towers this layer's output is split across (1 unless partitioned)."""
        return self.towers[node.towers].count if node.partitioned else 1

    # ------------------------------------------------------------------ invariants
    def lint(self, shapes: bool = False) -> None:
        """Check the IR's invariants; IRError lists every one broken. With `shapes`, also that the
        shape pass gave every valid layer whose inputs have shapes a shape of its own."""
        problems: list[str] = []
        seen: set[str] = set()
        for n in self.nodes:
            if n.name in seen:
                problems.append(f"'{n.name}' is defined twice")
            for i in n.inputs:
                if i not in seen:
                    problems.append(f"'{n.name}' reads '{i}', which " + (
                        "comes after it (a cycle, or nodes out of order)" if i in self._index else "is not defined"))
            if n.kind == "input" and n.inputs:
                problems.append(f"input '{n.name}' has inputs")
            if n.towers and n.towers not in self.towers:
                problems.append(f"'{n.name}' lies in an undeclared split '{n.towers}'")
            for instance in n.scope:
                if instance not in self.instances:
                    problems.append(f"'{n.name}' lies in an unknown block instance '{instance}'")
            if shapes and n.shape is None and not n.meta.get("invalid") and all(
                    i in self._index and self._index[i].shape is not None for i in n.inputs):
                problems.append(f"'{n.name}' has no shape after the shape pass")
            seen.add(n.name)
        if len(self._index) != len(seen):
            problems.append("the name index does not match the nodes")
        if problems:
            raise IRError(f"{self.name}: the IR is inconsistent:\n" + "\n".join(f"  - {p}" for p in problems))

    def __str__(self) -> str:
        head = f"graph {self.name}" + "".join(f", {t.name} x{t.count}" for t in self.towers.values()) + ":"
        return "\n".join([head, *(f"    {n}" for n in self.nodes)])

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {
            "netdsl_ir": IR_VERSION,
            "name": self.name, "title": self.title, "source": self.source,
            "towers": {k: {"count": t.count} for k, t in self.towers.items()},
            "blocks": {k: v.to_dict() for k, v in self.instances.items()},
            "training": self.training,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Graph":
        """Read an IR written by `to_dict` (`netdsl check --emit-ir`); IRError when it is inconsistent."""
        try:
            graph = cls(data["name"], [Node.from_dict(n) for n in data["nodes"]],
                        {k: Towers(k, v["count"]) for k, v in data.get("towers", {}).items()},
                        {k: BlockInstance.from_dict(k, v) for k, v in data.get("blocks", {}).items()},
                        data.get("title"), dict(data.get("training", {})), data.get("source", "<spec>"))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise IRError(f"not a netdsl IR ({type(err).__name__}: {err})") from None
        for node, raw in zip(graph.nodes, data["nodes"]):
            if "shape" in raw:
                node.meta["shape"] = tuple(raw["shape"])
        graph.lint()
        return graph


def _short(value: Any) -> str:
    """A parameter as the spec would write it: `11` for [11, 11], `0` for no padding, `true`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict) and "fn" in value:
        args = [_short(v) for k, v in value.items() if k != "fn"]
        return value["fn"] + (f"({', '.join(args)})" if args else "")
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
        return _short(value[0])
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, list) for v in value):
        return "[" + ", ".join(f"({v[0]}, {v[1]})" if v[0] != v[1] else str(v[0]) for v in value) + "]"
    if isinstance(value, list):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    return str(value)
