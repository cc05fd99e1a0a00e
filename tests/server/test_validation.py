"""The gateway's one rule set (server.validation): pure unit tests. The gateway tests send the same bad requests
over gRPC (test_gateway.py, tests/reliability/test_fuzz_requests.py); the store tests check that what passes here
is stored and found by real Milvus (test_vector_store.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from server.validation import (
    InvalidRequest,
    check_filter,
    check_filters,
    check_id,
    check_ids,
    check_metadata,
    check_top_k,
    check_vector,
    metadata_bytes,
)
from server.vector_store.base import FilterClause

ALLOWED = ["label", "source", "score", "flag", "id", "1abc"]


def clause(field, op, value, max_in=256, max_string_bytes=1024) -> FilterClause:
    return check_filter(field, op, value, ALLOWED, max_in, max_string_bytes)


# -- ids: counted in UTF-8 bytes, as Milvus's VARCHAR max_length counts them ----------------------------------
def test_id_limit_counts_bytes_not_characters():
    assert check_id("x" * 256, 256) == "x" * 256
    assert check_id("é" * 128, 256) == "é" * 128  # 128 characters, 256 bytes: at the limit
    with pytest.raises(InvalidRequest, match="257 bytes in UTF-8; the limit is 256"):
        check_id("x" * 257, 256)
    with pytest.raises(InvalidRequest, match="258 bytes"):
        check_id("é" * 129, 256)  # 129 characters, under a character limit, over the byte limit
    with pytest.raises(InvalidRequest, match="bytes"):
        check_id("😀" * 65, 256)  # 65 characters, 260 bytes


@pytest.mark.parametrize("bad", ["", "a\x00b", "tab\there", "new\nline", "del\x7f"])
def test_empty_ids_and_control_characters_are_refused(bad):
    with pytest.raises(InvalidRequest, match="empty|control"):
        check_id(bad, 256)


def test_id_lists():
    assert check_ids(["a", "b"], 256, "Get", max_count=2) == ["a", "b"]
    with pytest.raises(InvalidRequest, match="Delete needs at least one id"):
        check_ids([], 256, "Delete")
    with pytest.raises(InvalidRequest, match="at most 2 ids"):
        check_ids(["a", "b", "c"], 256, "Get", max_count=2)


# -- metadata: measured once, as the JSON document that is stored -------------------------------------------
def test_metadata_size_is_its_stored_json_in_bytes():
    m = {"caption": "é" * 10}
    assert metadata_bytes(m) == len('{"caption": "') + 20 + len('"}')
    limit = metadata_bytes(m)
    assert check_metadata(m, limit, 1024) == m
    with pytest.raises(InvalidRequest, match=f"{limit + 1} bytes as JSON; the limit is {limit}"):
        check_metadata({"caption": "é" * 10 + "x"}, limit, 1024)


@pytest.mark.parametrize(("metadata", "message"), [
    ({"id": 1}, "reserved"), ({"vector": 1}, "reserved"), ({"bad key": 1}, "not allowed"),
    ({"1abc": 1}, "not allowed"), ({"x": [1, 2]}, "not a list"), ({"x": math.nan}, "NaN"),
    ({"x": 2**63}, "64-bit"), ({"x": "nul\x00"}, "control character"), ({"x": None}, "not NoneType"),
])
def test_bad_metadata_is_refused(metadata, message):
    with pytest.raises(InvalidRequest, match=message):
        check_metadata(metadata, 16384, 1024)


# -- vectors and top_k -------------------------------------------------------------------------------------
def test_vectors_are_checked_and_normalised():
    v = check_vector([3.0, 4.0], 2)
    np.testing.assert_allclose(v, [0.6, 0.8])
    assert v.dtype == np.float32
    with pytest.raises(InvalidRequest, match="3 values; this model's embeddings have 2"):
        check_vector([1.0, 2.0, 3.0], 2)
    with pytest.raises(InvalidRequest, match="NaN"):
        check_vector([math.nan, 1.0], 2)
    with pytest.raises(InvalidRequest, match="all zeros"):
        check_vector([0.0, 0.0], 2)


def test_top_k():
    assert check_top_k(0, 10, 1000) == 10
    assert check_top_k(1000, 10, 1000) == 1000
    for bad in (-1, 1001):
        with pytest.raises(InvalidRequest, match="between 1 and 1000"):
            check_top_k(bad, 10, 1000)


# -- filters: every rule on a clause -------------------------------------------------------------------------
def test_valid_clauses_are_frozen_and_hashable():
    c = clause("label", "in", [1, 2])
    assert c == FilterClause("label", "in", (1, 2))
    assert hash(c) == hash(clause("label", "in", [1, 2]))
    assert {check_filters([c], 32): 1}  # a tuple of clauses can key a batch


def test_field_must_be_allowed_and_well_formed():
    with pytest.raises(InvalidRequest, match="unknown filter field 'secret'; filterable fields: label"):
        clause("secret", "==", 1)
    with pytest.raises(InvalidRequest, match="not allowed"):
        clause("1abc", "==", 1)  # even when an operator listed it


@pytest.mark.parametrize("op", ["=", "like", "or", "", "not in"])
def test_bad_operators_are_refused(op):
    with pytest.raises(InvalidRequest, match="set op"):
        clause("label", op, 1)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(InvalidRequest, match="NaN and infinite"):
        clause("score", "==", value)
    with pytest.raises(InvalidRequest, match="NaN and infinite"):
        clause("score", "in", [1.0, value])


def test_in_shape():
    with pytest.raises(InvalidRequest, match="IN takes a list_value"):
        clause("label", "in", 3)
    with pytest.raises(InvalidRequest, match="IN takes a list_value"):
        clause("label", "==", [1, 2])
    with pytest.raises(InvalidRequest, match="at least one"):
        clause("label", "in", [])
    with pytest.raises(InvalidRequest, match="one type"):
        clause("label", "in", [1, "1"])
    with pytest.raises(InvalidRequest, match="one type"):
        clause("label", "in", [True, 1])
    with pytest.raises(InvalidRequest, match="at most 3"):
        clause("label", "in", [1, 2, 3, 4], max_in=3)
    assert clause("label", "in", [1, 2.5]).value == (1, 2.5)  # ints and floats are both numbers


def test_integers_booleans_and_strings():
    assert clause("label", "==", 2**63 - 1).value == 2**63 - 1
    with pytest.raises(InvalidRequest, match="64-bit"):
        clause("label", "==", 2**63)
    with pytest.raises(InvalidRequest, match="booleans support only EQ and NE"):
        clause("flag", "<", True)
    with pytest.raises(InvalidRequest, match="control character"):
        clause("source", "==", "bell\x07")
    with pytest.raises(InvalidRequest, match="longer than 8 bytes"):
        clause("source", "==", "é" * 5, max_string_bytes=8)
    assert clause("source", "==", "line\nbreak").value == "line\nbreak"  # written as an escape


def test_clause_count():
    with pytest.raises(InvalidRequest, match="at most 2 filter clauses"):
        check_filters([clause("label", "==", 1)] * 3, 2)
