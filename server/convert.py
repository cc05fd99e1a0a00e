"""Between protobuf messages and plain Python values, with the validation every RPC shares."""

from __future__ import annotations

import math

import numpy as np

from server.vector_store.filters import FIELD_NAME
from visualsearch.v1 import search_pb2 as pb

RESERVED_FIELDS = {"id", "vector"}
OPS = {pb.FILTER_OP_EQ: "==", pb.FILTER_OP_NE: "!=", pb.FILTER_OP_LT: "<", pb.FILTER_OP_LE: "<=",
       pb.FILTER_OP_GT: ">", pb.FILTER_OP_GE: ">=", pb.FILTER_OP_IN: "in"}


class InvalidRequest(ValueError):
    """The caller must change the request (INVALID_ARGUMENT)."""


def value_to_python(v: pb.Value):
    kind = v.WhichOneof("kind")
    if kind is None:
        raise InvalidRequest("a metadata/filter value is empty: set one of string/int/double/bool")
    if kind == "list_value":
        return [value_to_python(x) for x in v.list_value.values]
    out = getattr(v, kind)
    if kind == "double_value" and not math.isfinite(out):
        raise InvalidRequest("NaN and infinite values are not allowed in metadata or filters")
    return out


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


def metadata_from_proto(m, max_bytes: int) -> dict:
    out = {}
    size = 0
    for key, value in m.items():
        if not FIELD_NAME.match(key) or key in RESERVED_FIELDS:
            raise InvalidRequest(f"metadata key {key[:80]!r} is not allowed: use letters, digits and _ "
                                 "(max 64, not starting with a digit; not 'id' or 'vector')")
        py = value_to_python(value)
        if isinstance(py, list):
            raise InvalidRequest(f"metadata {key!r}: values must be a string, int, double or bool, not a list")
        size += len(key) + (len(py.encode()) if isinstance(py, str) else 8)
        out[key] = py
    if size > max_bytes:
        raise InvalidRequest(f"metadata is {size} bytes; the limit is {max_bytes}")
    return out


def metadata_to_proto(metadata: dict, fields: list[str] | None = None) -> dict[str, pb.Value]:
    keys = [k for k in metadata if not fields or k in fields]
    return {k: python_to_value(metadata[k]) for k in keys if metadata[k] is not None}


def vector_from_proto(v: pb.Vector, dim: int) -> np.ndarray:
    x = np.asarray(v.values, dtype=np.float32)
    if x.shape != (dim,):
        raise InvalidRequest(f"vector has {x.size} values; this model's embeddings have {dim}")
    if not np.all(np.isfinite(x)):
        raise InvalidRequest("vector contains NaN or infinite values")
    norm = float(np.linalg.norm(x))
    if norm == 0:
        raise InvalidRequest("vector is all zeros: it has no direction to compare by cosine")
    return x / norm


def check_id(item_id: str, max_len: int) -> str:
    if not item_id:
        raise InvalidRequest("id is empty: every item needs a non-empty id")
    if len(item_id) > max_len:
        raise InvalidRequest(f"id is {len(item_id)} characters; the limit is {max_len}")
    # DEL too: Get and Delete look ids up in a Milvus expression, which cannot hold it (an id stored with it
    # could never be deleted).
    if any(ord(c) < 32 or c == "\x7f" for c in item_id):
        raise InvalidRequest("id contains control characters")
    return item_id
