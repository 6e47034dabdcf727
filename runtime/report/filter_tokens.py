"""The tokens of `--filter` expressions (see `filter_expr` for the language) and its syntax error."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

COMPARE_OPS = ("<=", ">=", "==", "!=", "!~", "<", ">", "~")
KEYWORDS = {"and", "or", "not", "true", "false", "null"}
# Common slips from other languages, answered with what to write instead.
_HINTS = {"&&": "use 'and'", "||": "use 'or'", "!": "use 'not' (or != to compare)", "=": "use == to compare",
          "&": "use 'and'", "|": "use 'or'"}
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")


class FilterSyntaxError(InputError):
    """A `--filter` expression that does not parse; `position` is the 0-based offset of the problem.

    Args:
        message: what is wrong and what to write instead.
        position: where in the expression (0-based; shown 1-based as a column).
        text: the whole expression.
    """

    def __init__(self, message: str, position: int, text: str) -> None:
        self.position = position
        self.text = text
        super().__init__(f"--filter {shlex.quote(text)}: {message} at column {position + 1}")


@dataclass(frozen=True)
class Token:
    """One token: `kind` is NUMBER, STRING, NAME, KEYWORD, OP, LPAREN, RPAREN, MINUS or END."""

    kind: str
    value: Any
    pos: int
    raw: str = ""


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens (the last one is END).

    Raises:
        FilterSyntaxError: an unknown character, an unclosed string, or a slip such as `&&` or `=`.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c in "()":
            tokens.append(Token("LPAREN" if c == "(" else "RPAREN", c, i))
            i += 1
            continue
        if c in "'\"":
            start = i
            value, i = _read_string(text, i)
            tokens.append(Token("STRING", value, start, text[start:i]))
            continue
        op = next((o for o in COMPARE_OPS if text.startswith(o, i)), None)
        if op is not None:
            tokens.append(Token("OP", op, i))
            i += len(op)
            continue
        slip = next((s for s in sorted(_HINTS, key=len, reverse=True) if text.startswith(s, i)), None)
        if slip is not None:
            raise FilterSyntaxError(f"'{slip}' is not an operator here ({_HINTS[slip]})", i, text)
        if c == "-":
            tokens.append(Token("MINUS", c, i))
            i += 1
            continue
        if m := _NUMBER.match(text, i):
            tokens.append(Token("NUMBER", float(m.group()), i, m.group()))
            i = m.end()
            if i < n and (text[i].isalpha() or text[i] == "_"):
                raise FilterSyntaxError(f"a number runs into a name ({text[m.start():i + 1]!r}); put a space or an "
                                        "operator between them", m.start(), text)
            continue
        if m := _NAME.match(text, i):
            word = m.group()
            kind = "KEYWORD" if word.lower() in KEYWORDS else "NAME"
            tokens.append(Token(kind, word.lower() if kind == "KEYWORD" else word, i))
            i = m.end()
            continue
        raise FilterSyntaxError(f"unexpected character {c!r}", i, text)
    tokens.append(Token("END", None, n))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a quoted string starting at `start`; backslash escapes the quote and itself."""
    quote, out, i = text[start], [], start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise FilterSyntaxError(f"the string opened here is never closed (add a closing {quote})", start, text)
