"""Filter clauses -> a Milvus boolean expression. The clauses were validated at the gateway's edge
(``server.validation``); this module only writes them in Milvus's syntax, and client text never becomes syntax:
field names are only ever ``FIELD_NAME`` words, values are rendered as typed literals (strings quoted and escaped).

Metadata lives in a JSON field (``metadata`` in ``MilvusVectorStore``), addressed as ``metadata["label"]``;
a name in ``column_fields`` (the primary key ``id``) is addressed bare.

Literal rules, checked against Milvus 2.3.5 and Milvus Lite 3.2: strings are double-quoted with ``\\`` and
``"`` backslash-escaped and newline, carriage return and tab written as ``\\n``, ``\\r``, ``\\t`` (values with
quotes, backslashes, newlines, non-ASCII and the injection ``x" or id != "`` all round-trip to an exact match on
both); other control characters cannot be written. ``in`` on a JSON key is written as ORed equalities: Milvus Lite
refuses ``metadata["k"] in [...]`` and Milvus 2.3 fails on a list that mixes ints and floats there (an internal
assertion)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from server.vector_store.base import FIELD_NAME, UNUSABLE_CHARS, FilterClause, FilterValue

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


class FilterError(ValueError):
    """A clause that cannot be written as a Milvus expression (it skipped the gateway's validation)."""


def quote_string(value: str) -> str:
    """A Milvus expression string literal for ``value``."""
    if UNUSABLE_CHARS.search(value):
        raise FilterError("string value contains a control character that cannot be written in an expression")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def literal(value: FilterValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eE") else text + ".0"
    if isinstance(value, str):
        return quote_string(value)
    raise FilterError(f"a filter value must be an int, float, bool or str, not {type(value).__name__}")


def _clause(clause: FilterClause, column_fields: Collection[str], json_field: str | None) -> str:
    if not FIELD_NAME.match(clause.field):
        raise FilterError(f"invalid filter field name {clause.field[:80]!r}")
    is_json = json_field is not None and clause.field not in column_fields
    ref = f'{json_field}["{clause.field}"]' if is_json else clause.field
    if clause.op == "in":
        assert isinstance(clause.value, tuple)
        literals = list(dict.fromkeys(literal(v) for v in clause.value))
        if not is_json:
            return f"{ref} in [{', '.join(literals)}]"
        if len(literals) == 1:
            return f"{ref} == {literals[0]}"
        return "(" + " or ".join(f"{ref} == {lit}" for lit in literals) + ")"
    assert not isinstance(clause.value, tuple)
    return f"{ref} {clause.op} {literal(clause.value)}"


def build_filter(clauses: Iterable[FilterClause], *, json_field: str | None = "metadata",
                 column_fields: Collection[str] = ("id",)) -> str:
    """The Milvus expression for ``clauses`` ANDed ("" for none).

    ``json_field``: the JSON field holding metadata (None: metadata keys are top-level / dynamic fields);
    ``column_fields``: names addressed as top-level scalar fields (the primary key)."""
    return " and ".join(_clause(c, column_fields, json_field) for c in clauses)


def ids_expression(ids: list[str], id_field: str = "id") -> str:
    """``id in [...]`` with every id escaped as a string literal. pymilvus's ``ids=`` pastes ids into the
    expression unescaped, so an id like ``x'] or id in ['y`` would reach other rows."""
    return f"{id_field} in [{', '.join(quote_string(i) for i in ids)}]"
