"""Nested resources and their parents (sans-IO).

A resource whose ``collection_path`` holds variables
(``/buckets/{bucket_id}/collections``) is *nested*. Its parent is the
mounted resource whose ``record_path`` is the longest prefix of that
collection path, compared segment by segment with every variable treated as
a wildcard (``/buckets/{id}`` is the parent of
``/buckets/{bucket_id}/collections``); the parent's path variables take
their values from the child's, in order (its ``{id}`` is the child's
``{bucket_id}``). A collection path whose prefix matches no mounted record
path (a parent that is not a kiln resource) has no parent.

Every request on a nested resource first checks, inside its unit of work,
that each ancestor record exists (grandparents first), in the collection
its own ``get_parent_id`` names: :func:`check_parents`. Parents are
resolved once, when the app mounts its resources (:func:`find_parents`),
so the order in which resources are declared does not matter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kiln.auth import denied
from kiln.errors import ERRORS, HTTPError
from kiln.resource import Registration, RequestContext
from kiln.resource.access import Access
from kiln.resource.unit_of_work import UnitOfWork

__all__ = ["Parent", "check_parents", "find_parents", "record_permission_names"]

_VARIABLE = re.compile(r"<(?:[^<>:]+:)?(\w+)>")


@dataclass(frozen=True)
class Parent:
    """The parent of a nested resource: its registration and where its variables come from.

    ``variables`` pairs each of the parent's record-path variables with the
    child's path variable holding its value.
    """

    registration: Registration
    variables: tuple[tuple[str, str], ...]


def _segments(path: str) -> list[str]:
    """``path``'s segments, each variable as ``<>`` (its name does not matter)."""
    return [_VARIABLE.sub("<>", segment) for segment in path.strip("/").split("/")]


def find_parents(mounted: Mapping[str, Registration]) -> dict[str, Parent | None]:
    """The parent of each mounted resource, by name (``None``: not nested)."""
    return {name: _find_parent(mounted, registration) for name, registration in mounted.items()}


def _find_parent(mounted: Mapping[str, Registration], registration: Registration) -> Parent | None:
    child = _segments(registration.collection_path)
    best: Registration | None = None
    for candidate in mounted.values():
        prefix = _segments(candidate.record_path)
        if (
            candidate is not registration
            and len(prefix) < len(child)
            and child[: len(prefix)] == prefix
            and (best is None or len(prefix) > len(_segments(best.record_path)))
        ):
            best = candidate
    if best is None:
        return None
    names = _VARIABLE.findall(best.record_path)
    child_names = _VARIABLE.findall(registration.collection_path)
    return Parent(best, tuple(zip(names, child_names, strict=False)))


def record_permission_names(
    parents: Mapping[str, Parent | None], registration: Registration
) -> frozenset[str]:
    """What a record's ``permissions`` may name: ``read``, ``write`` and
    ``<child>:create`` for each resource nested below."""
    children = [
        name
        for name, parent in parents.items()
        if parent is not None and parent.registration is registration
    ]
    return frozenset({"read", "write", *(f"{child}:create" for child in children)})


def check_parents(
    parents: Mapping[str, Parent | None],
    registration: Registration,
    path: Mapping[str, str],
    user_id: str | None,
    unit: UnitOfWork,
    access: Access,
    record: tuple[str, str, str] | None = None,
) -> None:
    """Unless every ancestor record of this request exists: 404 (errno 110),
    naming the first missing one (grandparents first) in ``details: {"id",
    "resource_name"}``.

    A caller who may not read the collection (a missing parent has no
    permissions of its own) is denied instead, so the answer does not tell
    which parents exist: 403, or 401 when anonymous. The ancestors are read
    together, once per unit of work; with them, the request's own
    ``record`` (its key), kept for the model (:meth:`UnitOfWork.prefetch`).
    """
    chain = _ancestors(parents, registration, path, user_id)
    unknown = [key for key in chain if not unit.memo.get(("parent", *key))]
    if not unknown:
        return
    read = unknown if record is None else [*unknown, record]
    for name, parent_id, object_id in read:
        unit.reading(name, parent_id, object_id)
    assert unit.storage is not None  # a resource's unit has its storage
    found = unit.storage.get_records(read)
    if record is not None:
        unit.prefetch(record, found.pop())
    for key, parent in zip(unknown, found, strict=True):
        if parent is None:
            if not access.may_collection("read"):
                raise denied(access.principals)
            name, _, object_id = key
            raise HTTPError(
                404,
                ERRORS.INVALID_RESOURCE_ID,
                f"The {name} {object_id!r} this path belongs to does not exist.",
                details={"id": object_id, "resource_name": name},
            )
        unit.memo[("parent", *key)] = True


def _ancestors(
    parents: Mapping[str, Parent | None],
    registration: Registration,
    path: Mapping[str, str],
    user_id: str | None,
) -> list[tuple[str, str, str]]:
    """``(resource_name, parent_id, id)`` of each ancestor record, grandparents first."""
    parent = parents[registration.name]
    if parent is None:
        return []
    parent_path = {name: path[child_name] for name, child_name in parent.variables}
    context = RequestContext(path=parent_path, user_id=user_id)
    parent_id = parent.registration.cls().get_parent_id(context)
    above = _ancestors(parents, parent.registration, parent_path, user_id)
    return [*above, (parent.registration.name, parent_id, parent_path["id"])]
