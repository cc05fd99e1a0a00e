"""Every rule a request must satisfy, checked once, at the gateway's edge: ids, metadata, vectors, filters, top_k.

What passes is safe for any vector store: the store renders it (escaping, expressions) and checks only what its
own schema decides (a collection's dimension). Sizes are counted the way they are stored: an id in UTF-8 bytes
(Milvus's VARCHAR ``max_length`` counts bytes: 128 two-byte letters fill a 256 limit), metadata as the UTF-8 bytes
of the JSON document Milvus keeps."""

from __future__ import annotations

import json
import math
import re

import numpy as np

from server.vector_store.base import FIELD_NAME, FILTER_OPS, UNUSABLE_CHARS, FilterClause, FilterValue

RESERVED_FIELDS = frozenset({"id", "vector"})
INT64 = (-(2**63), 2**63 - 1)
ID_UNUSABLE_CHARS = re.compile(r"[\x00-\x1f\x7f]")  # ids: no tab or newline either (they are looked up by value)


class InvalidRequest(ValueError):
    """The caller must change the request (INVALID_ARGUMENT); the message says what to change."""


def check_id(item_id: str, max_bytes: int) -> str:
    if not item_id:
        raise InvalidRequest("id is empty: every item needs a non-empty id")
    size = len(item_id.encode("utf-8"))
    if size > max_bytes:
        raise InvalidRequest(f"id is {size} bytes in UTF-8; the limit is {max_bytes} bytes")
    if ID_UNUSABLE_CHARS.search(item_id):
        raise InvalidRequest("id contains control characters")
    return item_id


def check_ids(ids: list[str], max_bytes: int, what: str, max_count: int | None = None) -> list[str]:
    if not ids:
        raise InvalidRequest(f"{what} needs at least one id")
    if max_count is not None and len(ids) > max_count:
        raise InvalidRequest(f"{what} takes at most {max_count} ids, got {len(ids)}")
    return [check_id(i, max_bytes) for i in ids]


def check_top_k(k: int, default: int, max_top_k: int) -> int:
    if k == 0:
        return default
    if k < 0 or k > max_top_k:
        raise InvalidRequest(f"top_k must be between 1 and {max_top_k}, got {k}")
    return k


def check_min_score(score: float, what: str = "min_score") -> float:
    """A score bound: cosine scores lie in [-1, 1]."""
    if not math.isfinite(score) or not -1.0 <= score <= 1.0:
        raise InvalidRequest(f"{what} must be a cosine score between -1 and 1, got {score}")
    return float(score)


def check_offset(offset: int, top_k: int, max_top_k: int) -> int:
    """Paging: the hits [offset, offset + top_k) of the ranking, which must lie within the first max_top_k."""
    if offset < 0:
        raise InvalidRequest(f"offset must be >= 0, got {offset}")
    if offset + top_k > max_top_k:
        raise InvalidRequest(f"offset + top_k is {offset + top_k}; the limit is {max_top_k}: page within the first "
                             f"{max_top_k} hits (or narrow the search with filters or min_score)")
    return offset


def check_field_name(name: str, what: str) -> str:
    if not FIELD_NAME.match(name):
        raise InvalidRequest(f"{what} {name[:80]!r} is not allowed: use letters, digits and _ (at most 64, not "
                             "starting with a digit)")
    return name


