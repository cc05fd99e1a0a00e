"""The filter -> Milvus expression writer: pure unit tests (no Milvus). The literals it emits are checked
against real Milvus 2.3.5 and Milvus Lite in test_vector_store.py; the rules a clause must satisfy are
server.validation's (test_validation.py)."""

from __future__ import annotations

import pytest

from server.vector_store.base import FilterClause as F
from server.vector_store.filters import FilterError, build_filter, ids_expression, quote_string


def expr(*clauses: F, **kw) -> str:
    return build_filter(list(clauses), **kw)


def test_no_clauses_is_empty_expression():
    assert build_filter(()) == ""


@pytest.mark.parametrize(("clause", "expected"), [
    (F("label", "==", 3), 'metadata["label"] == 3'),
    (F("label", "!=", -7), 'metadata["label"] != -7'),
    (F("score", "<", 0.5), 'metadata["score"] < 0.5'),
    (F("score", "<=", 2.0), 'metadata["score"] <= 2.0'),
    (F("score", ">", 1e-07), 'metadata["score"] > 1e-07'),
    (F("score", ">=", 1e20), 'metadata["score"] >= 1e+20'),
    (F("flag", "==", True), 'metadata["flag"] == true'),
    (F("flag", "!=", False), 'metadata["flag"] != false'),
    (F("source", "==", "scan"), 'metadata["source"] == "scan"'),
    (F("source", "<", "m"), 'metadata["source"] < "m"'),
    (F("id", "==", "img1"), 'id == "img1"'),
])
def test_single_clause(clause, expected):
    assert expr(clause) == expected


def test_clauses_are_anded():
    assert expr(F("label", "==", 3), F("source", "==", "web")) == \
        'metadata["label"] == 3 and metadata["source"] == "web"'


def test_in_on_metadata_is_ored_equalities():
    # Milvus Lite refuses `metadata["k"] in [...]`; Milvus 2.3 asserts on mixed int/float lists there.
    assert expr(F("label", "in", (1, 2))) == '(metadata["label"] == 1 or metadata["label"] == 2)'
    assert expr(F("label", "in", (1, 2.5))) == '(metadata["label"] == 1 or metadata["label"] == 2.5)'
    assert expr(F("label", "in", (4,))) == 'metadata["label"] == 4'
    assert expr(F("label", "in", (1, 1, 2))) == '(metadata["label"] == 1 or metadata["label"] == 2)'
    assert expr(F("source", "in", ("a", 'b"c'))) == '(metadata["source"] == "a" or metadata["source"] == "b\\"c")'


def test_in_on_column_is_a_list():
    assert expr(F("id", "in", ("a", "b"))) == 'id in ["a", "b"]'
    assert ids_expression(['x"] or id in ["y']) == 'id in ["x\\"] or id in [\\"y"]'


def test_dynamic_field_layout():
    assert expr(F("label", "in", (1, 2)), json_field=None) == "label in [1, 2]"
    assert expr(F("label", "==", 1), json_field=None) == "label == 1"


@pytest.mark.parametrize(("value", "literal"), [
    ('x" or id != "', r'"x\" or id != \""'),
    ("back\\slash", r'"back\\slash"'),
    ("end\\", r'"end\\"'),
    ('a\\"b', r'"a\\\"b"'),
    ("it's", '"it\'s"'),
    ("line\nbreak\ttab\rcr", r'"line\nbreak\ttab\rcr"'),
    ("ünï€😀", '"ünï€😀"'),
    ("", '""'),
])
def test_string_escaping(value, literal):
    assert quote_string(value) == literal
    assert expr(F("source", "==", value)) == f'metadata["source"] == {literal}'


def test_injection_string_stays_inside_one_literal():
    e = expr(F("source", "==", 'x" or id != "'))
    # One comparison: the only unescaped quotes are the two delimiters.
    body = e.split("== ", 1)[1]
    unescaped = [i for i, ch in enumerate(body) if ch == '"' and body[i - 1] != "\\"]
    assert unescaped == [0, len(body) - 1]
    assert " or " not in e.replace('\\" or id != \\"', "")


@pytest.mark.parametrize("name", ["id; drop", 'label"]', "1abc", "", "a b", "label or 1", "métadata"])
def test_a_name_that_is_not_a_field_name_is_never_written(name):
    with pytest.raises(FilterError, match="invalid filter field name"):
        expr(F(name, "==", 1))


def test_unwritable_strings_are_refused():
    with pytest.raises(FilterError, match="control character"):
        expr(F("source", "==", "nul\x00byte"))
    with pytest.raises(FilterError, match="control character"):
        quote_string("bell\x07")


def test_filter_error_is_a_value_error():
    assert issubclass(FilterError, ValueError)
