"""Who may do what on a resource: kiln's permission rules, sans-IO.

Three kinds of resources (:attr:`kiln.resource.Resource.kind`):

``public`` (:class:`~kiln.resource.Resource`)
    Everyone may do everything, unless a ``<resource>.<perm>_principals``
    setting names who may (then only they may).
``private`` (:class:`~kiln.resource.UserResource`)
    Every request must be authenticated; each user has a collection of
    their own (``parent_id`` is the user id), so nobody ever sees another
    user's records.
``shareable`` (:class:`~kiln.resource.ShareableResource`)
    Each record carries permissions (``read``, ``write``, and
    ``<child>:create`` for each resource nested below it) kept in the
    permission backend under the record's URI (``/mushrooms/<id>``,
    ``/buckets/b/collections/c``). Who holds a permission:

    ========================  =================================================
    ``read`` a record         ``read`` or ``write`` on it; ``read`` or
                              ``write`` on any ancestor record; the
                              ``<resource>.read_principals`` or
                              ``write_principals`` settings
    ``write`` a record        ``write`` on it or on any ancestor record; the
                              ``<resource>.write_principals`` setting
    ``create`` in a           ``<resource>:create`` or ``write`` on the parent
    collection                record, ``write`` on any further ancestor; the
                              ``<resource>.create_principals`` setting
    ========================  =================================================

    Collection reads and deletes without a collection-wide permission are
    narrowed to the records the caller may read (write): the ids come from
    the permission backend's index (``principals_accessible_objects``) and
    become an ``id IN (...)`` filter of the storage query.

A denied request is answered ``401`` (errno 104) when anonymous, so that a
client knows to authenticate, and ``403`` (errno 121) when authenticated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonpatch

from kiln._json import apply_json_patch
from kiln.auth import AUTHENTICATED, Principals, denied
from kiln.errors import HTTPError, invalid_parameter
from kiln.permission import PermissionBase
from kiln.resource.unit_of_work import ReplacePermissions, UnitOfWork

__all__ = [
    "KINDS",
    "PERMISSION_SETTINGS",
    "Access",
    "AccessRules",
    "ancestor_uris",
    "denied",
    "parse_permissions",
    "patch_permissions",
]

READ = "read"
WRITE = "write"
#: Resource kinds, as :attr:`kiln.resource.Resource.kind` names them.
KINDS = ("public", "private", "shareable")
#: The ``<resource>.<name>_principals`` settings and what each grants.
PERMISSION_SETTINGS = ("read", "write", "create")
#: Longest list of principals one permission of one record may hold.
MAX_PRINCIPALS = 1000


def ancestor_uris(collection_uri: str) -> list[str]:
    """The record URIs above a collection, nearest first.

    >>> ancestor_uris("/buckets/b/collections/c/records")
    ['/buckets/b/collections/c', '/buckets/b']
    >>> ancestor_uris("/mushrooms")
    []
    """
    parts = collection_uri.strip("/").split("/")
    uris = []
    while len(parts) >= 3:
        parts = parts[:-1]
        uris.append("/" + "/".join(parts))
        parts = parts[:-1]
    return uris


def _invalid(name: str, description: str) -> HTTPError:
    return invalid_parameter("body", name, description)


def parse_permissions(value: Any, allowed: Iterable[str]) -> dict[str, set[str]]:
    """The ``permissions`` member of a request body, checked.

    :raises HTTPError: 400 (errno 107) naming the first wrong part.
    """
    names = sorted(allowed)
    if not isinstance(value, dict):
        raise _invalid("permissions", 'must be an object like {"read": ["system.Everyone"]}.')
    parsed: dict[str, set[str]] = {}
    for name, principals in value.items():
        if name not in names:
            raise _invalid(
                f"permissions.{name}",
                f"{name!r} is not a permission of this resource; use {', '.join(names)}.",
            )
        if not isinstance(principals, list) or not all(
            isinstance(p, str) and p for p in principals
        ):
            raise _invalid(f"permissions.{name}", "must be a list of principals (strings).")
        if len(principals) > MAX_PRINCIPALS:
            raise _invalid(f"permissions.{name}", f"holds at most {MAX_PRINCIPALS} principals.")
        parsed[name] = set(principals)
    return parsed


def patch_permissions(
    current: Mapping[str, list[str]], operations: list[Any], max_bytes: int | None = None
) -> Any:
    """Apply the JSON Patch ``operations`` on ``/permissions`` to ``current``;
    return the patched ``permissions`` member, to check with
    :func:`parse_permissions`.

    Permissions are lists: ``{"op": "add", "path": "/permissions/read/-",
    "value": "alice"}`` appends, ``/permissions/read/0`` is the first
    principal. Kinto's form names the principal in the path instead:
    ``{"op": "add", "path": "/permissions/read/alice"}`` adds ``alice``
    (once; a ``value`` is ignored, as Kinto does) and ``{"op": "remove",
    "path": "/permissions/read/alice"}`` removes it. A principal holding a
    ``/`` is written ``~1``, as JSON Pointer escapes it. The other operations
    are held to ``max_bytes`` (:func:`kiln._json.apply_json_patch`).

    :raises jsonpatch.JsonPatchException: an operation does not apply.
    :raises jsonpatch.JsonPointerException: a path is not a JSON Pointer.
    """
    document: Any = {"permissions": {name: list(value) for name, value in current.items()}}
    for operation in operations:
        named = _named_principal(operation)
        if named is None:
            document = apply_json_patch(document, [operation], max_bytes)
            continue
        name, principal = named
        permissions = document.get("permissions")
        held = permissions.setdefault(name, []) if isinstance(permissions, dict) else None
        if not isinstance(held, list):
            raise jsonpatch.JsonPatchConflict(f"permissions.{name} is not a list of principals.")
        if operation["op"] == "add":
            if principal not in held:
                held.append(principal)
        elif principal in held:
            held.remove(principal)
        else:
            raise jsonpatch.JsonPatchConflict(f"{principal!r} is not in permissions.{name}.")
    return document.get("permissions")


def _named_principal(operation: Any) -> tuple[str, str] | None:
    """``(permission, principal)`` of an operation in Kinto's form
    (``add``/``remove`` on ``/permissions/<name>/<principal>``), else ``None``."""
    if not isinstance(operation, dict) or operation.get("op") not in ("add", "remove"):
        return None
    path = operation.get("path")
    if not isinstance(path, str):
        return None
    parts = jsonpatch.JsonPointer(path).parts
    if len(parts) != 3 or parts[0] != "permissions":
        return None
    _, name, principal = parts
    # "-" and indexes address the list; anything else names a principal.
    if not principal or principal == "-" or principal.isdigit():
        return None
    return name, principal


@dataclass(frozen=True)
class AccessRules:
    """The permission rules of one mounted resource, resolved once at mount time.

    ``granted`` maps ``read``/``write``/``create`` to the principals of the
    ``<resource>.<name>_principals`` setting, for those that are set;
    ``record_permissions`` are the names a record's ``permissions`` may use.
    """

    resource_name: str
    kind: str
    granted: Mapping[str, frozenset[str]] = field(default_factory=dict)
    record_permissions: frozenset[str] = frozenset({READ, WRITE})

    @property
    def create_permission(self) -> str:
        return f"{self.resource_name}:create"


def _pairs_on(uris: Iterable[str], permissions: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(uri, permission) for uri in uris for permission in permissions]


@dataclass
class Access:
    """What one caller may do in one collection.

    ``collection_uri`` is the collection's URI without the version prefix
    (``/mushrooms``, ``/buckets/b/collections``); record URIs are
    ``<collection_uri>/<id>``. Answers are memoized: one request asks the
    backend at most once per question. Reads first make the changes
    ``unit`` staged on the objects they read; changes are staged there.

    When ``principals`` is a :class:`~kiln.auth.Principals` whose groups are
    not read yet, they are read with the first ACLs a question needs (one
    round trip), and not at all when ``system.Everyone``,
    ``system.Authenticated`` or the user id already decide.
    """

    rules: AccessRules
    backend: PermissionBase | None
    principals: Sequence[str]
    collection_uri: str
    unit: UnitOfWork | None = None
    _memo: dict[tuple[str, str], bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.unit is None and self.backend is not None:
            # Used on its own (tests, scripts): each change is written at once.
            self.unit = UnitOfWork(None, self.backend, immediate=True)

    def _reader(self, object_ids: Iterable[str] | None) -> PermissionBase:
        """The backend, once the unit's changes to ``object_ids`` (None: any) are made."""
        assert self.backend is not None
        assert self.unit is not None  # set with the backend
        self.unit.reading_permissions(object_ids)
        return self.backend

    @property
    def shareable(self) -> bool:
        return self.rules.kind == "shareable"

    def record_uri(self, object_id: str) -> str:
        return f"{self.collection_uri}/{object_id}"

    @property
    def _base(self) -> Sequence[str]:
        """The principals known without reading the caller's groups."""
        principals = self.principals
        return principals.base if isinstance(principals, Principals) else principals

    def _by_setting(self, name: str, *, base_only: bool = False) -> bool | None:
        """``True``/``False`` when the setting decides, ``None`` when it is unset.

        ``base_only``: without the caller's groups (no read; ``False`` then
        means "not by the principals known so far")."""
        granted = self.rules.granted.get(name)
        if granted is None:
            return None
        if not granted.isdisjoint(self._base):
            return True
        return False if base_only else not granted.isdisjoint(self.principals)

    def _check(self, pairs: list[tuple[str, str]]) -> bool:
        """Whether the caller holds one of ``pairs`` (object URI, permission),
        from their ACLs, read already (:meth:`_read_held`)."""
        if not pairs or self.backend is None:
            return False
        assert self.unit is not None  # set with the backend
        unit = self.unit
        return any(
            not unit.remembered(("held", uri), {}).get(perm, set()).isdisjoint(self.principals)
            for uri, perm in pairs
        )

    def _memoized(self, key: tuple[str, str], compute: Callable[[], bool]) -> bool:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- collection-wide permissions -------------------------------------

    def may_collection(self, name: str) -> bool:
        """Whether the caller holds ``name`` (``read``/``write``/``create``) on
        every record of the collection (or, for ``create``, on the collection)."""
        return self._memoized(("", name), lambda: self._may_collection(name))

    def _decided_by_settings(self, name: str, *, base_only: bool = False) -> bool | None:
        """What the ``<resource>.<perm>_principals`` settings say about ``name``
        collection-wide (``None``: they do not say; with ``base_only``, only
        ``True`` is final)."""
        decided = self._by_setting(name, base_only=base_only)
        by_write = self._by_setting(WRITE, base_only=base_only)
        if by_write:
            decided = True  # collection-wide write implies read and create
        elif name == "create" and decided is None:
            decided = by_write  # who may create, when unset: who may write
        return decided

    def _may_collection(self, name: str) -> bool:
        if not self.shareable:
            # Public: an unset setting allows; private: any authenticated caller.
            if self.rules.kind == "private":
                return AUTHENTICATED in self.principals
            decided = self._decided_by_settings(name)
            return decided is None or decided
        if self._decided_by_settings(name, base_only=True):
            return True
        ancestors = ancestor_uris(self.collection_uri)
        if name == READ:
            pairs = _pairs_on(ancestors, (READ, WRITE))
        elif name == WRITE:
            pairs = _pairs_on(ancestors, (WRITE,))
        else:
            pairs = _pairs_on(ancestors[:1], (self.rules.create_permission, WRITE))
            pairs += _pairs_on(ancestors[1:], (WRITE,))
        if self.backend is not None:
            # The ancestors' ACLs and the caller's groups, in one read.
            self._read_held([uri for uri, _ in pairs])
        return bool(self._decided_by_settings(name)) or self._check(pairs)

    # -- one record -------------------------------------------------------

    def may_record(self, name: str, object_id: str) -> bool:
        """Whether the caller holds ``read`` or ``write`` on record ``object_id``."""
        return self._memoized((object_id, name), lambda: self._may_record(name, object_id))

    def _may_record(self, name: str, object_id: str) -> bool:
        if self.shareable and self.backend is not None:
            # One read for the record's permissions (the response shows them)
            # and, unless the settings decide, its ancestors' (which may grant).
            uris = [self.record_uri(object_id)]
            if not self._decided_by_settings(name, base_only=True):
                uris += ancestor_uris(self.collection_uri)
            self._read_held(uris)
        if self.may_collection(name):
            return True
        if not self.shareable or self.backend is None:
            return False
        # The record's own permissions, read once: they also answer
        # record_permissions() for the response.
        held = self._record_held(object_id)
        granting = held.get(WRITE, set()) | (held.get(READ, set()) if name == READ else set())
        return not granting.isdisjoint(self.principals)

    def _read_held(self, uris: list[str]) -> None:
        """Remember the permissions of those of ``uris`` not known yet, read at
        once, with the caller's groups when they are not known yet."""
        assert self.unit is not None  # set with the backend
        unit = self.unit
        missing = [uri for uri in dict.fromkeys(uris) if unit.remembered(("held", uri)) is None]
        if not missing:
            return
        backend = self._reader(missing)
        principals = self.principals
        if isinstance(principals, Principals) and not principals.known:
            assert principals.user_id is not None  # unknown groups have a user
            found, groups = backend.objects_permissions_and_principals(missing, principals.user_id)
            principals.resolve(groups)
        else:
            found = backend.objects_permissions(missing)
        for uri, held in found.items():
            unit.remember(("held", uri), held, [uri])

    def _record_held(self, object_id: str) -> dict[str, set[str]]:
        uri = self.record_uri(object_id)
        assert self.unit is not None  # set with the backend
        held: dict[str, set[str]] | None = self.unit.remembered(("held", uri))
        if held is None:
            held = self._reader([uri]).object_permissions(uri)
            self.unit.remember(("held", uri), held, [uri])
        return held

    def accessible_ids(self, name: str) -> list[str]:
        """Ids of the records on which the caller holds ``name`` by their own ACEs."""
        if self.backend is None:
            return []
        pattern = self.record_uri("*")
        extra = [(pattern, WRITE)] if name == READ else []
        found = self._reader(None).principals_accessible_objects(
            self.principals, name, pattern, lambda _o, _p: extra
        )
        # A ``*`` in a path variable (a parent that is not a kiln resource)
        # would widen the pattern: keep only this collection's records.
        prefix = self.record_uri("")
        return sorted(
            uri[len(prefix) :]
            for uri in found
            if uri.startswith(prefix) and "/" not in uri[len(prefix) :]
        )

    # -- writing ACEs -----------------------------------------------------

    def record_permissions(self, object_id: str) -> dict[str, list[str]]:
        """The record's permissions, as a response body shows them."""
        return self._shown(self._record_held(object_id))

    def _shown(self, held: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
        return {name: sorted(held.get(name, ())) for name in sorted(self.rules.record_permissions)}

    def write_permissions(
        self,
        object_id: str,
        given: Mapping[str, set[str]] | None,
        creator: str | None,
        *,
        reset: bool,
    ) -> dict[str, list[str]]:
        """Stage the permissions of a created or updated record; return them
        as the response shows them once written.

        ``reset`` (create, a PUT that sends permissions): permissions not in
        ``given`` are emptied; otherwise (PATCH, a PUT with only ``data``) they
        are left alone. The creator is always added to ``write``.
        """
        assert self.backend is not None
        assert self.unit is not None
        uri = self.record_uri(object_id)
        permissions = {name: set(value) for name, value in (given or {}).items()}
        if reset:
            for name in self.rules.record_permissions:
                permissions.setdefault(name, set())
            held: dict[str, set[str]] = {}
        else:
            held = {name: set(value) for name, value in self._record_held(object_id).items()}
        added = None
        if creator is not None:
            if WRITE in permissions:
                permissions[WRITE].add(creator)
            elif creator not in held.get(WRITE, ()):
                added = creator
                held.setdefault(WRITE, set()).add(creator)
        held.update(permissions)
        if added is None:
            if permissions:
                self.unit.stage_permissions([uri], ReplacePermissions(uri, permissions))
        else:
            principal = added

            def write(backend: PermissionBase) -> None:
                backend.add_principal_to_ace(uri, WRITE, principal)
                if permissions:
                    backend.replace_object_permissions(uri, permissions)

            self.unit.stage_permissions([uri], write)
        self.unit.remember(("held", uri), held, [uri])
        return self._shown(held)

    def delete_permissions(self, object_ids: Iterable[str]) -> None:
        """Stage forgetting the ACEs of deleted records."""
        self.delete_objects_permissions([self.record_uri(i) for i in object_ids])

    def delete_objects_permissions(self, uris: list[str]) -> None:
        """Stage forgetting the ACEs of the objects ``uris`` (deleted records,
        here or below: a cascade)."""
        assert self.backend is not None
        assert self.unit is not None

        def delete(backend: PermissionBase) -> None:
            backend.delete_object_permissions(*uris)

        self.unit.stage_permissions(uris, delete)
