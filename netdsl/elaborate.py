"""Elaboration: the AST becomes the IR.

Evaluates constants, expands blocks and repeats, applies defaults, binds and checks every
parameter against its layer kind's schema, and resolves which layer feeds which. Problems become
diagnostics; a layer with a bad parameter is still created (marked invalid) so that later layers
that read it do not report errors of their own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import layers
from .diagnostics import Diagnostic, did_you_mean
from .errors import MAX_SHOWN, ConfigError, SpecError
from .ir import BlockInstance, Graph, Node, Towers, repeat_suffix
from .lang.ast import (AliasStmt, Arg, Attr, BlockDef, ConstDecl, DefaultsBlock, IfStmt, InputDecl, LayerStmt, Lit,
                       Module, NetDecl, RepeatStmt, ShapeExpr, Stmt, TowersBlock, TrainBlock)
from .lang.source import Source, Span
from .lang.parser import KEYWORDS, parse
from .lang.values import FAILED, FuncValue, Word, contains_failed, describe, evaluate
from .layers.schema import IntType

MAX_BLOCK_DEPTH = 32
MAX_REPEAT = 100_000
# Limits checked before the work: a spec that would expand past them is an error at the repeat or
# block call that does it. 20,000 layers check in about 2 s (bench/RESULTS-check.md: ~100 us a layer);
# the largest nets of torchvision's zoo have a few hundred.
MAX_LAYERS = 20_000
MAX_NAME = 200  # characters of one name
BLOCK_INPUT = "in"


@dataclass
class Scope:
    env: dict[str, Any]
    prefix: str = ""
    suffix: str = ""
    repeat: tuple[int, ...] = ()  # iteration numbers behind `suffix`
    parent: "Scope | None" = None
    names: dict[str, str] = field(default_factory=dict)  # local name -> full layer name
    aliases: set[str] = field(default_factory=set)  # local names set by `a = b` (may be set again)
    skipped: dict[str, Span] = field(default_factory=dict)  # names only an `if` not taken defines -> its span
    block_input: str | None = None
    path: tuple[str, ...] = ()
    towers: str | None = None

    def child(self, **changes) -> "Scope":
        base = dict(env=dict(self.env), prefix=self.prefix, suffix=self.suffix, repeat=self.repeat, parent=self,
                    block_input=self.block_input, path=self.path, towers=self.towers)
        base.update(changes)
        return Scope(**base)

    def resolve(self, name: str) -> str | None:
        return self._find("names", name)

    def skipped_at(self, name: str) -> Span | None:
        return self._find("skipped", name)

    def _find(self, table: str, name: str):
        """`name` in this scope's `table` (names, skipped), else in the enclosing scopes'."""
        scope: Scope | None = self
        while scope is not None:
            if name in getattr(scope, table):
                return getattr(scope, table)[name]
            scope = scope.parent
        return None

    def visible(self) -> set[str]:
        out: set[str] = set()
        scope: Scope | None = self
        while scope is not None:
            out.update(scope.names)
            scope = scope.parent
        return out


@dataclass
class _Default:
    kind: str | None
    key: str
    value: Any
    span: Span


class Elaborator:
    def __init__(self, module: Module, source_name: str, consts: dict[str, str] | None = None):
        self.module = module
        self.consts = dict(consts or {})  # -D NAME=VALUE: replaces the top-level `const NAME`
        self._overridden: set[str] = set()
        self.graph = Graph(_default_name(source_name), source=source_name)
        self.diagnostics: list[Diagnostic] = []
        self.blocks: dict[str, BlockDef] = {}
        self.defaults: list[_Default] = []
        self.current: str | None = None  # the layer the next one chains to
        self.defined_at: dict[str, Span | None] = {}
        self.tower_count = 0
        self._sizes: dict[str, int] = {}  # block -> layers it expands to (_size's estimate)
        self._full = False  # MAX_LAYERS reached: reported once
        self._shapes: dict[str, tuple | None] = {}  # shapes known during elaboration (`in.channels`)
        self._shaped = 0  # graph.nodes[:_shaped] have an entry in _shapes
        self._path: tuple[str, ...] = ()  # the block instances being expanded, outermost first

    # ------------------------------------------------------------------ driver
    def run(self) -> Graph:
        top = self._top = Scope(env={})
        layer_level: list[Stmt] = []
        self._declaring = True
        for stmt in self.module.statements:
            self._guard(self._declaration, stmt, top, layer_level)
        self._declaring = False
        self.graph.constants = {k: _plain(v) for k, v in top.env.items() if not contains_failed(v)}
        for name in self.consts.keys() - self._overridden:
            known = [s.name for s in self.module.statements if isinstance(s, ConstDecl)]
            self.error(SpecError(f"-D {name}={self.consts[name]}: the spec has no constant '{name}'",
                                 notes=did_you_mean(name, known) or
                                 [f"its constants: {', '.join(known)}" if known else "it declares no constants"],
                                 code="unknown-const"))
        self._recursive = self._find_recursion()
        for stmt in layer_level:
            self._guard(self._statement, stmt, top)
        if not self.graph.inputs() and not self.errors:
            self.error(SpecError("the spec declares no input",
                                 notes=["start with a typed input such as `input data: 3x224x224`"],
                                 code="no-input"))
        return self.graph

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def error(self, err: SpecError, span: Span | None = None, layer: str | None = None) -> None:
        if err.code != SpecError.FOLLOW_ON:
            diagnostic = err.diagnostic(layer, span)
            diagnostic.instances = self._path
            self.diagnostics.append(diagnostic)

    def _guard(self, fn, *args) -> None:
        try:
            fn(*args)
        except SpecError as err:
            self.error(err)

    # ---------------------------------------------------------- declarations
    def _declaration(self, stmt: Stmt, scope: Scope, layer_level: list[Stmt]) -> None:
        if isinstance(stmt, NetDecl):
            self.graph.name, self.graph.title = stmt.name, stmt.title
        elif isinstance(stmt, ConstDecl):
            self._const(stmt, scope)
        elif isinstance(stmt, DefaultsBlock):
            for setting in stmt.settings:
                self._guard(self._default, setting, scope)
        elif isinstance(stmt, TrainBlock):
            for s in stmt.settings:
                self._guard(self._train_setting, s, scope)
        elif isinstance(stmt, BlockDef):
            if stmt.name in self.blocks:
                raise SpecError(f"block '{stmt.name}' is defined twice", stmt.span, code="duplicate")
            if layers.lookup(stmt.name):
                raise SpecError(f"block '{stmt.name}' has the name of a built-in layer kind", stmt.span,
                                code="duplicate")
            self.blocks[stmt.name] = stmt
        else:
            layer_level.append(stmt)

    def _const(self, stmt: ConstDecl, scope: Scope) -> None:
        if stmt.name in scope.env:
            raise SpecError(f"constant '{stmt.name}' is defined twice", stmt.span, code="duplicate")
        try:
            scope.env[stmt.name] = self._eval(stmt.value, scope)
            if scope.parent is None and stmt.name in self.consts:
                scope.env[stmt.name] = self._override(stmt, scope.env[stmt.name], scope)
        except SpecError:
            scope.env[stmt.name] = FAILED  # its uses are follow-on errors, not reported again
            raise

    def _override(self, stmt: ConstDecl, value: Any, scope: Scope) -> Any:
        """The value `-D NAME=TEXT` gives a top-level constant, of the type the spec's own value has."""
        self._overridden.add(stmt.name)
        text = self.consts[stmt.name]
        given = f"-D {stmt.name}={text}"
        module, errors = parse(Source(f"const {stmt.name} = {text}\n", "-D"))
        if errors or not module or len(module.statements) != 1 or not isinstance(module.statements[0], ConstDecl):
            raise SpecError(f"{given}: '{text}' is not a value (a number, a word, true/false, a list ...)",
                            stmt.span, code="bad-value")
        new = evaluate(module.statements[0].value, scope.env)
        expected = _value_type(value)
        if _value_type(new) != expected and not (expected == "a number" and _value_type(new) == "a whole number"):
            raise SpecError(f"{given}: gives {describe(new)}, but '{stmt.name}' is {expected} "
                            f"(the spec says {describe(value)})", stmt.span, code="bad-value")
        return float(new) if expected == "a number" else new

    def _train_setting(self, setting, scope: Scope) -> None:
        """A `train { key = value }` setting, checked here (with its line) as `netdsl train` would."""
        from .training import config  # the settings' schema; torch-free
        key = setting.key.replace("-", "_")
        if key not in config.SETTINGS:
            raise SpecError(f"train: unknown training setting '{setting.key}'", setting.span,
                            did_you_mean(key, config.SETTINGS) or [f"known: {', '.join(config.SETTINGS)}"],
                            code="unknown-key")
        value = _plain(self._eval(setting.value, scope))
        try:
            config.check_one(key, value)
        except ConfigError as err:
            raise SpecError(f"train: {err}", setting.value.span, code="bad-value") from None
        self.graph.training[key] = value

    def _default(self, setting, scope: Scope) -> None:
        kind_name, _, key = setting.key.rpartition(".")
        all_kinds = layers.kinds()
        if kind_name and kind_name not in all_kinds:
            raise SpecError(f"defaults: unknown layer kind '{kind_name}'", setting.span,
                            did_you_mean(kind_name, all_kinds), code="unknown-kind")
        targets = [all_kinds[kind_name]] if kind_name else list(all_kinds.values())
        having = [k for k in targets if key in k.schema.by_name()]
        if not having:
            names = {p.name for k in targets for p in k.schema.params}
            where = f"{kind_name} has no" if kind_name else "no layer kind has a"
            raise SpecError(f"defaults: {where} parameter '{key}'", setting.span,
                            did_you_mean(key, names), code="unknown-key")
        value = self._eval(setting.value, scope)
        for kind in having:  # check the value once, here, not at every layer
            try:
                kind.schema.by_name()[key].type.convert(value)
            except SpecError as err:
                raise SpecError(f"defaults: {setting.key}: {err.message}", setting.span, err.notes,
                                code="bad-value") from None
        self.defaults.append(_Default(kind_name or None, key, value, setting.span))

    # -------------------------------------------------------------- statements
    def _statement(self, stmt: Stmt, scope: Scope) -> None:
        if isinstance(stmt, InputDecl):
            self._input(stmt, scope)
        elif isinstance(stmt, LayerStmt):
            self._layer_or_block(stmt, scope)
        elif isinstance(stmt, RepeatStmt):
            self._repeat(stmt, scope)
        elif isinstance(stmt, TowersBlock):
            self._towers(stmt, scope)
        elif isinstance(stmt, ConstDecl):
            self._const(stmt, scope)
        elif isinstance(stmt, IfStmt):
            self._if(stmt, scope)
        elif isinstance(stmt, AliasStmt):
            self._alias(stmt, scope)
        else:  # a declaration where only layers may stand (the grammar keeps these at top level)
            raise SpecError(f"{type(stmt).__name__} is not allowed here", getattr(stmt, "span", None))

    def _body(self, body: list[Stmt], scope: Scope) -> None:
        for stmt in body:
            self._guard(self._statement, stmt, scope)

    def _input(self, stmt: InputDecl, scope: Scope) -> None:
        name = self._define(stmt.name, scope, stmt.span)
        node = self.graph.add(Node(name, "input", {"shape": []}, [], stmt.span, repeat=scope.repeat))
        self.current = name
        try:
            node.params["shape"] = list(self._shape(stmt.shape, scope))
        except SpecError:
            node.meta["invalid"] = True  # its readers are not reported as having no input
            raise

    def _repeat(self, stmt: RepeatStmt, scope: Scope) -> None:
        count = self._int(stmt.count, scope, "repeat count", minimum=0)
        if count > MAX_REPEAT:
            raise SpecError(f"repeat {count} is more than {MAX_REPEAT:,}", stmt.span, code="too-large")
        body = self._size(stmt.body, scope.env, ())
        self._room(count * body, stmt.span, f"repeat {count:,} of {body:,} layer(s)")
        for i in range(1, count + 1):
            inner = scope.child(suffix=scope.suffix + repeat_suffix((i,)), repeat=(*scope.repeat, i))
            if stmt.var:
                inner.env[stmt.var] = i
            self._body(stmt.body, inner)

    def _towers(self, stmt: TowersBlock, scope: Scope) -> None:
        if scope.towers:
            raise SpecError("towers cannot nest inside towers", stmt.span, code="towers")
        count = self._int(stmt.count, scope, "tower count", minimum=1)
        self.tower_count += 1
        name = "towers" if self.tower_count == 1 else f"towers{self.tower_count}"
        self.graph.towers[name] = Towers(name, count, stmt.span)
        inner = scope.child(towers=name)
        inner.names = scope.names  # towers do not open a naming scope
        self._body(stmt.body, inner)

    def _if(self, stmt: IfStmt, scope: Scope) -> None:
        """Expands the branch whose condition holds, in the enclosing scope (its names are seen after
        it). The names only the other branch defines are remembered, so a later use of one says why it
        is missing. When the condition cannot be decided (an error of its own), both branches' names are
        follow-on errors rather than unknown layers."""
        try:
            holds = self._eval(stmt.condition, scope)
            if not isinstance(holds, bool):
                raise SpecError(f"an `if` needs true or false, got {describe(holds)}", stmt.condition.span,
                                ["compare to get one: `stride != 1`, `in.channels == c`"], code="expression")
        except SpecError:
            for name in _names_in(stmt.then + stmt.otherwise):
                scope.names.setdefault(name, FAILED)
            raise
        taken, other = (stmt.then, stmt.otherwise) if holds else (stmt.otherwise, stmt.then)
        for name in _names_in(other) - _names_in(taken):
            scope.skipped.setdefault(name, stmt.span)
        self._body(taken, scope)

    def _alias(self, stmt: AliasStmt, scope: Scope) -> None:
        if stmt.name in scope.names and stmt.name not in scope.aliases:
            raise SpecError(f"'{stmt.name}' names a layer; `{stmt.name} = ...` would hide it", stmt.span,
                            ["give the second name a name of its own"], code="duplicate", layer=stmt.name)
        if stmt.name == BLOCK_INPUT:
            raise SpecError("'in' is the block's input and cannot be set", stmt.span, code="duplicate")
        try:
            scope.names[stmt.name] = self._resolve(stmt.target.name, stmt.target.span, scope, stmt.name)
        except SpecError:
            scope.names[stmt.name] = FAILED
            raise
        scope.aliases.add(stmt.name)

    # ------------------------------------------------------------------ layer facts (`in.channels`)
    FACTS = ("channels", "height", "width", "shape")

    def _fact(self, attr: Attr, scope: Scope) -> Any:
        """`in.channels`, `b1.height`, `in.shape`: from the shape of a layer made before this point."""
        if self._declaring:
            raise SpecError(f"'{attr.target}.{attr.attr}': the constants at the top of a spec are known before "
                            "any layer is made", attr.span, ["use it where the layer exists: in a layer's or "
                                                              "block's arguments, or a constant inside a block"],
                            code="expression")
        if attr.attr not in self.FACTS:
            raise SpecError(f"a layer has no '{attr.attr}'", attr.span,
                            did_you_mean(attr.attr, self.FACTS) or [f"known: {', '.join(self.FACTS)}"],
                            code="expression")
        name = self._resolve(attr.target, attr.span, scope, None)
        shape = self._peek_shape(name)
        if shape is None:
            raise SpecError.follow_on()  # the shape pass reports why that layer has none
        if attr.attr == "shape":
            return list(shape)
        if attr.attr == "channels":
            return shape[0]
        if len(shape) != 3:
            raise SpecError(f"'{attr.target}' is a vector of {shape[0]}, with no {attr.attr}", attr.span,
                            [f"{attr.target}.channels is its length"], code="expression")
        return shape[1] if attr.attr == "height" else shape[2]

    def _peek_shape(self, name: str) -> tuple | None:
        """A layer's output shape, inferred now from the layers before it (the shape pass does it again,
        with its diagnostics, once the graph is complete). None where a layer on the way is in error."""
        nodes = self.graph.nodes
        while name not in self._shapes and self._shaped < len(nodes):
            node = nodes[self._shaped]
            self._shaped += 1
            ins = [self._shapes.get(i) for i in node.inputs]
            shape = None
            if not node.meta.get("invalid") and all(s is not None for s in ins):
                try:
                    inferred = layers.lookup(node.kind).infer(node, ins)
                    shape = tuple(getattr(inferred, "shape", inferred))
                except SpecError:
                    pass
            self._shapes[node.name] = shape
        return self._shapes.get(name)

    # ------------------------------------------------------------------ layers
    def _layer_or_block(self, stmt: LayerStmt, scope: Scope) -> None:
        if stmt.kind in self.blocks:
            self._block_call(stmt, scope)
            return
        kind = layers.lookup(stmt.kind)
        if kind is None or kind.name == "input":
            choices = [k for k in layers.kinds() if k != "input"] + list(self.blocks)
            raise SpecError(f"unknown layer kind '{stmt.kind}'", stmt.kind_span,
                            did_you_mean(stmt.kind, choices) or [f"known kinds: {', '.join(sorted(choices))}"],
                            code="unknown-kind", layer=stmt.name)
        if len(self.graph) >= MAX_LAYERS:  # a backstop: the estimates before repeats and calls should stop it
            if self._full:
                raise SpecError.follow_on()
            self._full = True
            raise SpecError(f"the spec expands to more than {MAX_LAYERS:,} layers (the limit)", stmt.span,
                            code="too-large", layer=stmt.name)
        try:
            inputs = self._inputs(stmt, scope, kind.arity)
        except SpecError:
            if scope.resolve(stmt.name) is None:
                scope.names[stmt.name] = FAILED  # its readers are follow-on errors, not unknown layers
            raise
        name = self._define(stmt.name, scope, stmt.span)
        node = Node(name, kind.name, {}, inputs, stmt.span, scope.towers, stmt.cross, scope.path,
                    repeat=scope.repeat)
        self.graph.add(node)
        self.current = name
        reported = len(self.diagnostics)
        try:
            node.params = self._bind(kind, stmt, scope, name, node.meta)
        except _Invalid:
            node.meta["invalid"] = True
        if len(self.diagnostics) > reported:
            node.meta["suspect"] = True  # an ignored bad key: its expectation would only repeat the error
        if stmt.expect is not None:
            self._expect(node, stmt.expect, scope)

    def _expect(self, node: Node, shape: ShapeExpr, scope: Scope) -> None:
        try:
            node.expect, node.expect_span = self._shape(shape, scope), shape.span
        except SpecError as err:
            self.error(err, layer=node.name)

    def _inputs(self, stmt: LayerStmt, scope: Scope, arity: tuple[int, int | None]) -> list[str]:
        lo, hi = arity
        if stmt.sources is None:
            if lo == 0:
                return []
            if self.current is None:
                raise SpecError("this layer has no input: nothing comes before it", stmt.span,
                                ["declare the net's input first: `input data: 3x224x224`"],
                                code="no-input", layer=stmt.name)
            if lo > 1:
                raise SpecError(f"{stmt.kind} needs at least {lo} inputs; name them with `<- a, b`",
                                stmt.kind_span, code="arity", layer=stmt.name)
            return [self.current]
        names = []
        for ref in stmt.sources:
            names.append(self._resolve(ref.name, ref.span, scope, f"{scope.prefix}{stmt.name}{scope.suffix}"))
        if len(names) < lo or (hi is not None and len(names) > hi):
            want = f"exactly {lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo} to {hi}"
            raise SpecError(f"{stmt.kind} takes {want} input{'s' if (hi or 2) > 1 else ''}, got {len(names)}",
                            stmt.sources[0].span, code="arity", layer=stmt.name)
        return names

    def _resolve(self, ref: str, span: Span, scope: Scope, layer: str) -> str:
        if ref == BLOCK_INPUT and scope.block_input:
            return scope.block_input
        full = scope.resolve(ref)
        if full is FAILED:
            raise SpecError.follow_on()
        if full is None and ref in self.graph:
            full = ref
        if full is None and scope.skipped_at(ref) is not None:
            at = scope.skipped_at(ref)
            raise SpecError(f"'{ref}' is not made here: only the branch of the `if` at line {at.line} that did "
                            f"not hold defines it", span, ["set a name in both branches (`short = in`), or "
                                                           "use it inside the branch"],
                            code="unknown-layer", layer=layer)
        if full is None:
            # suggestions cost a pass over every name: only for the diagnostics that will be shown
            known = scope.visible() | set(self.graph._index) if len(self.diagnostics) < MAX_SHOWN else ()
            raise SpecError(f"unknown layer '{ref}'", span,
                            did_you_mean(ref, known) or ["a layer can only read layers defined before it"],
                            code="unknown-layer", layer=layer)
        return full

    # ------------------------------------------------------------------ limits
    def _find_recursion(self) -> set[str]:
        """Blocks that call themselves, directly or through others: with no conditionals in the
        language such a block never ends. Each cycle is reported once, at the call that closes it."""
        calls = {name: [(s.kind, s) for s in _calls_in(b.body) if s.kind in self.blocks]
                 for name, b in self.blocks.items()}
        recursive: set[str] = set()
        done: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            for callee, stmt in calls[name]:
                if callee in chain:
                    cycle = chain[chain.index(callee):] + (callee,)
                    if not recursive.intersection(cycle):
                        self.error(SpecError(f"block {callee} calls itself ({' -> '.join(cycle)}): it would nest more "
                                             f"than {MAX_BLOCK_DEPTH} deep, without end",
                                             stmt.kind_span, ["a block cannot use itself; use `repeat N` to "
                                                              "stack copies"], code="recursion", layer=stmt.name))
                    recursive.update(cycle)
                elif callee not in done:
                    visit(callee, (*chain, callee))
            done.add(name)

        for name in self.blocks:
            if name not in done:
                visit(name, (name,))
        return recursive

    def _room(self, layers: int, span: Span, what: str) -> None:
        """Refuse, before expanding it, a statement that would take the net past MAX_LAYERS."""
        have = len(self.graph)
        if have + layers > MAX_LAYERS:
            raise SpecError(f"{what} would make {have + layers:,} layers; a spec may have at most {MAX_LAYERS:,}"
                            if layers <= 10 * MAX_LAYERS else
                            f"{what} would make more than {MAX_LAYERS:,} layers (the limit)", span,
                            ["does a block call itself, or do repeats nest deeper than meant?"]
                            if layers > 10 * MAX_LAYERS else [], code="too-large")

    def _size(self, body: list[Stmt], env: dict[str, Any], calls: tuple[str, ...]) -> int:
        """How many layers `body` expands to, found without expanding it (capped past MAX_LAYERS).
        Repeat counts that cannot be evaluated here count once; the check at that repeat sees them."""
        cap, total = 10 * MAX_LAYERS + 1, 0
        for stmt in body:
            if isinstance(stmt, LayerStmt):
                if stmt.kind in self.blocks:
                    block = self.blocks[stmt.kind]
                    if block.name in calls or len(calls) >= MAX_BLOCK_DEPTH:
                        return cap
                    if block.name not in self._sizes:
                        self._sizes[block.name] = self._size(block.body, self._top.env, (*calls, block.name))
                    total += self._sizes[block.name]
                else:
                    total += 1
            elif isinstance(stmt, RepeatStmt):
                try:
                    n = evaluate(stmt.count, env)
                    n = n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_REPEAT else 1
                except (SpecError, ArithmeticError, ValueError, TypeError):
                    n = 1
                inner = dict(env, **({stmt.var: n} if stmt.var else {}))
                total += n * self._size(stmt.body, inner, calls)
            elif isinstance(stmt, TowersBlock):
                total += self._size(stmt.body, env, calls)
            elif isinstance(stmt, IfStmt):  # the larger branch: the condition may need shapes not made yet
                total += max(self._size(stmt.then, env, calls), self._size(stmt.otherwise, env, calls))
            if total >= cap:
                return cap
        return total

    def _define(self, local: str, scope: Scope, span: Span) -> str:
        if local in KEYWORDS:  # where the parser's contextual lexer let a keyword through as a name
            raise SpecError(f"'{local}' is a reserved word and cannot name a layer or constant", span,
                            [f"reserved: {', '.join(sorted(KEYWORDS))}"], code="syntax")
        if len(local) > MAX_NAME:
            raise SpecError(f"a name of {len(local):,} characters; names are limited to {MAX_NAME}", span,
                            code="too-large")
        full = f"{scope.prefix}{local}{scope.suffix}"
        if local in scope.aliases:
            raise SpecError(f"'{local}' is already a second name (`{local} = ...`) here", span,
                            ["every layer needs its own name"], code="duplicate", layer=full)
        if full in self.graph or full in self.graph.instances:
            first = self.defined_at.get(full)
            raise SpecError(f"'{full}' is already defined" + (f" (line {first.line})" if first else ""),
                            span, ["every layer needs its own name"], code="duplicate", layer=full)
        scope.names[local] = full
        self.defined_at[full] = span
        return full

    def _bind(self, kind: layers.LayerKind, stmt: LayerStmt, scope: Scope, layer: str,
              meta: dict[str, Any]) -> dict[str, Any]:
        """The layer's checked parameters; meta["explicit"] gets the names the spec set (on the layer or in
        `defaults`), so that passes can tell a chosen value from the kind's default (the rounding warning),
        and meta["given"] those set on the layer itself."""
        schema = kind.schema.by_name()
        given: dict[str, Arg] = {}
        failed = False

        def fail(err: SpecError, span: Span) -> None:
            nonlocal failed
            failed = True
            self.error(err, span, layer)

        positional = [a for a in stmt.args if a.name is None]
        seen_keyword = False
        for arg in stmt.args:
            if arg.name is not None:
                seen_keyword = True
            elif seen_keyword:
                fail(SpecError("a positional argument cannot follow a named one", code="syntax"), arg.span)
        if len(positional) > len(kind.schema.positional):
            names = ", ".join(kind.schema.positional) or "none"
            fail(SpecError(f"{kind.name} takes {len(kind.schema.positional)} positional argument(s) ({names}), "
                           f"got {len(positional)}", code="arity"), positional[len(kind.schema.positional)].span)
        for pname, arg in zip(kind.schema.positional, positional):
            given[pname] = arg
        for arg in stmt.args:
            if arg.name is None:
                continue
            if arg.name not in schema:  # reported, then ignored: the layer can still be checked
                self.error(SpecError(f"{kind.name} has no parameter '{arg.name}'",
                               notes=did_you_mean(arg.name, schema) or
                               [f"{kind.name} takes: {', '.join(schema) or 'no parameters'}"],
                               code="unknown-key"), arg.span, layer)
            elif arg.name in given:
                fail(SpecError(f"'{arg.name}' is given twice", code="duplicate"), arg.span)
            else:
                given[arg.name] = arg
        params: dict[str, Any] = {}
        explicit = meta["explicit"] = set(given)
        meta["given"] = set(given)  # on the layer itself (a `defaults` round= does not clash with pad=same)
        for pname, param in schema.items():
            if pname in given:
                arg = given[pname]
                try:
                    params[pname] = param.type.convert(self._eval(arg.value, scope))
                except SpecError as err:
                    fail(SpecError(f"parameter '{pname}': {err.message}", err.span, err.notes, code=err.code
                                   if err.code != "spec" else "bad-value"), arg.span)
                continue
            default = self._default_for(kind.name, pname)
            if default is not None:
                params[pname] = param.type.convert(default)
                explicit.add(pname)
            elif param.required:
                fail(SpecError(f"{kind.name} needs '{pname}'"
                               + (f" (positional argument {kind.schema.positional.index(pname) + 1})"
                                  if pname in kind.schema.positional else ""),
                               notes=[f"for example `{stmt.name}: {_example(kind)}`"], code="missing"),
                     stmt.kind_span)
            elif param.default is not None:
                params[pname] = param.default
        if failed:
            raise _Invalid()
        return params

    def _default_for(self, kind: str, key: str) -> Any:
        value = None
        for d in self.defaults:  # kind-specific settings win over net-wide ones; later over earlier
            if d.key == key and d.kind is None and value is None:
                value = d.value
        for d in self.defaults:
            if d.key == key and d.kind == kind:
                value = d.value
        return value

    # ------------------------------------------------------------------ blocks
    def _block_call(self, stmt: LayerStmt, scope: Scope) -> None:
        block = self.blocks[stmt.kind]
        if block.name in self._recursive:
            raise SpecError.follow_on()
        if len(scope.path) >= MAX_BLOCK_DEPTH:
            raise SpecError(f"blocks nest more than {MAX_BLOCK_DEPTH} deep (does '{block.name}' use itself?)",
                            stmt.kind_span, code="recursion", layer=stmt.name)
        if stmt.cross:
            raise SpecError("'cross' applies to single conv and fc layers, not to a block", stmt.kind_span,
                            code="towers", layer=stmt.name)
        inputs = self._inputs(stmt, scope, (1, 1))
        params = {p.name: p for p in block.params}
        positional = [a for a in stmt.args if a.name is None]
        if len(positional) > len(block.params):
            raise SpecError(f"block {block.name} takes {len(block.params)} arguments, got {len(positional)}",
                            positional[len(block.params)].span, code="arity", layer=stmt.name)
        bound = {p.name: self._eval(arg.value, scope) for p, arg in zip(block.params, positional)}
        for arg in stmt.args:
            if arg.name is None:
                continue
            if arg.name not in params:
                raise SpecError(f"block {block.name} has no parameter '{arg.name}'", arg.span,
                                did_you_mean(arg.name, params), code="unknown-key", layer=stmt.name)
            bound[arg.name] = self._eval(arg.value, scope)
        env = {**self._globals(scope), **bound}
        for p in block.params:
            if p.name not in bound:
                if p.default is None:
                    raise SpecError(f"block {block.name} needs '{p.name}'", stmt.kind_span,
                                    code="missing", layer=stmt.name)
                env[p.name] = self._eval(p.default, Scope(env=env))
        instance = f"{scope.prefix}{stmt.name}{scope.suffix}"
        if instance in self.graph or instance in self.graph.instances:
            raise SpecError(f"'{instance}' is already defined", stmt.span, code="duplicate", layer=instance)
        self.graph.instances[instance] = BlockInstance(instance, block.name, _call_text(stmt), stmt.span,
                                                       scope.repeat)
        inner = Scope(env=env, prefix=instance + ".", parent=scope, block_input=inputs[0],
                      path=scope.path + (instance,), towers=scope.towers)
        self._room(self._size(block.body, env, (block.name,)), stmt.kind_span, f"{stmt.name}: {block.name}(...)")
        self.current = inputs[0]
        before, reported = len(self.graph), len(self.diagnostics)
        outer, self._path = self._path, inner.path
        try:
            self._body(block.body, inner)
        finally:
            self._path = outer
        if len(self.graph) == before and len(self.diagnostics) == reported and not _has_if(block.body):
            raise SpecError(f"block {block.name} defines no layers", block.span, code="empty-block")
        # (an instance whose `if`s all chose nothing passes its input through: the block's name is `in`)
        scope.names[stmt.name] = self.current  # the block's name stands for its output
        if stmt.expect is not None:
            out = self.graph.node(self.current)
            self._expect(out, stmt.expect, scope)

    def _globals(self, scope: Scope) -> dict[str, Any]:
        while scope.parent is not None:
            scope = scope.parent
        return scope.env

    # ------------------------------------------------------------------ values
    def _eval(self, expr, scope: Scope) -> Any:
        try:
            value = evaluate(expr, scope.env, lambda attr: self._fact(attr, scope))
            if contains_failed(value):
                raise SpecError.follow_on()
            return value
        except SpecError as err:
            if err.span is None:
                err.span = getattr(expr, "span", None)
            raise
        except (OverflowError, ValueError, TypeError) as exc:
            raise SpecError(f"cannot evaluate: {exc}", getattr(expr, "span", None), code="expression") from None

    def _int(self, expr, scope: Scope, what: str, minimum: int) -> int:
        value = self._eval(expr, scope)
        try:
            return IntType(minimum).convert(value)
        except SpecError as err:
            raise SpecError(f"{what}: {err.message}", expr.span, err.notes, code="bad-value") from None

    def _shape(self, shape: ShapeExpr, scope: Scope) -> tuple[int, ...]:
        dims = []
        for dim in shape.dims:
            value = self._eval(dim, scope)
            try:
                dims.append(IntType(1).convert(value))
            except SpecError as err:
                raise SpecError(f"shape: {err.message}", dim.span, code="bad-value") from None
        if len(dims) not in (1, 3):
            raise SpecError(f"a shape is CxHxW or a vector length N, got {len(dims)} dimensions", shape.span,
                            code="bad-value")
        return tuple(dims)


