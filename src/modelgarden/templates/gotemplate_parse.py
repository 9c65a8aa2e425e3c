"""Lexer and parser for :mod:`modelgarden.templates.gotemplate`.

A template source is split into text and ``{{ ... }}`` action tokens (honouring ``{{-`` /
``-}}`` trim markers and dropping ``{{/* comments */}}``), then parsed into a small AST of
:class:`Node`, :class:`Pipe` and :class:`Operand` values that the evaluator in
:mod:`modelgarden.templates.gotemplate` executes. Parse-time checks (unknown functions,
undefined variables, unsupported keywords, nesting deeper than :data:`MAX_DEPTH`) raise
:class:`TemplateError` with the line and column of the offending token.

This module knows nothing about evaluation: the set of function names a template may call is
passed to :class:`Parser` by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MAX_DEPTH",
    "SIMPLE_ESCAPES",
    "Node",
    "Operand",
    "Parser",
    "Pipe",
    "TemplateError",
    "error_at",
]

MAX_DEPTH: Final = 100
_SPACE: Final = " \t\r\n"
_LEFT_TRIMS: Final = tuple("-" + c for c in _SPACE)
_RIGHT_TRIMS: Final = tuple(c + "-}}" for c in _SPACE)
_KEYWORDS: Final = frozenset(
    ["if", "else", "end", "range", "with", "break", "continue", "template", "define", "block"]
)
_TOKEN_RE: Final = re.compile(
    r"""(?P<space>[ \t\r\n]+)
    |(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<char>'(?:[^'\\\n]|\\.)*')
    |(?P<number>[+-]?(?:0[xX][\da-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+
        |(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)(?![\w.]))
    |(?P<var>\$\w*)|(?P<field>\.\w+)|(?P<dot>\.)|(?P<word>\w+)|(?P<op>:=|[=|(),])""",
    re.VERBOSE,
)
_ESCAPE_RE: Final = re.compile(
    r"\\(?:([abfnrtv\\'\"])|x([\da-fA-F]{2})|([0-7]{3})|u([\da-fA-F]{4})|U([\da-fA-F]{8}))"
)
SIMPLE_ESCAPES: Final = dict(zip("abfnrtv\\'\"", "\a\b\f\n\r\t\v\\'\"", strict=True))


class TemplateError(ValueError):
    """A template failed to parse or to render; the message says what and where."""


def error_at(src: str, pos: int, msg: str) -> TemplateError:
    """Build a :class:`TemplateError` whose message starts with the line and column of pos."""
    line = src.count("\n", 0, pos) + 1
    return TemplateError(f"line {line}, col {pos - src.rfind(chr(10), 0, pos)}: {msg}")


# -- lexer ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tok:
    kind: str  # text left right eof string number bool nil var field dot ident keyword := = | ( ) ,
    value: Any
    pos: int
    raw: str = ""
    spaced: bool = False  # preceded by whitespace inside the action


def _describe(tok: _Tok) -> str:
    names = {"right": "'}}'", "eof": "end of template", "text": "text", "left": "'{{'"}
    return names.get(tok.kind) or repr(tok.raw)


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks: list[_Tok] = []

    def run(self) -> list[_Tok]:
        src, pos, trim = self.src, 0, False
        while True:
            start = src.find("{{", pos)
            text = src[pos : len(src) if start < 0 else start]
            left_trim = start >= 0 and src.startswith(_LEFT_TRIMS, start + 2)
            text = text.lstrip(_SPACE) if trim else text
            text = text.rstrip(_SPACE) if left_trim else text
            if text:
                self.toks.append(_Tok("text", text, pos))
            if start < 0:
                self.toks.append(_Tok("eof", None, len(src)))
                return self.toks
            pos = start + (4 if left_trim else 2)
            pos, trim = (
                self.comment(start, pos) if src.startswith("/*", pos) else self.action(start, pos)
            )

    def comment(self, start: int, pos: int) -> tuple[int, bool]:
        end = self.src.find("*/", pos + 2)
        if end < 0:
            raise error_at(self.src, start, "unclosed comment")
        if self.src.startswith("}}", end + 2):
            return end + 4, False
        if self.src.startswith(_RIGHT_TRIMS, end + 2):
            return end + 6, True
        raise error_at(self.src, start, "comment ends before closing delimiter '}}'")

    def action(self, start: int, pos: int) -> tuple[int, bool]:
        src, spaced = self.src, True
        self.toks.append(_Tok("left", None, start))
        while not src.startswith("}}", pos):
            m = _TOKEN_RE.match(src, pos)
            if m is None or m.lastgroup is None:
                raise self.bad_char(start, pos)
            if m.lastgroup == "space" and src.startswith("-}}", m.end()):
                self.toks.append(_Tok("right", None, pos))
                return m.end() + 3, True
            if m.lastgroup != "space":
                self.toks.append(self.token(m.lastgroup, m.group(), pos, spaced))
            spaced, pos = m.lastgroup == "space", m.end()
        self.toks.append(_Tok("right", None, pos))
        return pos + 2, False

    def bad_char(self, start: int, pos: int) -> TemplateError:
        if "}}" not in self.src[pos:]:
            return error_at(self.src, start, "unclosed action: missing '}}'")
        if self.src[pos] in "\"'`":
            return error_at(self.src, pos, "unterminated quoted string or character constant")
        hint = (
            " (a comment must start right after '{{' or '{{- ')"
            if self.src.startswith("/*", pos)
            else ""
        )
        return error_at(self.src, pos, f"unrecognized character in action: {self.src[pos]!r}{hint}")

    def token(self, kind: str, raw: str, pos: int, spaced: bool) -> _Tok:
        value: Any = raw
        if kind == "string":
            value = self.unescape(raw[1:-1], pos)
        elif kind == "raw":
            kind, value = "string", raw[1:-1].replace("\r", "")
        elif kind == "char":
            kind, value = "number", self.unescape(raw[1:-1], pos)
            if len(value) != 1:
                raise error_at(self.src, pos, f"invalid character constant {raw}")
            value = ord(value)
        elif kind == "number" or (kind == "word" and raw[0].isdigit()):
            kind, value = "number", self.number(raw, pos)
        elif kind == "field":
            value = raw[1:]
        elif kind == "op":
            kind = raw
        elif kind == "word":
            kind = {"true": "bool", "false": "bool", "nil": "nil"}.get(raw, "ident")
            kind = "keyword" if raw in _KEYWORDS else kind
            value = {"true": True, "false": False, "nil": None}.get(raw, raw)
        return _Tok(kind, value, pos, raw, spaced)

    def number(self, raw: str, pos: int) -> int | float:
        text = raw.replace("_", "")
        try:
            if re.match(r"[+-]?0[xXoObB]", text):
                return int(text, 0)
            if any(c in text for c in ".eE"):
                return float(text)
            return int(text, 8 if re.match(r"[+-]?0\d", text) else 10)
        except ValueError:
            raise error_at(self.src, pos, f"bad number syntax: {raw!r}") from None

    def unescape(self, body: str, pos: int) -> str:
        """Decode Go escapes; ``\\x`` and octal escapes are bytes, as in Go."""
        buf, i = bytearray(), 0
        while (j := body.find("\\", i)) >= 0:
            buf += body[i:j].encode()
            m = _ESCAPE_RE.match(body, j)
            code = int(m[4] or m[5], 16) if m and (m[4] or m[5]) else 0
            if not m or (m[3] and int(m[3], 8) > 255) or 0xD800 <= code < 0xE000 or code > 0x10FFFF:
                raise error_at(self.src, pos, f"invalid escape sequence in {body!r}")
            if m[1]:
                buf += SIMPLE_ESCAPES[m[1]].encode()
            elif m[2] or m[3]:
                buf.append(int(m[2], 16) if m[2] else int(m[3], 8))
            else:
                buf += chr(code).encode()
            i = m.end()
        buf += body[i:].encode()
        return buf.decode("utf-8", errors="replace")


# -- AST and parser -------------------------------------------------------------------------


@dataclass(slots=True)
class Operand:
    """One argument of a command: a constant, ``.``, a variable, a function or a paren."""

    pos: int
    kind: str  # const, dot (also .Field), var, func or paren
    value: Any  # the constant, variable or function name, or the Pipe of a paren
    names: list[str] = field(default_factory=list)  # field lookups applied to the value


@dataclass(slots=True)
class Pipe:
    """A pipeline: optional ``$x :=`` / ``$x =`` declarations and ``|``-joined commands."""

    pos: int
    decls: list[str]
    is_assign: bool
    cmds: list[list[Operand]]


@dataclass(slots=True)
class Node:
    """An action or control structure; ``body``/``orelse`` hold the nested nodes."""

    pos: int
    kind: str  # action, if, range, with, break or continue; plain text is a str
    pipe: Pipe
    body: list[str | Node] = field(default_factory=list)
    orelse: list[str | Node] = field(default_factory=list)


class Parser:
    """Parse a template source into a list of text strings and :class:`Node` values.

    ``funcs`` holds the names of the functions a template may call; any other name is
    rejected at parse time. After :meth:`parse`, ``refs`` holds the first field name of every
    ``.Field`` and ``$.Field`` reference.
    """

    def __init__(self, src: str, funcs: Container[str]) -> None:
        self.src, self.toks, self.i = src, _Lexer(src).run(), 0
        self.funcs = funcs
        self.vars, self.loops, self.depth = ["$"], 0, 0
        self.refs: set[str] = set()

    def error(self, pos: int, msg: str) -> TemplateError:
        return error_at(self.src, pos, msg)

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += tok.kind != "eof"
        return tok

    def expect(self, kind: str, context: str) -> None:
        if (tok := self.next()).kind != kind:
            raise self.error(tok.pos, f"unexpected {_describe(tok)} in {context}")

    def nest(self, pos: int, delta: int) -> None:
        self.depth += delta
        if self.depth > MAX_DEPTH:
            raise self.error(pos, f"template nested more than {MAX_DEPTH} levels deep")

    def parse(self) -> list[str | Node]:
        nodes, stop = self.parse_list()
        if stop.kind != "eof":
            msg = f"unexpected {{{{{stop.value}}}}}: there is no open if/range/with block"
            raise self.error(stop.pos, msg)
        return nodes

    def parse_list(self) -> tuple[list[str | Node], _Tok]:
        """Parse up to ``{{end}}``, ``{{else`` or EOF; return the nodes and that token."""
        nodes: list[str | Node] = []
        while (tok := self.next()).kind != "eof":
            if tok.kind == "text":
                nodes.append(tok.value)
            elif isinstance(node := self.action(tok), _Tok):
                return nodes, node
            else:
                nodes.append(node)
        return nodes, tok

    def action(self, left: _Tok) -> Node | _Tok:
        if (tok := self.peek()).kind != "keyword":
            pipe = self.pipeline("command", decl=True)
            self.expect("right", "command")
            return Node(left.pos, "action", pipe)
        self.next()
        kw = tok.value
        if kw in ("if", "range", "with"):
            return self.control(tok)
        if kw == "else":
            return tok
        if kw in ("template", "define", "block"):
            raise self.error(tok.pos, f"{{{{{kw}}}}} is not supported (no named templates)")
        if kw in ("break", "continue") and not self.loops:
            raise self.error(tok.pos, f"{{{{{kw}}}}} outside {{{{range}}}}")
        self.expect("right", f"{{{{{kw}}}}}")
        return tok if kw == "end" else Node(tok.pos, kw, Pipe(tok.pos, [], False, []))

    def control(self, kw: _Tok) -> Node:
        self.nest(kw.pos, 1)
        mark = len(self.vars)
        pipe = self.pipeline(kw.value, decl=True)
        self.expect("right", f"{{{{{kw.value}}}}}")
        inner, loop = len(self.vars), int(kw.value == "range")
        self.loops += loop
        body, stop = self.parse_list()
        self.loops -= loop
        del self.vars[inner:]  # variables declared in the body end with it
        if stop.kind == "eof":
            raise self.error(kw.pos, f"missing {{{{end}}}} for this {{{{{kw.value}}}}}")
        orelse = self.else_branch(kw) if stop.value == "else" else []
        del self.vars[mark:]
        self.nest(kw.pos, -1)
        return Node(kw.pos, kw.value, pipe, body, orelse)

    def else_branch(self, kw: _Tok) -> list[str | Node]:
        if (nxt := self.peek()).kind == "keyword" and nxt.value in ("if", "with"):
            self.next()  # {{else if x}} is {{else}}{{if x}}, sharing the final {{end}}
            return [self.control(nxt)]
        self.expect("right", "{{else}}")
        orelse, stop = self.parse_list()
        if stop.kind == "eof":
            raise self.error(kw.pos, f"missing {{{{end}}}} for this {{{{{kw.value}}}}}")
        if stop.value != "end":
            raise self.error(stop.pos, "expected {{end}} but found a second {{else}}")
        return orelse

    def pipeline(self, context: str, decl: bool) -> Pipe:
        pos = self.peek().pos
        decls, is_assign = self.declarations(context) if decl else ([], False)
        cmds = [self.command(context)]
        while self.peek().kind == "|":
            self.next()
            cmds.append(self.command(context))
            if cmds[-1][0].kind != "func" or cmds[-1][0].names:
                raise self.error(cmds[-1][0].pos, "cannot pipe a value into a non-function")
        if not is_assign:
            self.vars.extend(decls)
        return Pipe(pos, decls, is_assign, cmds)

    def declarations(self, context: str) -> tuple[list[str], bool]:
        kinds = [self.peek(k).kind for k in range(4)]
        if kinds[0] != "var" or kinds[1] not in (":=", "=", ","):
            return [], False
        pair = context == "range" and kinds[1:3] == [",", "var"] and kinds[3] in (":=", "=")
        if kinds[1] == "," and not pair:
            raise self.error(self.peek(1).pos, f"too many declarations in {context}")
        count = 2 if pair else 1
        names = [self.peek(2 * k).value for k in range(count)]
        is_assign = self.peek(2 * count - 1).kind == "="
        for k, name in enumerate(names):
            if is_assign and name not in self.vars:
                raise self.error(self.peek(2 * k).pos, f"undefined variable {name}")
        self.i += 2 * count
        return names, is_assign

    def command(self, context: str) -> list[Operand]:
        pos, args = self.peek().pos, list[Operand]()
        while self.peek().kind not in ("right", ")", "|", "eof"):
            if args and not self.peek().spaced:
                raise self.error(self.peek().pos, f"missing space before {_describe(self.peek())}")
            args.append(self.operand())
        if not args:
            raise self.error(pos, f"missing value for {context}")
        if len(args) > 1 and (args[0].kind != "func" or args[0].names):
            raise self.error(pos, "can't give arguments to a non-function")
        if args[0].kind == "const" and args[0].value is None:
            raise self.error(pos, "nil is not a command")
        return args

    def operand(self) -> Operand:
        tok = self.next()
        kinds = {"field": "dot", "ident": "func", "(": "paren", "var": "var", "dot": "dot"}
        kind = kinds.get(tok.kind, "const")
        op = Operand(tok.pos, kind, tok.value, [tok.value] if tok.kind == "field" else [])
        if kind == "const" and tok.kind not in ("string", "number", "bool", "nil"):
            raise self.error(tok.pos, f"unexpected {_describe(tok)} in operand")
        if kind == "func" and tok.value not in self.funcs:
            raise self.error(tok.pos, f'function "{tok.value}" not defined')
        if kind == "var" and tok.value not in self.vars:
            raise self.error(tok.pos, f"undefined variable {tok.value}")
        if kind == "paren":
            self.nest(tok.pos, 1)
            op.value = self.pipeline("parenthesized pipeline", decl=False)
            if self.next().kind != ")":
                raise self.error(tok.pos, "unclosed left parenthesis")
            self.nest(tok.pos, -1)
        while self.peek().kind == "field" and not self.peek().spaced:
            if kind == "const":
                raise self.error(self.peek().pos, f"unexpected field after constant {tok.raw}")
            op.names.append(self.next().value)
        if op.names and (kind == "dot" or (kind == "var" and op.value == "$")):
            self.refs.add(op.names[0])
        return op
