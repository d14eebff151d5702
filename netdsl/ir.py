"""The IR: a typed layer graph, independent of the syntax.

Like torch.fx, a Graph is an ordered list of Nodes (topological: every input comes before its
consumers); passes annotate `node.meta` (shape, parameter count, MACs, ...) and back ends read it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from .source import Span

Shape = tuple[int, ...]


@dataclass
class Towers:
    """A split into `count` logical towers; they become devices only at run time."""

    name: str
    count: int
    span: Span | None = None


@dataclass
class Node:
    name: str
    kind: str
    params: dict[str, Any]
    inputs: list[str]
    span: Span | None = None
    towers: str | None = None  # the split this layer lies in
    cross: bool = False  # reads every tower instead of its own
    scope: tuple[str, ...] = ()  # enclosing block instances, outermost first
    expect: Shape | None = None
    expect_span: Span | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> Shape | None:
        return self.meta.get("shape")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "params": self.params,
                               "inputs": list(self.inputs)}
        if self.towers:
            out["towers"] = self.towers
            out["cross"] = self.cross
        if self.scope:
            out["scope"] = list(self.scope)
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
        node = cls(data["name"], data["kind"], dict(data["params"]), list(data["inputs"]), span,
                   data.get("towers"), data.get("cross", False), tuple(data.get("scope", ())),
                   tuple(data["expect"]) if data.get("expect") else None)
        return node


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    towers: dict[str, Towers] = field(default_factory=dict)
    blocks: dict[str, str] = field(default_factory=dict)  # block instance -> block definition
    title: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    source: str = "<spec>"

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

    def to_dict(self) -> dict:
        return {
            "netdsl_ir": 1,
            "name": self.name, "title": self.title, "source": self.source,
            "towers": {k: {"count": t.count} for k, t in self.towers.items()},
            "blocks": dict(self.blocks),
            "training": self.training,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Graph":
        return cls(data["name"], [Node.from_dict(n) for n in data["nodes"]],
                   {k: Towers(k, v["count"]) for k, v in data.get("towers", {}).items()},
                   dict(data.get("blocks", {})), data.get("title"), dict(data.get("training", {})),
                   data.get("source", "<spec>"))