class _Invalid(Exception):
    pass


def _example(kind: layers.LayerKind) -> str:
    examples = {"conv": "conv(96, 11, stride=4)", "fc": "fc(4096)", "maxpool": "maxpool(3, stride=2)",
                "avgpool": "avgpool(3, stride=2)", "adaptive_avgpool": "adaptive_avgpool(6)",
                "adaptive_maxpool": "adaptive_maxpool(6)", "dropout": "dropout(0.5)",
                "convtranspose": "convtranspose(64, 4, stride=2, pad=1)", "groupnorm": "groupnorm(32)",
                "channel_shuffle": "channel_shuffle(2)", "upsample": "upsample(2, mode=bilinear)",
                "drop_path": "drop_path(0.1)", "slice": "slice(0, 64)", "weighted_sum": "weighted_sum([1, 0.5])"}
    return examples.get(kind.name, f"{kind.name}()")


def _default_name(source_name: str) -> str:
    """A net without `net NAME` is named after its file (`my-net.net` -> my_net), else `net`."""
    stem = re.sub(r"\W", "_", Path(source_name).stem) if not source_name.startswith("<") else ""
    return stem if stem and not stem[0].isdigit() else "net"


def _calls_in(body: list[Stmt]):
    """Every layer statement in a body, through repeats and towers (block calls among them)."""
    for stmt in body:
        if isinstance(stmt, LayerStmt):
            yield stmt
        elif isinstance(stmt, (RepeatStmt, TowersBlock)):
            yield from _calls_in(stmt.body)
        elif isinstance(stmt, IfStmt):
            yield from _calls_in(stmt.then + stmt.otherwise)


