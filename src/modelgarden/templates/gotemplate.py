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
unknown functions and undefined variables (at parse time); nesting deeper than
:data:`~modelgarden.templates.gotemplate_parse.MAX_DEPTH`; and renders whose ``range`` loops run
more than ``MAX_RANGE_ITERATIONS`` iterations in total. The lexer and parser live in
:mod:`modelgarden.templates.gotemplate_parse`; this module evaluates the parsed template.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Callable, Mapping, Sized
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote_plus

from modelgarden.templates.gotemplate_parse import (
    SIMPLE_ESCAPES,
    Node,
    Operand,
    Parser,
    Pipe,
    TemplateError,
    error_at,
)

__all__ = ["MAX_RANGE_ITERATIONS", "GoTemplate", "TemplateError"]

MAX_RANGE_ITERATIONS = 1_000_000
_QUOTE_ESCAPES: Final = {v: "\\" + k for k, v in SIMPLE_ESCAPES.items() if k != "'"}
_HTML_ESCAPES: Final = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&#34;", "'": "&#39;", "\0": "\ufffd"}
)
_JS_RE: Final = re.compile(r"[\\'\"<>&=\x00-\x1f]|[^\x00-\x7f]")
_VERB_RE: Final = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d*))?(.?)", re.DOTALL)


class _FuncError(Exception):
    """Raised by built-in functions; the caller turns it into a positioned TemplateError."""


class _LoopExit(Exception):
    """``{{break}}`` or ``{{continue}}``; args[0] says which."""


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
        return error_at(self.src, pos, msg)

    def walk(self, nodes: list[str | Node], dot: Any) -> None:
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

    def range_loop(self, node: Node, dot: Any) -> None:
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

    def pipeline(self, pipe: Pipe, dot: Any, bind: bool = True) -> Any:
        value: Any = _NO_ARG
        for cmd in pipe.cmds:
            if cmd[0].kind == "func" and not cmd[0].names:
                value = self.call(cmd[0], cmd[1:], dot, value)
            else:
                value = self.arg(cmd[0], dot)
        if bind and pipe.decls:
            self.bind(pipe.decls[0], value, pipe.is_assign, pipe.pos)
        return value

    def call(self, func: Operand, args: list[Operand], dot: Any, final: Any) -> Any:
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

    def arg(self, op: Operand, dot: Any) -> Any:
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
        parser = Parser(source, _FUNCS)
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
