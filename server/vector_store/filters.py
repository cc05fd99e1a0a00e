"""Structured filters -> a Milvus boolean expression. Client text never becomes expression syntax: field names
are checked against a pattern and an allowed set, operators against a fixed list, and values are typed and
rendered as literals (strings quoted and escaped).

Metadata lives in a JSON field (``metadata`` in ``MilvusVectorStore``), addressed as ``metadata["label"]``;
a name in ``column_fields`` (the primary key ``id``) is addressed bare.

Literal rules, checked against Milvus 2.3.5 and Milvus Lite 3.2: strings are double-quoted with ``\\`` and
``"`` backslash-escaped and newline, carriage return and tab written as ``\\n``, ``\\r``, ``\\t`` (values with
quotes, backslashes, newlines, non-ASCII and the injection ``x" or id != "`` all round-trip to an exact match on
both); other control characters are refused. Floats must be finite. ``in`` on a JSON key is written as ORed
equalities: Milvus Lite refuses ``metadata["k"] in [...]`` and Milvus 2.3 fails on a list that mixes ints and
floats there (an internal assertion)."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Collection, Iterable, Sequence

import numpy as np

from server.vector_store.base import FILTER_OPS, FilterClause

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INT64 = (-(2**63), 2**63 - 1)
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class FilterError(ValueError):
    """An invalid filter clause (the message says which and why)."""


class AnyFieldName(Collection):
    """An "allowed set" that admits every well-formed name: for callers without a fixed metadata schema."""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and FIELD_NAME.match(name) is not None

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def quote_string(value: str, max_len: int = 1024) -> str:
    """A Milvus expression string literal for ``value``."""
    if len(value) > max_len:
        raise FilterError(f"string value longer than {max_len} characters")
    if _BAD_CHARS.search(value):
        raise FilterError("string value contains a control character that cannot be used in a filter")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def _literal(value: object, what: str, max_len: int) -> tuple[str, str]:
    """(kind, rendered literal) for a scalar; kind is bool, number or str."""
    if isinstance(value, bool | np.bool_):
        return "bool", "true" if value else "false"
    if isinstance(value, numbers.Integral):
        v = int(value)
        if not _INT64[0] <= v <= _INT64[1]:
            raise FilterError(f"{what}: integer {v} is outside the 64-bit range")
        return "number", str(v)
    if isinstance(value, numbers.Real):
        f = float(value)
        if not math.isfinite(f):
            raise FilterError(f"{what}: value must be a finite number, not {f}")
        text = repr(f)
        return "number", text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return "str", quote_string(value, max_len)
    raise FilterError(f"{what}: value must be an int, float, bool or str, not {type(value).__name__}")


def _clause(clause: FilterClause, allowed: Collection[str], column_fields: Collection[str], json_field: str | None,
            max_in: int, max_len: int) -> str:
    name = clause.field
    if not isinstance(name, str) or not FIELD_NAME.match(name):
        raise FilterError(f"invalid filter field name {name!r}: use letters, digits and _ (not first), "
                          "at most 64 characters")
    if name not in allowed:
        raise FilterError(f"field {name!r} cannot be filtered on")
    op = clause.op
    if op not in FILTER_OPS:
        raise FilterError(f"invalid filter operator {op!r} for {name!r}: use one of {', '.join(FILTER_OPS)}")
    is_json = json_field is not None and name not in column_fields
    ref = f'{json_field}["{name}"]' if is_json else name
    what = f"filter on {name!r}"

    if op == "in":
        values = clause.value
        if isinstance(values, np.ndarray) and values.ndim == 1:
            values = values.tolist()
        if isinstance(values, str | bytes) or not isinstance(values, Sequence | set | frozenset):
            raise FilterError(f"{what}: 'in' needs a list of values")
        values = list(values)
        if not values:
            raise FilterError(f"{what}: 'in' needs at least one value")
        if len(values) > max_in:
            raise FilterError(f"{what}: 'in' accepts at most {max_in} values")
        rendered = [_literal(v, what, max_len) for v in values]
        kinds = {k for k, _ in rendered}
        if len(kinds) > 1:
            raise FilterError(f"{what}: 'in' values must all be of one type (numbers, strings or booleans)")
        literals = list(dict.fromkeys(text for _, text in rendered))
        if is_json:
            if len(literals) == 1:
                return f"{ref} == {literals[0]}"
            return "(" + " or ".join(f"{ref} == {lit}" for lit in literals) + ")"
        return f"{ref} in [{', '.join(literals)}]"

    if isinstance(clause.value, list | tuple | set | frozenset | dict | np.ndarray):
        raise FilterError(f"{what}: {op!r} needs a single value (use 'in' for a list)")
    kind, literal = _literal(clause.value, what, max_len)
    if kind == "bool" and op not in ("==", "!="):
        raise FilterError(f"{what}: booleans support only == and !=")
    return f"{ref} {op} {literal}"


def build_filter(clauses: Iterable[FilterClause] | None, allowed_fields: Collection[str], *,
                 json_field: str | None = "metadata", column_fields: Collection[str] = ("id",),
                 max_clauses: int = 32, max_in: int = 256, max_string_len: int = 1024) -> str:
    """The Milvus expression for ``clauses`` ANDed ("" for none). Raises ``FilterError`` (a ValueError) with a
    clear message for a name not matching ``FIELD_NAME`` or not in ``allowed_fields``, an unknown operator, a
    value of the wrong type, NaN/inf, an unsafe string, or a list too long.

    ``json_field``: the JSON field holding metadata (None: metadata keys are top-level / dynamic fields);
    ``column_fields``: names addressed as top-level scalar fields (the primary key)."""
    clauses = list(clauses or [])
    if len(clauses) > max_clauses:
        raise FilterError(f"at most {max_clauses} filter clauses")
    parts = []
    for c in clauses:
        if not isinstance(c, FilterClause):
            raise FilterError(f"filter clauses must be FilterClause, not {type(c).__name__}")
        parts.append(_clause(c, allowed_fields, column_fields, json_field, max_in, max_string_len))
    return " and ".join(parts)
