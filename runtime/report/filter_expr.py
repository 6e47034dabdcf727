"""`--filter`: a small, safe expression language over score rows: a recursive-descent parser over the tokens
of `filter_tokens`, and the rules by which a row matches.

Grammar (keywords are case-insensitive; nothing is ever passed to Python's `eval`)::

    expr       := or
    or         := and ("or" and)*
    and        := not ("and" not)*
    not        := "not" not | "(" expr ")" | comparison
    comparison := operand (OP operand)*            a chain: 5 <= PQ < 8 means 5 <= PQ and PQ < 8
    OP         := "<" | "<=" | ">" | ">=" | "==" | "!=" | "~" | "!~"   (~: the quoted regex is found in the value)
    operand    := NUMBER | -NUMBER | 'string' | "string" | true | false | null | FIELD
    FIELD      := name("." name)*                  PQ, duration_s, std.PQ, ood.score, model.name, interval.PQ.0

An operand alone is a truth test (`ood.flag`, `not ood.flag`). A field a row lacks is null; null compares
equal only to null and is never <, >, <= or >= anything. Numbers compare with numbers, strings with strings
(a string that reads as a number compares as one), so a type mismatch is false rather than an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .filter_tokens import FilterSyntaxError, Token, tokenize

_LITERALS = {"true": True, "false": False, "null": None}
__all__ = ["Filter", "FilterSyntaxError", "Token", "lookup", "parse_filter", "tokenize"]

# ------------------------------------------------------------------ syntax tree


@dataclass(frozen=True)
class Field:
    """A row field by dotted path (`std.PQ`)."""

    path: str
    pos: int

    def value(self, row: dict[str, Any]) -> Any:
        """The field's value in `row`, None when the row lacks it."""
        return lookup(row, self.path)


@dataclass(frozen=True)
class Literal:
    """A number, string, true, false or null."""

    literal: Any

    def value(self, row: dict[str, Any]) -> Any:
        """The literal itself."""
        return self.literal


Operand = Field | Literal


@dataclass(frozen=True)
class Compare:
    """A comparison chain: operands[0] ops[0] operands[1] ops[1] operands[2] ..."""

    operands: tuple[Operand, ...]
    ops: tuple[str, ...]
    patterns: tuple[re.Pattern[str] | None, ...]

    def test(self, row: dict[str, Any]) -> bool:
        """True when every link of the chain holds."""
        values = [o.value(row) for o in self.operands]
        return all(compare(op, values[k], values[k + 1], self.patterns[k]) for k, op in enumerate(self.ops))


@dataclass(frozen=True)
class Truth:
    """An operand alone: true when its value is truthy (null, 0, "" and false are false)."""

    operand: Operand

    def test(self, row: dict[str, Any]) -> bool:
        """The operand's truth."""
        v = self.operand.value(row)
        return bool(v) and not (isinstance(v, float) and math.isnan(v))


@dataclass(frozen=True)
class Not:
    """`not x`."""

    item: Node

    def test(self, row: dict[str, Any]) -> bool:
        """The negation."""
        return not self.item.test(row)


@dataclass(frozen=True)
class And:
    """`a and b and ...`."""

    items: tuple[Node, ...]

    def test(self, row: dict[str, Any]) -> bool:
        """True when all hold."""
        return all(i.test(row) for i in self.items)


@dataclass(frozen=True)
class Or:
    """`a or b or ...`."""

    items: tuple[Node, ...]

    def test(self, row: dict[str, Any]) -> bool:
        """True when any holds."""
        return any(i.test(row) for i in self.items)


Node = Compare | Truth | Not | And | Or


def lookup(row: dict[str, Any], path: str) -> Any:
    """A dotted field of a row: dict keys, and list indexes for numeric parts (`interval.PQ.0`); None if absent."""
    if path in row:
        return row[path]
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _number(v: Any) -> float | None:
    """`v` as a number (a numeric string too), else None; bools are not numbers."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def compare(op: str, a: Any, b: Any, pattern: re.Pattern[str] | None = None) -> bool:
    """Apply one comparison operator with the language's rules (see the module docstring)."""
    if op in ("~", "!~"):
        if a is None or isinstance(a, dict | list) or pattern is None:
            return op == "!~"
        found = pattern.search(a if isinstance(a, str) else str(a)) is not None
        return found if op == "~" else not found
    if a is None or b is None:
        return (a is None and b is None) if op == "==" else (op == "!=" and (a is None) != (b is None))
    if isinstance(a, str) and isinstance(b, str):
        pair: tuple[Any, Any] | None = (a, b)
    elif isinstance(a, bool) or isinstance(b, bool):
        pair = (a, b) if isinstance(a, bool) and isinstance(b, bool) else None
    else:
        x, y = _number(a), _number(b)
        pair = (x, y) if x is not None and y is not None else None
    if pair is None:  # unlike types: only != holds
        return op == "!="
    x, y = pair
    if op in ("==", "!="):
        return (x == y) == (op == "==")
    if isinstance(x, bool):
        return False
    return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]


