"""JSON request bodies, parsed once and bounded (sans-IO).

Every endpoint that reads a JSON body (resources, batch, accounts) goes
through :func:`parse_body`: the media type is checked (415), the body is
parsed by orjson, refused when nested deeper than :data:`MAX_JSON_DEPTH`
levels (a deep body would fail far away, in a serializer or a backend's
JSON functions, with a 500) and when a string holds U+0000 (PostgreSQL
cannot store it: refused on every backend alike). Each refusal is a 400
(errno 107) naming what is wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

from kiln.errors import ERRORS, HTTPError, invalid_parameter

__all__ = [
    "MAX_JSON_DEPTH",
    "check_media_type",
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
        raise invalid_parameter(
            "body", "body", f"JSON nesting is limited to {MAX_JSON_DEPTH} levels."
        )
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