def instance_notes(graph: Graph, path: tuple[str, ...], span: Span | None) -> list[str]:
    """Where a diagnostic inside a block comes from: the instances around it, innermost first, with the
    lines that call them (the diagnostic's own span is the block's line, the same for every instance)."""
    notes = []
    for name in reversed(path):
        instance = graph.instances.get(name)
        if instance is None or (span is not None and instance.span is not None and instance.span.line == span.line):
            continue
        call = instance.call or f"{instance.block}(...)"
        notes.append(f"in {name}: {call}" + (f", line {instance.span.line}" if instance.span else ""))
    return notes


def _has_if(body: list[Stmt]) -> bool:
    return any(isinstance(s, IfStmt) or isinstance(s, (RepeatStmt, TowersBlock)) and _has_if(s.body) for s in body)


def _names_in(body: list[Stmt]) -> set[str]:
    """The names a body gives in its own scope: layers, block calls and second names (an `if` in it too)."""
    out: set[str] = set()
    for stmt in body:
        if isinstance(stmt, (LayerStmt, AliasStmt)):
            out.add(stmt.name)
        elif isinstance(stmt, (IfStmt, TowersBlock)):
            out |= _names_in(stmt.then + stmt.otherwise if isinstance(stmt, IfStmt) else stmt.body)
    return out


def _call_text(stmt: LayerStmt) -> str | None:
    """`inception(64, 96, stride=2)` as written, when every argument is a literal (else None: the
    values may differ from instance to instance, and the definition's name says more)."""
    if not all(isinstance(a.value, Lit) and a.value.text for a in stmt.args):
        return None
    args = (a.value.text if a.name is None else f"{a.name}={a.value.text}" for a in stmt.args)
    return f"{stmt.kind}({', '.join(args)})"


def _plain(value: Any) -> Any:
    """Training settings keep plain data (words become strings)."""
    if isinstance(value, Word):
        return value.name
    if isinstance(value, FuncValue):
        return {"fn": value.name, "args": [_plain(a) for a in value.args],
                **{k: _plain(v) for k, v in value.kwargs}}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _value_type(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, (Word, str)):
        return "a word or string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return "a function value"


def elaborate(module: Module, source_name: str,
              consts: dict[str, str] | None = None) -> tuple[Graph, list[Diagnostic]]:
    e = Elaborator(module, source_name, consts)
    graph = e.run()
    return graph, e.diagnostics


__all__ = ["elaborate"]
