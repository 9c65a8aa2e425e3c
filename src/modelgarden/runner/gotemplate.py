"""A small, pure-Python renderer for the subset of Go ``text/template`` that Ollama uses.

Ollama keeps prompt templates (Modelfile ``TEMPLATE`` blocks, the ``template`` field of
``/api/generate``) in Go template syntax. A template is tokenized, parsed once into a small
AST and evaluated against plain Python data (dicts, lists and scalars).

Supported:

* text and ``{{ ... }}`` actions, ``{{-`` / ``-}}`` trim markers (the dash must be separated
  from the action by whitespace, as in Go) and ``{{/* comments */}}``;
* operands ``.``, ``.A.B``, ``$``, ``$.A``, ``$x``, ``$x.A``, ``(pipeline).A``, ``"strings"``
  with Go escapes, raw backquoted strings, ``'c'`` runes, numbers, ``true``, ``false`` and
  ``nil``; function calls with space-separated arguments and ``|`` pipes;
* ``{{ $x := ... }}`` and ``{{ $x = ... }}`` with Go's block scoping;
* ``if`` / ``else if`` / ``else``, ``with`` / ``else with`` / ``else``, and ``range`` over
  lists, tuples, dicts (in sorted key order, as Go sorts map keys) and ints, with ``else``,
  ``break`` and ``continue``;
* functions ``and or not eq ne lt le gt ge len index slice print printf println html js
  urlquery`` plus Ollama's ``json`` and ``currentDate``.

Deliberate differences from Go, made for Python data: a missing key or ``None`` prints as
``""`` (never ``<no value>``), has length 0, ranges zero times and has ``None`` fields; dicts
and lists print as compact JSON (as Ollama's tool types do); ``len``, ``slice`` and ``index``
count code points rather than bytes; ``printf``'s ``%s``/``%v`` print any value as an action
does; ints and floats compare by value; JSON floats are written as Python writes them.

Rejected with :class:`TemplateError`: ``template``, ``define`` and ``block``; method calls;
unknown functions and undefined variables (at parse time); nesting deeper than ``_MAX_DEPTH``;
and renders whose ``range`` loops run more than ``MAX_RANGE_ITERATIONS`` iterations in total.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote_plus

__all__ = ["MAX_RANGE_ITERATIONS", "GoTemplate", "TemplateError"]

MAX_RANGE_ITERATIONS = 1_000_000
_MAX_DEPTH: Final = 100
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
_SIMPLE_ESCAPES: Final = dict(zip("abfnrtv\\'\"", "\a\b\f\n\r\t\v\\'\"", strict=True))
_QUOTE_ESCAPES: Final = {v: "\\" + k for k, v in _SIMPLE_ESCAPES.items() if k != "'"}
_HTML_ESCAPES: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;", "\0": "\ufffd"}
)
_JS_RE: Final = re.compile(r"[\\'\"<>&=\x00-\x1f]|[^\x00-\x7f]")
_VERB_RE: Final = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d*))?(.?)", re.DOTALL)


class TemplateError(ValueError):
    """A template failed to parse or to render; the message says what and where."""


class _FuncError(Exception):
    """Raised by built-in functions; the caller turns it into a positioned TemplateError."""


class _LoopExit(Exception):
    """``{{break}}`` or ``{{continue}}``; args[0] says which."""


def _error(src: str, pos: int, msg: str) -> TemplateError:
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
            raise _error(self.src, start, "unclosed comment")
        if self.src.startswith("}}", end + 2):
            return end + 4, False
        if self.src.startswith(_RIGHT_TRIMS, end + 2):
            return end + 6, True
        raise _error(self.src, start, "comment ends before closing delimiter '}}'")

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
            return _error(self.src, start, "unclosed action: missing '}}'")
        if self.src[pos] in "\"'`":
            return _error(self.src, pos, "unterminated quoted string or character constant")
        hint = (
            " (a comment must start right after '{{' or '{{- ')"
            if self.src.startswith("/*", pos)
            else ""
        )
        return _error(self.src, pos, f"unrecognized character in action: {self.src[pos]!r}{hint}")

    def token(self, kind: str, raw: str, pos: int, spaced: bool) -> _Tok:
        value: Any = raw
        if kind == "string":
            value = self.unescape(raw[1:-1], pos)
        elif kind == "raw":
            kind, value = "string", raw[1:-1].replace("\r", "")
        elif kind == "char":
            kind, value = "number", self.unescape(raw[1:-1], pos)
            if len(value) != 1:
                raise _error(self.src, pos, f"invalid character constant {raw}")
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
            raise _error(self.src, pos, f"bad number syntax: {raw!r}") from None

    def unescape(self, body: str, pos: int) -> str:
        """Decode Go escapes; ``\\x`` and octal escapes are bytes, as in Go."""
        buf, i = bytearray(), 0
        while (j := body.find("\\", i)) >= 0:
            buf += body[i:j].encode()
            m = _ESCAPE_RE.match(body, j)
            code = int(m[4] or m[5], 16) if m and (m[4] or m[5]) else 0
            if not m or (m[3] and int(m[3], 8) > 255) or 0xD800 <= code < 0xE000 or code > 0x10FFFF:
                raise _error(self.src, pos, f"invalid escape sequence in {body!r}")
            if m[1]:
                buf += _SIMPLE_ESCAPES[m[1]].encode()
            elif m[2] or m[3]:
                buf.append(int(m[2], 16) if m[2] else int(m[3], 8))
            else:
                buf += chr(code).encode()
            i = m.end()
        buf += body[i:].encode()
        return buf.decode("utf-8", errors="replace")


# -- AST and parser -------------------------------------------------------------------------


@dataclass(slots=True)
class _Operand:
    pos: int
    kind: str  # const, dot (also .Field), var, func or paren
    value: Any  # the constant, variable or function name, or the _Pipe of a paren
    names: list[str] = field(default_factory=list)  # field lookups applied to the value


@dataclass(slots=True)
class _Pipe:
    pos: int
    decls: list[str]
    is_assign: bool
    cmds: list[list[_Operand]]


@dataclass(slots=True)
class _Node:
    pos: int
    kind: str  # action, if, range, with, break or continue; plain text is a str
    pipe: _Pipe
    body: list[str | _Node] = field(default_factory=list)
    orelse: list[str | _Node] = field(default_factory=list)


class _Parser:
    def __init__(self, src: str) -> None:
        self.src, self.toks, self.i = src, _Lexer(src).run(), 0
        self.vars, self.loops, self.depth = ["$"], 0, 0
        self.refs: set[str] = set()

    def error(self, pos: int, msg: str) -> TemplateError:
        return _error(self.src, pos, msg)

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
        if self.depth > _MAX_DEPTH:
            raise self.error(pos, f"template nested more than {_MAX_DEPTH} levels deep")

    def parse(self) -> list[str | _Node]:
        nodes, stop = self.parse_list()
        if stop.kind != "eof":
            msg = f"unexpected {{{{{stop.value}}}}}: there is no open if/range/with block"
            raise self.error(stop.pos, msg)
        return nodes

    def parse_list(self) -> tuple[list[str | _Node], _Tok]:
        """Parse up to ``{{end}}``, ``{{else`` or EOF; return the nodes and that token."""
        nodes: list[str | _Node] = []
        while (tok := self.next()).kind != "eof":
            if tok.kind == "text":
                nodes.append(tok.value)
            elif isinstance(node := self.action(tok), _Tok):
                return nodes, node
            else:
                nodes.append(node)
        return nodes, tok

    def action(self, left: _Tok) -> _Node | _Tok:
        if (tok := self.peek()).kind != "keyword":
            pipe = self.pipeline("command", decl=True)
            self.expect("right", "command")
            return _Node(left.pos, "action", pipe)
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
        return tok if kw == "end" else _Node(tok.pos, kw, _Pipe(tok.pos, [], False, []))

    def control(self, kw: _Tok) -> _Node:
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
        return _Node(kw.pos, kw.value, pipe, body, orelse)

    def else_branch(self, kw: _Tok) -> list[str | _Node]:
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

    def pipeline(self, context: str, decl: bool) -> _Pipe:
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
        return _Pipe(pos, decls, is_assign, cmds)

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

    def command(self, context: str) -> list[_Operand]:
        pos, args = self.peek().pos, list[_Operand]()
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

    def operand(self) -> _Operand:
        tok = self.next()
        kinds = {"field": "dot", "ident": "func", "(": "paren", "var": "var", "dot": "dot"}
        kind = kinds.get(tok.kind, "const")
        op = _Operand(tok.pos, kind, tok.value, [tok.value] if tok.kind == "field" else [])
        if kind == "const" and tok.kind not in ("string", "number", "bool", "nil"):
            raise self.error(tok.pos, f"unexpected {_describe(tok)} in operand")
        if kind == "func" and tok.value not in _FUNCS:
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


# -- values and functions ---------------------------------------------------------------------


def _type_name(v: Any) -> str:
    names = {bool: "bool", int: "int", float: "float64", str: "string", type(None): "nil"}
    return names.get(type(v), type(v).__name__)


def _truth(v: Any) -> bool:
    try:
        return bool(v)
    except (TypeError, ValueError):  # objects that refuse bool() count as set, like Go structs
        return True


def _format_float(f: float) -> str:
    """Format like Go's ``%v`` (shortest ``%g``): exponent form below 1e-4 and from 1e6."""
    if math.isnan(f) or math.isinf(f):
        return "NaN" if math.isnan(f) else ("+Inf" if f > 0 else "-Inf")
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(f)).as_tuple()
    point = len(digit_tuple) + int(exponent)
    digits, prefix = "".join(map(str, digit_tuple)).rstrip("0"), "-" if sign else ""
    if not -4 <= point - 1 < 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if point < 1 else '+'}{abs(point - 1):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"


def _json_default(obj: Any) -> Any:
    if callable(dump := getattr(obj, "model_dump", None)):
        return dump()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _to_json(v: Any) -> str:
    try:
        return json.dumps(
            v, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_json_default
        )
    except (TypeError, ValueError) as exc:
        raise _FuncError(f"cannot encode as JSON: {exc}") from None


def _to_text(v: Any) -> str:
    """How an action prints a value."""
    if v is None or isinstance(v, str):
        return v or ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _format_float(v)
    if isinstance(v, Mapping | list | tuple):
        return _to_json(v)
    return str(v)


def _go_quote(s: str) -> str:
    def escape(ch: str) -> str:
        if ch in _QUOTE_ESCAPES or ch.isprintable():
            return _QUOTE_ESCAPES.get(ch, ch)
        return f"\\x{ord(ch):02x}" if ord(ch) < 0x80 else f"\\u{ord(ch):04x}"

    return '"' + "".join(map(escape, s)) + '"'


def _js_char(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in "\\'\"":
        return "\\" + ch
    return ch if ord(ch) >= 0x80 and ch.isprintable() else f"\\u{ord(ch):04X}"


def _kind(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return _type_name(v)
    return "number" if isinstance(v, int | float) else "string" if isinstance(v, str) else "other"


def _equal(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if "nil" in (ka, kb):
        return ka == kb
    if ka != kb:
        raise _FuncError(f"incompatible types for comparison: {_type_name(a)}, {_type_name(b)}")
    return bool(a == b)


def _order(a: Any, b: Any) -> int:
    ka, kb = _kind(a), _kind(b)
    if ka != kb or ka not in ("number", "string"):
        raise _FuncError(f"incompatible types for comparison: {_type_name(a)}, {_type_name(b)}")
    return -1 if a < b else int(a > b)


def _int_arg(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _FuncError(f"cannot index with a value of type {_type_name(v)}")
    return v


def _fn_len(args: list[Any]) -> int:
    if args[0] is None or isinstance(args[0], Sized):
        return 0 if args[0] is None else len(args[0])
    raise _FuncError(f"len of type {_type_name(args[0])}")


def _fn_index(args: list[Any]) -> Any:
    value = args[0]
    for key in args[1:]:
        if isinstance(value, Mapping):
            try:
                value = value.get(key)
            except TypeError:  # unhashable key
                raise _FuncError(f"cannot index a map with a {_type_name(key)}") from None
        elif isinstance(value, list | tuple | str):
            if not 0 <= (i := _int_arg(key)) < len(value):
                raise _FuncError(f"index out of range: {i}")
            value = ord(value[i]) if isinstance(value, str) else value[i]
        else:
            raise _FuncError(f"can't index item of type {_type_name(value)}")
    return value


def _fn_slice(args: list[Any]) -> Any:
    value, idx = args[0], [_int_arg(i) for i in args[1:]]
    if not isinstance(value, list | tuple | str) or (len(idx) == 3 and isinstance(value, str)):
        raise _FuncError(f"can't {len(idx)}-index slice item of type {_type_name(value)}")
    start = idx[0] if idx else 0
    stop = idx[1] if len(idx) > 1 else len(value)
    if not 0 <= start <= stop <= (idx[2] if len(idx) > 2 else len(value)) <= len(value):
        raise _FuncError(f"slice bounds out of range [{start}:{stop}] with length {len(value)}")
    return value[start:stop]


def _sprint(args: list[Any]) -> str:
    """Go's fmt.Sprint: a space between operands when neither is a string."""
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_to_text(arg))
    return "".join(out)


def _format_verb(verb: str, v: Any, prec: str | None) -> str:
    if verb in ("s", "v"):
        text = _to_text(v)
        return text[: int(prec or 0)] if prec is not None and verb == "s" else text
    if verb == "q":
        return _go_quote(_to_text(v))
    if verb == "d" and isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    if verb == "t" and isinstance(v, bool):
        return "true" if v else "false"
    if verb == "f" and isinstance(v, int | float) and not isinstance(v, bool):
        return f"{v:.{int(prec or 0) if prec is not None else 6}f}"
    return f"%!{verb}({_type_name(v)}={_to_text(v)})"


def _fn_printf(args: list[Any]) -> str:
    if not isinstance(args[0], str):
        raise _FuncError(f"format must be a string, not {_type_name(args[0])}")
    pending = list(args[1:])

    def substitute(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb in ("%", ""):
            return "%" if verb else "%!(NOVERB)"
        if not pending:
            return f"%!{verb}(MISSING)"
        text, size = _format_verb(verb, pending.pop(0), prec), int(width or 0)
        if "-" in flags:
            return text.ljust(size)
        if "0" in flags and text.startswith("-"):
            return "-" + text[1:].rjust(size - 1, "0")
        return text.rjust(size, "0" if "0" in flags else " ")

    out = _VERB_RE.sub(substitute, args[0])
    if pending:
        out += "%!(EXTRA " + ", ".join(f"{_type_name(v)}={_to_text(v)}" for v in pending) + ")"
    return out


def _lazy(args: list[Any]) -> Any:  # placeholder: _Exec.call evaluates "and"/"or" lazily
    raise AssertionError("unreachable")


_FUNCS: Final[dict[str, tuple[Callable[[list[Any]], Any], int, int | None]]] = {
    "and": (_lazy, 1, None),
    "or": (_lazy, 1, None),
    "not": (lambda a: not _truth(a[0]), 1, 1),
    "eq": (lambda a: any(_equal(a[0], b) for b in a[1:]), 2, None),
    "ne": (lambda a: not _equal(a[0], a[1]), 2, 2),
    "lt": (lambda a: _order(a[0], a[1]) < 0, 2, 2),
    "le": (lambda a: _order(a[0], a[1]) <= 0, 2, 2),
    "gt": (lambda a: _order(a[0], a[1]) > 0, 2, 2),
    "ge": (lambda a: _order(a[0], a[1]) >= 0, 2, 2),
    "len": (_fn_len, 1, 1),
    "index": (_fn_index, 1, None),
    "slice": (_fn_slice, 1, 4),
    "print": (_sprint, 0, None),
    "printf": (_fn_printf, 1, None),
    "println": (lambda a: " ".join(map(_to_text, a)) + "\n", 0, None),
    "html": (lambda a: _sprint(a).translate(_HTML_ESCAPES), 0, None),
    "js": (lambda a: _JS_RE.sub(_js_char, _sprint(a)), 0, None),
    "urlquery": (lambda a: quote_plus(_sprint(a), safe=""), 0, None),
    "json": (lambda a: _to_json(a[0]), 1, 1),
    "currentDate": (lambda a: datetime.date.today().isoformat(), 0, 0),
}
_NO_ARG: Final = object()


# -- evaluator --------------------------------------------------------------------------------


class _Exec:
    def __init__(self, src: str, data: Any) -> None:
        self.src, self.out = src, list[str]()
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.budget = MAX_RANGE_ITERATIONS

    def error(self, pos: int, msg: str) -> TemplateError:
        return _error(self.src, pos, msg)

    def walk(self, nodes: list[str | _Node], dot: Any) -> None:
        for node in nodes:
            if isinstance(node, str):
                self.out.append(node)
            elif node.kind == "action":
                value = self.pipeline(node.pipe, dot)
                try:
                    self.out.append("" if node.pipe.decls else _to_text(value))
                except _FuncError as exc:
                    raise self.error(node.pos, str(exc)) from None
            elif node.kind in ("if", "with"):
                mark = len(self.vars)
                value = self.pipeline(node.pipe, dot)
                if _truth(value):
                    self.walk(node.body, value if node.kind == "with" else dot)
                else:
                    self.walk(node.orelse, dot)
                del self.vars[mark:]
            elif node.kind == "range":
                self.range_loop(node, dot)
            else:
                raise _LoopExit(node.kind)

    def range_loop(self, node: _Node, dot: Any) -> None:
        mark, decls = len(self.vars), node.pipe.decls
        items = self.range_items(self.pipeline(node.pipe, dot, bind=False), node.pos)
        if not items:
            self.walk(node.orelse, dot)
        for key, elem in items:
            self.budget -= 1
            if self.budget < 0:
                raise self.error(node.pos, f"range ran over {MAX_RANGE_ITERATIONS} iterations")
            for name, value in zip(decls, [key, elem][2 - len(decls) :], strict=True):
                self.bind(name, value, node.pipe.is_assign, node.pos)
            try:
                self.walk(node.body, elem)
            except _LoopExit as exc:
                if exc.args[0] == "break":
                    break
            finally:
                del self.vars[mark:]

    def range_items(self, value: Any, pos: int) -> list[tuple[Any, Any]]:
        if value is None:
            return []
        if isinstance(value, Mapping):
            try:
                keys = sorted(value)
            except TypeError:  # unorderable keys: keep insertion order
                keys = list(value)
            return [(k, value[k]) for k in keys]
        if isinstance(value, list | tuple):
            return list(enumerate(value))
        if isinstance(value, int) and not isinstance(value, bool):
            if value > self.budget:
                raise self.error(pos, f"range ran over {MAX_RANGE_ITERATIONS} iterations")
            return [(i, i) for i in range(value)]
        raise self.error(pos, f"range can't iterate over {_type_name(value)}")

    def bind(self, name: str, value: Any, assign: bool, pos: int) -> None:
        if not assign:
            self.vars.append((name, value))
            return
        for k in range(len(self.vars) - 1, -1, -1):
            if self.vars[k][0] == name:
                self.vars[k] = (name, value)
                return
        raise self.error(pos, f"undefined variable {name}")

    def pipeline(self, pipe: _Pipe, dot: Any, bind: bool = True) -> Any:
        value: Any = _NO_ARG
        for cmd in pipe.cmds:
            if cmd[0].kind == "func" and not cmd[0].names:
                value = self.call(cmd[0], cmd[1:], dot, value)
            else:
                value = self.arg(cmd[0], dot)
        if bind and pipe.decls:
            self.bind(pipe.decls[0], value, pipe.is_assign, pipe.pos)
        return value

    def call(self, func: _Operand, args: list[_Operand], dot: Any, final: Any) -> Any:
        name, count = func.value, len(args) + (final is not _NO_ARG)
        impl, low, high = _FUNCS[name]
        if count < low or (high is not None and count > high):
            want = str(low) if low == high else f"at least {low}" if high is None else str(high)
            raise self.error(func.pos, f"wrong number of args for {name}: want {want} got {count}")
        if name in ("and", "or"):  # short-circuit, returning the deciding value like Go
            value: Any = None
            for arg in args:
                if _truth(value := self.arg(arg, dot)) == (name == "or"):
                    return value
            return value if final is _NO_ARG else final
        values = [self.arg(arg, dot) for arg in args] + ([] if final is _NO_ARG else [final])
        try:
            return impl(values)
        except _FuncError as exc:
            raise self.error(func.pos, f"error calling {name}: {exc}") from None

    def arg(self, op: _Operand, dot: Any) -> Any:
        if op.kind == "const":
            return op.value
        if op.kind == "func":
            value = self.call(op, [], dot, _NO_ARG)
        elif op.kind == "paren":
            value = self.pipeline(op.value, dot)
        elif op.kind == "var":
            value = next((v for n, v in reversed(self.vars) if n == op.value), None)
        else:
            value = dot
        for name in op.names:
            if isinstance(value, Mapping):
                value = value.get(name)
            elif value is not None:
                value = self.attribute(value, name, op.pos)
        return value

    def attribute(self, value: Any, name: str, pos: int) -> Any:
        plain = isinstance(value, str | int | float | list | tuple)
        if plain or name.startswith("_") or (found := getattr(value, name, _NO_ARG)) is _NO_ARG:
            raise self.error(pos, f"can't evaluate field {name} in type {_type_name(value)}")
        return found


# -- public API -------------------------------------------------------------------------------


class GoTemplate:
    """A parsed Go ``text/template``: parse once, render many times.

    A render keeps its state to itself, so one instance can be shared between threads.
    """

    def __init__(self, source: str) -> None:
        parser = _Parser(source)
        self._source = source
        self._nodes = parser.parse()
        self._refs = frozenset(parser.refs)

    def render(self, data: Mapping[str, Any]) -> str:
        """Execute the template with ``data`` as both ``.`` and ``$``."""
        run = _Exec(self._source, data)
        run.walk(self._nodes, data)
        return "".join(run.out)

    def references(self, field: str) -> bool:
        """Whether ``.field`` (anywhere, like Ollama's ``Template.Vars``) or ``$.field`` occurs."""
        return field in self._refs