def check_scalar(value: object, what: str, max_string_bytes: int) -> FilterValue:
    """A metadata or filter value: bool, int (64-bit), finite float or string without unusable characters."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            raise InvalidRequest(f"{what}: integer {value} is outside the 64-bit range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequest(f"{what}: NaN and infinite values are not allowed")
        return value
    if isinstance(value, str):
        if len(value.encode("utf-8")) > max_string_bytes:
            raise InvalidRequest(f"{what}: string longer than {max_string_bytes} bytes")
        if UNUSABLE_CHARS.search(value):
            raise InvalidRequest(f"{what}: string contains a control character")
        return value
    raise InvalidRequest(f"{what}: a value must be a string, int, double or bool, not {type(value).__name__}")


def check_metadata(metadata: dict, max_bytes: int, max_string_bytes: int) -> dict:
    for key, value in metadata.items():
        check_field_name(key, "metadata key")
        if key in RESERVED_FIELDS:
            raise InvalidRequest(f"metadata key {key!r} is reserved ({', '.join(sorted(RESERVED_FIELDS))})")
        if isinstance(value, list):
            raise InvalidRequest(f"metadata {key!r}: values must be a string, int, double or bool, not a list")
        check_scalar(value, f"metadata {key!r}", max_string_bytes)
    size = metadata_bytes(metadata)
    if size > max_bytes:
        raise InvalidRequest(f"metadata is {size} bytes as JSON; the limit is {max_bytes}")
    return metadata


def metadata_bytes(metadata: dict) -> int:
    """The size of metadata as stored: the UTF-8 bytes of its JSON document."""
    return len(json.dumps(metadata, ensure_ascii=False, allow_nan=False).encode("utf-8"))


def check_vector(values, dim: int) -> np.ndarray:
    """A query or item vector -> float32 [dim] of unit norm (cosine needs a direction)."""
    x = np.asarray(values, dtype=np.float32)
    if x.shape != (dim,):
        raise InvalidRequest(f"vector has {x.size} values; this model's embeddings have {dim}")
    if not np.all(np.isfinite(x)):
        raise InvalidRequest("vector contains NaN or infinite values")
    norm = float(np.linalg.norm(x))
    if norm == 0:
        raise InvalidRequest("vector is all zeros: it has no direction to compare by cosine")
    return x / norm


def check_filter(field: str, op: str, value: FilterValue | list, allowed_fields: list[str], max_in: int,
                 max_string_bytes: int) -> FilterClause:
    if field not in allowed_fields:
        raise InvalidRequest(f"unknown filter field {field[:80]!r}; filterable fields: {', '.join(allowed_fields)}")
    check_field_name(field, "filter field")
    if op not in FILTER_OPS:
        raise InvalidRequest(f"filter on {field!r}: set op (EQ, NE, LT, LE, GT, GE or IN)")
    what = f"filter on {field!r}"
    if (op == "in") != isinstance(value, list):
        raise InvalidRequest(f"{what}: IN takes a list_value, other ops a single value")
    if isinstance(value, list):
        if not value:
            raise InvalidRequest(f"{what}: IN needs at least one value")
        if len(value) > max_in:
            raise InvalidRequest(f"{what}: IN accepts at most {max_in} values")
        values = tuple(check_scalar(v, what, max_string_bytes) for v in value)
        if len({_kind(v) for v in values}) > 1:
            raise InvalidRequest(f"{what}: IN values must all be of one type (numbers, strings or booleans)")
        return FilterClause(field, op, values)
    scalar = check_scalar(value, what, max_string_bytes)
    if isinstance(scalar, bool) and op not in ("==", "!="):
        raise InvalidRequest(f"{what}: booleans support only EQ and NE")
    return FilterClause(field, op, scalar)


def check_filters(clauses: list[FilterClause], max_clauses: int) -> tuple[FilterClause, ...]:
    if len(clauses) > max_clauses:
        raise InvalidRequest(f"at most {max_clauses} filter clauses, got {len(clauses)}")
    return tuple(clauses)


def _kind(v: FilterValue) -> str:
    return "bool" if isinstance(v, bool) else "number" if isinstance(v, int | float) else "str"


def check_region(x0: float, y0: float, x1: float, y1: float, is_image_query: bool) -> tuple[float, float, float, float]:
    """A search region: a box of the query image in normalised coordinates, 0 <= x0 < x1 <= 1 (y alike)."""
    if not is_image_query:
        raise InvalidRequest("region applies to image queries only: send the image, or leave region unset")
    box = (x0, y0, x1, y1)
    if not all(math.isfinite(v) for v in box):
        raise InvalidRequest("region has a NaN or infinite coordinate")
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise InvalidRequest(f"region ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is not a box inside the image: use normalised "
                             "coordinates with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
    return box


def check_explain(explain: bool, explain_png: bool, top_k: int, max_top_k: int) -> None:
    """explain embeds every hit's thumbnail: its cost grows with top_k, so it has its own bound."""
    if explain_png and not explain:
        raise InvalidRequest("explain_png draws the explanation: set explain too")
    if explain and top_k > max_top_k:
        raise InvalidRequest(f"explain takes top_k up to {max_top_k} (each hit's thumbnail is embedded), got {top_k}")
