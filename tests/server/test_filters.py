"""The filter -> Milvus expression builder: pure unit tests (no Milvus). The literals it emits are checked
against real Milvus 2.3.5 and Milvus Lite in test_vector_store.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.vector_store.base import FilterClause as F
from server.vector_store.filters import FIELD_NAME, AnyFieldName, FilterError, build_filter, quote_string

ALLOWED = {"label", "source", "score", "flag", "id"}


def expr(*clauses: F, allowed=ALLOWED, **kw) -> str:
    return build_filter(list(clauses), allowed, **kw)


def test_no_clauses_is_empty_expression():
    assert build_filter(None, ALLOWED) == ""
    assert build_filter([], ALLOWED) == ""


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
    assert expr(F("label", "in", [1, 2])) == '(metadata["label"] == 1 or metadata["label"] == 2)'
    assert expr(F("label", "in", [1, 2.5])) == '(metadata["label"] == 1 or metadata["label"] == 2.5)'
    assert expr(F("label", "in", (4,))) == 'metadata["label"] == 4'
    assert expr(F("label", "in", [1, 1, 2])) == '(metadata["label"] == 1 or metadata["label"] == 2)'
    assert expr(F("source", "in", ["a", 'b"c'])) == '(metadata["source"] == "a" or metadata["source"] == "b\\"c")'
    assert expr(F("label", "in", np.array([5, 6]))) == '(metadata["label"] == 5 or metadata["label"] == 6)'


def test_in_on_column_is_a_list():
    assert expr(F("id", "in", ["a", "b"])) == 'id in ["a", "b"]'


def test_dynamic_field_layout():
    assert expr(F("label", "in", [1, 2]), json_field=None) == "label in [1, 2]"
    assert expr(F("label", "==", 1), json_field=None) == "label == 1"


def test_numpy_scalars_are_accepted():
    assert expr(F("label", "==", np.int64(3))) == 'metadata["label"] == 3'
    assert expr(F("score", ">", np.float32(0.5))) == 'metadata["score"] > 0.5'
    assert expr(F("flag", "==", np.bool_(True))) == 'metadata["flag"] == true'


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


@pytest.mark.parametrize("name", [
    "id; drop", 'label"]', "1abc", "", "a b", "a-b", "x" * 65, "label or 1", "métadata", "$meta", 'a"', None, 3,
])
def test_bad_field_names_rejected(name):
    with pytest.raises(FilterError, match="invalid filter field name"):
        expr(F(name, "==", 1), allowed=AnyFieldName())


def test_field_must_be_allowed():
    with pytest.raises(FilterError, match="cannot be filtered on"):
        expr(F("secret", "==", 1))
    assert FIELD_NAME.match("secret")


def test_any_field_name_allows_well_formed_names_only():
    allowed = AnyFieldName()
    assert "label" in allowed and "_x9" in allowed
    assert "id; drop" not in allowed and 5 not in allowed
    assert expr(F("anything", "==", 1), allowed=allowed) == 'metadata["anything"] == 1'


@pytest.mark.parametrize("op", ["=", "like", "LIKE", "or", "&&", "not in", "", None, "== 1 or", "in "])
def test_bad_operators_rejected(op):
    with pytest.raises(FilterError, match="invalid filter operator"):
        expr(F("label", op, 1))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), np.float64("inf")])
def test_non_finite_numbers_rejected(value):
    with pytest.raises(FilterError, match="finite"):
        expr(F("score", "==", value))
    with pytest.raises(FilterError, match="finite"):
        expr(F("score", "in", [1.0, value]))


@pytest.mark.parametrize("value", [None, b"bytes", {"a": 1}, object(), 1 + 2j])
def test_untyped_values_rejected(value):
    with pytest.raises(FilterError):
        expr(F("label", "==", value))


def test_list_value_needs_in():
    with pytest.raises(FilterError, match="single value"):
        expr(F("label", "==", [1, 2]))


def test_in_needs_a_non_empty_homogeneous_bounded_list():
    with pytest.raises(FilterError, match="list of values"):
        expr(F("label", "in", 3))
    with pytest.raises(FilterError, match="list of values"):
        expr(F("source", "in", "abc"))
    with pytest.raises(FilterError, match="at least one"):
        expr(F("label", "in", []))
    with pytest.raises(FilterError, match="one type"):
        expr(F("label", "in", [1, "1"]))
    with pytest.raises(FilterError, match="one type"):
        expr(F("label", "in", [True, 1]))
    with pytest.raises(FilterError, match="at most 3"):
        expr(F("label", "in", [1, 2, 3, 4]), max_in=3)


def test_integer_range_and_booleans():
    assert expr(F("label", "==", 2**63 - 1)) == f'metadata["label"] == {2**63 - 1}'
    with pytest.raises(FilterError, match="64-bit"):
        expr(F("label", "==", 2**63))
    with pytest.raises(FilterError, match="booleans"):
        expr(F("flag", "<", True))


def test_unsafe_strings_rejected():
    with pytest.raises(FilterError, match="control character"):
        expr(F("source", "==", "nul\x00byte"))
    with pytest.raises(FilterError, match="control character"):
        expr(F("source", "==", "bell\x07"))
    with pytest.raises(FilterError, match="longer than"):
        expr(F("source", "==", "x" * 2000))


def test_limits_and_types_of_clauses():
    with pytest.raises(FilterError, match="at most 2 filter clauses"):
        build_filter([F("label", "==", 1)] * 3, ALLOWED, max_clauses=2)
    with pytest.raises(FilterError, match="FilterClause"):
        build_filter([("label", "==", 1)], ALLOWED)


def test_filter_error_is_a_value_error():
    assert issubclass(FilterError, ValueError)
