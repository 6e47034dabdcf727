"""`--filter`'s expression language: tokens, precedence, chains, null and type rules, errors with positions."""

from __future__ import annotations

import pytest

from mmmos.runtime.report.filter_expr import And, FilterSyntaxError, Not, Or, lookup, parse_filter, tokenize

ROW = {"path": "data/speech/a_1.wav", "PQ": 7.0, "PC": 3.0, "CE": 5.0, "CU": 6.0, "std": {"PQ": 0.3},
       "duration_s": 12.5, "windows": 2, "error": None, "ood": {"score": 0.2, "flag": False},
       "interval": {"PQ": [6.5, 7.5]}, "system_id": "17", "model": {"name": "aes", "sha256": "0123456789ab"}}


def ok(expr: str, row: dict | None = None) -> bool:
    return parse_filter(expr).matches(ROW if row is None else row)


def test_tokens_of_an_expression() -> None:
    kinds = [(t.kind, t.value) for t in tokenize("std.PQ<=0.5 AND path ~ 'sp\\'x' or not(-1 != CE)")]
    assert kinds == [("NAME", "std.PQ"), ("OP", "<="), ("NUMBER", 0.5), ("KEYWORD", "and"), ("NAME", "path"),
                     ("OP", "~"), ("STRING", "sp'x"), ("KEYWORD", "or"), ("KEYWORD", "not"), ("LPAREN", "("),
                     ("MINUS", "-"), ("NUMBER", 1.0), ("OP", "!="), ("NAME", "CE"), ("RPAREN", ")"),
                     ("END", None)]


@pytest.mark.parametrize(("expr", "expected"), [
    ("PQ>=6 and CE>=5", True),
    ("PQ>=6 and CE>5", False),
    ("PQ > 7 or CE == 5", True),
    ("PQ < 7 or PC <= 3", True),
    ("not PQ < 7", True),
    ("PQ == 7 and PC != 3", False),
    ("1e0 < PQ", True),
    ("PQ > -1.5", True),
])
def test_comparisons(expr: str, expected: bool) -> None:
    assert ok(expr) is expected


def test_and_binds_tighter_than_or_and_not_tightest() -> None:
    # false or (true and true) -> true; (false or true) and false would be false
    assert ok("PQ > 9 or PC < 5 and CE == 5")
    assert not ok("(PQ > 9 or PC < 5) and CE == 4")
    tree = parse_filter("not PQ > 9 or PC < 5 and CE == 5").root
    assert isinstance(tree, Or) and isinstance(tree.items[0], Not) and isinstance(tree.items[1], And)
    assert ok("not not PQ == 7")
    assert ok("not (PQ > 9 or PC > 9)")


def test_keywords_are_case_insensitive() -> None:
    assert ok("PQ >= 6 AND NOT CE > 5 Or False")


def test_chained_comparison_means_each_link() -> None:
    assert ok("5 <= PQ < 8")
    assert not ok("5 <= PQ < 7")
    assert ok("PC < CE < PQ")


def test_nested_fields_lists_and_truth_tests() -> None:
    assert ok("std.PQ < 0.5 and ood.score < 0.5 and interval.PQ.0 > 6 and model.name == 'aes'")
    assert ok("not ood.flag")
    assert not ok("ood.flag")
    assert lookup(ROW, "interval.PQ.1") == 7.5 and lookup(ROW, "interval.PQ.5") is None
    assert lookup({"a.b": 1}, "a.b") == 1


def test_missing_fields_are_null_and_never_order() -> None:
    row = {"path": "x.wav", "PQ": None, "CE": 5.0}
    assert not ok("PQ > 0", row) and not ok("PQ <= 10", row) and not ok("PQ == 3", row)
    assert ok("PQ == null", row) and ok("PQ != 3", row) and ok("nosuch == null", row)
    assert not ok("PQ", row) and ok("not PQ", row)


def test_strings_numbers_and_bools_compare_by_type() -> None:
    assert ok("path ~ 'speech/'") and ok("path !~ '^music'") and not ok("path ~ '\\.flac$'")
    assert ok("system_id == 17") and ok("system_id > 9")  # a numeric string compares as a number
    assert ok("path > 'a'") and not ok("path > 5") and ok("path != 5")
    assert ok("ood.flag == false") and not ok("ood.flag == 0") and not ok("ood.flag < true")
    assert ok('path == "data/speech/a_1.wav"')


@pytest.mark.parametrize(("expr", "column", "words"), [
    ("PQ>=", 5, "after '>='"),
    ("PQ >= 6 && CE > 5", 9, "use 'and'"),
    ("PQ >= 6 || CE > 5", 9, "use 'or'"),
    ("PQ = 6", 4, "use =="),
    ("(PQ > 5", 8, "expected ')' to close the '(' at column 1"),
    ("PQ > 5)", 7, "expected 'and', 'or' or the end"),
    ("PQ > 5 CE", 8, "found 'CE'"),
    ("", 1, "empty"),
    ("PQ > 'abc", 6, "never closed"),
    ("path ~ PQ", 6, "quoted regex"),
    ("path ~ '['", 8, "bad regex"),
    ("PQ >= 6and", 7, "runs into a name"),
    ("PQ > - CE", 6, "'-' must be followed by a number"),
    ("PQ # 5", 4, "unexpected character '#'"),
    ("and PQ > 5", 1, "expected a number"),
])
def test_errors_name_the_column_and_what_to_do(expr: str, column: int, words: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(expr)
    msg = str(info.value)
    assert words in msg and msg.endswith(f"at column {column}") and "\n" not in msg
    assert info.value.position == column - 1


def test_python_is_never_evaluated() -> None:
    for expr in ("__import__('os').system('true')", "PQ.__class__ > 0 or [1]", "lambda: 1"):
        try:
            f = parse_filter(expr)
        except FilterSyntaxError:
            continue
        assert f.matches(ROW) in (True, False)  # a plain field lookup at most, never a call


def test_fields_lists_every_field_with_its_position() -> None:
    f = parse_filter("PQ >= 6 and (std.CE < 1 or not ood.flag)")
    assert [(x.path, x.pos) for x in f.fields()] == [("PQ", 0), ("std.CE", 13), ("ood.flag", 31)]
