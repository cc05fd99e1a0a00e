"""Between protobuf messages and plain Python values; every value that comes in passes ``server.validation``."""

from __future__ import annotations

import numpy as np

from server.calibration import EXACT, NEAR_DUPLICATE, SIMILAR
from server.settings import Settings
from server.validation import (
    InvalidRequest,
    check_filter,
    check_filters,
    check_metadata,
    check_vector,
)
from server.vector_store.base import FilterClause
from visualsearch.v1 import search_pb2 as pb

OPS = {pb.FILTER_OP_EQ: "==", pb.FILTER_OP_NE: "!=", pb.FILTER_OP_LT: "<", pb.FILTER_OP_LE: "<=",
       pb.FILTER_OP_GT: ">", pb.FILTER_OP_GE: ">=", pb.FILTER_OP_IN: "in"}


def value_to_python(v: pb.Value):
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidRequest("a metadata/filter value is empty: set one of string/int/double/bool")
    if kind == "list_value":
        return [value_to_python(x) for x in v.list_value.values]
    return getattr(v, kind)


def python_to_value(x) -> pb.Value:
    if isinstance(x, bool):
        return pb.Value(bool_value=x)
    if isinstance(x, int):
        return pb.Value(int_value=x)
    if isinstance(x, float):
        return pb.Value(double_value=x)
    if isinstance(x, list | tuple):
        return pb.Value(list_value=pb.ValueList(values=[python_to_value(i) for i in x]))
    return pb.Value(string_value=str(x))


def metadata_from_proto(m, settings: Settings) -> dict:
    return check_metadata({key: value_to_python(value) for key, value in m.items()}, settings.max_metadata_bytes,
                          settings.max_string_value_bytes)


def metadata_to_proto(metadata: dict, fields: list[str] | None = None) -> dict[str, pb.Value]:
    keys = [k for k in metadata if not fields or k in fields]
    return {k: python_to_value(metadata[k]) for k in keys if metadata[k] is not None}


def filters_from_proto(clauses, settings: Settings) -> tuple[FilterClause, ...]:
    return check_filters([check_filter(c.field, OPS.get(c.op, ""), value_to_python(c.value), settings.filter_fields,
                                       settings.max_filter_in_values, settings.max_string_value_bytes)
                          for c in clauses], settings.max_filter_clauses)


def vector_from_proto(v: pb.Vector, dim: int) -> np.ndarray:
    return check_vector(v.values, dim)


VERDICTS: dict[int, str] = {pb.VERDICT_SIMILAR: SIMILAR, pb.VERDICT_NEAR_DUPLICATE: NEAR_DUPLICATE,
                             pb.VERDICT_EXACT: EXACT}
VERDICT_PROTO = {name: pb.Verdict.ValueType(value) for value, name in VERDICTS.items()}
POLICIES: dict[int, str] = {pb.DUPLICATE_POLICY_UNSPECIFIED: "allow", pb.DUPLICATE_POLICY_ALLOW: "allow",
            pb.DUPLICATE_POLICY_FLAG: "flag", pb.DUPLICATE_POLICY_SKIP: "skip", pb.DUPLICATE_POLICY_REJECT: "reject"}
# the action reported for an item the gate matched (ALLOW reports nothing)
POLICY_PROTO = {name: pb.DuplicatePolicy.ValueType(value) for value, name in POLICIES.items() if name != "allow"}


def verdict_from_proto(value: int, what: str = "min_verdict") -> str | None:
    """A verdict name, or None for UNSPECIFIED (no verdict asked for)."""
    if value == pb.VERDICT_UNSPECIFIED:
        return None
    if value not in VERDICTS:
        raise InvalidRequest(f"{what} {value} is not a verdict: use SIMILAR, NEAR_DUPLICATE or EXACT")
    return VERDICTS[value]


def policy_from_proto(value: int) -> str:
    if value not in POLICIES:
        raise InvalidRequest(f"duplicate_policy {value} is unknown: use ALLOW, FLAG, SKIP or REJECT")
    return POLICIES[value]
