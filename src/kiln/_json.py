"""JSON request bodies, parsed once and bounded (sans-IO).

Every endpoint that reads a JSON body (resources, batch, accounts) goes
through :func:`parse_body`: the media type is checked (415), the body is
parsed by orjson, refused when nested deeper than :data:`MAX_JSON_DEPTH`
levels (a deep body would fail far away, in a serializer or a backend's
JSON functions, with a 500) and when a string holds U+0000 (PostgreSQL
cannot store it: refused on every backend alike). Each refusal is a 400
(errno 107) naming what is wrong.

A body within the limits can still make a record beyond them: a merge adds
a body to a stored record, a JSON Patch ``copy`` doubles a value (seventeen
of them grow a record a hundred thousand times). :func:`apply_json_patch`
applies operations one by one and stops a document growing past the size
limit, and :func:`check_record` holds the record a request computed to the
body limits before it is stored: 400 deeper than :data:`MAX_JSON_DEPTH`
(with its ``{"data": ...}`` envelope), 413 larger than
``request.max_body_bytes``.
"""

from __future__ import annotations

from typing import Any

import jsonpatch
import orjson

from kiln.errors import ERRORS, HTTPError, invalid_parameter

__all__ = [
    "MAX_JSON_DEPTH",
    "apply_json_patch",
    "check_media_type",
    "check_record",
    "holds_nul",
    "json_too_deep",
    "parse_body",
    "parse_value",
]

#: Deepest JSON nesting a request body may have (the envelope counts). orjson
#: refuses to serialize past 255 levels, and responses add a few (``data``,
#: a batch's ``responses``), so the bound keeps well below that.
MAX_JSON_DEPTH = 100


def parse_body(
    raw: bytes, media_type: str | None, accepted: tuple[str, ...], *, empty: Any = None
) -> Any:
    """The JSON value of a request body of ``media_type``.

    :param accepted: the media types the endpoint takes (else 415).
    :param empty: the value of an empty (or blank) body.
    :raises HTTPError: 415 for another media type; 400 for invalid JSON, too
        deep a nesting or a NUL character.
    """
    check_media_type(media_type, accepted)
    if not raw.strip():
        return empty
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid_parameter("body", "body", f"Invalid JSON request body: {exc}") from None
    if json_too_deep(body):
        raise _too_deep()
    # Cheap test first: a NUL can only arrive as the escape \u0000.
    if b"\\u0000" in raw and holds_nul(body):
        raise invalid_parameter(
            "body", "body", "Strings cannot contain the NUL character (U+0000); remove it."
        )
    return body


def parse_value(
    value: Any, media_type: str | None, accepted: tuple[str, ...], *, check_nul: bool = True
) -> Any:
    """A body that arrived parsed (a batch sub-request's), checked as :func:`parse_body`
    checks one: media type, NUL characters (unless ``check_nul`` is false: its
    text had none); its depth was checked with the batch."""
    check_media_type(media_type, accepted)
    if check_nul and holds_nul(value):
        raise invalid_parameter(
            "body", "body", "Strings cannot contain the NUL character (U+0000); remove it."
        )
    return value


def check_record(record: Any, max_bytes: int | None) -> None:
    """Refuse a record a request computed (a merge, a JSON Patch) that a body
    could not have sent: 400 when, in its ``{"data": ...}`` envelope, it nests
    deeper than :data:`MAX_JSON_DEPTH`; 413 when its JSON is larger than
    ``max_bytes`` (``None``: no size limit)."""
    if json_too_deep(record, MAX_JSON_DEPTH - 1):
        raise _too_deep()
    if max_bytes is not None and len(orjson.dumps(record)) > max_bytes:
        raise _too_large(max_bytes)


def apply_json_patch(document: Any, operations: list[Any], max_bytes: int | None) -> Any:
    """``document`` (changed in place) with the RFC 6902 ``operations`` applied.

    The operations are applied one by one: a ``copy`` that would make the
    document larger than ``max_bytes`` stops there with a 413 (an estimate
    adds each copied value's size; the document is measured when the
    estimate crosses the limit), and a document nested too deep to measure
    or copy stops with a 400.

    :raises jsonpatch.JsonPatchException: (or JsonPointerException,
        TypeError) for an operation that does not apply.
    :raises HTTPError: 413 or 400 as above.
    """
    size = len(orjson.dumps(document)) if max_bytes is not None else 0
    try:
        for operation in operations:
            source = operation.get("from")
            if max_bytes is not None and operation.get("op") == "copy" and isinstance(source, str):
                copied = len(orjson.dumps(jsonpatch.JsonPointer(source).resolve(document)))
                if size + copied > max_bytes:
                    # What was removed since the last measure is not counted out.
                    size = len(orjson.dumps(document))
                    if size + copied > max_bytes:
                        raise _too_large(max_bytes)
                size += copied
            jsonpatch.apply_patch(document, [operation], in_place=True)
    except (orjson.JSONEncodeError, RecursionError):
        # orjson cannot serialize, nor deepcopy copy, what nests this deep.
        raise _too_deep() from None
    return document


def _too_deep() -> HTTPError:
    return invalid_parameter("body", "body", f"JSON nesting is limited to {MAX_JSON_DEPTH} levels.")


def _too_large(max_bytes: int) -> HTTPError:
    return HTTPError(
        413,
        ERRORS.REQUEST_TOO_LARGE,
        f"The record would be larger than request.max_body_bytes ({max_bytes} bytes).",
    )


def check_media_type(media_type: str | None, accepted: tuple[str, ...]) -> None:
    """415 unless ``media_type`` is one of ``accepted``."""
    if media_type not in accepted:
        raise HTTPError(
            415,
            ERRORS.INVALID_PARAMETERS,
            f"Content-Type header should be one of {list(accepted)}.",
        )


def holds_nul(value: Any) -> bool:
    """Whether a string (key or value) in ``value`` contains U+0000."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def json_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