# ------------------------------------------------------------------ parser


class _Parser:
    """Recursive descent over the token list; every error names its position."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.k = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.k]

    def error(self, message: str, tok: Token | None = None) -> FilterSyntaxError:
        return FilterSyntaxError(message, (tok or self.tok).pos, self.text)

    def keyword(self, word: str) -> bool:
        if self.tok.kind == "KEYWORD" and self.tok.value == word:
            self.k += 1
            return True
        return False

    def parse(self) -> Node:
        if self.tok.kind == "END":
            raise self.error("the expression is empty (e.g. write \"PQ>=6 and CE>=5\")")
        node = self.parse_or()
        if self.tok.kind != "END":
            raise self.error(f"expected 'and', 'or' or the end, found {self._describe(self.tok)}")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.keyword("or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.keyword("and"):
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self) -> Node:
        if self.keyword("not"):
            return Not(self.parse_not())
        if self.tok.kind == "LPAREN":
            open_tok = self.tok
            self.k += 1
            node = self.parse_or()
            if self.tok.kind != "RPAREN":
                raise self.error(f"expected ')' to close the '(' at column {open_tok.pos + 1}, "
                                 f"found {self._describe(self.tok)}")
            self.k += 1
            return node
        return self.parse_comparison()

    def parse_comparison(self) -> Node:
        operands, ops, patterns = [self.parse_operand()], [], []
        while self.tok.kind == "OP":
            op_tok = self.tok
            self.k += 1
            right_tok = self.tok
            right = self.parse_operand(after=op_tok)
            patterns.append(self._pattern(op_tok, right, right_tok))
            operands.append(right)
            ops.append(op_tok.value)
        if not ops:
            return Truth(operands[0])
        return Compare(tuple(operands), tuple(ops), tuple(patterns))

    def _pattern(self, op_tok: Token, right: Operand, right_tok: Token) -> re.Pattern[str] | None:
        if op_tok.value not in ("~", "!~"):
            return None
        if not (isinstance(right, Literal) and isinstance(right.literal, str)):
            raise self.error(f"'{op_tok.value}' needs a quoted regex on its right (e.g. path ~ \"speech/\")", op_tok)
        try:
            return re.compile(right.literal)
        except re.error as exc:
            raise self.error(f"bad regex {right.literal!r} ({exc})", right_tok) from None

    def parse_operand(self, after: Token | None = None) -> Operand:
        tok = self.tok
        if tok.kind == "MINUS":
            self.k += 1
            if self.tok.kind != "NUMBER":
                raise self.error("'-' must be followed by a number", tok)
            self.k += 1
            return Literal(-self.tokens[self.k - 1].value)
        if tok.kind in ("NUMBER", "STRING"):
            self.k += 1
            return Literal(tok.value)
        if tok.kind == "KEYWORD" and tok.value in _LITERALS:
            self.k += 1
            return Literal(_LITERALS[tok.value])
        if tok.kind == "NAME":
            self.k += 1
            return Field(tok.value, tok.pos)
        where = f" after '{after.value}'" if after is not None else ""
        raise self.error(f"expected a number, a quoted string or a field name{where}, found {self._describe(tok)}")

    @staticmethod
    def _describe(tok: Token) -> str:
        if tok.kind == "END":
            return "the end of the expression"
        if tok.kind == "STRING":
            return f"the string {tok.raw}"
        return repr(tok.raw or str(tok.value))


@dataclass(frozen=True)
class Filter:
    """A parsed `--filter` expression.

    Attributes:
        text: the expression as written.
        root: its syntax tree.
    """

    text: str
    root: Node

    def matches(self, row: dict[str, Any]) -> bool:
        """True when the row satisfies the expression (error rows are the caller's business)."""
        return self.root.test(row)

    def fields(self) -> list[Field]:
        """Every field the expression names, in order."""
        return list(_fields(self.root))


def _fields(node: Node | Operand) -> Iterator[Field]:
    if isinstance(node, Field):
        yield node
    elif isinstance(node, Compare):
        for o in node.operands:
            yield from _fields(o)
    elif isinstance(node, Truth):
        yield from _fields(node.operand)
    elif isinstance(node, Not):
        yield from _fields(node.item)
    elif isinstance(node, And | Or):
        for i in node.items:
            yield from _fields(i)


def parse_filter(text: str) -> Filter:
    """Parse a `--filter` expression.

    Raises:
        FilterSyntaxError: the expression does not parse (the message names the column and what to write).
    """
    return Filter(text=text, root=_Parser(text).parse())
